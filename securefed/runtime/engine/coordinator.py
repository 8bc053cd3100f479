"""The coordinator in the engine: replies in, requests out, no network and no clock of its own.

:class:`Coordinator` runs the server's side of every round of every mode. A transport drives it::

    outbox = coordinator.start(transport.nodes())
    while outbox is not None:
        replies = transport.exchange(outbox.requests, timeout=timeouts[outbox.wait])
        outbox = coordinator.receive(replies, transport.nodes())

Each exchange sends at most one request to each node and collects the replies that come back; a
node that stays silent, or answers with something malformed or out of place, sits out the rest
of the phase (the protocol recovers it as a dropout) and the problem is ledgered with the
sender's name. What follows each phase is one table, :data:`ROUND_FLOW`.

Exchanges per round (docs/deploy.md): fedavg and group mode TRAIN (with the key directory),
VERIFY (share bundles in, receipts with complaints out: docs/protocol.md, "Verifiable shares"),
MASK, CONFIRM, UNMASK (with the next round's key advertisements) = 5; attention mode adds KEYS
(the directory carries the weights computed from the sketches that came with training) = 6.
Round 1's advertisements come with JOIN; a round whose advertisements are missing begins with
ADVERT, and the round that learns group mode's partition adds REGROUP and KEYS. Results go back
with the next round's TRAIN (or FINISH). Before round 1: JOIN, and SETUP when sketches are used
(once more for each dealer that offers no usable seed: at most :data:`SETUP_ATTEMPTS` in all).
In attention mode, a round before which the membership changed (a party joined late, or one
that shares the seed is gone) begins with a fresh deal: DEAL (new session keys), then SETUP as
above -- at most ``max_seed_deals`` seeds in a run (docs/fedamp.md, "Sketch epochs").

The coordinator holds no client secret: it sees what a secure-aggregation server sees
(advertisements, sealed shares, masked vectors, reconstructed dropout secrets, the group sums
or the target-blinded outputs) plus the secret sketches (never the sketch seed).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np
import numpy.typing as npt

from securefed import __version__
from securefed.audit import (
    HEADS_CONTEXT_LABEL,
    Hazard,
    Head,
    Ledger,
    Misbehaviour,
    OutputsWithheld,
    Partition,
    RoundSurvivors,
    RunFinished,
    SketchSeedDealt,
    Unmask,
    heads_context,
    record_checkpoint,
)
from securefed.crypto import SigningKey
from securefed.errors import ConfigError, ProtocolError, RemoteProtocolError
from securefed.files import PRIVATE_FILE_MODE, write_atomic
from securefed.personalize.modes import PersonalizationMode
from securefed.personalize.rounds import (
    learned_partition,
    plaintext_weights,
    round_config,
    weights_from_sketches,
)
from securefed.personalize.weights import group_weights, personalized_models
from securefed.runtime.config import RunConfig
from securefed.runtime.engine import messages as m
from securefed.runtime.engine.metrics import (
    ClientDP,
    ClientMetrics,
    DPMetrics,
    RoundMetrics,
    RunMetrics,
)
from securefed.runtime.engine.releases import ReleaseBook
from securefed.runtime.engine.settings import EngineSettings
from securefed.runtime.engine.signing import (
    sign_final_head,
    verified_party,
    verify_final_heads,
)
from securefed.secagg import (
    ClientsExcluded,
    ComplaintJudged,
    ExclusionReason,
    ProtocolEvent,
    SecAggServer,
    ShareRejected,
    Stage,
)
from securefed.secagg.dealing import encode_evidence
from securefed.secagg.messages import BlindedOutput
from securefed.secagg.messages import decode as decode_protocol
from securefed.secagg.roster import Roster
from securefed.secagg.session import SessionSetupServer, commitment_context
from securefed.secagg.transcript import ContextItem

__all__ = [
    "ROUND_FLOW",
    "SETUP_ATTEMPTS",
    "Coordinator",
    "CoordinatorPhase",
    "DealerFault",
    "Flow",
    "Outbox",
    "RoundView",
    "Wait",
]

log = logging.getLogger(__name__)

Vector = npt.NDArray[np.float64]
SERVER_ID = "server"
#: No sketch of a model within the codec's range comes near this; a larger one is refused.
MAX_SKETCH_VALUE = 1e12
#: How many dealers in turn the sketch-seed setup tries before the run ends ``failed``.
SETUP_ATTEMPTS = 4
#: Where the signed evidence of each ``round.misbehaviour`` goes, next to ``ledgers/``.
EVIDENCE_DIR = "evidence"


class DealerFault(Enum):
    """Why a sketch-seed dealer was left out of the run (the hazard ledgered names it)."""

    NO_OFFER = "no-offer"  # silent, or nothing verifiable came: a dropout, not a proof
    BAD_OFFER = "bad-offer"  # its signed offer fails the public checks: proof, on its signature


class Wait(Enum):
    """Which timeout an exchange waits under (the transport maps each to seconds)."""

    JOIN = "join"
    TRAIN = "train"
    PHASE = "phase"


@dataclass(frozen=True, slots=True)
class Outbox:
    """One exchange to make: a request per node, the timeout class, and a delay before it."""

    requests: Mapping[int, bytes]
    wait: Wait
    delay: float = 0.0


class CoordinatorPhase(Enum):
    JOIN = "join"
    SETUP = "setup"
    DEAL = "deal"  # a fresh sketch-seed deal between rounds: new session keys
    ADVERT = "advert"  # keys for a round whose advertisements are not in yet (round 1)
    TRAIN = "train"
    REGROUP = "regroup"  # keys for the groups of a partition just learned
    KEYS = "keys"
    VERIFY = "verify"
    MASK = "mask"
    CONFIRM = "confirm"
    UNMASK = "unmask"
    END = "end"  # the round is over (not an exchange)
    FINISH = "finish"
    SEAL = "seal"
    DONE = "done"


class Flow(Enum):
    """How a round runs."""

    LOCAL = "local"  # train only
    PLAIN = "plain"  # plaintext comparison: models to the coordinator
    SUM = "sum"  # fedavg / group with a known partition: one secure sum per group
    ATTENTION = "attention"  # fedamp / heurfedamp: weights from sketches, blinded outputs
    LEARN = "learn"  # group mode's first round: the partition from sketches, then secure sums


C = CoordinatorPhase
#: The phase after each phase of a round, by the round's flow.
ROUND_FLOW: dict[tuple[Flow, CoordinatorPhase], CoordinatorPhase] = {
    (Flow.LOCAL, C.TRAIN): C.END,
    (Flow.PLAIN, C.TRAIN): C.END,
    (Flow.SUM, C.TRAIN): C.VERIFY,
    (Flow.ATTENTION, C.TRAIN): C.KEYS,
    (Flow.LEARN, C.TRAIN): C.REGROUP,
    (Flow.LEARN, C.REGROUP): C.KEYS,
    **{(flow, C.KEYS): C.VERIFY for flow in (Flow.ATTENTION, Flow.LEARN)},
    **{(flow, C.VERIFY): C.MASK for flow in (Flow.SUM, Flow.ATTENTION, Flow.LEARN)},
    **{(flow, C.MASK): C.CONFIRM for flow in (Flow.SUM, Flow.ATTENTION, Flow.LEARN)},
    **{(flow, C.CONFIRM): C.UNMASK for flow in (Flow.SUM, Flow.ATTENTION, Flow.LEARN)},
    **{(flow, C.UNMASK): C.END for flow in (Flow.SUM, Flow.ATTENTION, Flow.LEARN)},
}
_STEP_OF = {
    C.KEYS: m.StepPhase.KEYS,
    C.VERIFY: m.StepPhase.VERIFY,
    C.MASK: m.StepPhase.MASK,
    C.CONFIRM: m.StepPhase.CONFIRM,
}
_DROPOUT_PHASE = {
    C.ADVERT: "advertise",
    C.REGROUP: "advertise",
    C.TRAIN: "share",
    C.KEYS: "share",
    C.VERIFY: "verify",
    C.MASK: "mask",
    C.CONFIRM: "consistency",
    C.UNMASK: "unmask",
}


@dataclass
class _Group:
    label: int
    members: tuple[int, ...]  # roster indices
    server: SecAggServer


@dataclass(frozen=True, slots=True)
class RoundView:
    """What the coordinator saw in one finished round, for observers (tests, attack code,
    benchmarks): its protocol servers by group (``members`` are roster indices), the weights it
    used (attention, plaintext), the sketches it received, the partition, and the dropouts."""

    number: int
    flow: Flow
    groups: tuple[tuple[tuple[int, ...], SecAggServer], ...]
    weights: Vector | None
    sketches: Mapping[int, Vector]
    partition: tuple[int, ...] | None
    dropouts: Mapping[int, str]
    refused: Mapping[int, str]


@dataclass
class _Round:
    """What the coordinator holds about the round in progress."""

    number: int
    flow: Flow
    started: float
    participants: set[int] = field(default_factory=set)
    groups: list[_Group] = field(default_factory=list)
    heads: tuple[Head, ...] = ()
    sketches: dict[int, Vector] = field(default_factory=dict)
    models: dict[int, Vector] = field(default_factory=dict)
    similarity: dict[int, Vector] = field(default_factory=dict)
    weights: Vector | None = None
    refused: dict[int, str] = field(default_factory=dict)
    dropouts: dict[int, str] = field(default_factory=dict)
    withheld: tuple[int, ...] = ()  # attention mode: targets that got no output
    exchanges: int = 0


@dataclass
class _Deals:
    """The run's sketch-seed deals, as the coordinator tracks them."""

    commitment: bytes | None = None  # the current seed's (bound into every round)
    members: frozenset[int] | None = None  # who shares the current seed (its directory)
    asked: frozenset[int] = frozenset()  # the members when it was dealt
    count: int = 0  # seeds dealt in this run
    resume: int | None = None  # the round a deal between rounds goes on to
    tried: int = 0  # the last round a deal was tried before (one try per round)
    failed: int = 0  # dealers of the current deal that offered no usable seed
    stale: frozenset[int] = frozenset()  # members found sketching under another seed (or none)


