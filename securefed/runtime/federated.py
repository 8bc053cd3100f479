"""``run_federation``: a whole federated run in one process, on the one engine.

The coordinator and every institution are the engine's (:mod:`securefed.runtime.engine`), the
same objects a Flower deployment runs; here the in-memory transport
(:class:`~securefed.runtime.engine.memory.MemoryTransport`) carries their messages. Per round:
every party binds its ledger head into the round's signed transcript; each institution trains
locally (DP-SGD; the spend is ledgered before its first step; a budget refusal is ledgered and the
round goes on without it); the round's protocol aggregates (or the plaintext reference with
``secure = false``); each completed party computes or receives its personalized model, and
checkpoints the round's heads. At the end every
party records ``run.finished`` and the same final checkpoint, and the run directory holds::

    roster.toml              the parties and their identity keys (public halves)
    config.toml              the configuration as run (its SHA-256 is in every ledger)
    metrics.json             the run's record (docs/run-config.md, "metrics.json")
    ledgers/<party>.jsonl    one signed, hash-chained ledger per party
    state/<party>/           each client's accountant state (epsilon continues on restart)
    models/<party>.safetensors   each client's final personalized model
    data/                    the prepared seed layout (unless the config names a directory)
    baselines/<mode>/        each comparison run: its roster, ledgers and accountant state

Identity keys are generated in memory for the run and discarded (a simulation); a deployment
uses each institution's own key files (``securefed keys``).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from securefed import __version__
from securefed.audit import Hazard, Ledger, RunConfigured, ledger_path
from securefed.data import TenantData
from securefed.dp import AccountantKind, DPConfig, PrivateTrainer, TrainingConfig
from securefed.errors import ConfigError
from securefed.models import build_model, save_model
from securefed.runtime.config import (
    ModelName,
    PersonalizationMode,
    RunConfig,
    SegmentSource,
    SimilaritySource,
)
from securefed.runtime.engine.coordinator import Coordinator
from securefed.runtime.engine.institution import Institution
from securefed.runtime.engine.learner import Learner
from securefed.runtime.engine.memory import STAGES, Drop, Dropouts, MemoryTransport, drive
from securefed.runtime.engine.metrics import RunMetrics, write_metrics
from securefed.runtime.engine.settings import EngineSettings, round_params
from securefed.runtime.nodes import ClientNode
from securefed.runtime.seeded import seeded_random_bytes_unsafe
from securefed.runtime.tenants import Tenants, load_run_tenants
from securefed.secagg import default_threshold
from securefed.secagg.federation import Federation, make_federation
from securefed.secagg.roster import Roster, save_roster

__all__ = [
    "METRICS_FILE",
    "EngineRun",
    "RoundReport",
    "RunSummary",
    "build_client",
    "build_clients",
    "build_engine_run",
    "check_dropout_tolerance",
    "client_seed",
    "run_configured",
    "run_federation",
]

METRICS_FILE = "metrics.json"
CONFIG_FILE = "config.toml"
ROSTER_FILE = "roster.toml"
SERVER_ID = "server"

ProgressFn = Callable[["RoundReport"], None]


@dataclass(frozen=True, slots=True)
class RoundReport:
    """One round's numbers, as the progress bar shows them."""

    round: int
    rounds: int
    mean_test_accuracy: float
    max_epsilon: float | None
    own_segment_weight: float | None
    completed: int
    refused: int
    seconds: float


@dataclass(frozen=True)
class RunSummary:
    """What :func:`run_federation` produced: ``metrics`` is exactly what ``metrics.json``
    holds and ``directory`` is the run directory."""

    directory: Path
    metrics: dict[str, Any]
    ledgers: tuple[Path, ...] = field(default=())

    @property
    def mean_test_accuracy(self) -> float:
        return float(self.metrics["mean_test_accuracy"])


