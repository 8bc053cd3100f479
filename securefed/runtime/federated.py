"""``run_federation``: a whole federated run in one process, round after round.

Per round r (1-based):

1. every party's ledger head is collected and bound into the round's signed transcript;
2. each institution trains locally (DP-SGD; the spend is ledgered before its first step; a
   budget refusal is ledgered and the round goes on without it);
3. the server aggregates through the real protocol (or the plaintext reference with
   ``secure = false``), ledgers survivors and what it unmasked, and each completed client loads
   its personalized model (FedAMP: also its proximal anchor for the next round);
4. every party records a checkpoint of the heads bound in step 1; every client's personalized
   model is evaluated on its own test split.

At the end every party records ``run.finished`` and the same final checkpoint, and the run
directory holds::

    roster.toml              the parties and their identity keys (public halves)
    config.toml              the configuration as run (its SHA-256 is in every ledger)
    metrics.json             accuracy and epsilon per round and per client (see docs/run.md)
    ledgers/<party>.jsonl    one signed, hash-chained ledger per party
    state/<party>/           each client's accountant state (epsilon continues on restart)
    models/<party>.safetensors   each client's final personalized model
    data/                    the prepared seed layout (unless the config names a directory)

Identity keys are generated in memory for the run and discarded (a simulation); a deployment
uses each institution's own key files (``securefed keys``).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import opacus
import torch

from securefed import __version__
from securefed.audit import (
    HEADS_CONTEXT_LABEL,
    Hazard,
    Ledger,
    RunConfigured,
    RunFinished,
    collect_heads,
    heads_context,
    ledger_path,
    record_checkpoint,
    record_final_checkpoint,
)
from securefed.data import TenantData
from securefed.dp import AccountantKind, DPConfig, PrivateTrainer, TrainingConfig
from securefed.errors import ConfigError, LedgerIntegrityError, SecureFedError
from securefed.files import write_atomic
from securefed.models import build_model, parameter_count, save_model
from securefed.runtime.config import (
    ModelName,
    RunConfig,
    RunMode,
    SegmentSource,
    SimilaritySource,
)
from securefed.runtime.nodes import ClientNode, ServerNode, own_segment_weight
from securefed.runtime.simulate import PHASES, SimulationParams
from securefed.runtime.tenants import Tenants, load_run_tenants
from securefed.secagg.roster import Roster, save_roster
from securefed.secagg.transcript import ContextItem
from securefed.testing import Federation, make_federation

__all__ = [
    "METRICS_FILE",
    "RoundReport",
    "RunSummary",
    "build_client",
    "build_clients",
    "client_seed",
    "partition_for",
    "run_configured",
    "run_federation",
    "simulation_params",
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
    holds (for a recorded run) and ``directory`` is the run directory."""

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
    baseline_progress: Callable[[RunMode, RoundReport], None] | None = None,
) -> RunSummary:
    """Run ``config`` into the run directory ``out`` (created; it must be empty or absent), then
    each of ``config.baselines`` on the same tenants with the same budget and compute.

    Baseline runs are comparisons: they keep their accountant state under
    ``out/baselines/<mode>/`` but write no ledger, model or metrics file of their own; their
    results go into ``metrics.json`` under ``baselines``. (A real federation runs one method:
    each extra method would spend each institution's budget again.)

    Raises:
        ConfigError: bad configuration or data, or a non-empty ``out`` -- before any training.
        Protocol and training errors propagate; the ledgers then end with ``run.finished``
        status ``interrupted`` and still verify.
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
    run_dir = _fresh_run_dir(Path(out))
    data = load_run_tenants(config.data, run_dir)
    metrics, ledgers = _run_one(config, run_dir, data, record=True, progress=progress)
    for mode in config.baselines:
        report = None
        if baseline_progress is not None:
            report = functools.partial(baseline_progress, mode)
        baseline, _ = _run_one(
            dataclasses.replace(config, mode=mode, baselines=()),
            run_dir / "baselines" / mode.value,
            data,
            record=False,
            progress=report,
        )
        metrics["baselines"][mode.value] = {
            "mean_test_accuracy": baseline["mean_test_accuracy"],
            "history": baseline["history"],
            "secure": baseline["secure"],
            "clients": [
                {"id": c["id"], "test_accuracy": c["test_accuracy"], "epsilon": c["epsilon"]}
                for c in baseline["clients"]
            ],
        }
    metrics["seconds"] = round(time.perf_counter() - started, 3)
    _write_json(run_dir / METRICS_FILE, metrics)
    return RunSummary(run_dir, metrics, ledgers)


def _run_one(
    config: RunConfig,
    run_dir: Path,
    data: Tenants,
    *,
    record: bool,
    progress: ProgressFn | None,
) -> tuple[dict[str, Any], tuple[Path, ...]]:
    """One method over ``data``; returns its metrics and (``record``) its ledger paths."""
    n = len(data.tenants)
    federation = make_federation(n)
    party_ids = [c.party_id for c in federation.roster.clients]
    ledgers = _open_ledgers(run_dir, federation) if record else {}
    if record:
        save_roster(federation.roster, run_dir / ROSTER_FILE)
        (run_dir / CONFIG_FILE).write_text(config.to_toml(), encoding="utf-8")
        _record_configured(ledgers, config, federation)
    clients = build_clients(config, data, federation, run_dir, ledgers)
    if config.uses_statistic:
        for client in clients:
            client.release_statistic(
                num_classes=data.num_classes, dim=config.personalize.statistic_dim
            )
    server = ServerNode(
        mode=config.mode,
        secure=config.secure,
        federation=federation,
        ledger=ledgers.get(SERVER_ID),
        seed=config.seed,
        params=simulation_params(config),
        partition=partition_for(config, data),
    )
    if config.mode is RunMode.GROUP:
        server.record_declared_partition()
    if not config.secure and SERVER_ID in ledgers:
        ledgers[SERVER_ID].record(
            Hazard(text="plaintext aggregation (comparison run): the server sees every model")
        )
    history = [_history_entry(0, clients)]
    completed_rounds = 0
    try:
        for round_ in range(1, config.rounds + 1):
            report = _round(round_, config, clients, server, ledgers, segments=data.segments)
            completed_rounds = round_
            entry = _history_entry(round_, clients)
            entry["own_segment_weight"] = report.own_segment_weight
            history.append(entry)
            if progress is not None:
                progress(report)
    except BaseException as exc:
        _end_ledgers(ledgers, completed_rounds, "interrupted", cause=exc)
        raise
    _end_ledgers(ledgers, completed_rounds, "completed")
    metrics = _metrics(config, data, clients, history, server)
    if record:
        (run_dir / "models").mkdir(exist_ok=True)
        for client in clients:
            save_model(
                client.trainer.model(),
                run_dir / "models" / f"{client.party_id}.safetensors",
                metadata={"party": client.party_id, "config_sha256": config.sha256()},
            )
    actors = [*party_ids, SERVER_ID] if record else []
    return metrics, tuple(ledger_path(run_dir, a) for a in actors)


def _end_ledgers(
    ledgers: dict[str, Ledger],
    rounds: int,
    status: str,
    *,
    cause: BaseException | None = None,
) -> None:
    """Every party records ``run.finished`` and the same final checkpoint, then closes.

    After a failure (``cause``) this is best effort: a ledger that refused an append
    (:class:`LedgerIntegrityError`) is not written again, and an error while closing never
    replaces the original one -- the ledgers then simply end without a final checkpoint,
    which ``securefed audit verify`` reports.
    """
    try:
        if ledgers and not isinstance(cause, LedgerIntegrityError):
            for ledger in ledgers.values():
                ledger.record(RunFinished(rounds=rounds, status=status))
            record_final_checkpoint(ledgers.values())
    except (SecureFedError, OSError):
        if cause is None:
            raise
    finally:
        for ledger in ledgers.values():
            ledger.close()


def _fresh_run_dir(run_dir: Path) -> Path:
    if run_dir.exists():
        if not run_dir.is_dir():
            raise ConfigError(f"{run_dir} exists and is not a directory")
        if any(run_dir.iterdir()):
            raise ConfigError(
                f"{run_dir} is not empty: a run directory holds exactly one run (choose a new "
                "--out, or remove the old run after archiving its ledgers)"
            )
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def _open_ledgers(run_dir: Path, federation: Federation) -> dict[str, Ledger]:
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
    ledgers: dict[str, Ledger], config: RunConfig, federation: Federation
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


def _baselines_hazard(config: RunConfig) -> str:
    """The comparison runs retrain every institution's records: their privacy loss adds up."""
    methods = ", ".join(mode.value for mode in config.baselines)
    text = (
        f"comparison run: the baselines ({methods}) train every institution's records again "
        "after this run, with the same budget each, and write no ledger of their own"
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
        if config.mode in (RunMode.FEDAMP, RunMode.HEURFEDAMP)
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
        return x.reshape(len(x), -1)
    return x


def simulation_params(config: RunConfig) -> SimulationParams:
    """The secure round's parameters for ``config`` (weights from secret sketches)."""
    p = config.personalize
    heur = config.mode is RunMode.HEURFEDAMP
    return SimulationParams(
        alpha=p.alpha,
        sigma_scale=p.sigma_scale,
        self_weight=p.self_weight if p.self_weight is not None or not heur else 0.5,
        temperature=p.temperature,
        sketch_dim=p.sketch_dim,
        groups=p.groups,
        similarity="sketch",
        value_range=config.value_range,
    )


def partition_for(config: RunConfig, data: Tenants) -> tuple[int, ...] | str | None:
    """Group mode's partition: the configured list, the declared segments of
    ``federation.json``, or ``"sketch"`` (learned in the first round); None in other modes.

    Raises:
        ConfigError: a list of the wrong length, or declared segments without federation.json.
    """
    if config.mode is not RunMode.GROUP:
        return None
    segments = config.personalize.segments
    if isinstance(segments, tuple):
        if len(segments) != len(data.tenants):
            raise ConfigError(
                f"personalize.segments lists {len(segments)} segments for "
                f"{len(data.tenants)} tenants"
            )
        return segments
    if segments is SegmentSource.LEARNED:
        return "sketch"
    if data.segments is None:
        raise ConfigError(
            f"{data.directory} has no federation.json, so no declared segments: list them "
            'in [personalize] segments = [...] or use segments = "learned"'
        )
    return data.segments


def _round(
    round_: int,
    config: RunConfig,
    clients: Sequence[ClientNode],
    server: ServerNode,
    ledgers: dict[str, Ledger],
    *,
    segments: tuple[int, ...] | None,
) -> RoundReport:
    started = time.perf_counter()
    heads = collect_heads(ledgers.values()) if ledgers else ()
    context = [ContextItem(HEADS_CONTEXT_LABEL, heads_context(heads))] if heads else []
    outcomes = [client.train(round_) for client in clients]
    refused = {c.index for c, o in zip(clients, outcomes, strict=True) if not o.trained}
    completed = len(clients) - len(refused)
    own_weight = None
    if config.mode is not RunMode.LOCAL:
        absent = dict.fromkeys(refused, "advertise")
        absent.update(_injected_dropouts(config, round_, len(clients), refused))
        statistics = [c.statistic for c in clients]
        similarity_inputs = None
        if config.uses_statistic:
            similarity_inputs = [s for s in statistics if s is not None]
        result = server.aggregate(
            round_,
            [c.parameters() for c in clients],
            absent=absent,
            context=context,
            similarity_inputs=similarity_inputs,
        )
        anchor = config.mode in (RunMode.FEDAMP, RunMode.HEURFEDAMP)
        for client in clients:
            client.record_release(round_, result.masked.get(client.index, []))
            client.record_refusals(round_, result.refusals.get(client.index, ()))
            personalized = result.personalized.get(client.index)
            if personalized is not None:
                client.receive(personalized, anchor=anchor)
        completed = len(result.personalized)
        if result.weights is not None and segments is not None:
            own_weight = own_segment_weight(result.weights, segments)
    for ledger in ledgers.values():
        record_checkpoint(ledger, heads, final=False)
    epsilons = [e for e in (c.trainer.epsilon() for c in clients) if e is not None]
    return RoundReport(
        round=round_,
        rounds=config.rounds,
        mean_test_accuracy=_mean_accuracy(clients),
        max_epsilon=max(epsilons) if epsilons else None,
        own_segment_weight=own_weight,
        completed=completed,
        refused=len(refused),
        seconds=time.perf_counter() - started,
    )


def _injected_dropouts(config: RunConfig, round_: int, n: int, refused: set[int]) -> dict[int, str]:
    """Simulated dropouts: client i drops in round r with probability ``dropout_rate``, before a
    phase chosen alike -- both from SHA-256 of (seed, r, i), reproducible, never secret."""
    if config.dropout_rate == 0:
        return {}
    phases = sorted(PHASES)
    dropped = {}
    for i in range(n):
        if i in refused:
            continue
        digest = hashlib.sha256(f"securefed/dropout/{config.seed}/{round_}/{i}".encode()).digest()
        if int.from_bytes(digest[:8], "big") / 2**64 < config.dropout_rate:
            dropped[i] = phases[digest[8] % len(phases)]
    return dropped


def _mean_accuracy(clients: Sequence[ClientNode]) -> float:
    return float(np.mean([c.test_accuracy() for c in clients]))


def _history_entry(round_: int, clients: Sequence[ClientNode]) -> dict[str, Any]:
    epsilons = [e for e in (c.trainer.epsilon() for c in clients) if e is not None]
    return {
        "round": round_,
        "mean_test_accuracy": _mean_accuracy(clients),
        "max_epsilon": max(epsilons) if epsilons else None,
    }


def _metrics(
    config: RunConfig,
    data: Tenants,
    clients: Sequence[ClientNode],
    history: list[dict[str, Any]],
    server: ServerNode,
) -> dict[str, Any]:
    first = clients[0].trainer
    dp = None
    if config.dp is not None:
        sigmas = {c.party_id: c.trainer.noise_multiplier for c in clients}
        rates = {c.party_id: c.trainer.sample_rate for c in clients}
        # One number each, the weakest any institution used (smallest sigma, largest q): sigma
        # comes from each institution's own q = batch / n, so it differs slightly between them.
        dp = {
            "target_epsilon": config.dp.target_epsilon,
            "delta": config.dp.delta,
            "noise_multiplier": min(v for v in sigmas.values() if v is not None),
            "max_grad_norm": config.dp.max_grad_norm,
            "sample_rate": max(v for v in rates.values() if v is not None),
            "accountant": config.dp.accountant,
            "accountant_version": f"opacus {opacus.__version__}",
            "statistic_epsilon": config.statistic_epsilon,
            "statistic_noise_multiplier": None
            if first.accountant_state is None
            else first.accountant_state.statistic_noise_multiplier,
            "by_client": {
                c.party_id: {
                    "noise_multiplier": sigmas[c.party_id],
                    "sample_rate": rates[c.party_id],
                    "steps_per_round": c.trainer.steps_per_round,
                }
                for c in clients
            },
        }
    per_client = [
        {
            "id": c.party_id,
            "tenant": c.tenant.index,
            "train_samples": len(c.tenant.train_y),
            "test_samples": len(c.tenant.test_y),
            "test_accuracy": c.test_accuracy(),
            "epsilon": c.trainer.epsilon(),
            "delta": None if config.dp is None else config.dp.delta,
        }
        for c in clients
    ]
    partition = server.partition if isinstance(server.partition, tuple) else None
    return {
        "mode": config.mode.value,
        "rounds": history[-1]["round"],
        "secure": config.secure,
        "dp": dp,
        "history": history,
        "baselines": {},
        "clients": per_client,
        "mean_test_accuracy": float(np.mean([c["test_accuracy"] for c in per_client])),
        "config_sha256": config.sha256(),
        "partition": None if partition is None else list(partition),
        "similarity": config.personalize.similarity.value if config.learns_similarity else None,
        "model": {"kind": config.data.model.value, "parameters": parameter_count(first.model())},
        "tenants": len(clients),
        "data_directory": str(data.directory),
        "software_version": __version__,
    }


def client_seed(seed: int, index: int) -> int:
    """The trainer seed of client ``index`` in a simulation of run seed ``seed``."""
    digest = hashlib.sha256(f"securefed/runtime/client/{seed}/{index}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def _write_json(path: Path, document: dict[str, Any]) -> None:
    """Atomic and durable (:func:`securefed.files.write_atomic`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(document, indent=2, sort_keys=True) + "\n"
    write_atomic(path, text.encode("utf-8"))
