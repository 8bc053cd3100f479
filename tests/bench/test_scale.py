"""``securefed bench scale``: the JSON shape, positive measurements, the growth-exponent fit.

Tiny N and d only; timings are checked to be positive, never compared with each other.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from securefed.bench import scale
from securefed.bench.scale import FlowerStatus, growth_exponent, run_scale_benchmark
from securefed.cli import main
from securefed.errors import ConfigError

_ROW_KEYS = {
    "clients",
    "dim",
    "dropouts",
    "graph",
    "degree",
    "threshold",
    "client_s",
    "server_s",
    "upload_bytes_per_client",
    "correct",
    "flower",
    "flower_client_s",
    "flower_server_s",
    "flower_total_s",
    "flower_correct",
}


def test_growth_exponent_recovers_a_power_law() -> None:
    sizes = [10, 20, 50, 100, 200]
    assert growth_exponent(sizes, [3.0 * n**2.5 for n in sizes]) == pytest.approx(2.5)
    assert growth_exponent([50, 200], [1.0, 16.0]) == pytest.approx(2.0)
    assert growth_exponent([50], [1.0]) is None
    assert growth_exponent([], []) is None
    with pytest.raises(ConfigError):
        growth_exponent([10, 20], [0.0, 1.0])


def test_growth_exponent_is_a_least_squares_fit() -> None:
    sizes, times = [1, 2, 4], [1.0, 4.0, 8.0]  # slopes 2 then 1
    xs, ys = [math.log(s) for s in sizes], [math.log(t) for t in times]
    slope = (ys[2] - ys[0]) / (xs[2] - xs[0])  # equally spaced x: the LS slope is the end slope
    assert growth_exponent(sizes, times) == pytest.approx(slope)


def test_scale_rows_are_positive_and_correct() -> None:
    result = run_scale_benchmark(sizes=(5, 3), dim=64, flower=False)
    assert result["benchmark"] == "scale"
    assert [row["clients"] for row in result["rows"]] == [3, 5]
    for row in result["rows"]:
        assert set(row) == _ROW_KEYS
        assert row["correct"] is True
        assert row["graph"] == "complete"
        assert row["degree"] == row["clients"] - 1
        assert row["client_s"] > 0
        assert row["server_s"] > 0
        assert row["upload_bytes_per_client"] > 0
        assert row["flower"] == FlowerStatus.SKIPPED.value
        assert row["flower_total_s"] is None
    assert isinstance(result["server_exponent"], float)
    assert result["server_exponent_50_200"] is None
    assert result["server_exponent_target_met"] is None


def test_ten_percent_dropouts_are_rounded() -> None:
    result = run_scale_benchmark(sizes=(10,), dim=16, flower=False)
    (row,) = result["rows"]
    assert row["dropouts"] == 1
    assert row["correct"] is True
    assert result["server_exponent"] is None  # one size: nothing to fit


def test_flower_missing_or_too_slow_is_reported_not_raised(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(scale, "flower_available", lambda: False)
    (row,) = run_scale_benchmark(sizes=(3,), dim=16)["rows"]
    assert row["flower"] == FlowerStatus.UNAVAILABLE.value
    monkeypatch.setattr(scale, "flower_available", lambda: True)
    (row,) = run_scale_benchmark(sizes=(3,), dim=16, flower_timeout_s=1e-3)["rows"]
    assert row["flower"] == FlowerStatus.TIMEOUT.value
    assert row["flower_client_s"] is None


def test_flower_row_when_installed() -> None:
    pytest.importorskip("flwr")
    (row,) = run_scale_benchmark(sizes=(4,), dim=32)["rows"]
    assert row["flower"] == FlowerStatus.OK.value
    assert row["flower_correct"] is True
    assert row["flower_client_s"] > 0
    assert row["flower_server_s"] > 0


@pytest.mark.parametrize(
    "kwargs",
    [{"sizes": (2,)}, {"sizes": ()}, {"dim": 0}, {"dropout_fraction": 0.5}, {"repeats": 0}],
)
def test_bad_arguments_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        run_scale_benchmark(flower=False, **kwargs)  # type: ignore[arg-type]


def test_cli_prints_one_json_line(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bench", "scale", "--sizes", "3,4", "--dim", "32", "--no-flower", "--json"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    result = json.loads(out)
    assert [row["clients"] for row in result["rows"]] == [3, 4]
    assert "bench scale" in err


def test_cli_table_and_refusal(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "scale", "--sizes", "3", "--dim", "8", "--no-flower"]) == 0
    out, _ = capsys.readouterr()
    assert out.splitlines()[0].startswith("N | degree")
    assert main(["bench", "scale", "--sizes", "2", "--no-flower"]) == 2


def test_the_graph_is_complete_up_to_62_and_secagg_plus_above() -> None:
    assert scale._graph_degree(62, 0.05, 0.1) is None
    assert scale._graph_degree(200, 0.05, 0.1) == 138  # the degree table's rule (docs/protocol.md)
    assert scale._graph_degree(100, 0.2, 0.1) is None  # no degree qualifies: complete graph


def test_plot_is_an_svg(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from securefed.bench.scale_plot import write_plot  # noqa: PLC0415 - optional dependency

    result = run_scale_benchmark(sizes=(3, 4), dim=16, flower=False)
    target = tmp_path / "scale.svg"
    write_plot(result, target)
    assert target.read_text(encoding="utf-8").lstrip().startswith("<?xml")
    with pytest.raises(ConfigError):
        write_plot({"rows": []}, target)
