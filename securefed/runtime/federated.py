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
    run.json                 the run's id (its participations in the records' spend records)
    metrics.json             the run's record (docs/run-config.md, "metrics.json")
    ledgers/<party>.jsonl    one signed, hash-chained ledger per party
    state/<party>/           each client's accountant state, last model and statistic
    models/<party>.safetensors   each client's final personalized model (with the schema
                             digest of an imported table: ``securefed predict``)
    data/                    the prepared seed layout (demonstrations on public data only)
    baselines/<mode>/        each comparison run: its roster, ledgers and state

The directory is built as ``<out>.partial`` and renamed to ``<out>`` when the run ends, so a
directory named ``<out>`` always holds a finished run. A killed run leaves ``<out>.partial``;
``securefed run --resume <out>`` continues it (:func:`resume_federation`): the same ledgers,
accountants, models and identity keys (kept unencrypted in ``<out>.partial/keys/`` while the
run is in progress, deleted at its end), from the round after the last one the ledgers show.

The privacy budget follows the RECORDS (docs/dp.md): every participation charges the spend
record next to the tenant's records (:mod:`securefed.dp.spend`) before it trains, and a run on
records that already carry spend continues it (or is refused when nothing is left, before
anything is written). A source (the bundled digits) is prepared once into the data home
(:func:`~securefed.runtime.tenants.load_run_tenants`) so that a rerun trains the same records;
only demonstrations on public data ask for a copy of their own.

Identity keys are generated for the run (a simulation); a deployment uses each institution's
own key files (``securefed keys``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from securefed import __version__
from securefed.audit import Hazard, Ledger, RunConfigured, ledger_path
from securefed.crypto import SigningKey
from securefed.crypto.cleartext import (
    export_unencrypted_signing_key_unsafe,
    load_unencrypted_signing_key_unsafe,
)
from securefed.data import TenantData
from securefed.data.tabular_store import check_schemas
from securefed.dp import AccountantKind, DPConfig, PrivateTrainer, TrainingConfig
from securefed.dp.accounting import PLANNING_TOLERANCE
from securefed.dp.spend import (
    SPEND_DIR,
    SpendAccount,
    describe,
    load_spend,
    records_fingerprint,
    spend_path,
    spent_epsilon,
)
from securefed.errors import ConfigError
from securefed.files import private_directory, write_atomic
from securefed.models import ModelKind, ModelSpec, save_model
from securefed.runtime.config import (
    ModelName,
    PersonalizationMode,
    RunConfig,
    SegmentSource,
    SimilaritySource,
    check_parties,
    load_run_config,
)
from securefed.runtime.engine.coordinator import Coordinator
from securefed.runtime.engine.institution import Institution
from securefed.runtime.engine.learner import Learner
from securefed.runtime.engine.memory import STAGES, Drop, Dropouts, MemoryTransport, drive
from securefed.runtime.engine.metrics import RunMetrics
from securefed.runtime.engine.releases import HISTORY_FILE
from securefed.runtime.engine.settings import EngineSettings, round_params
from securefed.runtime.evaluation import pooled_credit
from securefed.runtime.nodes import MODEL_FILE, ClientNode
from securefed.runtime.preprocess import apply_federation_statistics, statistics_layout
from securefed.runtime.seeded import seeded_random_bytes_unsafe
from securefed.runtime.tenants import DATA_DIR, Tenants, load_run_tenants
from securefed.secagg import default_threshold
from securefed.secagg.federation import Federation, make_federation
from securefed.secagg.roster import Roster, load_roster, save_roster

__all__ = [
    "METRICS_FILE",
    "MODELS_DIR",
    "RUN_FILE",
    "SCHEMA_METADATA",
    "EngineRun",
    "RoundReport",
    "RunSummary",
    "build_client",
    "build_clients",
    "build_engine_run",
    "check_dropout_tolerance",
    "check_model",
    "client_seed",
    "model_spec",
    "partial_directory",
    "party_ids",
    "resume_federation",
    "run_configured",
    "run_federation",
]

METRICS_FILE = "metrics.json"
CONFIG_FILE = "config.toml"
ROSTER_FILE = "roster.toml"
RUN_FILE = "run.json"
KEYS_DIR = "keys"
SEED_FILE = "sketch-seed"
GUARD_FILE = "round-guard.json"
PARTIAL_SUFFIX = ".partial"
METHOD_METRICS_FILE = "method-metrics.json"
SERVER_ID = "server"
MODELS_DIR = "models"
#: Model-file metadata key: the schema digest of the institution's imported table
#: (``securefed data import``); ``securefed predict`` and ``export`` check a schema against it.
SCHEMA_METADATA = "data.schema_sha256"

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
    copy_data: bool = False,
    notify: Callable[[str], None] | None = None,
) -> RunSummary:
    """Run ``config`` into the run directory ``out`` (it must be empty or absent), then each of
    ``config.baselines`` on the same tenants with the same budget and compute.

    The directory is built as ``<out>.partial`` and renamed to ``out`` at the end (module
    docstring). ``copy_data``: prepare the data source into the run directory (a fresh copy
    of public demonstration data, whose budget starts at zero) instead of the data home.
    ``notify`` receives one line per tenant whose records already carry spend.

    Baseline runs are comparisons: each keeps its roster, ledgers and state under
    ``out/baselines/<mode>/`` and writes no model or metrics file of its own; its results go
    into ``metrics.json`` under ``baselines``. Each is a participation of its own on the
    records: all of them count (docs/dp.md).

    Raises:
        ConfigError: bad configuration or data, a non-empty ``out``, an unfinished
            ``<out>.partial``, or records whose budget is spent -- before anything is written
            to ``out`` (an error while the parties are being built removes ``<out>.partial``).
        Training errors propagate; the ledgers then end with ``run.finished`` status
        ``interrupted`` and still verify, in ``<out>.partial``.
    """
    started = time.perf_counter()
    _check_config(config)
    final, partial = _new_run_directories(Path(out))
    copy = copy_data and config.data.directory is None
    if copy:  # the source's tenant count is known; a declared partition comes with the data
        check_dropout_tolerance(config, config.data.tenants, None)
        data = None
    else:  # read (and checked) before anything is written
        data = load_run_tenants(config.data, partial)
        check_dropout_tolerance(config, len(data.tenants), data.segments)
        check_model(config, data)
        _check_records_budget(config, data, notify)
    created = [parent for parent in partial.parents if not parent.exists()]
    _create_partial(partial)
    run_id = os.urandom(16).hex()
    try:
        try:
            if data is None:
                data = load_run_tenants(config.data, partial, copy=True)
                check_dropout_tolerance(config, len(data.tenants), data.segments)
            write_atomic(
                partial / RUN_FILE,
                (
                    json.dumps({"format": "securefed-run", "version": 1, "run_id": run_id}) + "\n"
                ).encode(),
            )
            (partial / CONFIG_FILE).write_text(config.to_toml(), encoding="utf-8")
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        return _run_methods(
            config,
            final,
            partial,
            data,
            run_id=run_id,
            started=started,
            progress=progress,
            baseline_progress=baseline_progress,
        )
    finally:
        if not partial.exists() and not final.exists():  # refused: leave no empty parent
            _remove_empty(created)


