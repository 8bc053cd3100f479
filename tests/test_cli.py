"""The `securefed` command: output conventions (one JSON line on stdout, exit codes)."""

from __future__ import annotations

import json

import pytest

from securefed.cli import main


def test_bench_prg_prints_one_json_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "prg", "--mib", "4", "--repeats", "1", "--json"]) == 0
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    for key in ("prg_gbps", "aes_ctr_limit_gbps", "ratio", "target_ratio", "target_met"):
        assert key in result
    assert result["prg_gbps"] > 0
    assert result["aes_ctr_limit_gbps"] > 0
    # All three are printed to 3 decimals: on a loaded machine (small values) that rounding
    # alone exceeds 1 %, so the tolerance is the rounding's worst case plus 1 %.
    prg, limit = result["prg_gbps"], result["aes_ctr_limit_gbps"]
    rounding = 5e-4 + (prg / limit) * (5e-4 / prg + 5e-4 / limit)
    assert result["ratio"] == pytest.approx(prg / limit, rel=0.01, abs=rounding)
    assert result["target_met"] == (result["ratio"] >= result["target_ratio"])
    assert "bench prg" in err


def test_configuration_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "prg", "--mib", "0", "--json"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "configuration error" in err


def test_unknown_command_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 2


def test_bench_secagg_prints_one_json_line(capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "bench",
        "secagg",
        "--clients",
        "4",
        "--dim",
        "2000",
        "--dropouts",
        "1",
        "--repeats",
        "1",
    ]
    assert main([*argv, "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip())
    assert result["correct"] is True
    for key in ("client_s", "server_s", "total_s", "upload_bytes_per_client", "keystream_limit_s"):
        assert result[key] > 0
    assert result["client_target_met"] == (result["client_vs_keystream"] <= 4.0)


@pytest.mark.parametrize("mode", ["fedamp", "group"])
def test_bench_personalize_prints_one_json_line(
    mode: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["bench", "personalize", "--clients", "6", "--dim", "2000", "--mode", mode, "--json"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out.strip())
    assert result["correct"] is True
    assert result["server_peak_bytes"] > 0
    assert "client_target_met" in result
