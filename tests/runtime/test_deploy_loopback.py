"""The deployment's coordinator and agents, wired together in one process.

No Flower here: :class:`~securefed.testing.loopback.LoopbackExchange` moves each engine request
as bytes straight to the institution an agent builds (:func:`run_loopback` runs the ServerApp's
driver, :func:`securefed.runtime.flower.server.run_server`, over it). These tests check the
deployment logic itself: that every mode computes the simulation's models for the same seeds,
that a party lost in the middle of a round becomes a dropout the protocol recovers from, that
its spend is charged for every round it started, that it rejoins with its state after a
restart, that a rogue node cannot take an institution's place, and that all ledgers verify
together. The same logic over a real SuperLink and SuperNodes is
`tests/integration/test_flower_deploy.py`.
"""

from __future__ import annotations

import dataclasses
import json
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
from securefed.dp.spend import SPEND_DIR, load_spend, spent_epsilon
from securefed.errors import ConfigError
from securefed.models import flat_parameters, load_model, mlp
from securefed.runtime.config import RunConfig, load_run_config
from securefed.runtime.engine import messages as m
from securefed.runtime.federated import run_federation
from securefed.runtime.flower.agent import PARTICIPATION_FILE, build_institution
from securefed.runtime.flower.deployment import METRICS_FILE, MODEL_FILE, SEED_FILE, STATISTIC_FILE
from securefed.runtime.flower.launch import write_test_parties
from securefed.testing.agent import CrashPoint
from securefed.testing.loopback import DeploymentFiles, LoopbackExchange, run_loopback

N = 4
SEED = 3
TOLERANCE = 1e-2  # of what training moved a model: the codec's rounding is the only difference
PARTIES = tuple(f"bank-{i}" for i in range(N))
CONFIG = """\
name = "deploy"
rounds = {rounds}
seed = {seed}
{mode}
[data]
directory = "{data}"
model = "mlp"

[training]
lr = 0.5
batch_size = 32

[dp]
target_epsilon = 4.0
delta = 1e-4

[personalize]
{personalize}
"""
GROUP = ('mode = "group"', "segments = [0, 0, 0, 0]")
LEARNED = ('mode = "group"', 'segments = "learned"\ngroups = 1\nsimilarity = "statistic"')
MODES = {
    "group": GROUP,
    "group-learned-statistic": LEARNED,
    "fedavg": ('mode = "fedavg"', ""),
    "fedamp": ('mode = "fedamp"', ""),
    "heurfedamp": ('mode = "heurfedamp"', ""),
    "fedamp-statistic": ('mode = "fedamp"', 'similarity = "statistic"'),
    "local": ('mode = "local"', ""),
}


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tenants, keys and roster every test's deployment reads."""
    root = tmp_path_factory.mktemp("deployment")
    prepare(
        "bundled",
        out=root / "data",
        config=PartitionConfig(tenants=N, groups=1, scheme=Scheme.IID, samples_per_tenant=200),
    )
    write_test_parties(root, N)
    return root


def _files(shared: Path, tmp_path: Path, mode: str = "group", rounds: int = 2) -> DeploymentFiles:
    """The deployment of ``mode`` on a fresh copy of the records (their spend record, next to
    them, starts empty: docs/dp.md)."""
    top, personalize = MODES[mode]
    data = shutil.copytree(shared / "data", tmp_path / "data")
    config = tmp_path / "run.toml"
    config.write_text(
        CONFIG.format(rounds=rounds, seed=SEED, mode=top, data=data, personalize=personalize)
    )
    return DeploymentFiles(config, shared / "roster.toml", shared / "keys", data, 10, PARTIES)


def _simulated(files: DeploymentFiles, tmp_path: Path) -> RunConfig:
    """The deployment's configuration on another fresh copy of the same records: the
    deployment's spend must not change the simulation's noise."""
    config = load_run_config(files.config)
    data = shutil.copytree(
        files.data, tmp_path / "sim-data", ignore=shutil.ignore_patterns(SPEND_DIR)
    )
    return dataclasses.replace(config, data=dataclasses.replace(config.data, directory=str(data)))


def _gather_ledgers(files: DeploymentFiles, out: Path) -> Path:
    """What an auditor gets: the roster and every party's ledger, in one run-like directory."""
    ledgers = sorted(out.glob("*/**/ledgers/*.jsonl"))
    assert len(ledgers) == N + 1
    audit = out.parent / f"{out.name}-audit"
    (audit / "ledgers").mkdir(parents=True)
    shutil.copy(files.roster, audit / "roster.toml")
    for ledger in ledgers:
        shutil.copy(ledger, audit / "ledgers" / ledger.name)
    return audit