def resume_federation(
    out: str | os.PathLike[str],
    *,
    progress: ProgressFn | None = None,
    baseline_progress: Callable[[PersonalizationMode, RoundReport], None] | None = None,
    notify: Callable[[str], None] | None = None,
) -> RunSummary:
    """Continue the killed run of ``out`` (``<out>.partial``): its configuration, run id,
    identity keys, ledgers, accountants and models, from the round after the last one its
    ledgers show; methods that had finished are not run again.

    Raises:
        ConfigError: no unfinished run at ``out``; ``out`` exists; a method whose ledgers
            are sealed without finishing (it was wound down as interrupted: its ledgers cannot
            continue -- start a new run, which continues the spend); damaged state.
    """
    started = time.perf_counter()
    final = Path(out)
    partial = final if final.name.endswith(PARTIAL_SUFFIX) else partial_directory(final)
    if partial is final:
        final = final.with_name(final.name[: -len(PARTIAL_SUFFIX)])
    if not (partial / RUN_FILE).is_file():
        raise ConfigError(f"{partial}: no unfinished run to resume (no {RUN_FILE})")
    _check_run_dir(final)
    config = load_run_config(partial / CONFIG_FILE)
    _check_config(config)
    run_id = _read_run_id(partial / RUN_FILE)
    if (partial / METRICS_FILE).is_file():  # every method had finished: only the end is left
        metrics = json.loads((partial / METRICS_FILE).read_text(encoding="utf-8"))
        _finish_partial(partial, final)
        roster = load_roster(final / ROSTER_FILE)
        actors = [*(c.party_id for c in roster.clients), SERVER_ID]
        return RunSummary(final, metrics, tuple(ledger_path(final, a) for a in actors))
    data_config = config.data
    if data_config.directory is None and (partial / DATA_DIR).is_dir():  # its own copy
        data_config = dataclasses.replace(data_config, directory=str(partial / DATA_DIR))
    data = load_run_tenants(data_config, partial)
    if notify is not None:
        notify(f"resuming run {run_id[:8]} in {partial}")
    return _run_methods(
        config,
        final,
        partial,
        data,
        run_id=run_id,
        started=started,
        progress=progress,
        baseline_progress=baseline_progress,
        resume=True,
    )


