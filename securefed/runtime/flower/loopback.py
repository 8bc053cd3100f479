"""The deployment in one process: the coordinator and every institution's agent, wired by bytes.

:class:`LoopbackExchange` hands each deployment message, encoded, straight to the
institution's :meth:`~securefed.runtime.flower.institution.Institution.handle` and returns
the encoded answer: the same messages as over Flower, with no network, processes or polling.
:func:`run_loopback` runs a whole deployment that way, optionally crashing one institution
before round 1's mask exchange and restarting it from its state directory after round 1 --
the reference the Flower integration test compares against, and what the fast tests use.
TESTS AND BENCHMARKS ONLY: the institutions are seeded from the run seed (``reproducible``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from securefed.data import load_tenants, num_classes
from securefed.errors import SecureFedError
from securefed.runtime.config import RunConfig
from securefed.runtime.flower.coordinator import Coordinator, PhaseTimeouts
from securefed.runtime.flower.institution import Institution
from securefed.runtime.flower.wire import DeployMessage, decode_deploy
from securefed.testing import Federation

__all__ = ["LoopbackExchange", "run_loopback"]


class LoopbackExchange:
    """Deployment messages as bytes, handed to in-process institutions (node id = 100, 101, ...).

    ``before`` is called before every exchange with its number (1, 2, ...) and the kinds of
    the messages in it; it may :meth:`kill` or :meth:`attach` institutions (an institution
    attached during an exchange joins from the next one).
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

    def close(self) -> None:
        for institution in self.live.values():
            institution.close()
        self.live.clear()


def run_loopback(
    config: RunConfig,
    federation: Federation,
    out: Path,
    *,
    crash: str | None = None,
    exchange: LoopbackExchange | None = None,
) -> dict[str, Any]:
    """Run ``config`` (its data directory holds every institution's tenant, in roster order)
    with institutions under ``out/institutions/<party>`` and the coordinator under
    ``out/coordinator``; returns the coordinator's metrics.

    ``crash``: this party is lost before round 1's mask exchange (after it trained and
    advertised) and restarted from its state directory when round 1 ends. ``exchange``: a
    (test) subclass of :class:`LoopbackExchange` to use instead of a plain one.
    """
    if config.data.directory is None:
        raise ValueError("run_loopback needs a config with [data] directory")
    tenants = load_tenants(config.data.directory)
    classes = num_classes(tenants)

    def institution(index: int) -> Institution:
        party = federation.roster.client(index).party_id
        return Institution(
            config=config,
            roster=federation.roster,
            identity=federation.client_keys[index],
            party_id=party,
            tenant=tenants[index],
            num_classes=classes,
            state_dir=out / "institutions" / party,
            reproducible=True,
        )

    exchange = LoopbackExchange() if exchange is None else exchange
    for index in range(federation.roster.size):
        exchange.attach(institution(index))
    protocol_exchanges, restarted = 0, False

    def before(call: int, kinds: set[str]) -> None:
        nonlocal protocol_exchanges, restarted
        if crash is None:
            return
        if kinds == {"protocol"}:
            protocol_exchanges += 1
            if protocol_exchanges == 2:  # round 1's mask exchange (after share)
                exchange.kill(crash)
        if kinds == {"finish"} and protocol_exchanges >= 2 and not restarted:
            restarted = True
            exchange.attach(institution(federation.roster.index_of(crash)))

    exchange.before = before
    coordinator = Coordinator(
        config=config,
        roster=federation.roster,
        identity=federation.server_key,
        state_dir=out / "coordinator",
        exchange=exchange,
        timeouts=PhaseTimeouts(join=0.0),
    )
    try:
        return coordinator.run()
    finally:
        exchange.close()