@dataclass
class _Adverts:
    """Key advertisements collected for one upcoming round."""

    next: m.NextRound
    adverts: dict[int, bytes] = field(default_factory=dict)
    heads: dict[int, Head] = field(default_factory=dict)
    declined: dict[int, str] = field(default_factory=dict)


class Coordinator:
    """The server's side of a run (module docstring).

    ``clock`` is the only clock it reads (round times, the join deadline); ``random_bytes``
    draws session ids and join challenges (``os.urandom``; a simulation may seed it).
    ``join_timeout``: before round 1, how long to keep inviting parties that have not joined.
    ``segments``: the latent segment of each party when the data declares one (simulation
    metrics only: the share of weight that stays within a segment). ``first_round``: the round
    to begin with after the joins -- 1, or the round after the last one the parties' ledgers
    show when a killed run is resumed (``securefed run --resume``); beyond the configured
    rounds the run goes straight to its end. ``earlier_rounds``: for a resumed run, whether each
    earlier aggregating round produced an aggregate (an interrupted one did not), so that the
    run's outcome counts them.
    """

    def __init__(
        self,
        *,
        config: RunConfig,
        settings: EngineSettings,
        roster: Roster,
        identity: SigningKey,
        ledger: Ledger,
        transport: str,
        clock: Callable[[], float] = time.monotonic,
        random_bytes: Callable[[int], bytes] = os.urandom,
        join_timeout: float = 0.0,
        segments: Sequence[int] | None = None,
        on_round_end: Callable[[RoundView], None] | None = None,
        first_round: int = 1,
        earlier_rounds: Mapping[int, bool] | None = None,
        history_file: os.PathLike[str] | None = None,
    ) -> None:
        if identity.verify_key() != roster.server.identity:
            raise ConfigError("the server key is not the roster's server identity")
        if isinstance(first_round, bool) or not isinstance(first_round, int) or first_round < 1:
            raise ConfigError(f"first_round must be an integer >= 1, got {first_round!r}")
        self._first = first_round
        self.config = config
        self.settings = settings
        self.roster = roster
        self.ledger = ledger
        self._identity = identity
        self._clock = clock
        self._random_bytes = random_bytes
        self._join_deadline, self._join_timeout = 0.0, join_timeout
        self._segments = tuple(segments) if segments is not None else None
        self._on_round_end = on_round_end
        self.phase = CoordinatorPhase.JOIN
        self.partition = settings.fixed_partition(roster.size)
        self._party_of: dict[int, int] = {}  # node -> roster index
        self._node_of: dict[int, int] = {}  # roster index -> node
        self._challenges: dict[int, m.Join] = {}  # node -> the join it was sent
        self._sent: dict[int, m.Request] = {}
        self._last_sent: dict[int, m.Request] = {}
        # node -> roster index, as mapped when sent (this exchange, the last one)
        self._sent_to: dict[int, int] = {}
        self._last_sent_to: dict[int, int] = {}
        self._info: dict[int, m.ClientInfo] = {}
        self._evaluations: dict[int, m.Evaluation] = {}  # each party's latest
        self._scores: dict[int, dict[int, m.Evaluation]] = {}  # round -> party -> first
        self._dim: int | None = None
        self._setup: SessionSetupServer | None = None
        self._setup_keys: dict[int, bytes] = {}  # a deal's session keys, by roster index
        self._left_out: dict[int, DealerFault] = {}  # dealers that sit the run out, and why
        self._deliveries: dict[int, bytes] = {}
        self._deal = _Deals()
        # attention mode: what earlier rounds released (docs/fedamp.md, "Across rounds")
        self._releases = ReleaseBook(roster.size, history_file)
        self._adverts: _Adverts | None = None
        self._results: dict[int, m.Result] = {}
        self._checkpoint: tuple[Head, ...] = ()
        self._round: _Round | None = None
        self._completed_rounds = first_round - 1
        self._status = m.RunStatus.COMPLETED
        # aggregating round -> whether it produced one (a resumed run's earlier rounds included)
        self._aggregated: dict[int, bool] = dict(earlier_rounds or {})
        self._final_heads: list[Head] = []
        self._history: dict[int, RoundMetrics] = {0: RoundMetrics(round=0)}
        for number, aggregated in sorted(self._aggregated.items()):
            if not aggregated and number == first_round - 1:  # the round the kill interrupted
                self._history[number] = RoundMetrics(round=number, status="interrupted")
        self._exchanges = 0
        self._started = clock()
        self.bytes_sent: dict[str, int] = {}
        self.bytes_received: dict[str, int] = {}
        self._final: dict[int, m.Evaluation] = {}

    # -- the driver's interface ------------------------------------------------------------------

    def start(self, nodes: Sequence[int]) -> Outbox:
        """The first exchange: invite every node to join."""
        self._join_deadline = self._clock() + self._join_timeout
        self._setup_session = self._random_bytes(32) if self.settings.sketches else b""
        if self._flow() in (Flow.SUM, Flow.ATTENTION) and self._first <= self.settings.rounds:
            self._adverts = _Adverts(self._next_round(self._first))  # keys come with the join
        return self._joins(nodes, next_round=self._first_round(), wait=Wait.JOIN)

    def _first_round(self) -> m.NextRound | None:
        adverts = self._adverts
        return adverts.next if adverts is not None and adverts.next.round == self._first else None

    def receive(self, replies: Mapping[int, bytes], nodes: Sequence[int]) -> Outbox | None:
        """The replies to the last exchange; returns the next exchange, or None when the run
        is over (:meth:`metrics` then holds its record)."""
        self._forget_gone(nodes)
        decoded = self._decode(replies)
        try:
            return self._after(decoded, nodes)
        except (ProtocolError, ConfigError) as exc:
            if self.phase in (C.FINISH, C.SEAL, C.DONE):  # never finish twice
                log.warning("the run's end failed: %s", exc)
                self._status = m.RunStatus.FAILED
                self.phase = C.DONE
                return None
            self._hazard(f"the run cannot go on: {exc}")
            self._status = m.RunStatus.FAILED
            return self._finish()

    @property
    def done(self) -> bool:
        return self.phase is CoordinatorPhase.DONE

    def abort(self) -> Outbox | None:
        """The driver gives up on the run (an error outside the engine, an interrupt): the
        remaining exchanges end it as ``interrupted`` (best effort), or None if it is over."""
        self._status = m.RunStatus.INTERRUPTED
        if self.phase in (C.FINISH, C.SEAL, C.DONE):
            return None
        return self._finish()

    # -- decoding and bookkeeping ----------------------------------------------------------------

    def _decode(self, replies: Mapping[int, bytes]) -> dict[int, m.Reply]:
        """Each reply checked against what its node was sent; anything else is ledgered with
        the sender's name and dropped (that party then counts as silent)."""
        expected: dict[m.Kind, type[Any]] = {
            m.Kind.JOIN: m.Joined,
            m.Kind.SETUP: m.SetupReply,
            m.Kind.ADVERT: m.Advertised,
            m.Kind.TRAIN: m.Trained,
            m.Kind.STEP: m.StepReply,
            m.Kind.FINISH: m.Finished,
            m.Kind.SEAL: m.Sealed,
        }
        decoded: dict[int, m.Reply] = {}
        for node, data in replies.items():
            request = self._sent.get(node)
            if request is None:
                continue
            name = self._name(node)
            self.bytes_received[name] = self.bytes_received.get(name, 0) + len(data)
            try:
                reply = m.decode_as(data, expected[request.KIND])
            except RemoteProtocolError as exc:
                self._hazard(f"{name} sent a malformed or unexpected reply: {exc}")
                continue
            if isinstance(reply, m.Refused):
                self._hazard(
                    f"{name} refused {type(request).__name__}: {reply.error}: {reply.reason[:200]}"
                )
                self._unmap(node)
                continue
            decoded[node] = reply
        self._last_sent, self._sent = self._sent, {}
        self._last_sent_to, self._sent_to = self._sent_to, {}
        return decoded

    def _name(self, node: int) -> str:
        index = self._party_of.get(node)
        return self.roster.client(index).party_id if index is not None else f"node {node}"

    def _forget_gone(self, nodes: Sequence[int]) -> None:
        for node in set(self._party_of) - set(nodes):
            self._unmap(node)

    def _unmap(self, node: int) -> None:
        index = self._party_of.pop(node, None)
        if index is not None and self._node_of.get(index) == node:
            del self._node_of[index]

    def _hazard(self, text: str) -> None:
        """Ledger a problem -- except while sealing: the server's last head is already in the
        final checkpoint then, so the problem is only logged."""
        log.warning("%s", text)
        if self.phase not in (C.SEAL, C.DONE):
            self.ledger.record(Hazard(text=text[:1000]))

    def _outbox(self, requests: Mapping[int, m.Request], wait: Wait, delay: float = 0.0) -> Outbox:
        self._sent = dict(requests)
        self._sent_to = {n: self._party_of[n] for n in requests if n in self._party_of}
        encoded = {node: m.encode(request) for node, request in requests.items()}
        for node, data in encoded.items():
            name = self._name(node)
            self.bytes_sent[name] = self.bytes_sent.get(name, 0) + len(data)
        self._exchanges += 1
        if self._round is not None:
            self._round.exchanges += 1
        return Outbox(encoded, wait, delay)

    def _joins(self, nodes: Sequence[int], *, next_round: m.NextRound | None, wait: Wait) -> Outbox:
        return self._outbox(self._join_requests(nodes, next_round), wait)

    def _join_requests(
        self, nodes: Sequence[int], next_round: m.NextRound | None
    ) -> dict[int, m.Request]:
        requests: dict[int, m.Request] = {}
        for node in nodes:
            if node in self._party_of:
                continue
            join = m.Join(
                self._random_bytes(m.CHALLENGE_BYTES), self._setup_session, next_round, node
            )
            self._challenges[node] = join
            requests[node] = join
        return requests

    def _on_joined(self, node: int, reply: m.Joined) -> int | None:
        """Map ``node`` to the party its signed reply proves; None if it proves nothing."""
        join = self._challenges.pop(node, None)
        try:
            index = verified_party(self.roster, join, reply)
        except RemoteProtocolError as exc:
            self._hazard(f"node {node}: join refused: {exc}")
            return None
        if self._dim is None:
            self._dim = reply.dim
        elif reply.dim != self._dim:
            self._hazard(f"{reply.party} reports {reply.dim} parameters, not {self._dim}: left out")
            return None
        old = self._node_of.get(index)
        if old is not None:
            self._party_of.pop(old, None)
        self._party_of[node], self._node_of[index] = index, node
        self._info[index] = reply.info
        self._evaluate(index, reply.evaluation)
        if reply.setup_key:
            self._setup_keys[index] = reply.setup_key
        if reply.advert is not None:
            self._collect_advert(index, reply.advert)
        return index

    def _common_dimension(self, joined: Mapping[int, m.Joined]) -> int | None:
        """The model size most verified join replies report: no single party decides it."""
        sizes: list[int] = []
        for node, reply in joined.items():
            try:
                verified_party(self.roster, self._challenges.get(node), reply)
            except RemoteProtocolError:
                continue
            sizes.append(reply.dim)
        if not sizes:
            return None
        return max(sorted(set(sizes)), key=sizes.count)

    def _evaluate(self, index: int, evaluation: m.Evaluation) -> None:
        """A party's evaluation; the first one reported for a round is the one that counts."""
        self._evaluations[index] = evaluation
        round_scores = self._scores.setdefault(evaluation.round, {})
        round_scores.setdefault(index, evaluation)
        entry = self._history.setdefault(evaluation.round, RoundMetrics(round=evaluation.round))
        scores = list(round_scores.values())
        accuracies = [e.accuracy for e in scores if e.accuracy is not None]
        epsilons = [e.epsilon for e in scores if e.epsilon is not None]
        entry.mean_test_accuracy = float(np.mean(accuracies)) if accuracies else None
        entry.max_epsilon = max(epsilons) if epsilons else None

    # -- the phase table -------------------------------------------------------------------------

    def _after(self, replies: dict[int, m.Reply], nodes: Sequence[int]) -> Outbox | None:
        phase = self.phase
        outside: dict[CoordinatorPhase, Callable[[], Outbox | None]] = {
            C.JOIN: lambda: self._after_join(replies, nodes),
            C.SETUP: lambda: self._after_setup(replies, nodes),
            C.DEAL: lambda: self._after_deal(replies, nodes),
            C.FINISH: lambda: self._after_finish(replies),
            C.SEAL: lambda: self._after_seal(replies),
            C.DONE: lambda: None,
        }
        if phase in outside:
            return outside[phase]()
        round_ = self._round
        assert round_ is not None  # noqa: S101 - every other phase is inside a round
        handler = {
            C.ADVERT: self._after_advert,
            C.TRAIN: self._after_train,
            C.REGROUP: self._after_regroup,
            C.KEYS: self._after_step,
            C.VERIFY: self._after_step,
            C.MASK: self._after_step,
            C.CONFIRM: self._after_step,
            C.UNMASK: self._after_unmask,
        }[phase]
        handler(round_, replies, nodes)
        if phase is C.ADVERT:
            return self._train(round_, nodes)
        following = ROUND_FLOW[(round_.flow, phase)]
        return self._enter(following, round_, nodes)

    def _enter(
        self, phase: CoordinatorPhase, round_: _Round, nodes: Sequence[int]
    ) -> Outbox | None:
        if phase is C.END:
            return self._end_round(round_, nodes)
        if phase is C.REGROUP:
            return self._regroup(round_)
        if phase is C.UNMASK:
            return self._unmask(round_, nodes)
        return self._step(phase, round_)

    # -- join and setup --------------------------------------------------------------------------

    def _after_join(self, replies: dict[int, m.Reply], nodes: Sequence[int]) -> Outbox | None:
        joined = {n: r for n, r in replies.items() if isinstance(r, m.Joined)}
        if self._dim is None:
            self._dim = self._common_dimension(joined)
        for node, reply in joined.items():
            self._on_joined(node, reply)
        unjoined = [n for n in nodes if n not in self._party_of]
        # keep inviting until the deadline, also while no unjoined node is connected yet (a
        # deployment's nodes may still be registering): an empty exchange then only waits
        if len(self._node_of) < self.roster.size and self._clock() < self._join_deadline:
            requests = self._join_requests(unjoined, self._first_round())
            return self._outbox(requests, Wait.JOIN, delay=1.0)
        if len(self._node_of) < 3:
            raise ProtocolError(f"only {len(self._node_of)} institutions joined; a run needs 3")
        if self.settings.sketches:
            return self._setup_exchange()
        return self._begin_first_round(nodes)

    def _setup_server(self) -> SessionSetupServer:
        """The setup in progress, or a new one fed the session keys received (a bad key is
        ledgered and left out)."""
        if self._setup is None:
            setup = SessionSetupServer(
                self.roster, session_id=self._setup_session, identity=self._identity
            )
            for index, data in self._setup_keys.items():
                try:
                    setup.receive(decode_protocol(data))
                except ProtocolError as exc:
                    self._hazard(f"{self.roster.client(index).party_id}: bad session key: {exc}")
            self._setup = setup
        return self._setup

    def _setup_exchange(self) -> Outbox:
        """The sketch-seed setup's directory to every party: its session keys, less those of
        the dealers left out so far; the lowest index in it deals."""
        self.phase = C.SETUP
        setup = self._setup_server()
        directory = m.Setup(setup.directory().to_bytes())
        nodes = [n for n, i in self._party_of.items() if i in setup.clients]
        return self._outbox(dict.fromkeys(nodes, directory), Wait.PHASE)

    def _after_setup(self, replies: dict[int, m.Reply], nodes: Sequence[int]) -> Outbox | None:
        setup = self._setup
        assert setup is not None  # noqa: S101 - set by _setup_exchange
        for node, reply in replies.items():
            assert isinstance(reply, m.SetupReply)  # noqa: S101
            for data in reply.messages:
                try:
                    setup.receive(decode_protocol(data))
                except ProtocolError as exc:
                    self._hazard(f"{self._name(node)}: bad sketch-seed offer: {exc}")
        if not setup.offered:
            return self._deal_again(setup, nodes)
        self._deliveries = {i: d.to_bytes() for i, d in setup.deliveries()}
        self._deal.commitment = setup.commitment
        self._deal.members = frozenset(setup.clients)
        self._deal.asked = self._deal.asked if self._deal.resume is not None else self._members()
        self._deal.count += 1
        self._deal.stale = frozenset()
        assert self._deal.commitment is not None  # noqa: S101 - an offer carries it
        self.ledger.record(
            SketchSeedDealt(
                deal=self._deal.count,
                members=tuple(self.roster.client(i).party_id for i in setup.clients),
                commitment=self._deal.commitment.hex(),
            )
        )
        if self._deal.resume is None:
            return self._begin_first_round(nodes)
        return self._begin_round(self._deal.resume, nodes)

    # -- a fresh deal between rounds ---------------------------------------------------------------

    def _members(self) -> frozenset[int]:
        """The parties in the run now: joined, and not left out as a failed dealer."""
        return frozenset(self._node_of) - self._left_out.keys()

    def _deal_due(self, number: int) -> bool:
        """Whether round ``number`` begins with a fresh sketch-seed deal: attention mode, the
        membership changed since the last deal (a late joiner holds no seed; a party that is
        gone still does) -- both from those who share the seed and from those the deal asked --
        at least 3 parties to share a seed, deals left, and no deal tried for this round yet."""
        if not self.settings.sketches or self._flow() is not Flow.ATTENTION:
            return False
        if self._deal.members is None or number <= self._deal.tried:
            return False
        members = self._members()
        # a member that gave no key to the last deal is no change (it sits out the sketches)
        if members in (self._deal.members, self._deal.asked) or len(members) < 3:
            return False
        if self._deal.count >= self.settings.params.max_seed_deals:
            self._deal.tried = number
            self._hazard(
                f"round {number}: the membership changed, but this run's "
                f"{self.settings.params.max_seed_deals} sketch-seed deals are used up: the "
                "seed stays (parties that are gone still hold it; new ones sit out sketches)"
            )
            return False
        return True

    def _begin_deal(self, number: int) -> Outbox:
        """Ask every member for a session key of a fresh deal (then SETUP, then the round)."""
        self._deal.tried = self._deal.resume = number
        self._deal.asked = self._members()
        self._deal.failed = 0
        self.phase = C.DEAL
        self._setup_session = self._random_bytes(32)
        self._setup, self._setup_keys = None, {}
        request = m.Setup(session=self._setup_session)
        nodes = [self._node_of[i] for i in sorted(self._members())]
        return self._outbox(dict.fromkeys(nodes, request), Wait.PHASE)

    def _after_deal(self, replies: dict[int, m.Reply], nodes: Sequence[int]) -> Outbox | None:
        for node, reply in replies.items():
            index = self._party_of.get(node)
            if index is not None and isinstance(reply, m.SetupReply) and len(reply.messages) == 1:
                self._setup_keys[index] = reply.messages[0]
        resume = self._deal.resume
        assert resume is not None  # noqa: S101 - set by _begin_deal
        keys = frozenset(self._setup_server().clients)  # the usable keys
        # nobody has dropped the old seed yet: abandoning the deal keeps it
        why = ""
        if len(keys) < 3:
            why = f"{len(keys)} usable session keys (a seed needs 3 parties)"
        elif keys == self._deal.members:  # they would refuse a directory among themselves
            why = "usable keys only from the parties that share the seed already"
        if why:
            self._setup = None
            self._hazard(f"round {resume}: a fresh sketch-seed deal got {why}: the seed stays")
            return self._begin_round(resume, nodes)
        return self._setup_exchange()

    def _deal_again(self, setup: SessionSetupServer, nodes: Sequence[int]) -> Outbox | None:
        """The dealer offered no usable seed: it sits the run out, the hazard names it and why
        (:class:`DealerFault`), and the next lowest index deals -- unless :data:`SETUP_ATTEMPTS`
        dealers of this deal have failed, or fewer than 3 parties would be left to share the
        seed. Then the setup before round 1 fails the run; a deal between rounds gives up (its
        members may have dropped the old seed: nobody sketches until the next deal, tried the
        next round)."""
        if setup.dealer is None:
            raise ProtocolError("no valid session key for the sketch-seed setup")
        rejected = setup.rejected
        fault = DealerFault.BAD_OFFER if rejected else DealerFault.NO_OFFER
        why = f"its signed offer fails the public checks: {rejected}" if rejected else "no offer"
        dealer = setup.leave_out()
        self._left_out[dealer] = fault
        party = self.roster.client(dealer).party_id
        self._hazard(f"sketch-seed dealer {party} left out of the run ({fault.value}): {why}")
        left = setup.clients
        self._deal.failed += 1
        if self._deal.failed >= SETUP_ATTEMPTS or len(left) < 3:
            resume = self._deal.resume
            if resume is not None:
                self._setup = None
                self._deal.members = self._deal.asked = frozenset()
                self._hazard(
                    f"round {resume}: the fresh sketch-seed deal failed ({self._deal.failed} "
                    f"dealers in turn offered no usable seed, {len(left)} parties left): no "
                    "party sketches until the next deal"
                )
                return self._begin_round(resume, nodes)
            raise ProtocolError(
                f"the sketch-seed setup failed: {self._deal.failed} dealers in turn offered "
                f"no usable seed, {len(left)} parties left to share one"
            )
        self._hazard(
            f"the sketch-seed setup is dealt again by {self.roster.client(left[0]).party_id}"
        )
        return self._setup_exchange()

    # -- a round ---------------------------------------------------------------------------------

    def _begin_first_round(self, nodes: Sequence[int]) -> Outbox | None:
        if self._first > self.settings.rounds:  # a resumed run whose rounds were all done
            return self._finish()
        return self._begin_round(self._first, nodes)

    def _flow(self) -> Flow:
        if not self.settings.aggregates:
            return Flow.LOCAL
        if not self.settings.secure:
            return Flow.PLAIN
        if self.partition is None:
            return Flow.LEARN
        return Flow.ATTENTION if self.settings.attention else Flow.SUM

    def _begin_round(self, number: int, nodes: Sequence[int]) -> Outbox | None:
        if self._deal_due(number):
            return self._begin_deal(number)
        self._round = _Round(number, self._flow(), self._clock())
        round_ = self._round
        if round_.flow in (Flow.SUM, Flow.ATTENTION) and (
            self._adverts is None or self._adverts.next.round != number
        ):
            self.phase = C.ADVERT
            self._adverts = _Adverts(self._next_round(number))
            requests: dict[int, m.Request] = self._join_requests(nodes, self._adverts.next)
            for index, node in self._node_of.items():
                requests[node] = m.Advert(self._adverts.next, self._deliveries.pop(index, b""))
            return self._outbox(requests, Wait.PHASE)
        return self._train(round_, nodes)

    def _next_round(self, number: int) -> m.NextRound:
        partition = self.partition
        assert partition is not None  # noqa: S101 - only rounds with a known partition advertise
        sessions = tuple(self._random_bytes(32) for _ in range(len(set(partition))))
        return m.NextRound(number, partition, sessions)

    def _collect_advert(self, index: int, part: m.AdvertPart) -> None:
        adverts = self._adverts
        if adverts is None or part.round != adverts.next.round:
            self._hazard(f"{self.roster.client(index).party_id}: keys for the wrong round")
            return
        if part.head.actor != self.roster.client(index).party_id:
            self._hazard(f"{self.roster.client(index).party_id}: another party's head")
            return
        adverts.heads[index] = part.head
        if part.declined:
            adverts.declined[index] = part.declined
        else:
            adverts.adverts[index] = part.advert

    def _after_advert(
        self, round_: _Round, replies: dict[int, m.Reply], nodes: Sequence[int]
    ) -> None:
        for node, reply in replies.items():
            if isinstance(reply, m.Joined):
                self._on_joined(node, reply)
            elif isinstance(reply, m.Advertised) and node in self._party_of:
                self._collect_advert(self._party_of[node], reply.advert)

    def _bound_heads(self, heads: Mapping[int, Head]) -> tuple[Head, ...]:
        """The heads bound into a round: each party's as it reported it, and the server's now."""
        bound = [*heads.values(), self.ledger.head]
        return tuple(sorted(bound, key=lambda h: h.actor))

    def _groups(self, round_: _Round, adverts: _Adverts, weights: Vector | None) -> list[_Group]:
        """One protocol server per group, fed the advertisements of ``round_``'s participants."""
        partition = adverts.next.partition
        groups = []
        context = [ContextItem(HEADS_CONTEXT_LABEL, heads_context(round_.heads))]
        if self._deal.commitment is not None and self.settings.sketches:
            context.append(commitment_context(self._deal.commitment))
        for label in sorted(set(partition)):
            members = tuple(i for i, g in enumerate(partition) if g == label)
            config = round_config(
                self.roster.sub_roster(members),
                self.settings.params,
                dim=self._dimension(),
                session_id=adverts.next.sessions[label],
                round_=round_.number,
                mode=self.settings.aggregation,
            )
            history = None
            if self.settings.attention and len(members) == self.roster.size:
                history = self._releases.before(round_.number)
            server = SecAggServer(
                config, identity=self._identity, context=context, weights=weights, history=history
            )
            group = _Group(label, members, server)
            for i in members:
                if i in round_.participants and i in adverts.adverts:
                    self._deliver(group, i, [adverts.adverts[i]])
            groups.append(group)
        return groups

    def _deliver(self, group: _Group, index: int, messages: Sequence[bytes]) -> None:
        """Protocol messages from party ``index`` to its group's server; anything malformed or
        illegal is refused by the server (the sender then drops) and ledgered by name."""
        local = group.members.index(index)
        for data in messages:
            if group.server.stage.terminal:
                return
            try:
                message = decode_protocol(data)
                if getattr(message, "sender", local) != local:
                    raise RemoteProtocolError("a message in another party's name")
                group.server.receive(message)
            except ProtocolError as exc:
                self._hazard(
                    f"round {group.server.config.round}: {self.roster.client(index).party_id} "
                    f"sent a protocol message that was refused: {exc}"
                )

    def _advance(self, round_: _Round) -> dict[int, list[bytes]]:
        """Close the current protocol phase of every live group; the messages per party."""
        outgoing: dict[int, list[bytes]] = {}
        for group in round_.groups:
            if group.server.stage.terminal:
                continue
            envelopes = group.server.advance()
            if self.settings.attention and len(group.members) == self.roster.size:
                # the consistency check may just have closed: its release is kept (and on disk)
                # before the unmask request leaves, as every institution keeps it on receipt
                self._releases.update(group.server.history)
            for envelope in envelopes:
                target = group.members[envelope.recipient]
                outgoing.setdefault(target, []).append(envelope.message.to_bytes())
        return outgoing

    def _train(self, round_: _Round, nodes: Sequence[int]) -> Outbox:
        self.phase = C.TRAIN
        adverts = self._adverts
        secure_keys = round_.flow in (Flow.SUM, Flow.ATTENTION)
        if secure_keys:
            assert adverts is not None  # noqa: S101 - _begin_round collected them
            round_.participants = set(adverts.adverts) & set(self._node_of)
            round_.participants -= self._left_out.keys()
            if round_.flow is Flow.ATTENTION and self._deal.members is not None:
                # a party without the current seed would sketch under another one (or none)
                # and bind another commitment: it sits the round out
                round_.participants &= self._deal.members - self._deal.stale
            round_.refused.update(adverts.declined)
            for index in range(self.roster.size):
                if index not in round_.participants and index not in round_.refused:
                    round_.dropouts[index] = "setup" if index in self._left_out else "advertise"
            round_.heads = self._bound_heads(
                {i: h for i, h in adverts.heads.items() if i in round_.participants}
            )
        else:
            round_.participants = set(self._node_of) - self._left_out.keys()
            round_.dropouts.update(dict.fromkeys(self._left_out, "setup"))
        directories: dict[int, list[bytes]] = {}
        if round_.flow is Flow.SUM:
            assert adverts is not None  # noqa: S101
            round_.groups = self._groups(round_, adverts, None)
            directories = self._advance(round_)
        requests: dict[int, m.Request] = {}
        for index, node in self._node_of.items():
            requests[node] = m.Train(
                round=round_.number,
                train=index in round_.participants,
                result=self._results.pop(index, None),
                heads=self._checkpoint_for(index),
                messages=tuple(directories.get(index, ())),
                context=round_.heads if index in directories else (),
                sketch=index in round_.participants and round_.flow in (Flow.ATTENTION, Flow.LEARN),
                delivery=self._deliveries.pop(index, b""),
            )
        requests.update(self._join_requests(nodes, None))
        return self._outbox(requests, Wait.TRAIN)

    def _checkpoint_for(self, index: int) -> tuple[Head, ...]:
        actor = self.roster.client(index).party_id
        return self._checkpoint if any(h.actor == actor for h in self._checkpoint) else ()

    def _after_train(
        self, round_: _Round, replies: dict[int, m.Reply], nodes: Sequence[int]
    ) -> None:
        group_of = {i: g for g in round_.groups for i in g.members}
        trained_heads: dict[int, Head] = {}
        for node, reply in replies.items():
            index = self._party_of.get(node)
            if index is None:
                if isinstance(reply, m.Joined):
                    self._on_joined(node, reply)
                continue
            assert isinstance(reply, m.Trained)  # noqa: S101 - _decode checked the kind
            self._evaluate(index, reply.evaluation)
            if reply.head.actor != self.roster.client(index).party_id:
                self._hazard(f"{self.roster.client(index).party_id}: another party's head")
                round_.refused.setdefault(index, "reported another party's head")
                continue
            if index in round_.participants and self._took_part(round_, index, reply):
                trained_heads[index] = reply.head
                if index in group_of:
                    self._deliver(group_of[index], index, reply.messages)
        for index in round_.participants:
            if index not in trained_heads and index not in round_.refused:
                round_.dropouts[index] = _DROPOUT_PHASE[C.TRAIN]
        if round_.flow in (Flow.LOCAL, Flow.PLAIN):
            round_.heads = self._bound_heads(trained_heads)
        if round_.flow is Flow.PLAIN:
            self._plaintext(round_)
        elif round_.flow is Flow.ATTENTION:
            self._attention_groups(round_)

    def _took_part(self, round_: _Round, index: int, reply: m.Trained) -> bool:
        """Keep what a participant's training reply brings; False if it did not train or
        brought something unusable (ledgered: a sketch or model of the wrong size, or a sketch
        so large it would swamp every distance)."""
        if not reply.trained or reply.refused:
            round_.refused[index] = reply.refused or "did not train"
            return False
        problem = self._unusable(round_, reply)
        if problem:
            party = self.roster.client(index).party_id
            self._hazard(f"round {round_.number}: {party} left out: {problem}")
            round_.refused[index] = problem
            return False
        if reply.sketch is not None and self._stale_sketch(index, reply):
            round_.refused[index] = "it sketched under another sketch seed than the run's"
            return False
        if reply.sketch is not None:
            round_.sketches[index] = reply.sketch
        if reply.model is not None:
            round_.models[index] = reply.model
            if reply.similarity is not None:
                round_.similarity[index] = reply.similarity
        return True

    def _stale_sketch(self, index: int, reply: m.Trained) -> bool:
        """Whether ``reply``'s sketch was made under another seed than the current one (a
        party that missed a deal's directory or restarted in one): it would bind another
        commitment and abort the round, so it sits out the rounds of this seed (ledgered)."""
        commitment = self._deal.commitment
        if commitment is None or reply.commitment == commitment:
            return False
        self._deal.stale |= {index}
        party = self.roster.client(index).party_id
        self._hazard(f"{party} sketches under another sketch seed: it sits out until a deal")
        return True

    def _unusable(self, round_: _Round, reply: m.Trained) -> str:
        if reply.sketch is not None and (
            reply.sketch.size != self.settings.params.sketch_dim
            or float(np.max(np.abs(reply.sketch), initial=0.0)) > MAX_SKETCH_VALUE
        ):
            return "its sketch has the wrong size or values beyond any model's"
        if reply.model is not None and reply.model.size != self._dim:
            return f"its model has {reply.model.size} values, not {self._dim}"
        similar = next(iter(round_.similarity.values()), None)
        if (
            reply.similarity is not None
            and similar is not None
            and reply.similarity.size != similar.size
        ):
            return "its similarity vector has another size than the others'"
        return ""

    def _plaintext(self, round_: _Round) -> None:
        """The plaintext reference (comparison runs only: the coordinator sees every model)."""
        present = sorted(round_.models)
        if len(present) < 2:
            return
        models = np.stack([round_.models[i] for i in present])
        similar = models
        if self.settings.statistic and all(i in round_.similarity for i in present):
            similar = np.stack([round_.similarity[i] for i in present])
        partition = None if self.partition is None else [self.partition[i] for i in present]
        weights, learned = plaintext_weights(
            self.settings.mode, similar, self.settings.params, partition=partition
        )
        if self.partition is None and learned is not None and len(present) == self.roster.size:
            self.partition = learned
            self._record_partition(round_.number, learned, "learned from exact distances")
        mixed = personalized_models(weights, models)
        full = np.zeros((self.roster.size, self.roster.size))
        full[np.ix_(present, present)] = weights
        round_.weights = full
        for k, index in enumerate(present):
            self._results[index] = m.Result(round_.number, m.ResultKind.PLAIN, values=mixed[k])

    def _attention_groups(self, round_: _Round) -> None:
        """xi from the sketches of the parties that trained (a party without a sketch keeps only
        itself and gets weight from nobody: it drops before advertising), then the server."""
        adverts = self._adverts
        assert adverts is not None  # noqa: S101
        present = sorted(
            i for i in round_.sketches if round_.sketches[i].size == self.settings.params.sketch_dim
        )
        weights = np.eye(self.roster.size)
        if len(present) >= 2:
            stacked = np.stack([round_.sketches[i] for i in present])
            xi = weights_from_sketches(stacked, self.settings.mode, self.settings.params)
            weights[np.ix_(present, present)] = xi
        round_.weights = weights
        for index in round_.participants - set(present):
            round_.dropouts.setdefault(index, "advertise")
        round_.participants &= set(present)
        round_.groups = self._groups(round_, adverts, weights)

    def _regroup(self, round_: _Round) -> Outbox:
        """Group mode learns its partition from this round's sketches, then asks the parties
        that trained for keys in their groups."""
        self.phase = C.REGROUP
        present = sorted(round_.sketches)
        if len(present) < 3:
            raise ProtocolError("fewer than 3 sketches: no partition can be learned")
        labels = learned_partition(
            np.stack([round_.sketches[i] for i in present]), self.settings.params
        )
        partition = [labels[0]] * self.roster.size
        for k, index in enumerate(present):
            partition[index] = labels[k]
        self.partition = tuple(partition)
        self.settings.check_partition(self.partition, self.roster.size)
        self._record_partition(round_.number, self.partition, "learned from sketches")
        self._adverts = _Adverts(self._next_round(round_.number))
        requests: dict[int, m.Request] = {
            self._node_of[i]: m.Advert(self._adverts.next) for i in present if i in self._node_of
        }
        return self._outbox(requests, Wait.PHASE)

    def _after_regroup(
        self, round_: _Round, replies: dict[int, m.Reply], nodes: Sequence[int]
    ) -> None:
        self._after_advert(round_, replies, nodes)
        adverts = self._adverts
        assert adverts is not None  # noqa: S101
        round_.participants = set(adverts.adverts) & set(round_.sketches)
        round_.refused.update(adverts.declined)
        round_.heads = self._bound_heads({i: adverts.heads[i] for i in round_.participants})
        round_.groups = self._groups(round_, adverts, None)

    def _step(self, phase: CoordinatorPhase, round_: _Round) -> Outbox:
        """KEYS, MASK or CONFIRM: the next protocol messages of every live group."""
        self.phase = phase
        outgoing = self._advance(round_)
        step = _STEP_OF[phase]
        requests: dict[int, m.Request] = {}
        for index, messages in outgoing.items():
            if index in self._node_of:
                context = round_.heads if phase is C.KEYS else ()
                requests[self._node_of[index]] = m.Step(
                    round_.number, step, tuple(messages), context
                )
        return self._outbox(requests, Wait.PHASE)

    def _after_step(
        self, round_: _Round, replies: dict[int, m.Reply], nodes: Sequence[int]
    ) -> None:
        self._protocol_replies(round_, replies)

    def _protocol_replies(self, round_: _Round, replies: dict[int, m.Reply]) -> None:
        group_of = {i: g for g in round_.groups for i in g.members}
        asked = {  # as mapped when asked: a node gone since is still this phase's dropout
            self._last_sent_to[n]
            for n, request in self._last_sent.items()
            if isinstance(request, m.Step) and n in self._last_sent_to
        }
        answered = set()
        for node, reply in replies.items():
            index = self._party_of.get(node)
            if index is None or not isinstance(reply, m.StepReply):
                continue
            answered.add(index)
            if reply.error:
                party = self.roster.client(index).party_id
                self._hazard(f"round {round_.number}: {party} aborted: {reply.error[:300]}")
            if index in group_of:
                self._deliver(group_of[index], index, reply.messages)
            if reply.advert is not None:
                self._collect_advert(index, reply.advert)
        for index in asked - answered:
            round_.dropouts.setdefault(index, _DROPOUT_PHASE[self.phase])

    def _unmask(self, round_: _Round, nodes: Sequence[int]) -> Outbox:
        """The unmasking phase, with the next round's key advertisements folded in."""
        self.phase = C.UNMASK
        outgoing = self._advance(round_)
        next_round = None
        if round_.number < self.settings.rounds and self.partition is not None:
            self._adverts = _Adverts(self._next_round(round_.number + 1))
            next_round = self._adverts.next
        requests: dict[int, m.Request] = {}
        for index, node in self._node_of.items():
            messages = outgoing.get(index)
            if messages is not None:
                requests[node] = m.Step(
                    round_.number, m.StepPhase.UNMASK, tuple(messages), next=next_round
                )
            elif next_round is not None:
                requests[node] = m.Advert(next_round, self._deliveries.pop(index, b""))
        requests.update(self._join_requests(nodes, next_round))
        return self._outbox(requests, Wait.PHASE)

    def _after_unmask(
        self, round_: _Round, replies: dict[int, m.Reply], nodes: Sequence[int]
    ) -> None:
        self._after_advert(round_, replies, nodes)  # joins and standby parties' keys
        self._protocol_replies(
            round_, {n: r for n, r in replies.items() if isinstance(r, m.StepReply)}
        )
        outgoing = self._advance(round_)
        for index, messages in outgoing.items():
            if index in round_.dropouts:  # lost before unmasking: it cannot open its output
                continue
            for data in messages:
                output = decode_protocol(data)
                if isinstance(output, BlindedOutput):
                    self._results[index] = m.Result(
                        round_.number, m.ResultKind.BLINDED, blinded=data
                    )

    # -- the end of a round and of the run -------------------------------------------------------

    def _end_round(self, round_: _Round, nodes: Sequence[int]) -> Outbox | None:
        completed = self._round_results(round_)
        if round_.flow not in (Flow.LOCAL, Flow.PLAIN):
            self._record_secure_round(round_)
        if round_.heads:
            record_checkpoint(self.ledger, round_.heads, final=False)
        self._checkpoint = round_.heads
        entry = self._history.setdefault(round_.number, RoundMetrics(round=round_.number))
        entry.completed = completed
        entry.refused = sorted(self.roster.client(i).party_id for i in round_.refused)
        entry.dropouts = {
            self.roster.client(i).party_id: p for i, p in sorted(round_.dropouts.items())
        }
        entry.withheld = [self.roster.client(i).party_id for i in round_.withheld]
        entry.exchanges = round_.exchanges
        entry.seconds = self._clock() - round_.started
        entry.own_segment_weight = self._own_segment_weight(round_)
        entry.status = self._round_status(round_, completed)
        if round_.flow is not Flow.LOCAL:
            self._aggregated[round_.number] = entry.status == "completed"
        if entry.status != "completed":
            self._hazard(f"round {round_.number}: {entry.status}: no party got an aggregate")
        if self._on_round_end is not None:
            self._on_round_end(
                RoundView(
                    number=round_.number,
                    flow=round_.flow,
                    groups=tuple((g.members, g.server) for g in round_.groups),
                    weights=round_.weights,
                    sketches=dict(round_.sketches),
                    partition=self.partition,
                    dropouts=dict(round_.dropouts),
                    refused=dict(round_.refused),
                )
            )
        self._completed_rounds = round_.number
        if round_.number < self.settings.rounds:
            return self._begin_round(round_.number + 1, nodes)
        return self._finish()

    def _round_status(self, round_: _Round, completed: int) -> str:
        """The round's outcome (:attr:`RoundMetrics.status`): a local round always completes;
        an aggregating one completes when at least one party got its aggregate."""
        if round_.flow is Flow.LOCAL or completed > 0:
            return "completed"
        if round_.groups and all(g.server.stage is Stage.ABORTED for g in round_.groups):
            return "aborted"
        return "no aggregate"

    def _run_outcome(self) -> m.RunStatus:
        """``completed`` unless aggregating rounds failed: ``degraded`` when some did,
        ``failed`` when none succeeded (a status already set by an error or abort stays)."""
        if self._status is not m.RunStatus.COMPLETED or all(self._aggregated.values()):
            return self._status
        return m.RunStatus.DEGRADED if any(self._aggregated.values()) else m.RunStatus.FAILED

    def _round_results(self, round_: _Round) -> int:
        """Each completed party's result of the round (sent with the next request)."""
        if round_.flow is Flow.LOCAL:
            return len(round_.participants) - len(round_.refused)
        if round_.flow is Flow.PLAIN:
            return sum(1 for r in self._results.values() if r.round == round_.number)
        for group in round_.groups:
            result = group.server.result
            if result is None or self.settings.attention:
                continue
            contributors = tuple(group.members[j] for j in result.contributors)
            if len(contributors) < 2:
                continue
            for index in contributors:
                if index in round_.dropouts:  # in the sum, but lost before it completed the
                    continue  # round: it holds no finished round to apply the sum to
                self._results[index] = m.Result(
                    round_.number,
                    m.ResultKind.GROUP_SUM,
                    values=result.values,
                    contributors=contributors,
                )
        return sum(1 for r in self._results.values() if r.round == round_.number)

    def _record_secure_round(self, round_: _Round) -> None:
        survivors: set[int] = set()
        self_seeds: set[int] = set()
        mask_keys: set[int] = set()
        outputs = 0
        for group in round_.groups:
            server = group.server
            self._record_misbehaviour(round_.number, group, server.drain_events())
            self._record_withheld(round_, group)
            survivors.update(group.members[u] for u in server.survivors)
            self_seeds.update(group.members[u] for u in server.reconstructed_self_seeds)
            mask_keys.update(group.members[u] for u in server.reconstructed_mask_keys)
            if server.stage is Stage.DONE:
                outputs += len(server.blinded_outputs) if self.settings.attention else 1
            else:
                for i in group.members:
                    if i in round_.participants:
                        round_.dropouts.setdefault(i, f"round {server.stage.value}")
        dropped = sorted(set(round_.participants) - survivors)
        for i in dropped:
            round_.dropouts.setdefault(i, "dropped out")
        self.ledger.record(
            RoundSurvivors(
                round=round_.number, survivors=tuple(sorted(survivors)), dropouts=tuple(dropped)
            )
        )
        self.ledger.record(
            Unmask(
                round=round_.number,
                outputs=outputs,
                target_blinded=self.settings.attention,
                self_seeds_of=tuple(sorted(self_seeds)),
                mask_keys_of=tuple(sorted(mask_keys)),
            )
        )

    def _record_withheld(self, round_: _Round, group: _Group) -> None:
        """Attention mode: ledger the targets whose outputs the round withheld (the release
        history is kept as soon as the consistency check closes: :meth:`_advance`)."""
        server = group.server
        if not self.settings.attention:
            return
        withheld = tuple(group.members[t] for t in server.withheld)
        if withheld:
            round_.withheld = withheld
            self.ledger.record(
                OutputsWithheld(
                    round=round_.number, targets=withheld, reason="exposure-across-rounds"
                )
            )

    def _record_misbehaviour(
        self, round_: int, group: _Group, events: Sequence[ProtocolEvent]
    ) -> None:
        """Ledger each party the protocol caught misbehaving, on its own signed messages
        (securefed/secagg/dealing.py), and write those messages next to the ledgers
        (``evidence/round-<r>-<party>.bin``, whose SHA-256 the entry names); indices in
        ``events`` are within the group."""
        members = group.members
        accusers = {
            e.dealer: e.holder
            for e in events
            if isinstance(e, ComplaintJudged) and e.verdict == "dealer-at-fault"
        }
        proven = (
            ExclusionReason.BAD_COMMITMENT,
            ExclusionReason.BAD_SHARES,
            ExclusionReason.FALSE_COMPLAINT,
        )
        caught: list[tuple[int, str, int]] = []
        for event in events:
            if isinstance(event, ClientsExcluded) and event.reason in proven:
                caught += [(c, event.reason.value, accusers.get(c, -1)) for c in event.clients]
            elif isinstance(event, ShareRejected):
                caught += [(h, "bad-share-revealed", -1) for h in event.holders]
        for party, kind, accuser in sorted(set(caught)):
            name = self.roster.client(members[party]).party_id
            evidence = encode_evidence(group.server.evidence(party))
            directory = self.ledger.path.parent.parent / EVIDENCE_DIR
            directory.mkdir(exist_ok=True)
            write_atomic(directory / f"round-{round_}-{name}.bin", evidence, mode=PRIVATE_FILE_MODE)
            self.ledger.record(
                Misbehaviour(
                    round=round_,
                    party=members[party],
                    kind=kind,
                    accuser=members[accuser] if accuser >= 0 else -1,
                    evidence_sha256=hashlib.sha256(evidence).hexdigest(),
                )
            )

    def record_declared_partition(self) -> None:
        """Ledger a partition given by configuration (group mode), before the first round."""
        if self.settings.mode is PersonalizationMode.GROUP and self.partition is not None:
            self._record_partition(0, self.partition, "declared")

    def _record_partition(self, round_: int, partition: Sequence[int], method: str) -> None:
        sizes = tuple(sorted(list(partition).count(g) for g in set(partition)))
        self.ledger.record(Partition(round=round_, group_sizes=sizes, method=method))

    def _own_segment_weight(self, round_: _Round) -> float | None:
        segments = self._segments
        if segments is None or not self.settings.aggregates:
            return None
        weights = round_.weights
        if weights is None and self.partition is not None:
            if self.settings.mode is PersonalizationMode.FEDAVG:
                weights = np.full((self.roster.size,) * 2, 1.0 / self.roster.size)
            else:
                weights = group_weights(
                    self.partition, self_weight=self.settings.params.self_weight
                )
        if weights is None:
            return None
        shares = []
        for i, row in enumerate(np.asarray(weights, dtype=np.float64)):
            total = float(sum(row[j] for j in range(len(row)) if j != i))
            if total > 0:
                same = float(
                    sum(row[j] for j in range(len(row)) if j != i and segments[j] == segments[i])
                )
                shares.append(same / total)
        return float(np.mean(shares)) if shares else None

    def _finish(self) -> Outbox:
        self.phase = C.FINISH
        self._round = None
        self._status = self._run_outcome()
        requests: dict[int, m.Request] = {}
        for index, node in self._node_of.items():
            requests[node] = m.Finish(
                round=self._completed_rounds,
                status=self._status,
                result=self._results.pop(index, None),
                heads=self._checkpoint_for(index),
            )
        return self._outbox(requests, Wait.PHASE)

    def _after_finish(self, replies: dict[int, m.Reply]) -> Outbox:
        """Every reply checked (and any problem ledgered) first; then ``run.finished`` and the
        server's last head, signed like the others', go into the seal."""
        heads: list[tuple[Head, bytes]] = []
        for node, reply in replies.items():
            index = self._party_of.get(node)
            if index is None or not isinstance(reply, m.Finished):
                continue
            party = self.roster.client(index).party_id
            try:
                if reply.head.actor != party:
                    raise RemoteProtocolError("another party's head")
                verify_final_heads(self.roster, (reply.head,), (reply.signature,))
            except RemoteProtocolError as exc:
                self._hazard(f"{party}: its last head is left out of the seal: {exc}")
                continue
            self._evaluate(index, reply.evaluation)
            heads.append((reply.head, reply.signature))
        self.ledger.record(RunFinished(rounds=self._completed_rounds, status=self._status.value))
        own = self.ledger.head
        heads.append((own, sign_final_head(self._identity, self.roster, own)))
        heads.sort(key=lambda item: item[0].actor)
        self._final_heads = [head for head, _ in heads]
        self.phase = C.SEAL
        seal = m.Seal(tuple(self._final_heads), tuple(signature for _, signature in heads))
        actors = {h.actor for h in self._final_heads}
        requests = {
            node: seal
            for node, index in self._party_of.items()
            if self.roster.client(index).party_id in actors
        }
        return self._outbox(requests, Wait.PHASE)

    def _after_seal(self, replies: dict[int, m.Reply]) -> None:
        """The final checkpoint; the run is over."""
        for node, reply in replies.items():
            index = self._party_of.get(node)
            if index is not None and isinstance(reply, m.Sealed):
                self._final[index] = reply.evaluation
        record_checkpoint(self.ledger, self._final_heads, final=True)
        self.phase = C.DONE

    def _dimension(self) -> int:
        if self._dim is None:
            raise ProtocolError("no party joined: the model dimension is unknown")
        return self._dim

    # -- the record ------------------------------------------------------------------------------

    @property
    def status(self) -> m.RunStatus:
        return self._status

    def metrics(self) -> RunMetrics:
        """The run's record so far (complete once :attr:`done`)."""
        config = self.config
        clients = []
        for index in range(self.roster.size):
            party = self.roster.client(index).party_id
            info = self._info.get(index)
            final = self._final.get(index) or self._evaluations.get(index)
            clients.append(
                ClientMetrics(
                    id=party,
                    train_samples=0 if info is None else info.train_samples,
                    test_samples=0 if info is None else info.test_samples,
                    test_accuracy=None if final is None else final.accuracy,
                    epsilon=None if final is None else final.epsilon,
                    delta=None if config.dp is None else config.dp.delta,
                )
            )
        accuracies = [c.test_accuracy for c in clients if c.test_accuracy is not None]
        rounds = sorted(r for r in self._history if r <= self._completed_rounds)
        return RunMetrics(
            mode=config.mode.value,
            rounds=self._completed_rounds,
            secure=config.secure,
            transport="",
            history=[self._history[r] for r in rounds],
            clients=clients,
            mean_test_accuracy=float(np.mean(accuracies)) if accuracies else None,
            config_sha256=config.sha256(),
            software_version=__version__,
            similarity=config.personalize.similarity.value if config.learns_similarity else None,
            model={"kind": config.data.model.value, "parameters": self._dim},
            tenants=self.roster.size,
            dp=self._dp_metrics(),
            partition=None
            if self.partition is None or self.settings.mode is not PersonalizationMode.GROUP
            else list(self.partition),
            seconds=self._clock() - self._started,
            exchanges=self._exchanges,
            bytes_sent=dict(self.bytes_sent),
            bytes_received=dict(self.bytes_received),
            status=self._status.value,
        )

    def _dp_metrics(self) -> DPMetrics | None:
        dp = self.config.dp
        if dp is None:
            return None
        by_client = {
            self.roster.client(i).party_id: ClientDP(
                info.noise_multiplier, info.sample_rate, info.steps_per_round
            )
            for i, info in sorted(self._info.items())
        }
        sigmas = [c.noise_multiplier for c in by_client.values() if c.noise_multiplier is not None]
        rates = [c.sample_rate for c in by_client.values() if c.sample_rate is not None]
        statistic = [i.statistic_noise_multiplier for i in self._info.values()]
        return DPMetrics(
            target_epsilon=dp.target_epsilon,
            delta=dp.delta,
            noise_multiplier=min(sigmas) if sigmas else None,
            max_grad_norm=dp.max_grad_norm,
            sample_rate=max(rates) if rates else None,
            accountant=dp.accountant,
            accountant_version=_opacus_version(),
            statistic_epsilon=self.config.statistic_epsilon,
            statistic_noise_multiplier=next((s for s in statistic if s is not None), None),
            by_client=by_client,
        )


def _opacus_version() -> str:
    try:
        return f"opacus {version('opacus')}"
    except PackageNotFoundError:
        return "opacus (not installed)"