def _run_methods(
    config: RunConfig,
    final: Path,
    partial: Path,
    data: Tenants,
    *,
    run_id: str,
    started: float,
    progress: ProgressFn | None,
    baseline_progress: Callable[[PersonalizationMode, RoundReport], None] | None,
    resume: bool = False,
) -> RunSummary:
    """Every method of ``config`` into ``partial``, then the rename to ``final``."""
    context = _RunContext(run_id=run_id, resume=resume)
    try:
        metrics, ledgers = _run_one(
            config, partial, data, main=True, progress=progress, context=context
        )
    except ConfigError:
        if not resume and not context.driven:  # nothing ran: leave nothing behind
            shutil.rmtree(partial, ignore_errors=True)
        raise
    metrics.pop("baseline", None)
    for mode in config.baselines:
        report = None
        if baseline_progress is not None:
            report = functools.partial(baseline_progress, mode)
        baseline, _ = _run_one(
            dataclasses.replace(config, mode=mode, baselines=()),
            partial / "baselines" / mode.value,
            data,
            main=False,
            progress=report,
            context=context,
        )
        metrics["baselines"][mode.value] = baseline["baseline"]
    metrics["seconds"] = round(time.perf_counter() - started, 3)
    data_directory = data.directory
    if data_directory.is_relative_to(partial):
        data_directory = final / data_directory.relative_to(partial)
    metrics["data_directory"] = str(data_directory)
    write_atomic(
        partial / METRICS_FILE,
        (json.dumps(metrics, indent=2, sort_keys=True, allow_nan=False) + "\n").encode(),
    )
    _finish_partial(partial, final)
    ledger_paths = tuple(final / p.relative_to(partial) for p in ledgers)
    return RunSummary(final, metrics, ledger_paths)


def _finish_partial(partial: Path, final: Path) -> None:
    """The last steps of a run whose ``metrics.json`` is written: discard the simulation's
    identity keys and the per-method records, then give the directory its name. A kill in
    between is finished by ``--resume``."""
    for keys in partial.rglob(KEYS_DIR):
        shutil.rmtree(keys, ignore_errors=True)
    for method_metrics in partial.rglob(METHOD_METRICS_FILE):
        method_metrics.unlink()
    try:
        partial.rename(final)
    except OSError as exc:
        raise ConfigError(
            f"the run finished in {partial} but could not be renamed to {final}: {exc.strerror}"
        ) from None


def partial_directory(out: Path) -> Path:
    """Where the run of ``out`` is built until it ends: ``<out>.partial`` beside it."""
    return out.with_name(out.name + PARTIAL_SUFFIX)


def _check_config(config: RunConfig) -> None:
    if config.data.directory is None and config.data.tenants < 3:
        raise ConfigError(f"data.tenants must be >= 3, got {config.data.tenants}")
    if config.rounds < 1:
        raise ConfigError(f"rounds must be >= 1, got {config.rounds}")
    if config.personalize.similarity is SimilaritySource.STATISTIC and not config.learns_similarity:
        raise ConfigError(
            f'personalize.similarity = "statistic" needs a mode that learns similarities '
            f'(fedamp, heurfedamp, or group with segments = "learned"), not {config.mode.value}'
        )


def _remove_empty(directories: Sequence[Path]) -> None:
    """Remove ``directories`` (deepest first) that are still empty; keep any that is not."""
    for directory in directories:
        with contextlib.suppress(OSError):
            directory.rmdir()


def _create_partial(partial: Path) -> None:
    try:
        partial.mkdir(parents=True)
    except FileExistsError:
        raise ConfigError(f"{partial} appeared meanwhile: another run uses it") from None
    except OSError as exc:
        raise ConfigError(f"--out: cannot create {partial}: {exc.strerror}") from None


def _read_run_id(path: Path) -> str:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        run_id = document["run_id"]
    except (OSError, ValueError, KeyError, TypeError):
        raise ConfigError(f"{path} is unreadable or malformed") from None
    if not isinstance(run_id, str) or len(run_id) != 32:
        raise ConfigError(f"{path} does not hold a run id")
    return run_id


