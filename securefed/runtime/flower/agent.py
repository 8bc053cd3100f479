"""An institution's agent process: ``securefed deploy agent`` (docs/deploy.md).

The agent is the institution's side of the engine: one
:class:`~securefed.runtime.engine.institution.Institution` whose learner is the institution's
:class:`~securefed.runtime.nodes.ClientNode` (its own tenant, DP trainer, accountant), with its
identity key, the pinned roster and the run configuration every party holds. It answers each
framed request on ``<state>/agent.sock`` with
:meth:`~securefed.runtime.engine.institution.Institution.handle_bytes` until SIGTERM or SIGINT.
The SuperNode next to it is started with ``--node-config "state-dir='<state>'"`` so that its
ClientApp relays to this socket (:mod:`.client_app`). Its state directory holds::

    ledgers/<party>.jsonl   the signed ledger (re-opened and verified on restart)
    trainer/                the accountant state (epsilon continues on restart)
    participation           this participation's id in the spend record next to the records
    model.safetensors       the model after every local training and every personalized update
    sketch-seed             the session's secret sketch seed and its commitment (mode 0600)
    round-guard.json        every (session, round) it advertised keys for (mode 0600): a
                            replayed round is refused after a restart as before it
    statistic.f64           the released DP similarity statistic (similarity = "statistic")
    agent.sock              the local socket the ClientApp relays through (mode 0600)

A restart with the same ``--state`` continues from them: the coordinator maps the party to its
node again at its next join.

The privacy budget follows the records, not the state directory (docs/dp.md): every charge is
composed with the earlier participations recorded in ``<data>/securefed-spend/`` and written
there before the round trains, so a fresh state directory on the same records continues their
spend, and a state directory whose accountant does not continue its participation there is
refused.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from securefed.audit import Hazard, Ledger, ledger_path
from securefed.crypto import SigningKey
from securefed.data import TenantData, load_tenants
from securefed.data.tabular_store import check_schemas, read_schema_digest, record_file
from securefed.errors import ConfigError, SecureFedError
from securefed.files import private_directory, write_atomic
from securefed.models import save_model
from securefed.runtime.config import RunConfig, load_run_config
from securefed.runtime.engine import messages as m
from securefed.runtime.engine.institution import Institution
from securefed.runtime.engine.releases import HISTORY_FILE
from securefed.runtime.engine.settings import EngineSettings
from securefed.runtime.federated import (
    SCHEMA_METADATA,
    build_client,
    open_spend,
    run_configured,
)
from securefed.runtime.flower.deployment import (
    MODEL_FILE,
    SEED_FILE,
    STATISTIC_FILE,
    UNSAFE_KEY_HAZARD,
    check_deployable,
)
from securefed.runtime.flower.identity import load_identity_key
from securefed.runtime.flower.relay import read_frame, socket_path, write_frame
from securefed.secagg.roster import Roster, load_roster

__all__ = [
    "AgentParts",
    "AgentSettings",
    "build_institution",
    "load_parts",
    "open_institution",
    "run_agent",
    "serve",
    "serve_until_signalled",
]

log = logging.getLogger(__name__)

#: The file in the state directory that names this participation in the records' spend record.
PARTICIPATION_FILE = "participation"
#: ... and the secure-aggregation round guard (:class:`~securefed.secagg.replay.RoundGuard`).
GUARD_FILE = "round-guard.json"


@dataclass(frozen=True, slots=True)
class AgentSettings:
    """What ``securefed deploy agent`` was given (see ``securefed deploy agent --help``).
    ``data`` None: the run configuration's ``[data] directory``."""

    config: Path
    roster: Path
    key: Path
    passphrase_env: str | None
    unsafe_plaintext_key: bool
    party: str
    data: Path | None
    tenant: int
    num_classes: int
    state: Path

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> AgentSettings:
        """From the arguments :func:`~.deployment.add_agent_arguments` defines."""
        return cls(
            config=Path(args.config),
            roster=Path(args.roster),
            key=Path(args.key),
            passphrase_env=None if args.unsafe_plaintext_key else args.passphrase_env,
            unsafe_plaintext_key=bool(args.unsafe_plaintext_key),
            party=args.party,
            data=None if args.data is None else Path(args.data),
            tenant=args.tenant,
            num_classes=args.num_classes,
            state=Path(args.state),
        )


