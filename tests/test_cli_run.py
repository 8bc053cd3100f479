"""`securefed data prepare`, `securefed run --config` and `securefed demo` through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

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
    assert "<polyline" in epsilon_section  # with one line per institution
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