def _check_records_budget(
    config: RunConfig, data: Tenants, notify: Callable[[str], None] | None
) -> None:
    """Refuse a run on records whose budget is spent, naming them; tell about the others
    (before anything is written). Fingerprints and accounting are checked again when each
    participation opens its account."""
    releases = any(m is not PersonalizationMode.LOCAL for m in (config.mode, *config.baselines))
    spend_dir = data.directory / SPEND_DIR
    writable = spend_dir if spend_dir.exists() else data.directory
    if not os.access(writable, os.W_OK | os.X_OK):
        raise ConfigError(
            f"{writable} is not writable: the privacy spend is kept next to the records "
            f"({spend_dir}), so their directory must be writable by the run (docs/dp.md)"
        )
    exhausted = []
    for tenant in data.tenants:
        record = load_spend(data.directory, tenant.index)
        if record is None or not record.counted():
            continue
        fingerprint = records_fingerprint(tenant.train_x, tenant.train_y)
        if record.records_sha256 != fingerprint:
            raise ConfigError(
                f"{spend_path(data.directory, tenant.index)} accounts for other records: tenant "
                f"{tenant.index}'s training records changed since. If these are new records, "
                f"reset explicitly: securefed budget reset {data.directory} --tenant "
                f"{tenant.index} --reason TEXT"
            )
        spent = spent_epsilon(record)
        if (
            config.dp is not None
            and releases
            and (spent is None or spent >= config.dp.target_epsilon - PLANNING_TOLERANCE)
        ):
            exhausted.append(describe(record))
        elif notify is not None:
            notify(f"{describe(record)}; this run continues that spend")
    if exhausted:
        raise ConfigError(
            f"the privacy budget (epsilon {config.dp.target_epsilon if config.dp else 0:g}) of "
            f"these records is spent, so this run would start beyond it: {'; '.join(exhausted)}"
            f". The budget follows the records ({data.directory}/securefed-spend/), not --out; "
            "a deliberate reset is `securefed budget reset` and is shown in every later report"
        )


@dataclass
class _RunContext:
    """What every method of one run shares: the run id (its participations in the records'
    spend records), whether it resumes a killed run, and whether anything was driven yet."""

    run_id: str
    resume: bool = False
    keep_keys: bool = True
    driven: bool = False


@dataclass
class EngineRun:
    """One method's parties, built and ready to drive: the coordinator, the institutions (by
    node id = roster index) over a :class:`MemoryTransport`, their learners and ledgers.
    ``first_round`` is 1, or where a resumed run goes on."""

    federation: Federation
    coordinator: Coordinator
    transport: MemoryTransport
    clients: list[ClientNode]
    ledgers: dict[str, Ledger]
    first_round: int = 1

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
    context: _RunContext | None = None,
) -> EngineRun:
    """Everything :func:`run_federation` drives for one method over ``data`` in ``run_dir``:
    the roster, every ledger with its configuration records, the clients (statistics released
    when the configuration asks), the coordinator and the institutions. ``learner`` may wrap
    each client (benchmarks time it). With a resuming ``context`` the roster, keys, ledgers,
    accountants, models and statistics in ``run_dir`` are continued instead.

    Raises ConfigError (nothing of the method is left open): bad configuration found while
    building the clients, records whose spend record refuses the participation, or (resuming)
    state that does not continue."""
    context = context or _RunContext(run_id=os.urandom(16).hex(), keep_keys=False)
    n = len(data.tenants)
    ids = party_ids(config, n)  # before anything is written
    settings = EngineSettings.from_run_config(config, parties=n, declared=data.segments)
    run_dir.mkdir(parents=True, exist_ok=True)
    resuming = context.resume and (run_dir / ROSTER_FILE).exists()
    federation = _load_federation(run_dir) if resuming else make_federation(n, party_ids=ids)
    ledgers = open_ledgers(run_dir, federation)
    try:
        first_round, earlier = 1, None
        if resuming:
            first_round, earlier = _resume_point(ledgers)
            _record_resumed(ledgers, first_round, config.rounds, earlier)
            if not settings.aggregates:
                earlier = None  # local rounds have no aggregate to count
        else:
            save_roster(federation.roster, run_dir / ROSTER_FILE)
            if context.keep_keys:
                _save_keys(run_dir / KEYS_DIR, federation)
            _record_configured(ledgers, config, federation, main=main)
        clients = build_clients(
            config, data, federation, run_dir, ledgers, context=context, fresh=not resuming
        )
        coordinator = Coordinator(
            config=config,
            settings=settings,
            roster=federation.roster,
            identity=federation.server_key,
            ledger=ledgers[SERVER_ID],
            transport="memory",
            random_bytes=seeded_random_bytes_unsafe(config.seed ^ 0x5EC0 ^ (first_round - 1)),
            segments=data.segments,
            first_round=first_round,
            earlier_rounds=earlier,
            history_file=_server_state(run_dir) / HISTORY_FILE,
        )
        if not resuming:
            coordinator.record_declared_partition()
            if not config.secure:
                ledgers[SERVER_ID].record(
                    Hazard(
                        text="plaintext aggregation (comparison run): the server sees every model"
                    )
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
                    client_seed(config.seed, client.index) ^ 0x5EC1 ^ (first_round - 1)
                ),
                on_model=_model_saver(client, run_dir, config),
                seed_file=_state_dir(run_dir, client.party_id) / SEED_FILE,
                guard_file=_state_dir(run_dir, client.party_id) / GUARD_FILE,
                history_file=_state_dir(run_dir, client.party_id) / HISTORY_FILE,
            )
            for client in clients
        }
    except BaseException:
        for ledger in ledgers.values():
            ledger.close()
        raise
    transport = MemoryTransport(institutions, faults=_dropouts(config, n))
    return EngineRun(federation, coordinator, transport, clients, ledgers, first_round)


