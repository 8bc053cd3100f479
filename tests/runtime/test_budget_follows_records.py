"""The privacy budget follows the records (docs/dp.md, "The budget follows the records"): a
rerun into a new ``--out``, a kill -9 and ``--resume``, a baseline, a local run, a run without DP
and an explicit reset, each on the same seed-layout records, as issue 19 replayed them."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from securefed.audit import EventType, render_report, verify_run
from securefed.audit.entry import parse_entry
from securefed.cli import main
from securefed.data import PartitionConfig, Scheme, prepare
from securefed.dp import AccountantKind, epsilon_for
from securefed.dp.spend import load_spend, reset_spend, spent_epsilon
from securefed.errors import ConfigError
from securefed.runtime.config import (
    DataConfig,
    DPSettings,
    ModelName,
    PersonalizationMode,
    PersonalizeConfig,
    RunConfig,
    TrainingSettings,
)
from securefed.runtime.federated import resume_federation, run_federation

BUDGET = 4.0
DELTA = 1e-4


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("records")
    prepare(
        "bundled",
        out=directory,
        config=PartitionConfig(tenants=3, groups=1, scheme=Scheme.IID, samples_per_tenant=200),
    )
    return directory


@pytest.fixture
def records(prepared: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(prepared, tmp_path / "records"))


def _config(records: Path, **changes: object) -> RunConfig:
    base = RunConfig(
        name="budget",
        mode=PersonalizationMode.FEDAVG,
        rounds=2,
        seed=3,
        data=DataConfig(directory=str(records), model=ModelName.MLP),
        training=TrainingSettings(lr=0.5, batch_size=32),
        dp=DPSettings(target_epsilon=BUDGET, delta=DELTA),
        personalize=PersonalizeConfig(),
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def _events(run_dir: Path, actor: str) -> list[tuple[EventType, dict[str, object]]]:
    lines = (run_dir / "ledgers" / f"{actor}.jsonl").read_bytes().splitlines()
    return [(e.event, dict(e.payload)) for e in map(parse_entry, lines)]


def _records_epsilon(records: Path, tenant: int) -> float | None:
    record = load_spend(records, tenant)
    assert record is not None
    return spent_epsilon(record)


_KILL_IN_ROUND_2 = """
import os, signal, sys
from securefed.dp.steppers import DPStepper
from securefed.runtime.config import load_run_config
from securefed.runtime.federated import run_federation
calls = {"n": 0}
original = DPStepper.step
def step(self, *args, **kwargs):
    calls["n"] += 1
    if calls["n"] > 3 * STEPS + 1:  # round 2, bank-0's local training (after its charge)
        os.kill(os.getpid(), signal.SIGKILL)
    return original(self, *args, **kwargs)
DPStepper.step = step
run_federation(load_run_config(sys.argv[1]), sys.argv[2])
"""


_KILL_BETWEEN_ROUNDS = """
import os, signal, sys
from securefed.runtime.engine.coordinator import Coordinator
from securefed.runtime.config import load_run_config
from securefed.runtime.federated import run_federation
original = Coordinator._begin_round
def begin(self, number, nodes):
    if number == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return original(self, number, nodes)
Coordinator._begin_round = begin
run_federation(load_run_config(sys.argv[1]), sys.argv[2])
"""


def _steps_per_round(records: Path) -> int:
    """DP-SGD steps per round of a tenant here: n // batch_size (all tenants are equal)."""
    return len(np.load(records / "client_train_labels_0.npy", allow_pickle=False)) // 32


def _killed_run(
    config: RunConfig, out: Path, tmp_path: Path, *, between_rounds: bool = False
) -> None:
    """``securefed run`` killed with SIGKILL in the middle of round 2, or as round 2 begins
    (a real kill -9: no handler runs, no ledger is sealed)."""
    config_file = tmp_path / f"{out.name}.toml"
    config_file.write_text(config.to_toml(), encoding="utf-8")
    steps = _steps_per_round(Path(config.data.directory or ""))
    script = _KILL_IN_ROUND_2.replace("STEPS", str(steps))
    if between_rounds:
        script = _KILL_BETWEEN_ROUNDS
    result = subprocess.run(  # noqa: S603 - our own interpreter and script
        [sys.executable, "-c", script, str(config_file), str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ},
        check=False,
    )
    assert result.returncode == -9, result.stderr[-2000:]


