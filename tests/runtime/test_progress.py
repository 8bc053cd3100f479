"""The round progress line (securefed/runtime/demo.py::ProgressPrinter)."""

from __future__ import annotations

import io

from securefed.runtime.demo import ProgressPrinter
from securefed.runtime.federated import RoundReport


def report(round_: int, seconds: float) -> RoundReport:
    return RoundReport(
        round=round_,
        rounds=4,
        mean_test_accuracy=0.5,
        max_epsilon=2.0,
        own_segment_weight=None,
        completed=3,
        refused=0,
        seconds=seconds,
    )


def test_a_log_gets_one_plain_stable_line_per_round() -> None:
    stream = io.StringIO()
    printer = ProgressPrinter("fedamp", stream, terminal=False)
    printer(report(1, 10.0))
    printer(report(2, 20.0))
    lines = stream.getvalue().splitlines()
    assert lines == [
        "fedamp     [#####...............] round   1/4  mean accuracy  50.0%  max ε  2.00  "
        "3 completed   10.0s",
        "fedamp     [##########..........] round   2/4  mean accuracy  50.0%  max ε  2.00  "
        "3 completed   20.0s",
    ]
    assert "\x1b" not in stream.getvalue()  # no escape sequences in a log


def test_a_terminal_gets_rich_bar_and_the_time_left() -> None:
    stream = io.StringIO()
    printer = ProgressPrinter("fedamp", stream, terminal=True)
    printer(report(1, 10.0))  # 10 s per round, 3 rounds left: 0:30
    printer(report(2, 40.0))  # a mean of 25 s per round, 2 rounds left: 0:50
    printer(report(4, 30.0))
    text = stream.getvalue()
    assert "\x1b[" in text  # drawn by rich, with colour
    assert "round   2/4" in text
    assert "ETA 0:30" in text
    assert "ETA 0:50" in text
    assert "ETA 0:00" in text  # the last round
    assert "━" in text  # rich's bar