def _state_dir(run_dir: Path, party: str) -> Path:
    return run_dir / "state" / party


def _server_state(run_dir: Path) -> Path:
    """The coordinator's state directory (its release history), created private."""
    state = _state_dir(run_dir, SERVER_ID)
    private_directory(state)
    return state


def _model_saver(client: ClientNode, run_dir: Path, config: RunConfig) -> Callable[[int], None]:
    """Keep the client's model after every local training and personalized update (what a
    resumed run continues from), as the deployment's agent does."""
    path = _state_dir(run_dir, client.party_id) / MODEL_FILE

    def save(round_: int) -> None:
        save_model(
            client.trainer.model(),
            path,
            metadata={
                "party": client.party_id,
                "round": str(round_),
                "config_sha256": config.sha256(),
            },
            spec=client.model_spec,
        )

    return save


def _save_keys(directory: Path, federation: Federation) -> None:
    """The simulation's identity keys, unencrypted (0600), for ``--resume`` only: removed when
    the run ends."""
    directory.mkdir(mode=0o700, exist_ok=True)
    parties = [(SERVER_ID, federation.server_key)]
    parties += [
        (c.party_id, k)
        for c, k in zip(federation.roster.clients, federation.client_keys, strict=True)
    ]
    for party, key in parties:
        write_atomic(
            directory / f"{party}.key",
            export_unencrypted_signing_key_unsafe(key),
            mode=0o600,
            overwrite=False,
        )


def _load_federation(run_dir: Path) -> Federation:
    """The roster and the kept identity keys of a method to resume."""
    roster = load_roster(run_dir / ROSTER_FILE)
    directory = run_dir / KEYS_DIR

    def key(party: str, expected: Any) -> SigningKey:
        path = directory / f"{party}.key"
        try:
            loaded = load_unencrypted_signing_key_unsafe(path.read_bytes())
        except OSError as exc:
            raise ConfigError(
                f"cannot resume: {path}: {exc.strerror} (the run's identity keys are gone)"
            ) from None
        if loaded.verify_key() != expected:
            raise ConfigError(f"cannot resume: {path} is not {party}'s key in the roster")
        return loaded

    return Federation(
        roster,
        key(roster.server.party_id, roster.server.identity),
        tuple(key(c.party_id, c.identity) for c in roster.clients),
    )


def _resume_point(ledgers: dict[str, Ledger]) -> tuple[int, dict[int, bool]]:
    """Where a killed method goes on, and how its earlier rounds ended.

    The round to go on from is the one after the last round any party's ledger mentions (a
    party charged for it cannot be charged for it again). The server's ledger says how many
    rounds ended (one checkpoint each, plus rounds an earlier resume skipped) and which of them
    produced no aggregate; a mentioned round beyond those was interrupted by the kill and does
    not count as aggregated. Refuses sealed ledgers: they cannot go on."""
    sealed = sorted(party for party, ledger in ledgers.items() if ledger.sealed)
    if sealed:
        raise ConfigError(
            f"cannot resume: the ledgers of {', '.join(sealed)} are sealed (the run was wound "
            "down as interrupted); start a new run: it continues the records' spend"
        )
    last = max(_last_round_of(ledger.path) for ledger in ledgers.values())
    ended, failed = _ended_rounds(ledgers[SERVER_ID].path)
    earlier = {number: number not in failed for number in range(1, ended + 1)}
    for number in range(ended + 1, last + 1):
        earlier[number] = False  # begun, never ended
    return last + 1, earlier


_NO_AGGREGATE = re.compile(r"round (\d+): [a-z ]+: no party got an aggregate")
_SKIPPED = re.compile(r"run resumed after an interruption in round (\d+)")


def _ended_rounds(path: Path) -> tuple[int, set[int]]:
    """From the server's ledger: how many rounds ended, and those without an aggregate."""
    ended, failed = 0, set()
    with open(path, encoding="utf-8") as handle:  # verified when the ledger was opened
        for line in handle:
            entry = json.loads(line)
            payload = entry.get("payload", {})
            if entry.get("event") == "ledger.checkpoint" and payload.get("final") is False:
                ended += 1
            elif entry.get("event") == "hazard":
                text = str(payload.get("text", ""))
                if found := _NO_AGGREGATE.match(text):
                    failed.add(int(found.group(1)))
                elif found := _SKIPPED.match(text):
                    ended += 1  # the interrupted round an earlier resume did not repeat
                    failed.add(int(found.group(1)))
    return ended, failed