def test_the_rerun_after_kill_9_into_a_new_out_continues_the_spend(
    records: Path, tmp_path: Path
) -> None:
    """Issue 19, finding 1, replayed: kill -9 in round 2, then the same run into a new --out.
    Before: every tenant started again from zero (6.4 against a budget of 4). Here the run
    plans 3 rounds and is killed while bank-0 trains round 2 (bank-0 charged 2 rounds, the
    others 1)."""
    config = _config(records, rounds=3)
    _killed_run(config, tmp_path / "first", tmp_path)
    assert not (tmp_path / "first").exists()  # only a finished run gets the name
    assert (tmp_path / "first.partial").is_dir()
    killed = _records_epsilon(records, 0)
    assert killed is not None
    assert killed > 0
    assert killed > (_records_epsilon(records, 1) or 0)  # bank-1 had only round 1 charged

    summary = run_federation(config, tmp_path / "second")
    for tenant in range(3):
        total = _records_epsilon(records, tenant)
        assert total is not None
        assert total <= BUDGET + 1e-9  # never a fresh budget
        record = load_spend(records, tenant)
        assert record is not None
        assert len(record.counted()) == 2
    budget = [
        p for e, p in _events(tmp_path / "second", "bank-0") if e is EventType.BUDGET_CONFIGURED
    ]
    assert budget[0]["prior_epsilon"] == pytest.approx(killed)
    # the epsilon the run reports is the records' epsilon, composed with the killed run's spend
    reported = max(c["epsilon"] for c in summary.metrics["clients"])
    assert killed < reported <= BUDGET + 1e-9
    report = render_report(
        tmp_path / "second", out_html=tmp_path / "r.html", out_md=tmp_path / "r.md"
    )
    assert f"up to ε = {killed:.4g}" in report.md_path.read_text(encoding="utf-8")

    # a third run finds the budget spent: refused before anything is written, saying where
    with pytest.raises(ConfigError, match="budget follows the records"):
        run_federation(config, tmp_path / "third")
    assert not (tmp_path / "third").exists()
    assert not (tmp_path / "third.partial").exists()


def test_resume_continues_a_killed_run_its_ledgers_and_its_budget(
    records: Path, tmp_path: Path
) -> None:
    config = _config(records, rounds=3)
    _killed_run(config, tmp_path / "run", tmp_path)
    partial = tmp_path / "run.partial"
    spent_before = [_records_epsilon(records, t) for t in range(3)]
    assert (partial / "keys").is_dir()  # the run's keys, kept while it is in progress

    summary = resume_federation(tmp_path / "run")
    run_dir = tmp_path / "run"
    assert summary.directory == run_dir
    assert run_dir.is_dir()
    assert not partial.exists()
    assert not (run_dir / "keys").exists()  # discarded at the end
    assert summary.metrics["resumed_at"] == [3]
    # the interrupted round is not repeated (bank-0 was charged for it and keeps the charge)
    assert [h["round"] for h in summary.metrics["history"] if h.get("exchanges")] == [3]
    result = verify_run(run_dir)
    assert result.ok, result.describe()
    report = render_report(run_dir, out_html=tmp_path / "r.html", out_md=tmp_path / "r.md")
    text = report.md_path.read_text(encoding="utf-8")
    assert (
        "run resumed after an interruption in round 2 (not repeated: no aggregate, its charges "
        "stay); it goes on from round 3" in text
    )
    assert "Warning: the run did not complete (degraded)" in text
    events = _events(run_dir, "bank-0")
    spends = [p["round"] for e, p in events if e is EventType.ROUND_SPEND]
    assert spends == [1, 2, 3]  # one chain: the killed rounds and the resumed one
    bank1 = [p["round"] for e, p in _events(run_dir, "bank-1") if e is EventType.ROUND_SPEND]
    assert bank1 == [1, 3]
    hazards = [str(p["text"]) for e, p in events if e is EventType.HAZARD]
    assert any("run resumed after an interruption" in text for text in hazards)
    # round 2 was interrupted and not repeated: the run is degraded, and says so
    assert [p["status"] for e, p in events if e is EventType.RUN_FINISHED] == ["degraded"]
    assert summary.metrics["status"] == "degraded"
    statuses = {h["round"]: h["status"] for h in summary.metrics["history"] if h["round"] > 0}
    assert statuses == {2: "interrupted", 3: "completed"}
    for tenant in range(3):
        record = load_spend(records, tenant)
        assert record is not None
        (participation,) = record.participations  # the same participation, continued
        after = spent_epsilon(record)
        assert after is not None
        assert spent_before[tenant] is not None
        assert spent_before[tenant] < after <= BUDGET + 1e-9
        rounds_charged = 3 if tenant == 0 else 2  # bank-0 was charged for round 2 when killed
        history = participation.history
        assert sum(steps for _, _, steps in history) == rounds_charged * _steps_per_round(records)


