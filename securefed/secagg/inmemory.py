"""One secure-aggregation round in memory: N protocol clients and a server, no training.

This is the protocol-level counterpart of the engine's in-memory transport: it moves the
protocol objects' own messages (``securefed.secagg``) and nothing else, for the protocol
benchmarks (``securefed bench secagg``, ``bench personalize``) and the protocol tests. Federated
runs go through the engine (:mod:`securefed.runtime.engine`), never through this.

Every hop goes through the canonical wire encoding (``to_bytes`` then ``decode``), so the same
bytes a real deployment would send are exercised. Hooks can drop, duplicate, reorder, delay or
replace any message in either direction (the network a test scripts); clients can drop out
before any phase.
"""

from __future__ import annotations

import os
import time
import tracemalloc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from securefed.errors import ProtocolError
from securefed.secagg.client import SecAggClient
from securefed.secagg.config import RoundConfig
from securefed.secagg.events import ProtocolEvent
from securefed.secagg.federation import Federation
from securefed.secagg.history import ReleaseHistory
from securefed.secagg.messages import Message, decode
from securefed.secagg.server import AggregateResult, Envelope, SecAggServer
from securefed.secagg.stages import Stage
from securefed.secagg.transcript import ContextItem

__all__ = ["RoundOutcome", "run_round"]

ClientHook = Callable[[int, Message], Sequence[Message]]
ServerHook = Callable[[Envelope], Sequence[Envelope]]
OrderHook = Callable[[list[Envelope]], list[Envelope]]
DelayHook = Callable[[Stage], Sequence[tuple[int, Message]]]


def _nothing_delayed(stage: Stage) -> Sequence[tuple[int, Message]]:
    return ()


@dataclass
class RoundOutcome:
    """What happened in one round.

    ``seconds`` is each party's compute time (client index, or ``"server"``): its protocol calls,
    plus encoding what it sends and decoding what it receives. ``upload_bytes`` is what each
    client sent to the server, as encoded on the wire.
    """

    result: AggregateResult | None
    server_stage: Stage
    client_stages: dict[int, Stage]
    server_events: list[ProtocolEvent]
    client_events: dict[int, list[ProtocolEvent]]
    client_errors: dict[int, ProtocolError] = field(default_factory=dict)
    seconds: dict[int | str, float] = field(default_factory=dict)
    upload_bytes: dict[int, int] = field(default_factory=dict)
    personalized: dict[int, npt.NDArray[np.float64]] = field(default_factory=dict)
    server: SecAggServer | None = None  # for inspecting what the server received and computed
    server_peak_bytes: int = 0  # with tracemalloc tracing: peak of the server's own memory
    histories: dict[int, ReleaseHistory | None] = field(default_factory=dict)  # per client

    @property
    def aborted(self) -> bool:
        return self.server_stage is Stage.ABORTED


def _identity_client(sender: int, message: Message) -> Sequence[Message]:
    return (message,)


def _identity_server(envelope: Envelope) -> Sequence[Envelope]:
    return (envelope,)


@dataclass
class _Round:
    config: RoundConfig
    clients: dict[int, SecAggClient]
    server: SecAggServer
    dropouts: Mapping[int, Stage]
    client_hook: ClientHook
    server_hook: ServerHook
    errors: dict[int, ProtocolError] = field(default_factory=dict)
    seconds: dict[int | str, float] = field(default_factory=dict)
    upload_bytes: dict[int, int] = field(default_factory=dict)
    _encoded: dict[int, tuple[Message, bytes]] = field(default_factory=dict)
    server_peak_bytes: int = 0
    _held_before: int = 0
    _traced_before: int = 0

    def charge(self, party: int | str, started: float) -> None:
        """Add the time since ``started`` to ``party``'s compute time (and, for the server,
        track its peak memory when tracemalloc is tracing)."""
        self.seconds[party] = self.seconds.get(party, 0.0) + time.perf_counter() - started
        if party == "server" and tracemalloc.is_tracing():
            transient = tracemalloc.get_traced_memory()[1] - self._traced_before
            self.server_peak_bytes = max(self.server_peak_bytes, self._held_before + transient)

    def server_call_starts(self) -> float:
        """Mark the start of a server call: the baseline for its memory peak."""
        if tracemalloc.is_tracing():
            self._held_before = self.server.held_bytes()
            self._traced_before = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
        return time.perf_counter()

    def encode(self, party: int | str, message: Message) -> bytes:
        """The sender's encoding cost (a broadcast is encoded once, as a real server would)."""
        started = time.perf_counter()
        cached = self._encoded.get(id(message))
        if cached is None or cached[0] is not message:
            # Keeping the message alive keeps its id unique while it is cached.
            cached = self._encoded[id(message)] = (message, message.to_bytes())
        self.charge(party, started)
        return cached[1]

    def alive(self, index: int, stage: Stage) -> bool:
        """Whether ``index`` still takes part in ``stage`` (it drops out *before* its stage)."""
        order = [
            Stage.ADVERTISE,
            Stage.SHARE,
            Stage.VERIFY,
            Stage.MASK,
            Stage.CONSISTENCY,
            Stage.UNMASK,
        ]
        drop = self.dropouts.get(index)
        return index not in self.errors and (drop is None or order.index(stage) < order.index(drop))

    def to_server(self, sender: int, message: Message) -> None:
        for forwarded in self.client_hook(sender, message):
            self.deliver(sender, forwarded)

    def deliver(self, sender: int, message: Message) -> None:
        """Put ``message`` on the wire to the server (no hook: already past the client hook)."""
        data = self.encode(sender, message)
        self.upload_bytes[sender] = self.upload_bytes.get(sender, 0) + len(data)
        if not self.server.stage.terminal:
            started = self.server_call_starts()
            self.server.receive(decode(data))
            self.charge("server", started)

    def to_client(self, envelope: Envelope, stage: Stage) -> None:
        for forwarded in self.server_hook(envelope):
            client = self.clients[forwarded.recipient]
            if not self.alive(forwarded.recipient, stage) or client.stage.terminal:
                continue
            data = self.encode("server", forwarded.message)
            started = time.perf_counter()
            try:
                replies = client.receive(decode(data))
            except ProtocolError as exc:
                self.errors[forwarded.recipient] = exc
                continue
            finally:
                self.charge(forwarded.recipient, started)
            for reply in replies:
                self.to_server(forwarded.recipient, reply)