def _last_round_of(path: Path) -> int:
    last = 0
    with open(path, encoding="utf-8") as handle:  # verified when the ledger was opened
        for line in handle:
            payload = json.loads(line).get("payload", {})
            value = payload.get("round") if isinstance(payload, dict) else None
            if isinstance(value, int) and not isinstance(value, bool):
                last = max(last, value)
    return last


def _record_resumed(
    ledgers: dict[str, Ledger], first_round: int, rounds: int, earlier: dict[int, bool]
) -> None:
    interrupted = first_round - 1
    if interrupted >= 1 and not earlier.get(interrupted, True):
        where = f"in round {interrupted} (not repeated: no aggregate, its charges stay)"
    else:
        where = f"after round {interrupted}"
    then = f"it goes on from round {first_round}" if first_round <= rounds else "no round is left"
    for ledger in ledgers.values():
        ledger.record(
            Hazard(
                text=f"run resumed after an interruption {where}; {then}; rounds charged "
                "before the interruption stay charged"
            )
        )


def _run_one(
    config: RunConfig,
    run_dir: Path,
    data: Tenants,
    *,
    main: bool,
    progress: ProgressFn | None,
    context: _RunContext,
) -> tuple[dict[str, Any], tuple[Path, ...]]:
    """One method over ``data`` on the engine: its metrics (``metrics.json``'s form; a
    baseline's in its ``baseline`` key) and ledger paths. A method that a resumed run had
    finished is read back, not run again."""
    done = run_dir / METHOD_METRICS_FILE
    actors_file = run_dir / ROSTER_FILE
    if context.resume and done.exists():
        finished: dict[str, Any] = json.loads(done.read_text(encoding="utf-8"))
        roster = load_roster(actors_file)
        actors = [*(c.party_id for c in roster.clients), SERVER_ID]
        return finished, tuple(ledger_path(run_dir, a) for a in actors)
    digests = _schema_digests(config, data)  # checked before anything trains
    run = build_engine_run(config, run_dir, data, main=main, context=context)
    context.driven = True
    reporter = _Progress(config.rounds, progress, reported=run.first_round - 1)
    preprocessing = None
    try:
        if config.standardizes:
            preprocessing = apply_federation_statistics(
                config, run_dir, run.federation, run.clients, data
            )
        metrics = drive(run.coordinator, run.transport, on_exchange=reporter.check)
        pooled = pooled_credit(config, run_dir, run.federation, run.clients)
    finally:
        run.close()
    reporter.flush(metrics)
    metrics.data_directory = str(data.directory)
    metrics.clients = [
        # credit: each institution's exact credit metrics on its own test split, computed
        # in-process from its final model (binary targets; None otherwise)
        dataclasses.replace(c, tenant=data.tenants[i].index, credit=run.clients[i].credit())
        for i, c in enumerate(metrics.clients)
    ]
    if run.first_round > 1:
        metrics.resumed_at = [run.first_round]
    if main:
        (run_dir / MODELS_DIR).mkdir(exist_ok=True)
        for client in run.clients:
            metadata = {"party": client.party_id, "config_sha256": config.sha256()}
            if client.tenant.index in digests:
                metadata[SCHEMA_METADATA] = digests[client.tenant.index]
            save_model(
                client.trainer.model(),
                run_dir / MODELS_DIR / f"{client.party_id}.safetensors",
                metadata=metadata,
                spec=client.model_spec,
            )
    result = metrics.to_dict()
    if preprocessing is not None:
        result["preprocessing"] = preprocessing
    if pooled is not None:
        result["pooled_credit"] = pooled
    result["baseline"] = dataclasses.asdict(metrics.baseline())
    write_atomic(done, (json.dumps(result, allow_nan=False) + "\n").encode())
    actors = [*(c.party_id for c in run.federation.roster.clients), SERVER_ID]
    return result, tuple(ledger_path(run_dir, a) for a in actors)


def _schema_digests(config: RunConfig, data: Tenants) -> dict[int, str]:
    """The schema digest that each tenant's table was imported under (``tabular_<i>.json``),
    for the tenants imported by ``securefed data import``, checked to line up (and to equal the
    configuration's ``data.schema_sha256`` when it pins one): recorded in their final model files
    (:data:`SCHEMA_METADATA`), so that scoring can check a schema against the model alone.

    Raises:
        SchemaMismatch: the tables do not line up (nothing has trained yet).
    """
    return check_schemas(
        data.directory,
        [tenant.index for tenant in data.tenants],
        pinned=config.data.schema_sha256,
    )


