"""End-to-end runs of ``run_federation``: small, seeded, on real bundled digits (MLP, 4 tenants).

Each test asserts outcomes a user relies on: accuracy improves over the initial model, epsilon is
reported and within budget, the ledgers verify, refusals and crashes leave an honest record.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from securefed.audit import EventType, verify_run
from securefed.audit.entry import parse_entry
from securefed.data import PartitionConfig, Scheme, prepare
from securefed.dp import load_state
from securefed.dp.spend import load_spend
from securefed.dp.steppers import DPStepper
from securefed.errors import ConfigError
from securefed.models import load_model, mlp
from securefed.runtime.config import (
    DataConfig,
    DPSettings,
    ModelName,
    PersonalizationMode,
    PersonalizeConfig,
    RunConfig,
    SegmentSource,
    SimilaritySource,
    TrainingSettings,
)
from securefed.runtime.federated import check_dropout_tolerance, run_federation


@pytest.fixture(scope="module")
def prepared_tenants(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tenants")
    prepare(
        "bundled",
        out=directory,
        config=PartitionConfig(tenants=4, groups=1, scheme=Scheme.IID, samples_per_tenant=300),
    )
    return directory


@pytest.fixture
def tenant_dir(prepared_tenants: Path, tmp_path: Path) -> Path:
    """A fresh copy of the records per test: their spend record (docs/dp.md) starts empty."""
    return Path(shutil.copytree(prepared_tenants, tmp_path / "records"))


def _config(tenant_dir: Path, **changes: object) -> RunConfig:
    base = RunConfig(
        name="t",
        mode=PersonalizationMode.FEDAVG,
        rounds=2,
        seed=1,
        data=DataConfig(directory=str(tenant_dir), model=ModelName.MLP),
        training=TrainingSettings(lr=0.5, batch_size=32),
        dp=DPSettings(target_epsilon=4.0, delta=1e-4),
        personalize=PersonalizeConfig(),
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def _events(run_dir: Path, actor: str) -> list[tuple[EventType, dict[str, object]]]:
    lines = (run_dir / "ledgers" / f"{actor}.jsonl").read_bytes().splitlines()
    entries = [parse_entry(line) for line in lines]
    return [(e.event, dict(e.payload)) for e in entries]


def test_secure_fedavg_run_learns_reports_epsilon_and_verifies(
    tenant_dir: Path, tmp_path: Path
) -> None:
    config = _config(tenant_dir, baselines=(PersonalizationMode.LOCAL,))
    summary = run_federation(config, tmp_path / "run")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics == summary.metrics
    history = metrics["history"]
    assert [h["round"] for h in history] == [0, 1, 2]
    assert history[-1]["mean_test_accuracy"] > history[0]["mean_test_accuracy"] + 0.2
    assert metrics["rounds"] == 2
    assert metrics["secure"] is True
    assert metrics["mode"] == "fedavg"
    for client in metrics["clients"]:
        assert 0 < client["epsilon"] <= config.dp.target_epsilon  # type: ignore[union-attr]
        assert client["delta"] == 1e-4
    assert metrics["dp"]["accountant"] == "prv"
    assert metrics["dp"]["noise_multiplier"] > 0
    assert set(metrics["dp"]["by_client"]) == {f"bank-{i}" for i in range(4)}
    assert set(metrics["baselines"]) == {"local"}
    assert 0 <= metrics["baselines"]["local"]["mean_test_accuracy"] <= 1
    # metrics.json, schema 2 (docs/run-config.md): the engine's record of the run
    assert metrics["schema"] == 2
    assert metrics["transport"] == "memory"
    assert metrics["tenants"] == 4
    assert metrics["model"] == {
        "kind": "mlp",
        "parameters": sum(p.numel() for p in mlp(784, 10).parameters()),
    }
    assert [h["exchanges"] for h in history] == [0, 5, 5]  # round 1's keys came with the join
    assert [h["completed"] for h in history] == [0, 4, 4]
    assert all(h["dropouts"] == {} and h["refused"] == [] for h in history)
    assert all(h["seconds"] > 0 for h in history[1:])
    assert metrics["exchanges"] == 1 + 5 + 5 + 2  # join, two rounds, finish and seal
    for party in (f"bank-{i}" for i in range(4)):
        assert metrics["bytes_sent"][party] > 0
        assert metrics["bytes_received"][party] > 0
    assert [c["id"] for c in metrics["clients"]] == [f"bank-{i}" for i in range(4)]
    assert all(c["train_samples"] + c["test_samples"] == 300 for c in metrics["clients"])
    local = metrics["baselines"]["local"]
    assert [h["exchanges"] for h in local["history"]] == [0, 1, 1]  # train only
    assert local["secure"] is True
    result = verify_run(tmp_path / "run")
    assert result.ok, result.describe()
    assert result.ledgers == 5
    # The baseline retrains every institution's records: each ledger says so, with the total.
    for actor in ("server", "bank-0", "bank-3"):
        hazards = [
            str(p["text"]) for e, p in _events(tmp_path / "run", actor) if e is EventType.HAZARD
        ]
        [baseline_hazard] = [h for h in hazards if "baselines (local)" in h]
        assert f"up to epsilon {2 * config.dp.target_epsilon:g}" in baseline_hazard  # type: ignore[union-attr]
    # FedAvg: every client ends with the same (average) model, saved without wrapper prefixes.
    models = []
    for i in range(4):
        model = mlp(784, 10)
        load_model(model, tmp_path / "run" / "models" / f"bank-{i}.safetensors")
        models.append(torch.cat([p.reshape(-1) for p in model.parameters()]))
    assert all(torch.allclose(models[0], m, atol=1e-3) for m in models[1:])


def test_spend_is_ledgered_before_training_and_unmask_is_recorded(
    tenant_dir: Path, tmp_path: Path
) -> None:
    run_federation(_config(tenant_dir), tmp_path / "run")
    client = [event for event, _ in _events(tmp_path / "run", "bank-0")]
    assert client[0] is EventType.RUN_CONFIGURED
    assert EventType.BUDGET_CONFIGURED in client
    spends = [p for e, p in _events(tmp_path / "run", "bank-0") if e is EventType.ROUND_SPEND]
    assert [s["round"] for s in spends] == [1, 2]
    assert spends[0]["epsilon"] < spends[1]["epsilon"] <= 4.0
    # each spend comes before that round's masked release
    order = [(e, p.get("round")) for e, p in _events(tmp_path / "run", "bank-0")]
    for round_ in (1, 2):
        spend_at = order.index((EventType.ROUND_SPEND, round_))
        release_at = order.index((EventType.UPDATE_RELEASED, round_))
        assert spend_at < release_at
    server = _events(tmp_path / "run", "server")
    unmasks = [p for e, p in server if e is EventType.UNMASK]
    assert [u["round"] for u in unmasks] == [1, 2]
    assert all(u["outputs"] == 1 and u["target_blinded"] is False for u in unmasks)
    assert client[-1] is EventType.CHECKPOINT
    assert server[-1][0] is EventType.CHECKPOINT


def test_budget_refusal_is_ledgered_and_epsilon_stays_within_budget(
    tenant_dir: Path, tmp_path: Path
) -> None:
    # sigma fixed explicitly so the budget runs out: round 1 reaches 2.52, round 2 would be 3.26.
    config = _config(
        tenant_dir,
        mode=PersonalizationMode.LOCAL,
        rounds=3,
        dp=DPSettings(target_epsilon=2.9, delta=1e-4, noise_multiplier=1.0),
    )
    summary = run_federation(config, tmp_path / "run")
    refusals = [p for e, p in _events(tmp_path / "run", "bank-0") if e is EventType.BUDGET_REFUSED]
    spends = [p for e, p in _events(tmp_path / "run", "bank-0") if e is EventType.ROUND_SPEND]
    assert [s["round"] for s in spends] == [1]
    assert [r["round"] for r in refusals] == [2, 3]
    assert all(r["epsilon_would_be"] > 2.9 >= r["epsilon_spent"] for r in refusals)
    assert all(c["epsilon"] <= 2.9 for c in summary.metrics["clients"])
    assert verify_run(tmp_path / "run").ok


def test_budget_refusal_in_a_secure_round_declines_the_keys_and_is_reported(
    tenant_dir: Path, tmp_path: Path
) -> None:
    """FedAvg with the same budget: every institution declines round 2's keys (ledgered as
    budget.refused before it advertises), so round 2 aggregates nothing; nobody overspends."""
    config = _config(
        tenant_dir, rounds=2, dp=DPSettings(target_epsilon=2.9, delta=1e-4, noise_multiplier=1.0)
    )
    summary = run_federation(config, tmp_path / "run")
    history = summary.metrics["history"]
    assert history[1]["completed"] == 4
    assert history[2]["refused"] == [f"bank-{i}" for i in range(4)]
    assert history[2]["completed"] == 0
    refusals = [p for e, p in _events(tmp_path / "run", "bank-2") if e is EventType.BUDGET_REFUSED]
    spends = [p for e, p in _events(tmp_path / "run", "bank-2") if e is EventType.ROUND_SPEND]
    assert [s["round"] for s in spends] == [1]
    assert [r["round"] for r in refusals] == [2]
    assert all(c["epsilon"] <= 2.9 for c in summary.metrics["clients"])
    result = verify_run(tmp_path / "run")
    assert result.ok, result.describe()


def test_a_crash_during_training_leaves_a_verifying_ledger_and_the_spend_charged(
    tenant_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"n": 0}
    original = DPStepper.step

    def failing_step(self: DPStepper, *args: object, **kwargs: object) -> None:
        calls["n"] += 1
        if calls["n"] > 4 * 7 + 2:  # in round 2 (7 DP steps per round here), client 0
            raise RuntimeError("simulated crash in the middle of local training")
        original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(DPStepper, "step", failing_step)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_federation(_config(tenant_dir, rounds=3), tmp_path / "run")
    assert not (tmp_path / "run").exists()  # only a finished run gets the name
    run_dir = tmp_path / "run.partial"
    result = verify_run(run_dir)
    assert result.ok, result.describe()
    events = _events(run_dir, "bank-0")
    spends = [p for e, p in events if e is EventType.ROUND_SPEND]
    assert [s["round"] for s in spends] == [1, 2]  # round 2 was charged before it crashed
    finished = [p for e, p in events if e is EventType.RUN_FINISHED]
    assert finished == [{"rounds": 1, "status": "interrupted"}]
    state = load_state(run_dir / "state" / "bank-0")
    assert state is not None
    assert [c.round for c in state.charges] == [1, 2]
    # the persisted epsilon is never below what the ledger says was spent
    assert state.charges[-1].epsilon >= spends[-1]["epsilon"]  # type: ignore[operator]
    # and the records' spend record holds the same charges, whatever happens to the run dir
    record = load_spend(tenant_dir, 0)
    assert record is not None
    (participation,) = record.participations
    assert participation.history == state.history
    assert participation.epsilon == state.charges[-1].epsilon


def test_group_mode_with_declared_segments_runs_securely(tenant_dir: Path, tmp_path: Path) -> None:
    config = _config(tenant_dir, mode=PersonalizationMode.GROUP, rounds=1, dp=None)
    summary = run_federation(config, tmp_path / "run")
    assert summary.metrics["partition"] == [0, 0, 0, 0]
    assert summary.metrics["dp"] is None
    assert all(c["epsilon"] is None for c in summary.metrics["clients"])
    server = _events(tmp_path / "run", "server")
    partitions = [p for e, p in server if e is EventType.PARTITION]
    assert partitions == [{"round": 0, "group_sizes": [4], "method": "declared"}]
    hazards = [p["text"] for e, p in _events(tmp_path / "run", "bank-1") if e is EventType.HAZARD]
    assert any("differential privacy is off" in str(text) for text in hazards)
    assert not any("comparison run" in str(text) for text in hazards)  # no baselines here


def test_simulated_dropouts_leave_clients_out_and_a_failed_round_degrades_the_run(
    tenant_dir: Path, tmp_path: Path
) -> None:
    # Seed 5's schedule (SHA-256 of seed, round, party): round 1 bank-1 before sharing; round 3
    # bank-0 before sharing, bank-2 before masking, bank-3 before the consistency check. At
    # 0.25 the rate's expected dropouts (1 of 4) are what N = 4, t = 3 tolerates.
    config = _config(tenant_dir, rounds=3, dropout_rate=0.25, dp=None, seed=5)
    summary = run_federation(config, tmp_path / "run")
    server = _events(tmp_path / "run", "server")
    survivors = [p for e, p in server if e is EventType.ROUND_SURVIVORS]
    assert len(survivors) == 3
    assert any(s["dropouts"] for s in survivors)
    history = summary.metrics["history"][1:]
    for record, entry in zip(survivors, history, strict=True):
        # a party left out of the sum is a dropout in the ledger and in metrics.json
        dropped = record["dropouts"]
        assert isinstance(dropped, list)
        assert {f"bank-{i}" for i in dropped} <= set(entry["dropouts"])
    assert history[0]["dropouts"] == {"bank-1": "share"}
    assert history[0]["completed"] == 3  # the others got the average of the three
    assert history[2]["completed"] == 0  # too few left to unmask: nobody gets a model
    assert [h["status"] for h in history] == ["completed", "completed", "aborted"]
    finished = [p for e, p in server if e is EventType.RUN_FINISHED]
    assert finished == [{"rounds": 3, "status": "degraded"}]  # not "completed"
    assert summary.metrics["status"] == "degraded"
    for party in ("bank-0", "bank-1", "bank-2", "bank-3"):
        ends = [p for e, p in _events(tmp_path / "run", party) if e is EventType.RUN_FINISHED]
        assert ends == [{"rounds": 3, "status": "degraded"}]
    assert verify_run(tmp_path / "run").ok


def test_every_round_without_an_aggregate_fails_the_run(tenant_dir: Path, tmp_path: Path) -> None:
    # seed 1 at 0.25: bank-0 and bank-3 drop before unmasking; 2 of 4 cannot unmask (t = 3)
    config = _config(tenant_dir, rounds=1, dropout_rate=0.25, dp=None, seed=1)
    summary = run_federation(config, tmp_path / "run")
    assert summary.metrics["status"] == "failed"
    assert summary.metrics["history"][1]["status"] in ("aborted", "no aggregate")
    server = _events(tmp_path / "run", "server")
    assert [p for e, p in server if e is EventType.RUN_FINISHED] == [
        {"rounds": 1, "status": "failed"}
    ]


def test_a_completed_run_says_so(tenant_dir: Path, tmp_path: Path) -> None:
    summary = run_federation(_config(tenant_dir, rounds=1, dp=None), tmp_path / "run")
    assert summary.metrics["status"] == "completed"
    assert [h["status"] for h in summary.metrics["history"]] == ["completed", "completed"]


def test_a_dropout_rate_the_protocol_cannot_tolerate_is_refused_before_any_write(
    tenant_dir: Path, tmp_path: Path
) -> None:
    # N = 3: t = 3, so any dropout aborts the round
    config = dataclasses.replace(
        _config(tenant_dir, dropout_rate=0.3),
        data=DataConfig(tenants=3, groups=1, samples_per_tenant=60, model=ModelName.MLP),
    )
    with pytest.raises(ConfigError, match=r"dropout_rate = 0.3 cannot be tolerated.*3 parties"):
        run_federation(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()
    # group mode: checked per group
    group = _config(
        tenant_dir,
        mode=PersonalizationMode.GROUP,
        dropout_rate=0.1,
        personalize=PersonalizeConfig(segments=(0, 0, 0, 0)),
    )
    check = _config(tenant_dir, mode=PersonalizationMode.GROUP, dropout_rate=0.1)
    check_dropout_tolerance(group, 4, None)  # one group of 4 tolerates one dropout
    # ... but not a rate that expects more than one (0.3 x 4 = 1.2 > 4 - 3)
    with pytest.raises(ConfigError, match=r"expects 1.2 dropouts per round but tolerates 1"):
        check_dropout_tolerance(dataclasses.replace(group, dropout_rate=0.3), 4, None)
    check_dropout_tolerance(dataclasses.replace(group, dropout_rate=0.25), 4, None)
    with pytest.raises(ConfigError, match="a group of 3 parties"):
        check_dropout_tolerance(check, 6, (0, 0, 0, 1, 1, 1))
    check_dropout_tolerance(dataclasses.replace(check, secure=False), 6, (0, 0, 0, 1, 1, 1))
    check_dropout_tolerance(dataclasses.replace(check, dropout_rate=0.0), 3, None)
    with pytest.raises(ConfigError, match="fedamp"):  # baselines are checked too
        check_dropout_tolerance(
            _config(
                tenant_dir,
                mode=PersonalizationMode.LOCAL,
                dropout_rate=0.1,
                baselines=(PersonalizationMode.FEDAMP,),
            ),
            3,
            None,
        )
    # a data directory's tenants are read, and the rate refused, before --out is created
    three = tmp_path / "three"
    prepare(
        "bundled",
        out=three,
        config=PartitionConfig(tenants=3, groups=1, scheme=Scheme.IID, samples_per_tenant=60),
    )
    with pytest.raises(ConfigError, match="cannot be tolerated"):
        run_federation(_config(three, dropout_rate=0.5), tmp_path / "run2")
    assert not (tmp_path / "run2").exists()


def test_an_empty_test_split_runs_and_says_there_is_no_test_data(
    tenant_dir: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    shutil.copytree(tenant_dir, data)
    for part in ("client_test_samples_0.npy", "client_test_labels_0.npy"):
        array = np.load(data / part)
        np.save(data / part, array[:0])
    for model in (ModelName.MLP, ModelName.CNN):
        config = _config(tenant_dir, rounds=1, dp=None)
        config = dataclasses.replace(config, data=DataConfig(directory=str(data), model=model))
        summary = run_federation(config, tmp_path / f"run-{model.value}")
        clients = {c["id"]: c for c in summary.metrics["clients"]}
        assert clients["bank-0"]["test_samples"] == 0
        assert clients["bank-0"]["test_accuracy"] is None  # no test data, not 0.0
        others = [clients[f"bank-{i}"]["test_accuracy"] for i in (1, 2, 3)]
        assert all(isinstance(a, float) for a in others)
        assert summary.metrics["mean_test_accuracy"] == pytest.approx(sum(others) / 3)
        assert summary.metrics["status"] == "completed"


def test_out_under_a_regular_file_is_a_configuration_error(
    tenant_dir: Path, tmp_path: Path
) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a directory"):
        run_federation(_config(tenant_dir), tmp_path / "file" / "run")
    with pytest.raises(ConfigError, match="is a file, not a directory"):
        run_federation(_config(tenant_dir), tmp_path / "file" / "deeper" / "run")
    assert (tmp_path / "file").read_text() == "x"


def test_a_run_directory_holds_one_run(tenant_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "old.txt").write_text("x")
    with pytest.raises(ConfigError, match="not empty"):
        run_federation(_config(tenant_dir), tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["old.txt"]


def test_plaintext_runs_average_in_the_clear_and_say_so(tenant_dir: Path, tmp_path: Path) -> None:
    summary = run_federation(_config(tenant_dir, secure=False, rounds=1, dp=None), tmp_path / "r")
    assert summary.metrics["secure"] is False
    hazards = [p["text"] for e, p in _events(tmp_path / "r", "server") if e is EventType.HAZARD]
    assert any("plaintext aggregation" in str(text) for text in hazards)
    assert not [e for e, _ in _events(tmp_path / "r", "server") if e is EventType.UNMASK]
    models = []
    for i in range(4):
        model = mlp(784, 10)
        load_model(model, tmp_path / "r" / "models" / f"bank-{i}.safetensors")
        models.append(torch.cat([p.reshape(-1) for p in model.parameters()]))
    assert all(torch.equal(models[0], m) for m in models[1:])  # the exact average, no encoding


@pytest.fixture
def segmented_dir(prepared_segmented: Path, tmp_path: Path) -> Path:
    """A fresh copy per test of :func:`prepared_segmented`."""
    return Path(shutil.copytree(prepared_segmented, tmp_path / "segmented-records"))


@pytest.fixture(scope="module")
def prepared_segmented(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six tenants in two concept-shift segments (each segment its own label permutation)."""
    directory = tmp_path_factory.mktemp("segmented")
    prepare(
        "bundled",
        out=directory,
        config=PartitionConfig(
            tenants=6, groups=2, scheme=Scheme.CONCEPT_SHIFT, samples_per_tenant=400
        ),
    )
    return directory