def run_federation(
    config: RunConfig,
    out: str | os.PathLike[str],
    *,
    progress: ProgressFn | None = None,
    baseline_progress: Callable[[PersonalizationMode, RoundReport], None] | None = None,
) -> RunSummary:
    """Run ``config`` into the run directory ``out`` (created; it must be empty or absent), then
    each of ``config.baselines`` on the same tenants with the same budget and compute.

    Baseline runs are comparisons: each keeps its roster, ledgers and accountant state under
    ``out/baselines/<mode>/`` and writes no model or metrics file of its own; its results go
    into ``metrics.json`` under ``baselines``. (A real federation runs one method: each extra
    method spends each institution's budget again.)

    Raises:
        ConfigError: bad configuration or data, or a non-empty ``out`` -- before any training.
        Training errors propagate; the ledgers then end with ``run.finished`` status
        ``interrupted`` and still verify.
    """
    started = time.perf_counter()
    if config.data.directory is None and config.data.tenants < 3:
        raise ConfigError(f"data.tenants must be >= 3, got {config.data.tenants}")
    if config.rounds < 1:
        raise ConfigError(f"rounds must be >= 1, got {config.rounds}")
    if config.personalize.similarity is SimilaritySource.STATISTIC and not config.learns_similarity:
        raise ConfigError(
            f'personalize.similarity = "statistic" needs a mode that learns similarities '
            f'(fedamp, heurfedamp, or group with segments = "learned"), not {config.mode.value}'
        )
    run_dir = _check_run_dir(Path(out))
    if config.data.directory is None:
        # the bundled source's tenant count is known; a declared partition comes with the data
        check_dropout_tolerance(config, config.data.tenants, None)
        data = load_run_tenants(config.data, _fresh_run_dir(run_dir))
        check_dropout_tolerance(config, len(data.tenants), data.segments)
    else:  # read (and checked) before anything is written
        data = load_run_tenants(config.data, run_dir)
        check_dropout_tolerance(config, len(data.tenants), data.segments)
        _fresh_run_dir(run_dir)
    metrics, ledgers = _run_one(config, run_dir, data, main=True, progress=progress)
    for mode in config.baselines:
        report = None
        if baseline_progress is not None:
            report = functools.partial(baseline_progress, mode)
        baseline, _ = _run_one(
            dataclasses.replace(config, mode=mode, baselines=()),
            run_dir / "baselines" / mode.value,
            data,
            main=False,
            progress=report,
        )
        metrics.baselines[mode.value] = baseline.baseline()
    metrics.seconds = round(time.perf_counter() - started, 3)
    write_metrics(run_dir / METRICS_FILE, metrics)
    return RunSummary(run_dir, metrics.to_dict(), ledgers)


@dataclass
class EngineRun:
    """One method's parties, built and ready to drive: the coordinator, the institutions (by
    node id = roster index) over a :class:`MemoryTransport`, their learners and ledgers."""

    federation: Federation
    coordinator: Coordinator
    transport: MemoryTransport
    clients: list[ClientNode]
    ledgers: dict[str, Ledger]

    def close(self) -> None:
        for ledger in self.ledgers.values():
            ledger.close()


def build_engine_run(
    config: RunConfig,
    run_dir: Path,
    data: Tenants,
    *,
    main: bool = True,
    learner: Callable[[ClientNode], Learner] | None = None,
) -> EngineRun:
    """Everything :func:`run_federation` drives for one method over ``data`` in ``run_dir``:
    the roster, every ledger with its configuration records, the clients (statistics released
    when the configuration asks), the coordinator and the institutions. ``learner`` may wrap
    each client (benchmarks time it)."""
    n = len(data.tenants)
    federation = make_federation(n)
    settings = EngineSettings.from_run_config(config, parties=n, declared=data.segments)
    run_dir.mkdir(parents=True, exist_ok=True)
    ledgers = _open_ledgers(run_dir, federation)
    save_roster(federation.roster, run_dir / ROSTER_FILE)
    if main:
        (run_dir / CONFIG_FILE).write_text(config.to_toml(), encoding="utf-8")
    _record_configured(ledgers, config, federation, main=main)
    clients = build_clients(config, data, federation, run_dir, ledgers)
    if config.uses_statistic:
        for client in clients:
            client.release_statistic(
                num_classes=data.num_classes, dim=config.personalize.statistic_dim
            )
    coordinator = Coordinator(
        config=config,
        settings=settings,
        roster=federation.roster,
        identity=federation.server_key,
        ledger=ledgers[SERVER_ID],
        transport="memory",
        random_bytes=seeded_random_bytes_unsafe(config.seed ^ 0x5EC0),
        segments=data.segments,
    )
    coordinator.record_declared_partition()
    if not config.secure:
        ledgers[SERVER_ID].record(
            Hazard(text="plaintext aggregation (comparison run): the server sees every model")
        )
    institutions = {
        client.index: Institution(
            settings=settings,
            roster=federation.roster,
            identity=federation.client_keys[client.index],
            party_id=client.party_id,
            learner=client if learner is None else learner(client),
            ledger=ledgers[client.party_id],
            random_bytes=seeded_random_bytes_unsafe(
                client_seed(config.seed, client.index) ^ 0x5EC1
            ),
        )
        for client in clients
    }
    transport = MemoryTransport(institutions, faults=_dropouts(config, n))
    return EngineRun(federation, coordinator, transport, clients, ledgers)