def test_resume_refuses_without_an_unfinished_run_and_keeps_a_finished_one(
    records: Path, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="no unfinished run"):
        resume_federation(tmp_path / "nothing")
    run_federation(_config(records, rounds=1, dp=None), tmp_path / "done")
    with pytest.raises(ConfigError, match="no unfinished run"):
        resume_federation(tmp_path / "done")


def test_a_new_out_while_a_killed_run_is_unfinished_is_refused(
    records: Path, tmp_path: Path
) -> None:
    (tmp_path / "run.partial").mkdir()
    with pytest.raises(ConfigError, match="--resume"):
        run_federation(_config(records), tmp_path / "run")


def test_baselines_count_and_a_run_with_baselines_ends_the_budget(
    records: Path, tmp_path: Path
) -> None:
    config = _config(records, baselines=(PersonalizationMode.LOCAL,), rounds=1)
    run_federation(config, tmp_path / "run")
    record = load_spend(records, 0)
    assert record is not None
    methods = {p.method: p for p in record.participations}
    assert set(methods) == {"fedavg", "local"}
    assert methods["fedavg"].released
    assert not methods["local"].released
    assert record.counted() == (methods["fedavg"],)  # the local model never left: costs nothing

    fedavg_baseline = _config(records, rounds=1, baselines=(PersonalizationMode.FEDAVG,))
    fedavg_baseline = dataclasses.replace(fedavg_baseline, mode=PersonalizationMode.GROUP)
    reset_spend(records, 0, reason="test")
    reset_spend(records, 1, reason="test")
    reset_spend(records, 2, reason="test")
    run_federation(fedavg_baseline, tmp_path / "with-baseline")
    record = load_spend(records, 0)
    assert record is not None
    assert {p.method for p in record.counted()} == {"group", "fedavg"}
    composed = epsilon_for(
        AccountantKind.PRV, tuple(h for p in record.counted() for h in p.history), DELTA
    )
    assert spent_epsilon(record) == pytest.approx(composed)
    assert composed > max(p.epsilon or 0 for p in record.counted())  # both releases count


def test_a_reset_is_explicit_and_every_later_run_ledgers_it(records: Path, tmp_path: Path) -> None:
    config = _config(records, rounds=1, dp=DPSettings(target_epsilon=1.0, delta=DELTA))
    run_federation(config, tmp_path / "a")
    with pytest.raises(ConfigError, match="is spent"):
        run_federation(config, tmp_path / "b")

    assert (
        main(
            [
                "budget",
                "reset",
                str(records),
                "--tenant",
                "0",
                "--tenant",
                "1",
                "--tenant",
                "2",
                "--reason",
                "new consent period",
            ]
        )
        == 0
    )
    run_federation(config, tmp_path / "b")
    hazards = [
        str(p["text"]) for e, p in _events(tmp_path / "b", "bank-1") if e is EventType.HAZARD
    ]
    assert any("was reset on" in text and "new consent period" in text for text in hazards)
    record = load_spend(records, 1)
    assert record is not None
    assert len(record.resets) == 1
    assert record.resets[0].participations  # what was spent before is kept, not deleted