def _model(path: Path) -> npt.NDArray[np.float64]:
    model = mlp(784, 10)
    load_model(model, path)
    return flat_parameters(model)


def _deployed(out: Path, party: str) -> npt.NDArray[np.float64]:
    return _model(out / "nodes" / party / MODEL_FILE)


@pytest.mark.parametrize("mode", sorted(MODES))
def test_every_mode_deploys_and_computes_what_the_simulation_computes(
    shared: Path, tmp_path: Path, mode: str
) -> None:
    files = _files(shared, tmp_path, mode)
    metrics = run_loopback(files, tmp_path / "deploy", seed=SEED)
    run_federation(_simulated(files, tmp_path), tmp_path / "sim")
    assert metrics.rounds == 2
    assert metrics.transport == "flower"
    assert metrics.echo_rtt_s is not None
    simulation = json.loads((tmp_path / "sim" / METRICS_FILE).read_text())["history"]
    # Attention modes withhold the round-2 outputs whose rows, with round 1's, would expose a
    # party (docs/fedamp.md, "Across rounds"; with N = 4 most do): the same in both runtimes.
    withheld = [len(e.withheld) for e in metrics.history]
    assert withheld == [len(e.get("withheld", [])) for e in simulation]
    assert [e.completed for e in metrics.history] == [0, N, N - withheld[2]]
    assert withheld[2] == 0 or mode in ("fedamp", "heurfedamp")
    assert (tmp_path / "deploy" / "coordinator" / METRICS_FILE).exists()
    initial = flat_parameters(mlp(784, 10, seed=SEED))
    for party in PARTIES:
        deployed = _deployed(tmp_path / "deploy", party)
        simulated = _model(tmp_path / "sim" / "models" / f"{party}.safetensors")
        moved = np.linalg.norm(simulated - initial)
        assert moved > 0.1, "nothing trained"
        # Same seeds: same data order, DP noise, sketch seed and partition; the only difference
        # is the fixed-point codec's stochastic rounding in the secure aggregation.
        assert np.linalg.norm(deployed - simulated) < TOLERANCE * moved, party
        if mode == "group":  # 2^-16 per coordinate and client, through round 2's training
            assert np.max(np.abs(deployed - simulated)) < 1e-3
    assert verify_run(_gather_ledgers(files, tmp_path / "deploy")).ok


@pytest.mark.parametrize("mode", ["group", "fedamp", "heurfedamp", "group-learned-statistic"])
def test_a_party_lost_mid_round_is_recovered_charged_and_rejoins_after_restart(
    shared: Path, tmp_path: Path, mode: str
) -> None:
    files = _files(shared, tmp_path, mode)
    out = tmp_path / "deploy"
    metrics = run_loopback(files, out, seed=SEED, crash=("bank-2", CrashPoint.parse("1:step:mask")))
    first, second = (e for e in metrics.history if e.round >= 1)
    assert first.dropouts == {"bank-2": "mask"}
    assert first.completed == N - 1
    assert second.dropouts == {}  # restarted before round 1 ended: back for round 2
    # attention modes: round 2's rows, with round 1's, may expose a party (bank-2's coordinate
    # came back): those outputs are withheld (docs/fedamp.md, "Across rounds")
    assert second.completed == N - len(second.withheld)
    assert second.withheld == [] or mode in ("fedamp", "heurfedamp")
    state = load_state(out / "nodes" / "bank-2" / "trainer")
    assert state is not None
    statistic = [0] if mode.endswith("statistic") else []
    assert [c.round for c in state.charges] == [*statistic, 1, 2]  # round 1 charged though lost
    assert verify_run(_gather_ledgers(files, out)).ok
    ledger = (out / "nodes" / "bank-2" / "ledgers" / "bank-2.jsonl").read_text()
    assert ledger.count('"event":"run.configured"') == 1  # the restart continued its ledger
    if mode != "group":  # the sketch seed, kept across the restart
        assert (out / "nodes" / "bank-2" / SEED_FILE).stat().st_mode & 0o077 == 0
    if mode.endswith("statistic"):
        assert ledger.count('"mechanism":"gaussian-statistic"') == 1  # released once, kept