def _run_one(
    config: RunConfig,
    run_dir: Path,
    data: Tenants,
    *,
    main: bool,
    progress: ProgressFn | None,
) -> tuple[RunMetrics, tuple[Path, ...]]:
    """One method over ``data`` on the engine; its metrics and ledger paths."""
    run = build_engine_run(config, run_dir, data, main=main)
    reporter = _Progress(config.rounds, progress)
    try:
        metrics = drive(run.coordinator, run.transport, on_exchange=reporter.check)
    finally:
        run.close()
    reporter.flush(metrics)
    metrics.data_directory = str(data.directory)
    metrics.clients = [
        dataclasses.replace(c, tenant=data.tenants[i].index) for i, c in enumerate(metrics.clients)
    ]
    if main:
        (run_dir / "models").mkdir(exist_ok=True)
        for client in run.clients:
            save_model(
                client.trainer.model(),
                run_dir / "models" / f"{client.party_id}.safetensors",
                metadata={"party": client.party_id, "config_sha256": config.sha256()},
            )
    actors = [*(c.party_id for c in run.federation.roster.clients), SERVER_ID]
    return metrics, tuple(ledger_path(run_dir, a) for a in actors)


class _Progress:
    """Reports each round once its evaluations are in (they come back with the next round's
    first exchange)."""

    def __init__(self, rounds: int, progress: ProgressFn | None) -> None:
        self._rounds = rounds
        self._progress = progress
        self._reported = 0

    def check(self, exchange: int, coordinator: Coordinator) -> None:
        if self._progress is None:
            return
        self._report(coordinator.metrics(), final=False)

    def flush(self, metrics: RunMetrics) -> None:
        if self._progress is not None:
            self._report(metrics, final=True)

    def _report(self, metrics: RunMetrics, *, final: bool) -> None:
        assert self._progress is not None  # noqa: S101 - callers check
        entries = {e.round: e for e in metrics.history}
        while self._reported + 1 in entries:
            entry = entries[self._reported + 1]
            if entry.mean_test_accuracy is None or (not final and entry.exchanges == 0):
                return
            self._reported += 1
            self._progress(
                RoundReport(
                    round=entry.round,
                    rounds=self._rounds,
                    mean_test_accuracy=entry.mean_test_accuracy,
                    max_epsilon=entry.max_epsilon,
                    own_segment_weight=entry.own_segment_weight,
                    completed=entry.completed,
                    refused=len(entry.refused),
                    seconds=entry.seconds,
                )
            )


def _dropouts(config: RunConfig, n: int) -> Dropouts | None:
    """Simulated dropouts: party i drops in round r with probability ``dropout_rate``, before a
    stage chosen alike -- both from SHA-256 of (seed, r, i), reproducible, never secret."""
    if config.dropout_rate == 0:
        return None
    phases = sorted(STAGES)
    drops = []
    for round_ in range(1, config.rounds + 1):
        for i in range(n):
            digest = hashlib.sha256(
                f"securefed/dropout/{config.seed}/{round_}/{i}".encode()
            ).digest()
            if int.from_bytes(digest[:8], "big") / 2**64 < config.dropout_rate:
                drops.append(Drop(i, round_, phases[digest[8] % len(phases)]))
    return Dropouts(tuple(drops))


