"""A deployment in one process: the ServerApp's driver and the agents' institutions, wired by bytes.

:class:`LoopbackExchange` hands each engine request, as bytes, to an in-process handler -- what
the ClientApp relay and the agent's socket do, without Flower (an empty request is an echo,
answered by the "ClientApp" itself). :func:`run_loopback` runs a whole deployment that way from
the same files a real one reads (run configuration, roster, key files, data directory), with the
production code paths (:func:`securefed.runtime.flower.server.run_server` and the agent's
:func:`~securefed.runtime.flower.agent.open_institution`), optionally with one institution that
crashes at a request (:class:`~securefed.testing.agent.CrashPoint`, as ``--crash-at`` makes the
test agent do) and is restarted from its state directory before the next exchange. It is the
in-process reference the Flower integration test compares against, and what the fast tests use.
TESTS ONLY.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from securefed.runtime.engine.coordinator import Wait
from securefed.runtime.engine.institution import Institution
from securefed.runtime.engine.metrics import RunMetrics
from securefed.runtime.flower.agent import AgentSettings
from securefed.runtime.flower.server import ServerSettings, run_server
from securefed.testing.agent import CrashPoint, crashing, seeded_institution

__all__ = ["DeploymentFiles", "LoopbackExchange", "run_loopback"]


class _Crashed(Exception):
    """The in-process stand-in for the test agent's ``os._exit``."""


class LoopbackExchange:
    """Engine requests to in-process handlers by node id; a missing handler is a dead node.

    ``before(call, requests)`` runs before every exchange (1, 2, ...); it may attach, detach or
    replace handlers (a handler attached there answers that same exchange)."""

    def __init__(self) -> None:
        self.handlers: dict[int, Callable[[bytes], bytes]] = {}
        self.calls = 0
        self.before: Callable[[int, Mapping[int, bytes]], None] = lambda call, requests: None
        self.crashed: list[int] = []

    def nodes(self) -> list[int]:
        return sorted(self.handlers)

    def exchange(self, requests: Mapping[int, bytes], *, timeout: float) -> dict[int, bytes]:
        self.calls += 1
        self.before(self.calls, requests)
        replies: dict[int, bytes] = {}
        for node, data in requests.items():
            handler = self.handlers.get(node)
            if handler is None:
                continue
            if not data:
                replies[node] = b""  # an echo, answered by the relay itself
                continue
            try:
                replies[node] = handler(data)
            except _Crashed:
                del self.handlers[node]
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
    exchange: LoopbackExchange | None = None,
) -> RunMetrics:
    """Run the deployment of ``files`` in this process: institutions under
    ``out/nodes/<party>`` (node id = roster index), the coordinator under ``out/coordinator``;
    returns the coordinator's metrics (also in ``out/coordinator/metrics.json``).

    ``seed``: as the test agent's ``--seed`` (None: the operating system's randomness).
    ``crash``: that party's institution dies when it receives that request (it answers
    nothing) and is restarted from its state directory before the next exchange.
    ``exchange``: a (test) subclass of :class:`LoopbackExchange` to use instead.
    """
    exchange = LoopbackExchange() if exchange is None else exchange
    live: dict[int, Institution] = {}
    pending_restart: list[int] = []

    def die() -> None:
        raise _Crashed

    def start(index: int, point: CrashPoint | None) -> None:
        institution = seeded_institution(
            files.agent(index, out / "nodes" / files.parties[index]), seed=seed
        )
        live[index] = institution
        handler = institution.handle_bytes
        if point is not None:
            handler = crashing(handler, point, die=die)
        exchange.handlers[index] = handler

    crash_index = None if crash is None else files.parties.index(crash[0])
    for index in range(len(files.parties)):
        start(index, crash[1] if crash is not None and index == crash_index else None)
    wrapped = exchange.before

    def before(call: int, requests: Mapping[int, bytes]) -> None:
        while exchange.crashed:
            node = exchange.crashed.pop()
            live.pop(node).close()
            pending_restart.append(node)
        while pending_restart:
            start(pending_restart.pop(), None)
        wrapped(call, requests)

    exchange.before = before
    try:
        return run_server(files.server(out / "coordinator"), exchange, sleep=lambda s: None)
    finally:
        for institution in live.values():
            institution.close()
