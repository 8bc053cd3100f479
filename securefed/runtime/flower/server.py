"""The coordinator's side of a deployment, over any exchange (Flower's grid in :mod:`.server_app`).

:func:`run_server` is what the ServerApp runs: it loads the run configuration, the pinned
roster and the server's identity key, opens (or continues) the server's ledger under the state
directory, builds the engine's :class:`~securefed.runtime.engine.coordinator.Coordinator`,
measures the transport's floor (``echo_rtt_s``: empty round trips to every node, answered by
the ClientApp itself), and drives the coordinator to the end of the run::

    outbox = coordinator.start(nodes)
    while outbox is not None:
        sleep(outbox.delay)                       # join retries only
        replies = exchange(outbox.requests, timeout=timeouts[outbox.wait])
        outbox = coordinator.receive(replies, nodes)

The state directory receives ``ledgers/server.jsonl``, ``progress.jsonl`` (one line per
exchange: round, phase, time) and, at the end, ``metrics.json`` (the engine's
:class:`~securefed.runtime.engine.metrics.RunMetrics`). An error outside the engine ends the run
as ``interrupted`` (every party that still answers records ``run.finished`` and the final
checkpoint), then propagates.

Nothing here imports flwr: the tests drive it over an in-process exchange.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from securefed.audit import Hazard, Ledger, ledger_path
from securefed.crypto import SigningKey
from securefed.errors import ConfigError
from securefed.runtime.config import RunConfig, load_run_config
from securefed.runtime.engine import messages as m
from securefed.runtime.engine.coordinator import (
    Coordinator,
    CoordinatorPhase,
    Outbox,
    RoundView,
    Wait,
)
from securefed.runtime.engine.metrics import RunMetrics, write_metrics
from securefed.runtime.engine.releases import HISTORY_FILE
from securefed.runtime.engine.settings import EngineSettings
from securefed.runtime.federated import run_configured
from securefed.runtime.flower.deployment import (
    METRICS_FILE,
    PROGRESS_FILE,
    SERVER_RUN_CONFIG,
    UNSAFE_KEY_HAZARD,
    check_deployable,
)
from securefed.runtime.flower.identity import load_identity_key
from securefed.secagg.roster import Roster, load_roster

__all__ = [
    "Exchange",
    "Progress",
    "ServerSettings",
    "drive_deployment",
    "is_join_request",
    "measure_echo",
    "open_coordinator",
    "run_server",
]


class Exchange(Protocol):
    """What the coordinator needs from a transport: the connected nodes, and one round trip."""

    def nodes(self) -> Sequence[int]:
        """The ids of the nodes connected now."""
        ...

    def exchange(self, requests: Mapping[int, bytes], *, timeout: float) -> dict[int, bytes]:
        """Send ``requests[node]`` to each node; return the replies that came within
        ``timeout`` seconds (a node that failed or stayed silent is missing)."""
        ...


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """The ServerApp's settings (the keys of :data:`~.deployment.SERVER_RUN_CONFIG`)."""

    run_config: Path
    roster: Path
    server_key: Path
    passphrase_env: str | None
    unsafe_plaintext_key: bool
    state_dir: Path
    timeouts: Mapping[Wait, float]
    join_timeout: float = 120.0
    poll_interval: float = 0.1
    echo_probes: int = 3

    @classmethod
    def from_run_config(cls, values: Mapping[str, object]) -> ServerSettings:
        """From Flower's run configuration (``flwr run -c`` over the App's defaults).

        Raises:
            ConfigError: a key the ServerApp does not know (an App written by another securefed
                version: write it again with ``securefed deploy app``), a path not given, or a
                value of the wrong type.
        """
        unknown = sorted(set(values) - set(SERVER_RUN_CONFIG))
        if unknown:
            raise ConfigError(
                f"unknown run config key(s) {', '.join(unknown)}: write the Flower App again "
                "with `securefed deploy app` (docs/deploy.md)"
            )
        merged = {**SERVER_RUN_CONFIG, **values}
        unsafe = _flag(merged, "unsafe-plaintext-key")
        return cls(
            run_config=_path(merged, "run-config"),
            roster=_path(merged, "roster"),
            server_key=_path(merged, "server-key"),
            passphrase_env=None if unsafe else _text(merged, "passphrase-env"),
            unsafe_plaintext_key=unsafe,
            state_dir=_path(merged, "state-dir"),
            timeouts={
                Wait.JOIN: _seconds(merged, "join-reply-timeout"),
                Wait.TRAIN: _seconds(merged, "train-timeout"),
                Wait.PHASE: _seconds(merged, "phase-timeout"),
            },
            join_timeout=_seconds(merged, "join-timeout"),
            poll_interval=_seconds(merged, "poll-interval"),
            echo_probes=int(_seconds(merged, "echo-probes")),
        )