def check_dropout_tolerance(config: RunConfig, n: int, declared: Sequence[int] | None) -> None:
    """Refuse a ``dropout_rate`` > 0 that secure aggregation cannot survive for ``n``
    parties: a group of m members with Shamir threshold t(m) (floor(2m/3) + 1 by default)
    tolerates m - t(m) dropouts, and where that is 0 (a group of 3) any dropout aborts the
    round. The main mode and every baseline are checked; plaintext and local runs have no
    threshold. A partition learned during the run cannot be checked in advance.

    Raises:
        ConfigError: naming the group size, its threshold and the tolerance.
    """
    if config.dropout_rate <= 0 or not config.secure:
        return
    for mode in (config.mode, *config.baselines):
        if mode is PersonalizationMode.LOCAL:
            continue
        variant = dataclasses.replace(config, mode=mode, baselines=())
        if mode is PersonalizationMode.GROUP:
            segments = config.personalize.segments
            if segments is SegmentSource.LEARNED:
                continue
            chosen = segments if isinstance(segments, tuple) else declared
            if chosen is None or len(chosen) != n:
                continue  # unknown yet, or refused later with its own message
            sizes = sorted({list(chosen).count(g) for g in set(chosen)})
        else:
            sizes = [n]
        params = round_params(variant)
        for size in sizes:
            threshold = params.threshold or default_threshold(size)
            if size - threshold <= 0:
                where = "a group" if mode is PersonalizationMode.GROUP else "the federation"
                raise ConfigError(
                    f"dropout_rate = {config.dropout_rate:g} cannot be tolerated: {where} of "
                    f"{size} parties ({mode.value}) needs t = {threshold} survivors of "
                    f"{size} (t = floor(2m/3) + 1), so it tolerates {size - threshold} "
                    "dropouts and any dropout aborts the round; use dropout_rate = 0 or more "
                    "parties per group"
                )


def _check_run_dir(run_dir: Path) -> Path:
    """``run_dir`` usable as a fresh run directory (nothing created): ConfigError if not."""
    for parent in run_dir.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"--out {run_dir}: {parent} is a file, not a directory")
            break
    if run_dir.exists():
        if not run_dir.is_dir():
            raise ConfigError(f"{run_dir} exists and is not a directory")
        if any(run_dir.iterdir()):
            raise ConfigError(
                f"{run_dir} is not empty: a run directory holds exactly one run (choose a new "
                "--out, or remove the old run after archiving its ledgers)"
            )
    return run_dir


def _fresh_run_dir(run_dir: Path) -> Path:
    if run_dir.exists():
        if not run_dir.is_dir():
            raise ConfigError(f"{run_dir} exists and is not a directory")
        if any(run_dir.iterdir()):
            raise ConfigError(
                f"{run_dir} is not empty: a run directory holds exactly one run (choose a new "
                "--out, or remove the old run after archiving its ledgers)"
            )
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--out {run_dir}: cannot create it: {exc.strerror}") from None
    return run_dir


def _open_ledgers(run_dir: Path, federation: Federation) -> dict[str, Ledger]:
    """One ledger per party of ``federation`` under ``run_dir/ledgers``."""
    ledgers = {
        party.party_id: Ledger.open(ledger_path(run_dir, party.party_id), party.party_id, key)
        for party, key in zip(federation.roster.clients, federation.client_keys, strict=True)
    }
    ledgers[SERVER_ID] = Ledger.open(
        ledger_path(run_dir, SERVER_ID), SERVER_ID, federation.server_key
    )
    return ledgers


def run_configured(config: RunConfig, roster: Roster) -> RunConfigured:
    """The ``run.configured`` event every party records first: the configuration's digest, the
    software, the suite and the roster (digest and every party's key fingerprint)."""
    fingerprints = {c.party_id: c.identity.fingerprint().hex() for c in roster.clients}
    fingerprints[roster.server.party_id] = roster.server.identity.fingerprint().hex()
    return RunConfigured(
        config_sha256=config.sha256(),
        software_version=f"securefed {__version__}",
        cipher_suite=roster.suite.suite_id.value,
        roster_digest=roster.digest().hex(),
        roster_fingerprints=fingerprints,
        mode=config.mode.value,
    )


def _record_configured(
    ledgers: dict[str, Ledger], config: RunConfig, federation: Federation, *, main: bool
) -> None:
    event = run_configured(config, federation.roster)
    for ledger in ledgers.values():
        ledger.record(event)
        ledger.record(
            Hazard(
                text="simulation: identity keys were generated in memory for this run and "
                "discarded; the ledger signatures prove integrity of this directory only"
            )
        )
        if config.baselines:
            ledger.record(Hazard(text=_baselines_hazard(config)))
        if not main:
            ledger.record(
                Hazard(text=f"comparison run ({config.mode.value}) on the records of the main run")
            )


