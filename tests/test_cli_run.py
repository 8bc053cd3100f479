"""`securefed data prepare`, `securefed run --config` and `securefed demo` through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from securefed.audit import SECTION_IDS
from securefed.cli import main
from securefed.data import load_tenants


def test_data_prepare_writes_the_seed_layout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "tenants"
    status = main(
        [
            "data",
            "prepare",
            "--tenants",
            "4",
            "--groups",
            "2",
            "--samples-per-tenant",
            "50",
            "--out",
            str(out),
        ]
    )
    assert status == 0
    assert "wrote 4 tenants" in capsys.readouterr().out
    tenants = load_tenants(out)
    assert [t.index for t in tenants] == [0, 1, 2, 3]
    assert all(len(t.train_y) + len(t.test_y) == 50 for t in tenants)
    assert json.loads((out / "federation.json").read_text())["groups"] == 2
    # a second prepare into the same directory refuses instead of mixing federations
    assert main(["data", "prepare", "--tenants", "4", "--out", str(out)]) == 2


def test_run_from_a_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "run.toml"
    config.write_text(
        'name = "cli"\nmode = "group"\nrounds = 1\n'
        "[data]\ntenants = 3\ngroups = 1\nsamples_per_tenant = 120\n"
        'model = "mlp"\n[training]\nbatch_size = 32\n'
        "[dp]\ntarget_epsilon = 4.0\ndelta = 1e-4\n"
    )
    out = tmp_path / "run"
    assert main(["run", "--config", str(config), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "group (secure, main)" in printed
    assert "ledgers: INTACT" in printed
    html = (out / "report.html").read_text()
    for section in SECTION_IDS:
        assert f'id="{section}"' in html
    epsilon_section = html.split('id="epsilon"', 1)[1].split('id="dp-parameters"', 1)[0]
    assert "<svg" in epsilon_section  # the epsilon plot, inline
    assert 'id="epsilon-plot-series-2"' in epsilon_section  # with one line per institution
    assert "bank-2" in epsilon_section
    assert 'src="http' not in html  # self-contained: nothing loaded from elsewhere
    assert "## Unit of privacy" in (out / "report.md").read_text()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["rounds"] == 1
    assert metrics["partition"] == [0, 0, 0]
    assert main(["audit", "verify", str(out)]) == 0


def test_configuration_errors_exit_2_and_write_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "run.toml"
    config.write_text('mode = "group"\nrounds = 1\nrunds = 2\n')
    out = tmp_path / "run"
    assert main(["run", "--config", str(config), "--out", str(out)]) == 2
    assert "runds" in capsys.readouterr().err
    assert not out.exists()
    assert main(["demo", "--tenants", "2", "--out", str(out)]) == 2
    assert "tenants" in capsys.readouterr().err
    assert not out.exists()


def test_audit_canary_flags_the_broken_configuration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["audit", "canary", "--preset", "broken-no-noise", "--canaries", "500", "--seed", "0"]
    assert main([*argv, "--run-dir", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "LOWER BOUND" in printed
    assert "VIOLATION" in printed
    written = json.loads((tmp_path / "canary.json").read_text())
    assert written["epsilon_lower_bound"] > written["claimed_epsilon"]


def _tenants(directory: Path, count: int = 4) -> Path:
    assert (
        main(
            [
                "data",
                "prepare",
                "--tenants",
                str(count),
                "--groups",
                "1",
                "--samples-per-tenant",
                "120",
                "--out",
                str(directory),
            ]
        )
        == 0
    )
    return directory


def _run_config(path: Path, data: Path, extra: str = "") -> Path:
    path.write_text(
        f'name = "cli"\nmode = "fedavg"\n{extra}'
        f'[data]\ndirectory = "{data}"\nmodel = "mlp"\n[training]\nbatch_size = 32\n'
    )
    return path


def test_degraded_and_failed_runs_exit_3_and_4_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _tenants(tmp_path / "tenants")
    # seed 5, rate 0.25: rounds 1 and 2 aggregate, round 3 aborts (tests/runtime/test_federated.py)
    degraded = _run_config(tmp_path / "d.toml", data, "rounds = 3\nseed = 5\ndropout_rate = 0.25\n")
    capsys.readouterr()
    assert main(["run", "--config", str(degraded), "--out", str(tmp_path / "d")]) == 3
    printed = capsys.readouterr().out
    assert "warning: the run is degraded: round(s) 3 (aborted)" in printed
    assert json.loads((tmp_path / "d" / "metrics.json").read_text())["status"] == "degraded"
    report = (tmp_path / "d" / "report.md").read_text(encoding="utf-8")
    assert "Warning: the run did not complete (degraded)" in report
    failed = _run_config(tmp_path / "f.toml", data, "rounds = 1\nseed = 1\ndropout_rate = 0.25\n")
    assert main(["run", "--config", str(failed), "--out", str(tmp_path / "f")]) == 4
    assert "warning: the run is failed" in capsys.readouterr().out


def test_an_intolerable_dropout_rate_exits_2_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _tenants(tmp_path / "tenants", 3)
    config = _run_config(tmp_path / "c.toml", data, "rounds = 1\ndropout_rate = 0.9\n")
    capsys.readouterr()
    assert main(["run", "--config", str(config), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "cannot be tolerated" in err
    assert "tolerates 0 dropouts" in err
    assert not (tmp_path / "run").exists()


def test_a_huge_label_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _tenants(tmp_path / "tenants", 3)
    y = np.load(data / "client_train_labels_1.npy")
    y[0] = 10**9
    np.save(data / "client_train_labels_1.npy", y)
    config = _run_config(tmp_path / "c.toml", data, "rounds = 1\n")
    capsys.readouterr()
    assert main(["run", "--config", str(config), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 2  # the start banner, then the error
    assert "client_train_labels_1.npy" in err
    assert "label 1000000000 is too large" in err
    assert not (tmp_path / "run").exists()


def test_an_empty_test_split_runs_through_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _tenants(tmp_path / "tenants", 3)
    for part in ("client_test_samples_0.npy", "client_test_labels_0.npy"):
        np.save(data / part, np.load(data / part)[:0])
    config = _run_config(tmp_path / "c.toml", data, "rounds = 1\n")
    assert main(["run", "--config", str(config), "--out", str(tmp_path / "run")]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["clients"][0]["test_accuracy"] is None
    assert metrics["status"] == "completed"


def test_out_under_a_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file").write_text("x")
    status = main(
        ["demo", "--tenants", "3", "--rounds", "1", "--out", str(tmp_path / "file" / "r")]
    )
    assert status == 2
    assert "is a file, not a directory" in capsys.readouterr().err


def test_resume_needs_an_unfinished_run_and_no_other_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "--resume", str(tmp_path / "nothing")]) == 2
    assert "no unfinished run to resume" in capsys.readouterr().err
    assert main(["run", "--resume", str(tmp_path / "x"), "--out", str(tmp_path / "y")]) == 2
    assert "no --config/--out" in capsys.readouterr().err
    assert main(["run"]) == 2
    assert "give --config" in capsys.readouterr().err


def test_budget_reset_needs_a_reason_and_says_when_there_is_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _tenants(tmp_path / "tenants")
    assert main(["budget", "reset", str(data), "--tenant", "0", "--reason", " "]) == 2
    assert "needs a reason" in capsys.readouterr().err
    assert main(["budget", "reset", str(data), "--tenant", "0", "--reason", "test"]) == 0
    assert "no spend recorded" in capsys.readouterr().out
    assert main(["budget", "show", str(data)]) == 0
    assert capsys.readouterr().out.count("no spend recorded") >= 3