def _text(values: Mapping[str, object], key: str) -> str:
    value = values[key]
    if not isinstance(value, str):
        raise ConfigError(f"run config {key!r} must be a string")
    return value


def _path(values: Mapping[str, object], key: str) -> Path:
    value = _text(values, key)
    if not value:
        raise ConfigError(f"set the run config {key!r} (flwr run -c '{key}=\"...\"')")
    return Path(value)


def _flag(values: Mapping[str, object], key: str) -> bool:
    value = values[key]
    if not isinstance(value, bool):
        raise ConfigError(f"run config {key!r} must be true or false")
    return value


def _seconds(values: Mapping[str, object], key: str) -> float:
    value = values[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ConfigError(f"run config {key!r} must be a number >= 0")
    return float(value)


def is_join_request(data: bytes) -> bool:
    """Whether ``data`` is an engine join request (by its header alone: nothing is decoded)."""
    header = m.MAGIC + bytes([m.VERSION, m.Kind.JOIN])
    return data[: len(header)] == header


def open_coordinator(
    config: RunConfig,
    roster: Roster,
    identity: SigningKey,
    state_dir: Path,
    *,
    unsafe_key: bool,
    join_timeout: float,
    on_round_end: Callable[[RoundView], None] | None = None,
) -> Coordinator:
    """The engine coordinator of a deployment, its ledger ``state_dir/ledgers/server.jsonl``
    opened or continued; on a fresh ledger ``run.configured``, the unencrypted-key hazard and
    a listed partition are recorded first. Raises ConfigError for a configuration a deployment
    does not run (:func:`~.deployment.check_deployable`) or that does not fit the roster."""
    check_deployable(config)
    settings = EngineSettings.from_run_config(config, parties=roster.size)
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    actor = roster.server.party_id
    ledger = Ledger.open(ledger_path(state_dir, actor), actor, identity)
    try:
        coordinator = Coordinator(
            config=config,
            settings=settings,
            roster=roster,
            identity=identity,
            ledger=ledger,
            transport="flower",
            join_timeout=join_timeout,
            on_round_end=on_round_end,
            history_file=state_dir / HISTORY_FILE,
        )
        if ledger.head.seq == -1:
            ledger.record(run_configured(config, roster))
            if unsafe_key:
                ledger.record(Hazard(text=UNSAFE_KEY_HAZARD))
            coordinator.record_declared_partition()
    except BaseException:
        ledger.close()
        raise
    return coordinator


#: The coordinator's phases outside any round: before the first, and after the last.
_OUTSIDE_ROUNDS = frozenset(
    {
        CoordinatorPhase.JOIN,
        CoordinatorPhase.SETUP,
        CoordinatorPhase.FINISH,
        CoordinatorPhase.SEAL,
        CoordinatorPhase.DONE,
    }
)


class Progress:
    """``progress.jsonl``: one line per exchange -- the round it belongs to (0: before the
    first), the coordinator's phase, the wall-clock time it was sent, and how many requests."""

    def __init__(self, path: Path | None, *, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.completed = 0
        self._clock = clock

    def round_ended(self, view: RoundView) -> None:
        self.completed = view.number

    def exchange(self, coordinator: Coordinator, outbox: Outbox) -> None:
        phase = coordinator.phase
        line = {
            "round": self.completed if phase in _OUTSIDE_ROUNDS else self.completed + 1,
            "phase": phase.value,
            "time": self._clock(),
            "requests": len(outbox.requests),
        }
        if self.path is not None:
            with self.path.open("a", encoding="utf-8") as out:
                out.write(json.dumps(line, sort_keys=True) + "\n")


def measure_echo(
    exchange: Exchange,
    *,
    probes: int,
    timeout: float,
    clock: Callable[[], float] = time.monotonic,
) -> float | None:
    """The median of ``probes`` round trips of an empty request to every connected node (the
    ClientApp answers it without the agent): what one exchange costs on the transport alone.
    A probe that some node did not answer is left out; None if none was complete."""
    nodes = list(exchange.nodes())
    if probes <= 0 or not nodes:
        return None
    times = []
    for _ in range(probes):
        started = clock()
        replies = exchange.exchange(dict.fromkeys(nodes, b""), timeout=timeout)
        elapsed = clock() - started
        if set(replies) == set(nodes) and not any(replies.values()):
            times.append(elapsed)
    return statistics.median(times) if times else None


def drive_deployment(
    coordinator: Coordinator,
    exchange: Exchange,
    *,
    timeouts: Mapping[Wait, float],
    progress: Progress | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> RunMetrics:
    """Run ``coordinator`` to its end over ``exchange``; its metrics (``transport`` unset).

    An exception escaping the loop (the transport failed, an interrupt) ends the run as
    ``interrupted`` -- best effort: the remaining exchanges finish and seal with whoever still
    answers -- and then propagates."""
    outbox: Outbox | None = coordinator.start(list(exchange.nodes()))
    try:
        while outbox is not None:
            if outbox.delay > 0:
                sleep(outbox.delay)
            if progress is not None:
                progress.exchange(coordinator, outbox)
            replies = exchange.exchange(outbox.requests, timeout=timeouts[outbox.wait])
            outbox = coordinator.receive(replies, list(exchange.nodes()))
    except BaseException:
        _wind_down(coordinator, exchange, timeout=timeouts[Wait.PHASE])
        raise
    return coordinator.metrics()


def _wind_down(coordinator: Coordinator, exchange: Exchange, *, timeout: float) -> None:
    """Best effort after a failure: finish and seal with whoever still answers."""
    with contextlib.suppress(Exception):  # the original error propagates, not this one
        outbox = coordinator.abort()
        while outbox is not None:
            replies = exchange.exchange(outbox.requests, timeout=timeout)
            outbox = coordinator.receive(replies, list(exchange.nodes()))


def run_server(
    settings: ServerSettings,
    exchange: Exchange,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> RunMetrics:
    """The whole coordinator side of a deployment over ``exchange`` (module docstring); its
    metrics, also written to ``state_dir/metrics.json``.

    Raises:
        ConfigError, CryptoError: bad files, a configuration a deployment does not run, a
            server key that is not the roster's; nothing has been sent then.
        What the transport raises (after the run was wound down as ``interrupted``).
    """
    config = load_run_config(settings.run_config)
    check_deployable(config)
    roster = load_roster(settings.roster)
    identity = load_identity_key(
        settings.server_key,
        passphrase_env=settings.passphrase_env,
        unsafe_plaintext=settings.unsafe_plaintext_key,
    )
    state_dir = settings.state_dir
    progress = Progress(state_dir / PROGRESS_FILE)
    coordinator = open_coordinator(
        config,
        roster,
        identity,
        state_dir,
        unsafe_key=settings.unsafe_plaintext_key,
        join_timeout=settings.join_timeout,
        on_round_end=progress.round_ended,
    )
    try:
        echo = measure_echo(
            exchange, probes=settings.echo_probes, timeout=settings.timeouts[Wait.JOIN]
        )
        metrics = drive_deployment(
            coordinator, exchange, timeouts=settings.timeouts, progress=progress, sleep=sleep
        )
    finally:
        coordinator.ledger.close()
    metrics.transport = "flower"
    metrics.echo_rtt_s = echo
    write_metrics(state_dir / METRICS_FILE, metrics)
    return metrics
