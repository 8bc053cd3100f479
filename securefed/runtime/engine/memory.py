"""The in-memory transport: the coordinator and every institution in one process.

``securefed run``, ``securefed demo``, the benchmarks and the tests drive the engine through
:class:`MemoryTransport`. Every request and reply still goes through the engine's canonical
encoding (the coordinator encodes, the institution's side decodes, and back), so the bytes a
deployment sends are the bytes exercised here; only the network is missing.

A :class:`FaultPlan` sees every request before delivery and every reply before it goes back,
and may lose or replace either. :class:`Dropouts` is the plan behind the run configuration's
``dropout_rate`` (a party lost at a protocol phase of a round); tests write their own (a party
that crashes, a corrupted or replayed message). ``on_exchange`` may replace institutions between
exchanges (a crash and restart from the state directory).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Protocol

from securefed.errors import SecureFedError
from securefed.runtime.engine import messages as m
from securefed.runtime.engine.coordinator import Coordinator, Outbox, Wait
from securefed.runtime.engine.institution import Institution
from securefed.runtime.engine.metrics import RunMetrics

__all__ = ["Drop", "Dropouts", "FaultPlan", "MemoryTransport", "drive"]


class FaultPlan(Protocol):
    """What a hostile or unreliable network does to one exchange."""

    def request(self, node: int, request: m.Request) -> m.Request | None:
        """The request to deliver instead (None: lost)."""
        ...

    def reply(self, node: int, request: m.Request, reply: m.Reply) -> m.Reply | None:
        """The reply to deliver instead (None: lost)."""
        ...


class _Reliable:
    def request(self, node: int, request: m.Request) -> m.Request | None:
        return request

    def reply(self, node: int, request: m.Request, reply: m.Reply) -> m.Reply | None:
        return reply


#: Protocol stages in order, by the name the run configuration and the ledger use.
STAGES = ("advertise", "share", "verify", "mask", "consistency", "unmask")
_STEP_STAGE = {
    m.StepPhase.KEYS: "share",
    m.StepPhase.VERIFY: "verify",
    m.StepPhase.MASK: "mask",
    m.StepPhase.CONFIRM: "consistency",
    m.StepPhase.UNMASK: "unmask",
}


@dataclass(frozen=True, slots=True)
class Drop:
    """Party at node ``node`` is lost in round ``round`` from protocol stage ``stage`` on:
    ``advertise`` -- it does not advertise keys for the round (it sits the round out);
    ``share`` -- silent from the exchange that carries its key directory; ``verify``, ``mask``,
    ``consistency`` -- silent from that phase; ``unmask`` -- its unmasking shares are lost
    (its keys for the next round still arrive)."""

    node: int
    round: int
    stage: str

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}")


class Dropouts:
    """A :class:`FaultPlan` of :class:`Drop` events."""

    def __init__(self, drops: tuple[Drop, ...]) -> None:
        self._drops = {(d.node, d.round): STAGES.index(d.stage) for d in drops}

    def _from(self, node: int, round_: int) -> int | None:
        return self._drops.get((node, round_))

    def request(self, node: int, request: m.Request) -> m.Request | None:
        if isinstance(request, m.Advert | m.Join | m.Step):
            upcoming = request.next
            if upcoming is not None and self._from(node, upcoming.round) == 0:
                if isinstance(request, m.Advert):
                    return None
                request = replace(request, next=None)
        stage = self._stage_of(request)
        if stage is None:
            return request
        round_, position = stage
        start = self._from(node, round_)
        if start is not None and 0 < start <= position < STAGES.index("unmask"):
            return None
        return request

    @staticmethod
    def _stage_of(request: m.Request) -> tuple[int, int] | None:
        if isinstance(request, m.Train) and request.messages:
            return request.round, STAGES.index("share")
        if isinstance(request, m.Step):
            return request.round, STAGES.index(_STEP_STAGE[request.phase])
        return None

    def reply(self, node: int, request: m.Request, reply: m.Reply) -> m.Reply | None:
        if isinstance(request, m.Step) and request.phase is m.StepPhase.UNMASK:
            start = self._from(node, request.round)
            if start is not None and start > 0 and isinstance(reply, m.StepReply):
                return replace(reply, messages=())
        return reply


class MemoryTransport:
    """Institutions in this process, by node id; bytes in, bytes out."""

    def __init__(
        self, institutions: Mapping[int, Institution], *, faults: FaultPlan | None = None
    ) -> None:
        self.institutions: dict[int, Institution | None] = dict(institutions)
        self.faults: FaultPlan = faults if faults is not None else _Reliable()
        self.calls = 0

    def nodes(self) -> list[int]:
        return sorted(node for node, inst in self.institutions.items() if inst is not None)

    def replace(self, node: int, institution: Institution | None) -> None:
        """Kill (None) or (re)start the institution at ``node``; a killed one is closed."""
        old = self.institutions.get(node)
        if old is not None and old is not institution:
            old.close()
        self.institutions[node] = institution

    def exchange(self, requests: Mapping[int, bytes], *, timeout: float) -> dict[int, bytes]:
        self.calls += 1
        replies: dict[int, bytes] = {}
        for node, data in requests.items():
            institution = self.institutions.get(node)
            if institution is None:
                continue
            decoded = m.decode(data)
            assert not isinstance(decoded, m.Reply)  # noqa: S101 - the coordinator sends requests
            request = self.faults.request(node, decoded)
            if request is None:
                continue
            reply = institution.respond(request)
            delivered = self.faults.reply(node, request, reply)
            if delivered is not None:
                replies[node] = m.encode(delivered)
        return replies

    def close(self) -> None:
        for node in list(self.institutions):
            self.replace(node, None)


def drive(
    coordinator: Coordinator,
    transport: MemoryTransport,
    *,
    on_exchange: Callable[[int, Coordinator], None] | None = None,
    timeouts: Mapping[Wait, float] | None = None,
) -> RunMetrics:
    """Run ``coordinator`` to its end over ``transport``; its metrics.

    ``on_exchange(n, coordinator)`` is called before exchange ``n`` (1, 2, ...). An exception
    escaping the engine ends the run as ``interrupted`` (best effort: every reachable party
    records ``run.finished`` and the final checkpoint), then propagates.
    """
    limits = timeouts or {}
    outbox: Outbox | None = coordinator.start(transport.nodes())
    count = 0
    try:
        while outbox is not None:
            count += 1
            if on_exchange is not None:
                on_exchange(count, coordinator)
            if outbox.delay and outbox.wait is Wait.JOIN:
                time.sleep(min(outbox.delay, 0.01))
            replies = transport.exchange(outbox.requests, timeout=limits.get(outbox.wait, 0.0))
            outbox = coordinator.receive(replies, transport.nodes())
    except BaseException:
        _wind_down(coordinator, transport)
        raise
    metrics = coordinator.metrics()
    metrics.transport = "memory"
    return metrics


def _wind_down(coordinator: Coordinator, transport: MemoryTransport) -> None:
    """Best effort after a failure: finish and seal whatever parties still answer."""
    try:
        outbox = coordinator.abort()
        while outbox is not None:
            replies = transport.exchange(outbox.requests, timeout=0.0)
            outbox = coordinator.receive(replies, transport.nodes())
    except (SecureFedError, OSError):
        pass