def test_a_release_without_dp_leaves_no_budget_for_a_dp_run(records: Path, tmp_path: Path) -> None:
    run_federation(_config(records, rounds=1, dp=None), tmp_path / "plain")
    assert _records_epsilon(records, 2) is None  # unbounded
    with pytest.raises(ConfigError, match="unbounded"):
        run_federation(_config(records, rounds=1), tmp_path / "private")


def test_changed_records_are_refused_rather_than_given_a_fresh_account(
    records: Path, tmp_path: Path
) -> None:
    run_federation(_config(records, rounds=1), tmp_path / "a")
    labels = records / "client_train_labels_1.npy"
    values = np.load(labels, allow_pickle=False)
    values[0] = (values[0] + 1) % 10
    np.save(labels, values, allow_pickle=False)
    with pytest.raises(ConfigError, match="accounts for other records"):
        run_federation(_config(records, rounds=1), tmp_path / "b")


def test_the_bundled_source_is_prepared_once_so_a_rerun_continues_its_spend(
    tmp_path: Path,
) -> None:
    config = RunConfig(
        name="bundled",
        mode=PersonalizationMode.FEDAVG,
        rounds=1,
        seed=0,
        data=DataConfig(tenants=3, groups=1, samples_per_tenant=120, model=ModelName.MLP),
        training=TrainingSettings(lr=0.5, batch_size=32),
        # a fixed sigma spends a part of the budget only, so that a second run has some left
        dp=DPSettings(target_epsilon=2.0, delta=DELTA, noise_multiplier=4.0),
        personalize=PersonalizeConfig(),
    )
    first = run_federation(config, tmp_path / "a")
    second = run_federation(config, tmp_path / "b")
    assert first.metrics["data_directory"] == second.metrics["data_directory"]
    budget = [p for e, p in _events(tmp_path / "b", "bank-0") if e is EventType.BUDGET_CONFIGURED]
    assert float(budget[0]["prior_epsilon"]) > 0  # type: ignore[arg-type]
    # a demonstration asks for its own copy of the public data: its budget starts at zero
    copy = run_federation(config, tmp_path / "c", copy_data=True)
    assert copy.metrics["data_directory"] == str(tmp_path / "c" / "data")
    budget = [p for e, p in _events(tmp_path / "c", "bank-0") if e is EventType.BUDGET_CONFIGURED]
    assert budget[0]["prior_epsilon"] == 0.0


def test_budget_show_prints_each_tenants_spend(
    records: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_federation(_config(records, rounds=1), tmp_path / "a")
    capsys.readouterr()
    assert main(["budget", "show", str(records)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    assert all("fedavg run" in line and "epsilon" in line for line in lines)
    document = json.loads((records / "securefed-spend" / "tenant_0.json").read_text())
    assert document["format"] == "securefed-spend"


def test_a_run_killed_between_rounds_resumes_with_nothing_lost(
    records: Path, tmp_path: Path
) -> None:
    _killed_run(_config(records, rounds=2), tmp_path / "run", tmp_path, between_rounds=True)
    summary = resume_federation(tmp_path / "run")
    assert summary.metrics["status"] == "completed"  # round 1 ended, round 2 ran after resuming
    assert summary.metrics["resumed_at"] == [2]
    assert verify_run(tmp_path / "run").ok
    for party in ("bank-0", "bank-1", "bank-2"):
        spends = [
            p["round"] for e, p in _events(tmp_path / "run", party) if e is EventType.ROUND_SPEND
        ]
        assert spends == [1, 2]
        hazards = [
            str(p["text"]) for e, p in _events(tmp_path / "run", party) if e is EventType.HAZARD
        ]
        assert any(
            "resumed after an interruption after round 1; it goes on from round 2" in t
            for t in hazards
        )
