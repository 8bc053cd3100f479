"""`securefed data prepare`, `securefed run --config` and `securefed demo` through the CLI."""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from securefed import cli
from securefed.audit import SECTION_IDS
from securefed.cli import main
from securefed.data import load_tenants
from securefed.errors import ConfigError
from securefed.runtime.demo import demo_config
from securefed.runtime.federated import run_federation
from securefed.runtime.nodes import ClientNode


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
    assert len(err.strip().splitlines()) == 1  # the error, found before the start banner
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


# --- --dry-run, --json, early refusals, warnings (issue 24, item 4) ----------------------------


def _dp_config(path: Path, data: Path, extra: str = "") -> Path:
    """:func:`_run_config` with differential privacy: ε 4 at δ 1e-4 per institution."""
    _run_config(path, data, extra)
    path.write_text(path.read_text() + "[dp]\ntarget_epsilon = 4.0\ndelta = 1e-4\n")
    return path


def _tree(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def test_dry_run_prints_the_plan_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _tenants(tmp_path / "tenants")
    config = _dp_config(tmp_path / "c.toml", data, "rounds = 2\n")
    before = _tree(tmp_path)
    capsys.readouterr()
    out = tmp_path / "nested" / "run"
    assert main(["run", str(config), "--out", str(out), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"dry run: nothing was written (would write {out}")
    assert "fedavg with secure aggregation, 2 rounds, 4 institutions" in printed
    assert "bank-3" in printed
    assert "estimated training time: about" in printed
    assert _tree(tmp_path) == before  # no run directory, no spend record, no parent
    assert not (tmp_path / "nested").exists()
    assert main(["run", "--config", str(config), "--out", str(out), "--dry-run", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert (plan["dry_run"], plan["rounds"], plan["written"]) == (True, 2, [])
    assert [p["party"] for p in plan["parties"]] == ["bank-0", "bank-1", "bank-2", "bank-3"]
    for party in plan["parties"]:
        assert party["noise_multiplier"] > 0
        assert party["sample_rate"] == pytest.approx(32 / party["train_records"])
        assert 3.9 < party["projected_epsilon"] <= 4.0  # sigma planned for the whole budget
        assert party["projected_epsilon_pld"] == pytest.approx(party["projected_epsilon"], rel=0.02)
    assert plan["estimated_seconds"] > 0
    assert _tree(tmp_path) == before


def test_a_dry_run_refuses_what_the_run_would_refuse(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _tenants(tmp_path / "tenants", 3)
    config = _run_config(tmp_path / "c.toml", data, "rounds = 1\ndropout_rate = 0.9\n")
    assert main(["run", str(config), "--dry-run"]) == 2
    assert "cannot be tolerated" in capsys.readouterr().err
    assert main(["run", "--resume", str(tmp_path / "x"), "--dry-run"]) == 2
    assert main(["run", str(config), "--config", str(tmp_path / "other.toml")]) == 2
    assert "give the configuration once" in capsys.readouterr().err


def test_a_small_demo_is_refused_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`demo --tenants 6`: three segments of two, too small for group mode. Refused before the
    banner, with what to do instead; no run directory, no parent directory, no warning."""
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--tenants", "6", "--rounds", "1"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    (line,) = err.splitlines()
    assert line.startswith("securefed: configuration error: group 0 has 2 members")
    assert "use --tenants 9 or more, or another --mode" in line
    assert list(tmp_path.iterdir()) == []  # not even runs/
    assert main(["demo", "--tenants", "6", "--out", str(tmp_path / "a" / "b"), "--dry-run"]) == 2
    assert not (tmp_path / "a").exists()


def test_a_refused_run_leaves_no_parent_directory(tmp_path: Path) -> None:
    """The library path (no CLI pre-check): a refusal while the parties are built removes
    ``<out>.partial`` and the parents it had to create."""
    with pytest.raises(ConfigError, match="group 0 has 2 members"):
        run_federation(
            demo_config(tenants=6, rounds=1), tmp_path / "a" / "b" / "run", copy_data=True
        )
    assert list(tmp_path.iterdir()) == []


def test_run_json_is_one_object_and_the_ledgers_recompute_within_two_percent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A real DP run (Opacus PRV) with a local baseline on the same records: `run --json`
    prints one JSON object on stdout (the rest on stderr); `audit verify --json` recomputes every
    party's ε within 2 % of what it recorded and composes the two trainings of each record."""
    data = _tenants(tmp_path / "tenants", 3)
    config = _dp_config(tmp_path / "c.toml", data, 'rounds = 2\nbaselines = ["local"]\n')
    out = tmp_path / "run"
    capsys.readouterr()
    assert main(["run", "--config", str(config), "--out", str(out), "--json"]) == 0
    stdout, stderr = capsys.readouterr()
    (line,) = stdout.splitlines()
    summary = json.loads(line)
    assert (summary["status"], summary["exit_code"], summary["rounds"]) == ("completed", 0, 2)
    assert summary["ledgers"]["status"] == "INTACT"
    assert summary["report"]["html"] == str(out / "report.html")
    assert [i["id"] for i in summary["institutions"]] == ["bank-0", "bank-1", "bank-2"]
    assert set(summary["baselines"]) == {"local"}
    assert "ledgers: INTACT" in stderr  # the human summary, on stderr
    assert summary["pooled_credit"] is None  # not a binary target
    assert "pooled (secure histograms)" not in stderr
    assert main(["audit", "verify", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    parties = result["epsilon"]["parties"]
    assert [p["party"] for p in parties] == ["bank-0", "bank-1", "bank-2"]
    for party in parties:
        assert party["verdict"] == "consistent"
        assert party["recomputed"] == pytest.approx(party["recorded"], rel=0.02)
    assert result["baselines"] == {"local": "INTACT"}
    assert [c["runs"] for c in result["composed"]] == [["this run", "local"]] * 3
    for composed, party in zip(result["composed"], parties, strict=True):
        assert party["recorded"] < composed["epsilon"] < 2 * party["recorded"]


def test_a_party_that_records_a_lower_epsilon_is_flagged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """bank-1 signs every round.spend with half the ε its accountant charged (a dishonest
    institution's runtime): every chain and signature holds, only the number lies. The run
    itself exits 1 and says so; `audit verify` exits 6 naming bank-1's entry."""
    honest = ClientNode._record_spend

    def lying(node: ClientNode, spend: Any) -> None:
        if node.party_id == "bank-1":
            spend = dataclasses.replace(spend, epsilon=spend.epsilon / 2)
        honest(node, spend)

    monkeypatch.setattr(ClientNode, "_record_spend", lying)
    data = _tenants(tmp_path / "tenants", 3)
    config = _dp_config(tmp_path / "c.toml", data, "rounds = 1\n")
    out = tmp_path / "run"
    capsys.readouterr()
    assert main(["run", "--config", str(config), "--out", str(out)]) == 1
    assert "ledgers: EPSILON_UNDERSTATED: ledgers/bank-1.jsonl (seq " in capsys.readouterr().out
    assert main(["audit", "verify", str(out)]) == 6
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("EPSILON_UNDERSTATED: ledgers/bank-1.jsonl (seq ")
    assert "more than the 2% allowed" in first
    assert main(["audit", "verify", str(out), "--json"]) == 6
    result = json.loads(capsys.readouterr().out)
    verdicts = {p["party"]: p["verdict"] for p in result["epsilon"]["parties"]}
    assert verdicts == {"bank-0": "consistent", "bank-1": "understated", "bank-2": "consistent"}


def test_library_warnings_are_reported_once_in_words(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = cli.run_federation

    def noisy(*args: Any, **kwargs: Any) -> Any:
        for _ in range(3):
            warnings.warn("invalid value encountered in divide", RuntimeWarning, stacklevel=1)
        return real(*args, **kwargs)

    monkeypatch.setattr(cli, "run_federation", noisy)
    data = _tenants(tmp_path / "tenants", 3)
    config = _run_config(tmp_path / "c.toml", data, "rounds = 1\n")
    capsys.readouterr()
    assert main(["run", "--config", str(config), "--out", str(tmp_path / "run"), "--json"]) == 0
    out, err = capsys.readouterr()
    noted = [line for line in err.splitlines() if "a library warning" in line]
    assert len(noted) == 1
    assert "(RuntimeWarning): invalid value encountered in divide" in noted[0]
    assert "Warning:" not in err.replace("RuntimeWarning", "")  # no raw Python warning
    assert json.loads(out)["warnings"] == [noted[0].split("the report are as written): ")[1]]


def _small_config(path: Path, name: str = "forced", *, rounds: int = 1) -> Path:
    path.write_text(
        f'name = "{name}"\nmode = "local"\nrounds = {rounds}\n'
        "[data]\ntenants = 3\ngroups = 1\nsamples_per_tenant = 60\n"
        'model = "mlp"\n[training]\nbatch_size = 32\n'
    )
    return path


def test_force_moves_an_earlier_run_aside_and_nothing_is_deleted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _small_config(tmp_path / "run.toml")
    out = tmp_path / "run"
    assert main(["run", str(config), "--out", str(out)]) == 0
    first = (out / "ledgers" / "server.jsonl").read_bytes()
    capsys.readouterr()
    assert main(["run", str(config), "--out", str(out)]) == 2  # not empty: refused
    assert "is not empty" in capsys.readouterr().err
    assert main(["run", str(config), "--out", str(out), "--force"]) == 0
    err = capsys.readouterr().err
    (moved,) = tmp_path.glob("run.replaced-*")
    assert f"is now {moved}" in err
    assert (moved / "ledgers" / "server.jsonl").read_bytes() == first  # the evidence is kept
    assert (out / "ledgers" / "server.jsonl").exists()  # and a new run took its place
    assert main(["run", str(config), "--out", str(out), "--force", "--dry-run"]) == 2


def test_force_moves_the_earlier_run_back_when_the_new_one_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    (out / "ledgers").mkdir(parents=True)
    (out / "ledgers" / "server.jsonl").write_text("earlier\n")
    bad = tmp_path / "bad.toml"  # a valid configuration whose data the pre-checks refuse
    bad.write_text(f'name = "forced"\nmode = "local"\n[data]\ndirectory = "{tmp_path}/none"\n')
    assert main(["run", str(bad), "--out", str(out), "--force"]) == 2
    assert "none" in capsys.readouterr().err
    assert (out / "ledgers" / "server.jsonl").read_text() == "earlier\n"
    assert not list(tmp_path.glob("run.replaced-*"))


def test_a_binary_target_prints_the_pooled_credit_metrics(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Imported tables with a binary target: the summary prints the pooled figures from the
    secure histograms (metrics.json's pooled_credit) in one line, `--json` carries them without
    the histogram, and the report has the credit section with the pooled ROC curve."""
    from tests.runtime.test_preprocess import _tables  # noqa: PLC0415 -- the tables' builder

    data, _ = _tables(tmp_path)
    config = tmp_path / "c.toml"
    config.write_text(
        'name = "credit"\nmode = "fedavg"\nrounds = 2\nseed = 0\n'
        f'[data]\ndirectory = "{data}"\nmodel = "logistic"\nstandardize = "federation"\n'
        "[training]\nlr = 0.5\nbatch_size = 16\n"
    )
    out = tmp_path / "run"
    capsys.readouterr()
    assert main(["run", "--config", str(config), "--out", str(out), "--json"]) == 0
    stdout, stderr = capsys.readouterr()
    pooled = json.loads((out / "metrics.json").read_text())["pooled_credit"]
    line = (
        f"pooled (secure histograms): ROC-AUC {pooled['roc_auc']:.3f}, "
        f"PR-AUC {pooled['pr_auc']:.3f}, KS {pooled['ks']:.3f}, Brier {pooled['brier']:.3f}"
    )
    assert line in stderr.splitlines()
    summary = json.loads(stdout)
    keys = ("roc_auc", "pr_auc", "ks", "gini", "brier", "positives", "negatives")
    assert summary["pooled_credit"] == {key: pooled[key] for key in keys}
    html = (out / "report.html").read_text()
    credit = html.split('<section id="credit">', 1)[1].split("</section>", 1)[0]
    assert "<td>pooled (secure histograms)</td>" in credit
    assert '<svg id="credit-roc-plot"' in credit
    assert "disagrees" not in credit


def test_the_pooled_line_says_n_a_for_a_missing_metric() -> None:
    pooled = {"roc_auc": 0.81234, "pr_auc": None, "ks": 0.4, "brier": 0.1}
    assert cli._pooled_credit_line(pooled) == (
        "pooled (secure histograms): ROC-AUC 0.812, PR-AUC n/a, KS 0.400, Brier 0.100"
    )
