"""The deployment's coordinator and institution agents, wired together in one process.

No Flower here: :class:`~securefed.runtime.flower.loopback.LoopbackExchange` moves each
deployment message as bytes straight to the institution's ``handle``, so these tests check the
deployment logic itself: that it is the simulation's protocol (same models out for the same
seeds), that a party lost in the middle of a round becomes a dropout the protocol recovers
from, that its spend is charged for every round it started, that it rejoins with its state
after a restart, and that all ledgers verify together. The same logic over a real SuperLink and
SuperNodes is `tests/integration/test_flower_deploy.py`.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from securefed.audit import EventType, verify_run
from securefed.audit.entry import parse_entry
from securefed.data import PartitionConfig, Scheme, prepare
from securefed.dp import load_state
from securefed.models import flat_parameters, load_model, mlp
from securefed.runtime.config import (
    DataConfig,
    DPSettings,
    ModelName,
    PersonalizeConfig,
    RunConfig,
    PersonalizationMode,
    TrainingSettings,
)
from securefed.runtime.federated import run_federation
from securefed.runtime.flower.institution import MODEL_FILE
from securefed.runtime.flower.loopback import LoopbackExchange, run_loopback
from securefed.runtime.flower.wire import DeployMessage, decode_deploy
from securefed.secagg.roster import save_roster
from securefed.testing import Federation, make_federation

N = 4


@pytest.fixture(scope="module")
def tenant_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tenants")
    prepare(
        "bundled",
        out=directory,
        config=PartitionConfig(tenants=N, groups=1, scheme=Scheme.IID, samples_per_tenant=200),
    )
    return directory


def _config(tenant_dir: Path, mode: PersonalizationMode = PersonalizationMode.GROUP) -> RunConfig:
    return RunConfig(
        name="deploy",
        mode=mode,
        rounds=2,
        seed=3,
        data=DataConfig(directory=str(tenant_dir), model=ModelName.MLP),
        training=TrainingSettings(lr=0.5, batch_size=32),
        dp=DPSettings(target_epsilon=4.0, delta=1e-4),
        personalize=PersonalizeConfig(segments=(0,) * N),
    )


def _gather_ledgers(out: Path, federation: Federation) -> Path:
    """What an auditor gets: the roster and every party's ledger, in one run-like directory."""
    ledgers = sorted(out.rglob("ledgers/*.jsonl"))
    assert len(ledgers) == N + 1
    audit = out.parent / f"{out.name}-audit"
    (audit / "ledgers").mkdir(parents=True)
    save_roster(federation.roster, audit / "roster.toml")
    for ledger in ledgers:
        shutil.copy(ledger, audit / "ledgers" / ledger.name)
    return audit


def _model_vector(path: Path) -> npt.NDArray[np.float64]:
    model = mlp(784, 10)
    load_model(model, path)
    return flat_parameters(model)


def test_the_deployment_computes_what_the_simulation_computes(
    tenant_dir: Path, tmp_path: Path
) -> None:
    config = _config(tenant_dir)
    federation = make_federation(N)
    metrics = run_loopback(config, federation, tmp_path / "deploy")
    run_federation(config, tmp_path / "sim")
    assert metrics["rounds"] == 2
    initial = flat_parameters(mlp(784, 10, seed=config.seed))
    for i in range(N):
        party = federation.roster.client(i).party_id
        deployed = _model_vector(tmp_path / "deploy" / "institutions" / party / MODEL_FILE)
        simulated = _model_vector(tmp_path / "sim" / "models" / f"{party}.safetensors")
        # Same seeds, same data order and DP noise: the only difference is the fixed-point
        # encoding's stochastic rounding of the secure sum (2^-16 per coordinate and client).
        assert np.max(np.abs(deployed - simulated)) < 1e-3
        assert np.max(np.abs(deployed - initial)) > 1e-2, "nothing trained"
    assert verify_run(_gather_ledgers(tmp_path / "deploy", federation)).ok