def _baselines_hazard(config: RunConfig) -> str:
    """The comparison runs retrain every institution's records: their privacy loss adds up."""
    methods = ", ".join(mode.value for mode in config.baselines)
    text = (
        f"comparison run: the baselines ({methods}) train every institution's records again "
        "after this run, with the same budget each (their ledgers, under another roster, are "
        "in baselines/<mode>/)"
    )
    if config.dp is not None:
        runs = 1 + len(config.baselines)
        text += (
            "; over all methods the records' privacy loss is bounded only by composition, up "
            f"to epsilon {runs * config.dp.target_epsilon:g} at delta {runs * config.dp.delta:g}"
        )
    return text + "; a real federation runs one method"


def build_clients(
    config: RunConfig,
    data: Tenants,
    federation: Federation,
    run_dir: Path,
    ledgers: dict[str, Ledger],
) -> list[ClientNode]:
    """One :class:`ClientNode` per tenant, in roster order: the same initial model for all, a
    private trainer with its state under ``run_dir/state/<party>``, the party's ledger (if in
    ``ledgers``), the budget and hazards already ledgered."""
    clients = []
    for index, (tenant, party) in enumerate(
        zip(data.tenants, federation.roster.clients, strict=True)
    ):
        node = build_client(
            config,
            tenant,
            num_classes=data.num_classes,
            index=index,
            party_id=party.party_id,
            state_dir=run_dir / "state" / party.party_id,
            ledger=ledgers.get(party.party_id),
            seed=client_seed(config.seed, index),
        )
        node.record_setup()
        clients.append(node)
    return clients


def build_client(
    config: RunConfig,
    tenant: TenantData,
    *,
    num_classes: int,
    index: int,
    party_id: str,
    state_dir: Path,
    ledger: Ledger | None,
    seed: int | None,
) -> ClientNode:
    """The :class:`ClientNode` of ``tenant`` at roster index ``index``: the run's initial
    model (``num_classes`` outputs), a private trainer with its accountant state in
    ``state_dir`` (continued if present), and ``ledger``. ``seed`` seeds the trainer
    (SIMULATION ONLY; None in a deployment: data order and DP noise from the operating system).
    Nothing is ledgered here (:meth:`ClientNode.record_setup` does that)."""
    training = TrainingConfig(
        lr=config.training.lr,
        batch_size=config.training.batch_size,
        local_epochs=config.training.local_epochs,
        proximal_lambda=config.training.proximal_lambda
        if config.mode in (PersonalizationMode.FEDAMP, PersonalizationMode.HEURFEDAMP)
        else 0.0,
    )
    dp = None
    if config.dp is not None:
        dp = DPConfig(
            target_epsilon=config.dp.target_epsilon,
            delta=config.dp.delta,
            max_grad_norm=config.dp.max_grad_norm,
            noise_multiplier=config.dp.noise_multiplier,
            accountant=AccountantKind(config.dp.accountant),
            statistic_epsilon=config.statistic_epsilon,
        )
    model = _model(config, num_classes, tenant.sample_shape)
    x, test_x = _inputs(config, tenant.train_x), _inputs(config, tenant.test_x)
    trainer = PrivateTrainer(
        model,
        x,
        torch.from_numpy(tenant.train_y),
        training=training,
        dp=dp,
        planned_rounds=config.rounds,
        state_dir=state_dir,
        seed=seed,
    )
    return ClientNode(
        index=index,
        party_id=party_id,
        tenant=tenant,
        trainer=trainer,
        ledger=ledger,
        test_x=test_x,
        test_y=torch.from_numpy(tenant.test_y),
    )


def _model(config: RunConfig, num_classes: int, sample_shape: tuple[int, ...]) -> torch.nn.Module:
    """Every client starts from the same initial model (seeded by the run seed)."""
    kind = config.data.model
    features = int(np.prod(sample_shape))
    if kind is ModelName.CNN and sample_shape != (1, 28, 28):
        raise ConfigError(
            f"the CNN takes 1x28x28 images, the data has samples of shape {sample_shape}; "
            'use [data] model = "mlp"'
        )
    return build_model(
        kind.value,
        num_classes=num_classes,
        in_features=None if kind is ModelName.CNN else features,
        seed=config.seed,
    )


def _inputs(config: RunConfig, samples: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(samples)
    if config.data.model is ModelName.MLP:
        return x.reshape(len(x), int(np.prod(samples.shape[1:])))
    return x


def client_seed(seed: int, index: int) -> int:
    """The trainer seed of client ``index`` in a simulation of run seed ``seed``."""
    digest = hashlib.sha256(f"securefed/runtime/client/{seed}/{index}".encode()).digest()
    return int.from_bytes(digest[:4], "big")