def run_round(
    config: RoundConfig,
    federation: Federation,
    inputs: Mapping[int, npt.ArrayLike],
    *,
    dropouts: Mapping[int, Stage] | None = None,
    client_hook: ClientHook = _identity_client,
    server_hook: ServerHook = _identity_server,
    order_hook: OrderHook | None = None,
    before_advance: DelayHook = _nothing_delayed,
    context: Sequence[ContextItem] = (),
    client_context: Mapping[int, Sequence[ContextItem]] | None = None,
    client_configs: Mapping[int, RoundConfig] | None = None,
    weights: npt.NDArray[np.float64] | None = None,
    history: ReleaseHistory | None = None,
    client_histories: Mapping[int, ReleaseHistory | None] | None = None,
    random_bytes: Callable[[int], bytes] = os.urandom,
) -> RoundOutcome:
    """Run one round to its end.

    ``dropouts[i] = stage`` makes client i vanish before ``stage``. ``client_hook`` sees every
    client -> server message and returns what to deliver instead (nothing, several, or forged
    ones); ``server_hook`` does the same for server -> client envelopes; ``order_hook`` may permute
    the envelopes of each phase before delivery; ``before_advance(stage)`` returns (sender,
    message) pairs delivered to the server just before it closes ``stage`` -- a client hook that
    holds messages back and a ``before_advance`` that releases them later delay them.
    ``client_context`` gives individual clients a different signed context than the server's
    ``context``, and ``client_configs`` different
    round parameters (to script inconsistent views). ``weights`` is the server's weight matrix in
    attention mode; ``RoundOutcome.personalized`` then holds each target's personalized model.
    ``history`` is the server's release history, ``client_histories[i]`` client i's own (default:
    none); ``RoundOutcome.histories`` holds each client's afterwards (chain rounds with them).
    """
    clients = {
        i: SecAggClient(
            (client_configs or {}).get(i, config),
            index=i,
            identity=federation.client_keys[i],
            context=(client_context or {}).get(i, context),
            random_bytes=random_bytes,
            history=(client_histories or {}).get(i),
        )
        for i in range(config.n_clients)
    }
    server = SecAggServer(
        config, identity=federation.server_key, context=context, weights=weights, history=history
    )
    state = _Round(config, clients, server, dropouts or {}, client_hook, server_hook)
    for i, client in clients.items():
        if state.alive(i, Stage.ADVERTISE):
            started = time.perf_counter()
            advert = client.start(np.asarray(inputs[i]))
            state.charge(i, started)
            state.to_server(i, advert)
    while not server.stage.terminal:
        stage = server.stage
        for sender, late in before_advance(stage):  # delayed messages arrive now, maybe too late
            state.deliver(sender, late)
        if server.stage.terminal:
            break
        started = state.server_call_starts()
        envelopes = server.advance()
        state.charge("server", started)
        if order_hook is not None:
            envelopes = order_hook(envelopes)
        next_stage = server.stage if not server.stage.terminal else stage
        for envelope in envelopes:
            state.to_client(envelope, next_stage)
    return RoundOutcome(
        result=server.result,
        server_stage=server.stage,
        client_stages={i: c.stage for i, c in clients.items()},
        server_events=server.drain_events(),
        client_events={i: c.drain_events() for i, c in clients.items()},
        client_errors=state.errors,
        seconds=state.seconds,
        upload_bytes=state.upload_bytes,
        personalized={i: c.personalized for i, c in clients.items() if c.personalized is not None},
        server=server,
        server_peak_bytes=state.server_peak_bytes,
        histories={i: c.history for i, c in clients.items()},
    )