@dataclass(frozen=True, slots=True)
class AgentParts:
    """What an institution is built from, loaded and checked (:func:`load_parts`)."""

    config: RunConfig
    roster: Roster
    identity: SigningKey
    party: str
    index: int
    tenant: TenantData
    num_classes: int
    state: Path
    unsafe_key: bool
    records: Path | None = None  # the seed-layout directory (its spend records)


def load_parts(settings: AgentSettings) -> AgentParts:
    """Read and check everything the agent needs.

    Raises ConfigError / DataFormatError / CryptoError with the reason: a configuration a
    deployment does not run (:func:`~.deployment.check_deployable`), bad files, a party not in
    the roster or a key that is not its key there, no data directory, a tenant index absent
    from it.
    """
    config = load_run_config(settings.config)
    check_deployable(config)
    roster = load_roster(settings.roster)
    index = roster.index_of(settings.party)
    identity = load_identity_key(
        settings.key,
        passphrase_env=settings.passphrase_env,
        unsafe_plaintext=settings.unsafe_plaintext_key,
    )
    if identity.verify_key() != roster.client(index).identity:
        raise ConfigError(f"the identity key is not {settings.party}'s key in the roster")
    data = settings.data
    if data is None and config.data.directory is not None:
        data = Path(config.data.directory)
    if data is None:
        raise ConfigError("give the institution's data directory (--data or [data] directory)")
    (tenant,) = load_tenants(data, indices=[settings.tenant])
    # A deployment cannot compare the institutions' tables with each other: the shared run
    # configuration pins the schema digest, and each agent checks its own table against it.
    check_schemas(data, [settings.tenant], pinned=config.data.schema_sha256)
    return AgentParts(
        config=config,
        roster=roster,
        identity=identity,
        party=settings.party,
        index=index,
        tenant=tenant,
        num_classes=settings.num_classes,
        state=settings.state,
        unsafe_key=settings.unsafe_plaintext_key,
        records=data,
    )


def open_institution(
    parts: AgentParts,
    *,
    trainer_seed: int | None = None,
    random_bytes: Callable[[int], bytes] = os.urandom,
    hazards: Sequence[str] = (),
) -> Institution:
    """The engine institution of ``parts``, its state under ``parts.state`` (created 0700; an
    existing directory that others could read is tightened to 0700, ledgered as a hazard).

    On a fresh ledger it records ``run.configured``, ``hazards``, the budget and the trainer's
    hazards, and releases the DP similarity statistic when the configuration uses it (charged
    and ledgered first); on a continued ledger it reloads the model, the statistic and (in the
    engine) the sketch seed. ``trainer_seed`` and ``random_bytes`` are the operating system's
    in production: a seeded trainer or protocol stream is for tests only (the test agent,
    :mod:`securefed.testing.agent`, ledgers that as a hazard).

    Raises ConfigError: a fresh ledger in a state directory that holds another run's model,
    sketch seed or statistic; a listed partition of the wrong length or with too small a group
    (:meth:`~securefed.runtime.engine.settings.EngineSettings.from_run_config`).
    """
    config, party = parts.config, parts.party
    settings = EngineSettings.from_run_config(config, parties=parts.roster.size)
    state = parts.state
    tightened = private_directory(state)
    ledger = Ledger.open(ledger_path(state, party), party, parts.identity)
    try:
        fresh = ledger.head.seq == -1
        kept = (MODEL_FILE, SEED_FILE, STATISTIC_FILE, PARTICIPATION_FILE, GUARD_FILE)
        leftovers = [f for f in kept if (state / f).exists()]
        if fresh and leftovers:
            raise ConfigError(
                f"{state} holds {', '.join(leftovers)} but no ledger: another run's state; "
                "give each run a fresh state directory"
            )
        spend = None
        if parts.records is not None:
            spend = open_spend(
                config,
                parts.tenant,
                parts.records,
                run_id=_participation_id(state, fresh=fresh),
                party=party,
            )
        node = build_client(
            config,
            parts.tenant,
            num_classes=parts.num_classes,
            index=parts.index,
            party_id=party,
            state_dir=state / "trainer",
            ledger=ledger,
            seed=trainer_seed,
            spend=spend,
        )
        if fresh:
            ledger.record(run_configured(config, parts.roster))
            if parts.unsafe_key:
                ledger.record(Hazard(text=UNSAFE_KEY_HAZARD))
            for text in hazards:
                ledger.record(Hazard(text=text))
        if tightened is not None:
            ledger.record(Hazard(text=tightened))
        statistic = (parts.num_classes, config.personalize.statistic_dim)
        node.open_state(state, fresh=fresh, statistic=statistic if config.uses_statistic else None)

        metadata = {"party": party, "config_sha256": config.sha256()}
        digest = _schema_digest(parts)
        if digest is not None:  # securefed predict / export check the schema against it
            metadata[SCHEMA_METADATA] = digest

        def on_model(round_: int) -> None:
            save_model(
                node.trainer.model(),
                state / MODEL_FILE,
                metadata={**metadata, "round": str(round_)},
                spec=node.model_spec,
            )

        return Institution(
            settings=settings,
            roster=parts.roster,
            identity=parts.identity,
            party_id=party,
            learner=node,
            ledger=ledger,
            random_bytes=random_bytes,
            on_model=on_model,
            seed_file=state / SEED_FILE,
            guard_file=state / GUARD_FILE,
            history_file=state / HISTORY_FILE,
        )
    except BaseException:
        ledger.close()
        raise