@pytest.mark.parametrize("mode", [PersonalizationMode.GROUP, PersonalizationMode.FEDAMP, PersonalizationMode.HEURFEDAMP])
def test_a_party_lost_mid_round_is_recovered_charged_and_rejoins_after_restart(
    tenant_dir: Path, tmp_path: Path, mode: PersonalizationMode
) -> None:
    config = _config(tenant_dir, mode)
    federation = make_federation(N)
    out = tmp_path / "deploy"
    metrics = run_loopback(config, federation, out, crash="bank-2")
    first, second = metrics["history"]
    assert first["dropouts"] == {"bank-2": "mask"}
    assert sorted(first["completed"]) == ["bank-0", "bank-1", "bank-3"]
    assert sorted(second["completed"]) == ["bank-0", "bank-1", "bank-2", "bank-3"]
    state = load_state(out / "institutions" / "bank-2" / "trainer")
    assert state is not None
    assert [c.round for c in state.charges] == [1, 2]  # round 1 charged though it died there
    assert verify_run(_gather_ledgers(out, federation)).ok
    ledger = (out / "institutions" / "bank-2" / "ledgers" / "bank-2.jsonl").read_bytes()
    events = [parse_entry(line).event for line in ledger.splitlines()]
    assert events.count(EventType.RUN_CONFIGURED) == 1  # the restart continued its ledger


@pytest.mark.parametrize("mode", [PersonalizationMode.FEDAMP, PersonalizationMode.HEURFEDAMP])
def test_attention_mode_deploys_close_to_the_simulation(
    tenant_dir: Path, tmp_path: Path, mode: PersonalizationMode
) -> None:
    """Attention mode cannot match the simulation bit for bit: the sketch seed is drawn by a
    client in each round (the simulation derives it from the run seed), so xi differs by the
    sketch's estimation error. The personalized models must still be close, and learned."""
    config = _config(tenant_dir, mode)
    federation = make_federation(N)
    metrics = run_loopback(config, federation, tmp_path / "deploy")
    run_federation(config, tmp_path / "sim")
    assert [sorted(r["completed"]) for r in metrics["history"]] == [
        [f"bank-{i}" for i in range(N)]
    ] * 2
    initial = flat_parameters(mlp(784, 10, seed=config.seed))
    for i in range(N):
        party = federation.roster.client(i).party_id
        deployed = _model_vector(tmp_path / "deploy" / "institutions" / party / MODEL_FILE)
        simulated = _model_vector(tmp_path / "sim" / "models" / f"{party}.safetensors")
        moved = np.linalg.norm(simulated - initial)
        assert moved > 0.1
        # measured: at most 0.11 % of the training step (group mode: 0.03 %)
        assert np.linalg.norm(deployed - simulated) < 1e-2 * moved
    assert verify_run(_gather_ledgers(tmp_path / "deploy", federation)).ok


class RogueNodeExchange(LoopbackExchange):
    """One extra node, admitted like any SuperNode, that answers every hello claiming to be
    bank-1: in round 1 with bank-1's genuine reply stripped of its signature, later with that
    genuine signed reply replayed. It answers nothing else. Its replies come after the genuine
    ones, so a coordinator that believed them would route bank-1's messages to it."""

    ROGUE = 999

    def __init__(self) -> None:
        super().__init__()
        self.recorded: bytes | None = None
        self.claims = 0

    def nodes(self) -> list[int]:
        return [*super().nodes(), self.ROGUE]

    def exchange(self, requests: Mapping[int, bytes], *, timeout: float) -> dict[int, bytes]:
        genuine = {n: d for n, d in requests.items() if n != self.ROGUE}
        replies = super().exchange(genuine, timeout=timeout)
        if self.ROGUE in requests and decode_deploy(requests[self.ROGUE]).kind == "hello":
            (bank_1,) = [n for n, inst in self.live.items() if inst.party_id == "bank-1"]
            if self.recorded is None:
                self.recorded = replies[bank_1]
                signed = decode_deploy(self.recorded)
                unsigned = {k: v for k, v in signed.fields.items() if k != "signature"}
                replies[self.ROGUE] = DeployMessage("hello", unsigned).to_bytes()
            else:
                replies[self.ROGUE] = self.recorded
            self.claims += 1
        return replies


def test_a_rogue_node_cannot_take_an_institutions_place(tenant_dir: Path, tmp_path: Path) -> None:
    config = _config(tenant_dir)
    federation = make_federation(N)
    exchange = RogueNodeExchange()
    metrics = run_loopback(config, federation, tmp_path / "deploy", exchange=exchange)
    assert exchange.claims == 2  # an unsigned claim in round 1, a replayed signed one in round 2
    everyone = [f"bank-{i}" for i in range(N)]
    assert [sorted(r["completed"]) for r in metrics["history"]] == [everyone, everyone]
    assert verify_run(_gather_ledgers(tmp_path / "deploy", federation)).ok