def test_a_party_back_only_after_round_2_began_sits_it_out(shared: Path, tmp_path: Path) -> None:
    files = _files(shared, tmp_path, "group-learned-statistic", rounds=3)
    out = tmp_path / "deploy"
    metrics = run_loopback(
        files,
        out,
        seed=SEED,
        crash=("bank-1", CrashPoint.parse("1:step:mask")),
        restart_after=CrashPoint.parse("2:train"),
    )
    assert [e.dropouts for e in metrics.history] == [
        {},
        {"bank-1": "mask"},
        {"bank-1": "advertise"},  # its keys for round 2 were asked for while it was down
        {},
    ]
    assert [e.completed for e in metrics.history] == [0, N - 1, N - 1, N]
    state = load_state(out / "nodes" / "bank-1" / "trainer")
    assert state is not None
    assert [c.round for c in state.charges] == [0, 1, 3]
    assert (out / "nodes" / "bank-1" / STATISTIC_FILE).exists()
    assert verify_run(_gather_ledgers(files, out)).ok


class RogueNodeExchange(LoopbackExchange):
    """One extra node, admitted like any SuperNode, that answers every join claiming to be
    bank-1: first with bank-1's genuine reply stripped of its signature, later with that
    genuine signed reply replayed. It answers nothing else. Its replies come after the genuine
    ones, so a coordinator that believed them would route bank-1's requests to it."""

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
        rogue = requests.get(self.ROGUE)
        if rogue and isinstance(m.decode(rogue), m.Join):
            bank_1 = replies.get(1)
            if self.recorded is None and bank_1 is not None:
                self.recorded = bank_1
                signed = m.decode(bank_1)
                assert isinstance(signed, m.Joined)
                unsigned = m.Joined(
                    signed.party, signed.head, signed.dim, signed.info, signed.evaluation,
                    signed.setup_key, signed.advert,
                )  # fmt: skip
                replies[self.ROGUE] = m.encode(unsigned)
            elif self.recorded is not None:
                replies[self.ROGUE] = self.recorded
            self.claims += 1
        return replies


def test_a_rogue_node_cannot_take_an_institutions_place(shared: Path, tmp_path: Path) -> None:
    files = _files(shared, tmp_path)
    exchange = RogueNodeExchange()
    metrics = run_loopback(files, tmp_path / "deploy", seed=SEED, exchange=exchange)
    assert exchange.claims >= 2  # an unsigned claim first, then replayed signed ones
    assert [e.completed for e in metrics.history] == [0, N, N]
    assert verify_run(_gather_ledgers(files, tmp_path / "deploy")).ok
    server = (tmp_path / "deploy" / "coordinator" / "ledgers" / "server.jsonl").read_text()
    assert "node 999: join refused" in server  # ledgered by the coordinator


def test_the_budget_follows_the_records_across_deployments(shared: Path, tmp_path: Path) -> None:
    """A second deployment on the same records, with fresh state directories, continues their
    spend (docs/dp.md): the agents' accountants are composed through the spend record next to
    the records, not reset with the state directory."""
    files = _files(shared, tmp_path, "fedavg", rounds=1)
    text = files.config.read_text(encoding="utf-8")  # a fixed sigma spends part of the budget
    files.config.write_text(text.replace("delta = 1e-4", "delta = 1e-4\nnoise_multiplier = 3.0"))
    run_loopback(files, tmp_path / "first", seed=SEED)
    first = load_spend(files.data, 0)
    assert first is not None
    (participation,) = first.counted()
    spent = participation.epsilon
    assert spent is not None
    assert 0 < spent <= 4.0

    run_loopback(files, tmp_path / "second", seed=SEED)  # new state directories, same records
    second = load_spend(files.data, 0)
    assert second is not None
    assert len(second.counted()) == 2
    total = spent_epsilon(second)
    assert total is not None
    assert spent < total <= 4.0 + 1e-9
    ledger = tmp_path / "second" / "nodes" / "bank-0" / "ledgers" / "bank-0.jsonl"
    budgets = [
        e.payload
        for e in map(parse_entry, ledger.read_bytes().splitlines())
        if e.event is EventType.BUDGET_CONFIGURED
    ]
    assert budgets[0]["prior_epsilon"] == pytest.approx(spent)

    # a state directory whose ledger goes on, but that lost its participation id, is refused
    state = tmp_path / "second" / "nodes" / "bank-1"
    (state / PARTICIPATION_FILE).unlink()
    with pytest.raises(ConfigError, match="no readable participation"):
        build_institution(files.agent(1, state))