def _schema_digest(parts: AgentParts) -> str | None:
    """The schema digest of the agent's imported table (None: not imported with a schema)."""
    records, tenant = parts.records, parts.tenant.index
    if records is None or not record_file(records, tenant).is_file():
        return None
    return read_schema_digest(records, tenant)


def _participation_id(state: Path, *, fresh: bool) -> str:
    """This state directory's participation in the records' spend record: made with a fresh
    ledger, read back on a restart. A continued ledger without one is refused."""
    path = state / PARTICIPATION_FILE
    if fresh and not path.exists():
        identifier = os.urandom(16).hex()
        write_atomic(path, identifier.encode() + b"\n", mode=0o600, overwrite=False)
        return identifier
    try:
        identifier = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        raise ConfigError(
            f"{state} has a ledger but no readable {PARTICIPATION_FILE}: its spend cannot be "
            "found next to the records; give this run a fresh state directory"
        ) from None
    if len(identifier) != 32 or any(c not in "0123456789abcdef" for c in identifier):
        raise ConfigError(f"{path} does not hold a participation id")
    return identifier


def build_institution(settings: AgentSettings) -> Institution:
    """The production institution of ``settings``: its randomness from the operating system,
    an unencrypted key ledgered as a hazard (see :func:`load_parts`, :func:`open_institution`)."""
    return open_institution(load_parts(settings))


def serve(state_dir: Path, handler: Callable[[bytes], bytes], *, stop: Callable[[], bool]) -> None:
    """Answer framed requests on ``state_dir/agent.sock`` (mode 0600) with ``handler``, one per
    connection, until ``stop()`` (checked every second). A local failure while answering (the
    disk, the ledger) is answered with a ``Refused`` naming it, so the coordinator ledgers it,
    and the agent goes on."""
    path = socket_path(state_dir)
    pending = path.with_name(path.name + ".new")
    for stale in (path, pending):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        old = os.umask(0o177)
        try:
            listener.bind(str(pending))
        finally:
            os.umask(old)
        listener.listen(8)
        listener.settimeout(1.0)
        pending.rename(path)  # the socket appears only once it accepts connections
        try:
            while not stop():
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    continue
                with conn:
                    _answer(conn, handler)
        finally:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def _answer(conn: socket.socket, handler: Callable[[bytes], bytes]) -> None:
    conn.settimeout(600)
    try:
        request = read_frame(conn)
    except (SecureFedError, OSError) as exc:
        log.warning("dropped a connection: %s", type(exc).__name__)
        return
    try:
        reply = handler(request)
    except (SecureFedError, OSError) as exc:
        log.warning("could not answer a request: %s", type(exc).__name__)
        reply = m.encode(m.Refused(type(exc).__name__, str(exc)))
    with contextlib.suppress(OSError):
        write_frame(conn, reply)


def serve_until_signalled(state_dir: Path, handler: Callable[[bytes], bytes]) -> None:
    """:func:`serve` until SIGTERM or SIGINT."""
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    serve(state_dir, handler, stop=lambda: stopping)


def run_agent(settings: AgentSettings) -> None:
    """Serve until SIGTERM or SIGINT; the ledger is closed on the way out."""
    institution = build_institution(settings)
    try:
        serve_until_signalled(settings.state, institution.handle_bytes)
    finally:
        institution.close()
