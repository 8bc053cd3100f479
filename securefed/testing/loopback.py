"""A deployment in one process: the ServerApp's driver and the agents' institutions, wired by bytes.

:class:`LoopbackExchange` hands each engine request, as bytes, to an in-process handler -- what
the ClientApp relay and the agent's socket do, without Flower (an empty request is an echo,
answered by the "ClientApp" itself). :func:`run_loopback` runs a whole deployment that way from
the same files a real one reads (run configuration, roster, key files, data directory), with the
production code paths (:func:`securefed.runtime.flower.server.run_server` and the agent's
:func:`~securefed.runtime.flower.agent.open_institution`), optionally with one institution that
crashes at a request (:class:`~securefed.testing.agent.CrashPoint`, as ``--crash-at`` makes the
test agent do) and is restarted from its state directory later, and with malicious institutions
(:class:`~securefed.testing.agent.MisbehaviourPoint`, as ``--misbehave``). It is the in-process
reference the Flower integration test compares against, and what the fast tests use. TESTS ONLY.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from securefed.runtime.engine import messages as m
from securefed.runtime.engine.coordinator import Wait
from securefed.runtime.engine.institution import Institution
from securefed.runtime.engine.metrics import RunMetrics
from securefed.runtime.flower.agent import AgentSettings
from securefed.runtime.flower.server import ServerSettings, run_server
from securefed.testing.agent import (
    CrashPoint,
    MisbehaviourPoint,
    crashing,
    misbehaving,
    seeded_institution,
)

__all__ = ["DeploymentFiles", "LoopbackExchange", "run_loopback"]


class _Crashed(Exception):
    """The in-process stand-in for the test agent's ``os._exit``."""


def _matches(point: CrashPoint, data: bytes) -> bool:
    request = m.decode(data)
    return not isinstance(request, m.Reply) and point.matches(request)


class LoopbackExchange:
    """Engine requests to in-process handlers by node id.

    A node whose handler is None is a SuperNode whose agent is down: its requests fail, and --
    as :class:`~securefed.runtime.flower.server_app.GridExchange` does with a failed reply -- it
    is left out of :meth:`nodes` until the next exchange. ``before(call, requests)`` runs before
    every exchange (1, 2, ...); it may replace handlers (a handler set there answers that same
    exchange)."""

    def __init__(self) -> None:
        self.handlers: dict[int, Callable[[bytes], bytes] | None] = {}
        self.calls = 0
        self.before: Callable[[int, Mapping[int, bytes]], None] = lambda call, requests: None
        self.crashed: list[int] = []
        self._failed: set[int] = set()

    def nodes(self) -> list[int]:
        return sorted(set(self.handlers) - self._failed)

    def exchange(self, requests: Mapping[int, bytes], *, timeout: float) -> dict[int, bytes]:
        self.calls += 1
        self._failed = set()
        self.before(self.calls, requests)
        replies: dict[int, bytes] = {}
        for node, data in requests.items():
            if node not in self.handlers:
                continue
            if not data:
                replies[node] = b""  # an echo, answered by the relay itself
                continue
            handler = self.handlers[node]
            if handler is None:
                self._failed.add(node)
                continue
            try:
                replies[node] = handler(data)
            except _Crashed:
                self.handlers[node] = None
                self._failed.add(node)
                self.crashed.append(node)
        return replies


@dataclass(frozen=True)
class DeploymentFiles:
    """What every process of a test deployment reads: the run configuration, the roster, the
    unencrypted key files ``keys/<party>.key``, and the data directory that holds each
    institution's tenant (``tenants[i]`` is roster index i's tenant index)."""

    config: Path
    roster: Path
    keys: Path
    data: Path
    num_classes: int
    parties: tuple[str, ...]
    tenants: tuple[int, ...] = field(default=())

    def agent(self, index: int, state: Path) -> AgentSettings:
        party = self.parties[index]
        return AgentSettings(
            config=self.config,
            roster=self.roster,
            key=self.keys / f"{party}.key",
            passphrase_env=None,
            unsafe_plaintext_key=True,
            party=party,
            data=self.data,
            tenant=self.tenants[index] if self.tenants else index,
            num_classes=self.num_classes,
            state=state,
        )

    def server(self, state: Path, *, echo_probes: int = 1) -> ServerSettings:
        return ServerSettings(
            run_config=self.config,
            roster=self.roster,
            server_key=self.keys / "server.key",
            passphrase_env=None,
            unsafe_plaintext_key=True,
            state_dir=state,
            timeouts=dict.fromkeys(Wait, 0.0),
            join_timeout=0.0,
            echo_probes=echo_probes,
        )


def run_loopback(
    files: DeploymentFiles,
    out: Path,
    *,
    seed: int | None,
    crash: tuple[str, CrashPoint] | None = None,
    restart_after: CrashPoint | None = None,
    exchange: LoopbackExchange | None = None,
    misbehave: Mapping[str, MisbehaviourPoint] | None = None,
) -> RunMetrics:
    """Run the deployment of ``files`` in this process: institutions under
    ``out/nodes/<party>`` (node id = roster index), the coordinator under ``out/coordinator``;
    returns the coordinator's metrics (also in ``out/coordinator/metrics.json``).

    ``seed``: as the test agent's ``--seed`` (None: the operating system's randomness).
    ``crash``: that party's institution dies when it receives that request (it answers
    nothing; its node stays, with nothing behind it) and is restarted from its state directory
    before the exchange that follows the first exchange carrying a ``restart_after`` request
    to any party (None: before the exchange after the crash).
    ``exchange``: a (test) subclass of :class:`LoopbackExchange` to use instead.
    ``misbehave``: party -> how its institution cheats (as the test agent's ``--misbehave``).
    """
    exchange = LoopbackExchange() if exchange is None else exchange
    live: dict[int, Institution] = {}
    down: list[int] = []
    restart_due = restart_after is None

    def die() -> None:
        raise _Crashed

    def start(index: int, point: CrashPoint | None) -> None:
        institution = seeded_institution(
            files.agent(index, out / "nodes" / files.parties[index]), seed=seed
        )
        live[index] = institution
        handler: Callable[[bytes], bytes] = institution.handle_bytes
        cheat = (misbehave or {}).get(files.parties[index])
        if cheat is not None:
            handler = misbehaving(institution, cheat)
        if point is not None:
            handler = crashing(handler, point, die=die)
        exchange.handlers[index] = handler

    crash_index = None if crash is None else files.parties.index(crash[0])
    for index in range(len(files.parties)):
        start(index, crash[1] if crash is not None and index == crash_index else None)
    wrapped = exchange.before

    def before(call: int, requests: Mapping[int, bytes]) -> None:
        nonlocal restart_due
        while exchange.crashed:
            node = exchange.crashed.pop()
            live.pop(node).close()
            down.append(node)
        while down and restart_due:
            start(down.pop(), None)
        if down and not restart_due and restart_after is not None:
            # from the exchange after the first one that carries such a request (to anyone)
            restart_due = any(bool(d) and _matches(restart_after, d) for d in requests.values())
        wrapped(call, requests)

    exchange.before = before
    try:
        return run_server(files.server(out / "coordinator"), exchange, sleep=lambda s: None)
    finally:
        for institution in live.values():
            institution.close()