class _Progress:
    """Reports each round once its evaluations are in (they come back with the next round's
    first exchange)."""

    def __init__(self, rounds: int, progress: ProgressFn | None, *, reported: int = 0) -> None:
        self._rounds = rounds
        self._progress = progress
        self._reported = reported

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
    tolerates m - t(m) dropouts; where that is 0 (a group of 3) any dropout aborts the round,
    and a rate whose expected dropouts ``dropout_rate * m`` exceed m - t(m) aborts most
    rounds. The main mode and every baseline are checked; plaintext and local runs have no
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
            tolerated = size - threshold
            where = "a group" if mode is PersonalizationMode.GROUP else "the federation"
            if tolerated <= 0:
                raise ConfigError(
                    f"dropout_rate = {config.dropout_rate:g} cannot be tolerated: {where} of "
                    f"{size} parties ({mode.value}) needs t = {threshold} survivors of "
                    f"{size} (t = floor(2m/3) + 1), so it tolerates {size - threshold} "
                    "dropouts and any dropout aborts the round; use dropout_rate = 0 or more "
                    "parties per group"
                )
            if config.dropout_rate * size > tolerated:
                raise ConfigError(
                    f"dropout_rate = {config.dropout_rate:g} cannot be tolerated: {where} of "
                    f"{size} parties ({mode.value}) expects {config.dropout_rate * size:.3g} "
                    f"dropouts per round but tolerates {tolerated} (t = {threshold} survivors "
                    "needed), so most rounds would abort; use dropout_rate <= "
                    f"{tolerated / size:.3g} or more parties per group"
                )


def _new_run_directories(out: Path) -> tuple[Path, Path]:
    """The run directory ``out`` and its ``.partial`` twin for a new run (nothing created):
    ConfigError if ``out`` is not usable (:func:`_check_run_dir`) or an unfinished run waits in
    the twin."""
    final = _check_run_dir(out)
    partial = partial_directory(final)
    if partial.exists():
        raise ConfigError(
            f"{partial} holds an unfinished run: continue it with --resume {final}, or move it "
            "aside (its spend stays on the records)"
        )
    return final, partial


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


def open_ledgers(run_dir: Path, federation: Federation) -> dict[str, Ledger]:
    """One ledger per party of ``federation`` under ``run_dir/ledgers`` (the server's
    included); if one fails to open, those opened are closed before the error propagates."""
    roster = federation.roster
    parties: list[tuple[str, SigningKey]] = [
        *((c.party_id, k) for c, k in zip(roster.clients, federation.client_keys, strict=True)),
        (roster.server.party_id, federation.server_key),
    ]
    ledgers: dict[str, Ledger] = {}
    try:
        for party, key in parties:
            ledgers[party] = Ledger.open(ledger_path(run_dir, party), party, key)
    except BaseException:
        for ledger in ledgers.values():
            ledger.close()
        raise
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
                text="simulation: identity keys were generated for this run, kept unencrypted "
                "in its directory only while it was in progress (for --resume) and deleted at "
                "its end; the ledger signatures prove integrity of this directory only"
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
        "after this run, each planned against what other runs spent and all counted in the "
        "records' spend record (their ledgers, under another roster, are "
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
    *,
    context: _RunContext | None = None,
    fresh: bool = True,
) -> list[ClientNode]:
    """One :class:`ClientNode` per tenant, in roster order: the same initial model for all, a
    private trainer with its state under ``run_dir/state/<party>`` charging the records' spend
    record (participation ``context.run_id``), the party's ledger (if in ``ledgers``), the
    budget and hazards ledgered (``fresh``) or the kept model reloaded (a resumed run), and the
    DP similarity statistic released once when the configuration uses it."""
    context = context or _RunContext(run_id=os.urandom(16).hex(), keep_keys=False)
    clients = []
    for index, (tenant, party) in enumerate(
        zip(data.tenants, federation.roster.clients, strict=True)
    ):
        state = _state_dir(run_dir, party.party_id)
        private_directory(state)  # created here: nothing to tighten
        node = build_client(
            config,
            tenant,
            num_classes=data.num_classes,
            index=index,
            party_id=party.party_id,
            state_dir=state,
            ledger=ledgers.get(party.party_id),
            seed=client_seed(config.seed, index),
            spend=open_spend(
                config, tenant, data.directory, run_id=context.run_id, party=party.party_id
            ),
        )
        statistic = (data.num_classes, config.personalize.statistic_dim)
        node.open_state(state, fresh=fresh, statistic=statistic if config.uses_statistic else None)
        clients.append(node)
    return clients