def test_learned_partition_from_the_dp_statistic_finds_the_segments_within_budget(
    segmented_dir: Path, tmp_path: Path
) -> None:
    """Group mode, segments learned from each institution's DP statistic (released once before
    round 1, charged and ledgered first): the partition is the declared one, every ε -- the
    statistic's included -- stays within the budget, and the ledgers verify."""
    config = _config(
        segmented_dir,
        mode=PersonalizationMode.GROUP,
        rounds=1,
        dp=DPSettings(target_epsilon=8.0, delta=1e-5, statistic_epsilon=2.0),
        personalize=PersonalizeConfig(
            segments=SegmentSource.LEARNED, groups=2, similarity=SimilaritySource.STATISTIC
        ),
    )
    summary = run_federation(config, tmp_path / "run")
    declared = json.loads((segmented_dir / "federation.json").read_text())
    truth = [declared["group_of_tenant"][str(i)] for i in range(6)]
    partition = summary.metrics["partition"]
    assert [partition[i] == partition[j] for i in range(6) for j in range(6)] == [
        truth[i] == truth[j] for i in range(6) for j in range(6)
    ]
    assert summary.metrics["similarity"] == "statistic"
    assert summary.metrics["dp"]["statistic_epsilon"] == 2.0
    assert summary.metrics["dp"]["statistic_noise_multiplier"] > 1.0
    spends = [p for e, p in _events(tmp_path / "run", "bank-2") if e is EventType.ROUND_SPEND]
    assert [(s["round"], s["mechanism"]) for s in spends] == [
        (0, "gaussian-statistic"),
        (1, "dp-sgd"),
    ]
    assert 1.0 < spends[0]["epsilon"] <= 2.0 < spends[1]["epsilon"] <= 8.0
    state = load_state(tmp_path / "run" / "state" / "bank-2")
    assert state is not None
    assert [c.mechanism for c in state.charges] == ["gaussian-statistic", "dp-sgd"]
    result = verify_run(tmp_path / "run")
    assert result.ok, result.describe()


def test_the_statistic_needs_a_mode_that_learns_similarities(
    segmented_dir: Path, tmp_path: Path
) -> None:
    config = _config(
        segmented_dir, personalize=PersonalizeConfig(similarity=SimilaritySource.STATISTIC)
    )
    with pytest.raises(ConfigError, match="learns similarities"):
        run_federation(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_state_directories_are_private_and_their_secrets_0600(
    tenant_dir: Path, tmp_path: Path
) -> None:
    run_federation(_config(tenant_dir, rounds=1), tmp_path / "run")
    state = tmp_path / "run" / "state" / "bank-0"
    assert state.stat().st_mode & 0o777 == 0o700
    for name in ("dp_accountant.json", "model.safetensors", "round-guard.json"):
        assert (state / name).stat().st_mode & 0o077 == 0, name
    record = tenant_dir / "securefed-spend"
    assert record.stat().st_mode & 0o077 == 0
    assert (record / "tenant_0.json").stat().st_mode & 0o077 == 0
