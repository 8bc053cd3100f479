"""The deployment's coordinator and institution agents, wired together in one process.

No Flower here: :class:`LoopbackExchange` moves each deployment message as bytes straight to the
institution's ``handle``, so these tests check the deployment logic itself -- that it is the
simulation's protocol (same models out for the same seeds), that a party lost in the middle of a
round becomes a dropout the protocol recovers from, that its spend is charged for every round it
started, that it rejoins with its state after a restart, and that all ledgers verify together.
The same logic over a real SuperLink and SuperNodes is `tests/integration/test_flower_deploy.py`.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from securefed.audit import verify_run
from securefed.data import PartitionConfig, Scheme, load_tenants, num_classes, prepare
from securefed.dp import load_state
from securefed.errors import SecureFedError
from securefed.models import flat_parameters, load_model, mlp
from securefed.runtime.config import (
    DataConfig,
    DPSettings,
    ModelName,
    PersonalizeConfig,
    RunConfig,
    RunMode,
    TrainingSettings,
)
from securefed.runtime.federated import run_federation
from securefed.runtime.flower.coordinator import Coordinator, PhaseTimeouts
from securefed.runtime.flower.institution import MODEL_FILE, Institution
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


def _config(tenant_dir: Path, rounds: int = 2) -> RunConfig:
    return RunConfig(
        name="deploy",
        mode=RunMode.GROUP,
        rounds=rounds,
        seed=3,
        data=DataConfig(directory=str(tenant_dir), model=ModelName.MLP),
        training=TrainingSettings(lr=0.5, batch_size=32),
        dp=DPSettings(target_epsilon=4.0, delta=1e-4),
        personalize=PersonalizeConfig(segments=(0,) * N),
    )


class LoopbackExchange:
    """Deployment messages as bytes, handed to in-process institutions (node id = 100 + slot).

    ``before`` is called before every exchange with its number (1, 2, ...) and the kinds of
    the messages in it; it may kill or start institutions.
    """

    def __init__(self) -> None:
        self.live: dict[int, Institution] = {}
        self.calls = 0
        self.before: Callable[[int, set[str]], None] = lambda call, kinds: None
        self._next = 100

    def attach(self, institution: Institution) -> int:
        node = self._next
        self._next += 1
        self.live[node] = institution
        return node

    def kill(self, party: str) -> None:
        for node, institution in list(self.live.items()):
            if institution.party_id == party:
                institution.close()
                del self.live[node]

    def nodes(self) -> list[int]:
        return sorted(self.live)

    def exchange(self, requests: Mapping[int, bytes], *, timeout: float) -> dict[int, bytes]:
        self.calls += 1
        self.before(self.calls, {decode_deploy(data).kind for data in requests.values()})
        replies = {}
        for node, data in requests.items():
            institution = self.live.get(node)
            if institution is None:
                continue  # silent: a dead node
            try:
                reply = institution.handle(decode_deploy(data))
            except SecureFedError as exc:
                reply = DeployMessage("error", {"reason": str(exc).encode()})
            replies[node] = reply.to_bytes()
        return replies


def _institution(
    config: RunConfig, federation: Federation, index: int, tenant_dir: Path, state: Path
) -> Institution:
    tenants = load_tenants(tenant_dir)
    return Institution(
        config=config,
        roster=federation.roster,
        identity=federation.client_keys[index],
        party_id=federation.roster.client(index).party_id,
        tenant=tenants[index],
        num_classes=num_classes(tenants),
        state_dir=state / federation.roster.client(index).party_id,
        reproducible=True,
    )


def _deploy(
    config: RunConfig,
    federation: Federation,
    tenant_dir: Path,
    out: Path,
    before: Callable[[LoopbackExchange, int, set[str]], None] | None = None,
) -> dict[str, Any]:
    exchange = LoopbackExchange()
    for i in range(N):
        exchange.attach(_institution(config, federation, i, tenant_dir, out / "institutions"))
    if before is not None:
        exchange.before = lambda call, kinds: before(exchange, call, kinds)
    coordinator = Coordinator(
        config=config,
        roster=federation.roster,
        identity=federation.server_key,
        state_dir=out / "coordinator",
        exchange=exchange,
        timeouts=PhaseTimeouts(join=0.0),
    )
    metrics = coordinator.run()
    for institution in exchange.live.values():
        institution.close()
    return metrics


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


def _model_vector(path: Path) -> np.ndarray:
    model = mlp(784, 10)
    load_model(model, path)
    return flat_parameters(model)


def test_the_deployment_computes_what_the_simulation_computes(
    tenant_dir: Path, tmp_path: Path
) -> None:
    config = _config(tenant_dir)
    federation = make_federation(N)
    metrics = _deploy(config, federation, tenant_dir, tmp_path / "deploy")
    run_federation(config, tmp_path / "sim")
    assert metrics["rounds"] == 2
    for i in range(N):
        party = federation.roster.client(i).party_id
        deployed = _model_vector(tmp_path / "deploy" / "institutions" / party / MODEL_FILE)
        simulated = _model_vector(tmp_path / "sim" / "models" / f"{party}.safetensors")
        initial = flat_parameters(mlp(784, 10, seed=config.seed))
        # Same seeds, same data order and DP noise: the only difference is the fixed-point
        # encoding's stochastic rounding of the secure sum (2^-16 per coordinate and client).
        assert np.max(np.abs(deployed - simulated)) < 1e-3
        assert not np.allclose(deployed, initial), "nothing trained"
    assert verify_run(_gather_ledgers(tmp_path / "deploy", federation)).ok


def test_a_party_lost_mid_round_is_recovered_charged_and_rejoins_after_restart(
    tenant_dir: Path, tmp_path: Path
) -> None:
    config = _config(tenant_dir)
    federation = make_federation(N)
    out = tmp_path / "deploy"
    victim = "bank-2"
    protocol_exchanges = 0
    restarted = False

    def before(exchange: LoopbackExchange, call: int, kinds: set[str]) -> None:
        nonlocal protocol_exchanges, restarted
        if kinds == {"protocol"}:
            protocol_exchanges += 1
            if protocol_exchanges == 2:  # round 1, after its masked input was asked for
                exchange.kill(victim)
        if kinds == {"finish"} and not restarted:
            restarted = True  # round 1 ends: the institution is back, from its state dir
            exchange.attach(_institution(config, federation, 2, tenant_dir, out / "institutions"))

    metrics = _deploy(config, federation, tenant_dir, out, before)
    first, second = metrics["history"]
    assert victim in first["dropouts"]
    assert sorted(first["completed"]) == ["bank-0", "bank-1", "bank-3"]
    assert sorted(second["completed"]) == ["bank-0", "bank-1", "bank-2", "bank-3"]
    state = load_state(out / "institutions" / victim / "trainer")
    assert state is not None
    assert [c.round for c in state.charges] == [1, 2]  # round 1 charged though it died there
    assert verify_run(_gather_ledgers(out, federation)).ok