def open_spend(
    config: RunConfig, tenant: TenantData, records_dir: Path, *, run_id: str, party: str
) -> SpendAccount:
    """The participation (``run_id``, ``config.mode``) of ``party`` on ``tenant``'s records in
    the spend record next to them (:mod:`securefed.dp.spend`). Local training releases
    nothing; every other mode releases models trained on the records."""
    dp = config.dp
    return SpendAccount.open(
        records_dir,
        tenant.index,
        records_sha256=records_fingerprint(tenant.train_x, tenant.train_y),
        run_id=run_id,
        method=config.mode.value,
        party=party,
        # local training releases nothing -- unless the federation-wide statistics leave it
        released=config.mode is not PersonalizationMode.LOCAL or config.standardizes,
        accountant=AccountantKind(dp.accountant if dp is not None else "prv"),
        delta=None if dp is None else dp.delta,
    )


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
    spend: SpendAccount | None = None,
) -> ClientNode:
    """The :class:`ClientNode` of ``tenant`` at roster index ``index``: the run's initial
    model (``num_classes`` outputs), a private trainer with its accountant state in
    ``state_dir`` (continued if present), and ``ledger``. ``seed`` seeds the trainer
    (SIMULATION ONLY; None in a deployment: data order and DP noise from the operating system).
    ``spend``: the participation's account in the records' spend record (docs/dp.md).
    Nothing is ledgered here (:meth:`ClientNode.record_setup` does that)."""
    training = TrainingConfig(
        lr=config.training.lr,
        batch_size=config.training.batch_size,
        local_epochs=config.training.local_epochs,
        proximal_lambda=config.training.proximal_lambda
        if config.mode in (PersonalizationMode.FEDAMP, PersonalizationMode.HEURFEDAMP)
        else 0.0,
        class_weights=_class_weights(config, num_classes),
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
    spec = model_spec(config, num_classes, tenant.sample_shape)
    x, test_x = _inputs(config, tenant.train_x), _inputs(config, tenant.test_x)
    trainer = PrivateTrainer(
        spec.build(seed=config.seed),  # every client starts from the same initial model
        x,
        torch.from_numpy(tenant.train_y),
        training=training,
        dp=dp,
        planned_rounds=config.rounds,
        state_dir=state_dir,
        seed=seed,
        spend=spend,
    )
    return ClientNode(
        index=index,
        party_id=party_id,
        tenant=tenant,
        trainer=trainer,
        ledger=ledger,
        test_x=test_x,
        test_y=torch.from_numpy(tenant.test_y),
        spec=spec,
    )


def model_spec(config: RunConfig, num_classes: int, sample_shape: tuple[int, ...]) -> ModelSpec:
    """The architecture every client of ``config`` trains on records of ``sample_shape`` with
    ``num_classes`` labels: ``[data] model`` and ``hidden``; the MLP and logistic regression
    take the records flattened. Raises :class:`ConfigError` for the CNN on records that are not
    1x28x28 images, or what :class:`ModelSpec` refuses."""
    kind = ModelKind(config.data.model.value)
    features = int(np.prod(sample_shape))
    if kind is ModelKind.CNN and sample_shape != (1, 28, 28):
        raise ConfigError(
            f"the CNN takes 1x28x28 images, the data has samples of shape {sample_shape}; "
            'use [data] model = "mlp" or "logistic"'
        )
    return ModelSpec(
        kind,
        num_classes=num_classes,
        in_features=None if kind is ModelKind.CNN else features,
        hidden=config.data.hidden,
        scaled=config.standardizes,
    )


def check_model(config: RunConfig, data: Tenants) -> None:
    """Refuse, before anything is written, a model that does not fit the data: the CNN on
    records that are not images, or ``training.class_weights`` whose length is not the data's
    number of classes (:class:`ConfigError`)."""
    model_spec(config, data.num_classes, data.tenants[0].sample_shape)
    _class_weights(config, data.num_classes)
    if config.standardizes:  # imported tables, every numeric column with a range
        statistics_layout(data)
    party_ids(config, len(data.tenants))


def party_ids(config: RunConfig, n: int) -> tuple[str, ...] | None:
    """The institutions' party ids in tenant order: ``data.parties``, checked to name exactly
    the ``n`` tenants (the count a data directory gives is known only once it is read), or
    None for the default ``bank-<i>``.

    Raises:
        ConfigError: ``data.parties`` does not name one valid, distinct party per tenant.
    """
    if config.data.parties is None:
        return None
    check_parties(config.data.parties, n)
    return config.data.parties


def _class_weights(config: RunConfig, num_classes: int) -> tuple[float, ...] | None:
    weights = config.training.class_weights
    if weights is not None and len(weights) != num_classes:
        raise ConfigError(
            f"training.class_weights lists {len(weights)} weights, but the data has "
            f"{num_classes} classes (labels 0..{num_classes - 1}): give one weight per class"
        )
    return weights


def _inputs(config: RunConfig, samples: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(samples)
    if config.data.model is not ModelName.CNN:  # tabular models take flattened records
        return x.reshape(len(x), int(np.prod(samples.shape[1:])))
    return x


def client_seed(seed: int, index: int) -> int:
    """The trainer seed of client ``index`` in a simulation of run seed ``seed``."""
    digest = hashlib.sha256(f"securefed/runtime/client/{seed}/{index}".encode()).digest()
    return int.from_bytes(digest[:4], "big")
