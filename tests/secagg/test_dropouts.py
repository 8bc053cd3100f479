"""Secure sum equals the plaintext sum for every dropout schedule up to N - t (DESIGN §8).

A client that drops "before stage S" sends nothing from S on. The round must succeed exactly when
at least t clients remain at the end, and the sum must then be the sum of the clients that sent a
masked input (U3), within the codec's bound. With more dropouts it must abort without output.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from securefed.secagg import Stage
from securefed.testing import RoundOutcome, run_round
from tests.secagg.conftest import config_for, federation, inputs_for

PHASES = [Stage.ADVERTISE, Stage.SHARE, Stage.MASK, Stage.CONSISTENCY, Stage.UNMASK]


def check_outcome(
    outcome: RoundOutcome, n: int, threshold: int, dropouts: dict[int, Stage]
) -> None:
    inputs = inputs_for(n)
    if n - len(dropouts) < threshold:
        assert outcome.aborted
        assert outcome.result is None
        return
    assert not outcome.aborted, outcome.server_events
    result = outcome.result
    assert result is not None
    sent_input = tuple(
        i
        for i in range(n)
        if i not in dropouts or PHASES.index(dropouts[i]) > PHASES.index(Stage.MASK)
    )
    assert result.contributors == sent_input
    expected = sum(inputs[i] for i in sent_input)
    assert np.max(np.abs(result.values - expected)) <= result.error_bound
    assert result.error_bound == pytest.approx(len(sent_input) * 2**-16)
    for i in range(n):
        expected_stage = Stage.DONE if i not in dropouts else outcome.client_stages[i]
        assert outcome.client_stages[i] is expected_stage


def run(n: int, dropouts: dict[int, Stage]) -> tuple[RoundOutcome, int]:
    fed = federation(n)
    config = config_for(fed)
    return run_round(config, fed, inputs_for(n), dropouts=dropouts), config.threshold


def test_no_dropout_n3() -> None:
    outcome, t = run(3, {})
    assert t == 3
    check_outcome(outcome, 3, t, {})


@pytest.mark.parametrize(
    "schedule",
    [{}] + [{client: phase} for client in range(5) for phase in PHASES],
    ids=lambda s: ",".join(f"{c}@{p.value}" for c, p in s.items()) or "none",
)
def test_every_single_dropout_n5(schedule: dict[int, Stage]) -> None:
    """N = 5, t = 4: exhaustive over which client drops and before which phase."""
    outcome, t = run(5, schedule)
    assert t == 4
    check_outcome(outcome, 5, t, schedule)


@pytest.mark.parametrize(
    ("first", "second"),
    list(itertools.combinations_with_replacement(PHASES, 2)),
    ids=lambda p: p.value,
)
def test_two_dropouts_abort_n5(first: Stage, second: Stage) -> None:
    """One more dropout than N - t: a clean abort in every case, never an output."""
    schedule = {1: first, 3: second}
    outcome, t = run(5, schedule)
    check_outcome(outcome, 5, t, schedule)
    assert any(type(e).__name__ == "RoundAborted" for e in outcome.server_events)


def schedules(n: int, max_drops: int) -> st.SearchStrategy[dict[int, Stage]]:
    return st.dictionaries(st.integers(0, n - 1), st.sampled_from(PHASES), max_size=max_drops)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schedule=schedules(10, 4))
def test_dropout_schedules_n10(schedule: dict[int, Stage]) -> None:
    outcome, t = run(10, schedule)
    assert t == 7
    check_outcome(outcome, 10, t, schedule)


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schedule=schedules(20, 7))
def test_dropout_schedules_n20(schedule: dict[int, Stage]) -> None:
    outcome, t = run(20, schedule)
    assert t == 14
    check_outcome(outcome, 20, t, schedule)
