"""``securefed bench dp --json``: one JSON object on one stdout line, progress on stderr, exit 0
whether or not the target is met. Timings are only checked for consistency, never compared."""

from __future__ import annotations

import json

import pytest

from securefed.bench.dp import TARGET_RATIO, run_dp_benchmark
from securefed.cli import main
from securefed.errors import ConfigError


def test_bench_dp_json_is_one_line_with_target_and_verdict(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status = main(["bench", "dp", "--json", "--batch-size", "8", "--steps", "1", "--warmup", "0"])
    out, err = capsys.readouterr()
    assert status == 0
    lines = out.splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result["benchmark"] == "dp"
    assert result["batch_size"] == 8
    assert result["params"] >= 50_000
    assert result["grad_sample_mode"] == "ghost"
    assert result["target"] == TARGET_RATIO == 2.5
    assert result["dp_step_s"] > 0
    assert result["nondp_step_s"] > 0
    assert result["ratio"] == pytest.approx(result["dp_step_s"] / result["nondp_step_s"])
    assert result["met"] is (result["ratio"] <= 2.5)
    assert result["hooks_step_s"] > 0
    assert "bench dp" in err


def test_bad_benchmark_arguments_are_config_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match="batch_size >= 1"):
        run_dp_benchmark(batch_size=0)
    assert main(["bench", "dp", "--steps", "0"]) == 2
    assert "configuration error" in capsys.readouterr().err
