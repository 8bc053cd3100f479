"""One institution in the engine: requests in, replies out, no network and no clock.

:class:`Institution` holds what never leaves the institution: its learner (the DP trainer on its
records), its ledger, its identity key, the round's :class:`~securefed.secagg.SecAggClient` with
its key pairs and the shares it holds, and the session's secret sketch seed. Every transport --
the in-memory one of ``securefed run`` and ``securefed demo``, and Flower's -- hands it the same
bytes (:meth:`Institution.handle_bytes`) and carries its answer back.

Which request is legal when is one table, :data:`TRANSITIONS`. A request that is malformed,
illegal now, or inconsistent with what this party itself recorded is refused with a
:class:`~securefed.runtime.engine.messages.Refused` reply naming the error; the refusal is
ledgered (until ``run.finished``, whose head the final checkpoint records) and the institution's
state is unchanged, except that a protocol round it could not continue is abandoned (its
secrets are dropped; the round recovers it as a dropout).

Persistence happens through the learner (accountant state, charged before training) and the
ledger (appended before the action it records takes effect); ``on_model`` lets a deployment
save the model after every change so that a restart continues from it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np
import numpy.typing as npt

from securefed.audit import (
    HEADS_CONTEXT_LABEL,
    EventType,
    Hazard,
    Head,
    InconsistentHeads,
    Ledger,
    RunFinished,
    SketchReleased,
    SketchSeedDealt,
    heads_context,
    record_checkpoint,
)
from securefed.crypto import SigningKey
from securefed.errors import (
    ConfigError,
    EncodingRangeError,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
    SecureFedError,
)
from securefed.files import write_atomic
from securefed.personalize.modes import PersonalizationMode
from securefed.personalize.rounds import (
    group_personalized,
    group_self_weight,
    make_sketcher,
    round_config,
    sketch_epoch,
    sketches_per_seed,
)
from securefed.personalize.sketch import Sketcher
from securefed.runtime.engine.learner import Learner
from securefed.runtime.engine.messages import (
    Advert,
    Advertised,
    AdvertPart,
    Evaluation,
    Finish,
    Finished,
    Join,
    Joined,
    Kind,
    NextRound,
    Refused,
    Reply,
    Request,
    Result,
    ResultKind,
    Seal,
    Sealed,
    Setup,
    SetupReply,
    Step,
    StepPhase,
    StepReply,
    Train,
    Trained,
    decode,
    encode,
)
from securefed.runtime.engine.releases import ReleaseBook
from securefed.runtime.engine.settings import EngineSettings
from securefed.runtime.engine.signing import sign_final_head, sign_joined, verify_final_heads
from securefed.secagg import SecAggClient, Stage
from securefed.secagg.events import PolicyRefused
from securefed.secagg.messages import MaskedInput, SessionKeyDirectory
from securefed.secagg.messages import decode as decode_protocol
from securefed.secagg.replay import RoundGuard
from securefed.secagg.roster import Roster
from securefed.secagg.session import SessionSetupClient, commitment_context
from securefed.secagg.transcript import ContextItem

__all__ = ["TRANSITIONS", "Institution", "InstitutionPhase"]

log = logging.getLogger(__name__)

Vector = npt.NDArray[np.float64]


class InstitutionPhase(Enum):
    NEW = "new"  # no join yet
    IDLE = "idle"  # joined; no round of this party's in progress
    ADVERTISED = "advertised"  # keys advertised for a round that has not started
    ROUND = "round"  # in a round (trained; protocol steps follow)
    FINISHED = "finished"  # run.finished recorded
    SEALED = "sealed"  # final checkpoint recorded: nothing more


P = InstitutionPhase
#: The requests each phase accepts. Any other request is refused and changes nothing.
TRANSITIONS: dict[InstitutionPhase, frozenset[Kind]] = {
    P.NEW: frozenset({Kind.JOIN}),
    P.IDLE: frozenset({Kind.JOIN, Kind.SETUP, Kind.ADVERT, Kind.TRAIN, Kind.FINISH}),
    P.ADVERTISED: frozenset({Kind.JOIN, Kind.SETUP, Kind.ADVERT, Kind.TRAIN, Kind.FINISH}),
    P.ROUND: frozenset({Kind.JOIN, Kind.ADVERT, Kind.TRAIN, Kind.STEP, Kind.FINISH}),
    P.FINISHED: frozenset({Kind.SEAL, Kind.FINISH}),
    P.SEALED: frozenset(),
}


@dataclass
class _Round:
    """This party's part in one secure round."""

    round: int
    client: SecAggClient
    members: tuple[int, ...]  # roster indices of its group, in order
    partition: tuple[int, ...]


class Institution:
    """One institution (module docstring).

    ``random_bytes`` feeds the protocol's self-mask seeds and dither (``os.urandom``; the
    in-memory transport may pass a seeded stream for reproducible simulations). ``seed_file``
    keeps the session's sketch seed across restarts (mode 0600); without it the seed lives in
    memory only. ``guard_file`` keeps the secure-aggregation round guard (every (session,
    round) this party advertised keys for, and its ledger head then) across restarts, written
    before the keys leave: a replayed advertisement request is refused after a restart as
    before it. Without it the guard lives in memory only (and the ledger's rounds still guard).
    """

    def __init__(
        self,
        *,
        settings: EngineSettings,
        roster: Roster,
        identity: SigningKey,
        party_id: str,
        learner: Learner,
        ledger: Ledger,
        random_bytes: Callable[[int], bytes] = os.urandom,
        on_model: Callable[[int], None] | None = None,
        seed_file: os.PathLike[str] | None = None,
        guard_file: os.PathLike[str] | None = None,
        history_file: os.PathLike[str] | None = None,
    ) -> None:
        self.settings = settings
        self.roster = roster
        self.party_id = party_id
        self.index = roster.index_of(party_id)
        if identity.verify_key() != roster.client(self.index).identity:
            raise ConfigError(f"the identity key is not {party_id}'s key in the roster")
        self._identity = identity
        self.learner = learner
        self.ledger = ledger
        self._random_bytes = random_bytes
        self._on_model = on_model or (lambda round_: None)
        self._seed_file = seed_file
        self._guard_file = guard_file
        self._guard = _load_guard(guard_file)
        # attention mode: the releases this party took part in (docs/fedamp.md, "Across rounds")
        self._releases = ReleaseBook(roster.size, history_file)
        self.phase = InstitutionPhase.NEW
        self._dim = int(learner.parameters().size)  # the model's size never changes
        self._setup: SessionSetupClient | None = None
        self._sketch_seed, self._seed_commitment = _load_seed(seed_file)
        # the seeds dealt so far in this run, and who shares the current one (from the ledger)
        deals = _deal_entries(ledger)  # the ledger file is read once for both
        self._deals, self._seed_members = _seed_deals(deals, roster)
        if self._seed_members is not None and not _is_last_deal(deals, self._seed_commitment):
            # the seed file predates the last deal this party ledgered (a stop in between):
            # that seed is no longer the run's, so this party sits out sketches until a deal
            self._sketch_seed = self._seed_commitment = None
        self._sketcher: Sketcher | None = None
        self._sketcher_key = (0, 0)  # the (model size, sketch epoch) it was built for
        self._pending: _Round | None = None  # advertised, or in progress
        self._finishing: _Round | None = None  # unmasked, waiting for its result
        self._reported: dict[int, Head] = {}  # the head this party reported for each round
        self._bound: dict[int, tuple[Head, ...]] = {}  # the heads bound into each round
        self._partition: tuple[int, ...] | None = settings.fixed_partition(roster.size)
        self._advertised_round = 0  # the highest round this party advertised keys for
        self._trained_round = 0  # the highest round this party trained for
        self._begun_round = 0  # the highest round a Train request began here (trained or not)
        # A restart continues from what the ledger says this party already did, so that a
        # replayed request cannot make it advertise or train a round again.
        self._trained_round = self._advertised_round = self._begun_round = _last_round(ledger)
        self._evaluated = 0
        self._final_head: Head | None = None
        self._left_round = 0  # a round this party refused mid-protocol (it may advertise next)

    # -- entry points ---------------------------------------------------------------------------

    def handle_bytes(self, data: bytes) -> bytes:
        """One encoded request in, one encoded reply out; never raises a protocol error (a
        bad request is answered with ``Refused``)."""
        try:
            request = decode(data)
            if isinstance(request, Reply):
                raise RemoteProtocolError(f"{type(request).__name__} is a reply, not a request")
        except SecureFedError as exc:
            return encode(self._refuse(exc))
        return encode(self.respond(request))

    def respond(self, request: Request) -> Reply:
        """:meth:`handle`, with a refused request answered by ``Refused`` (and ledgered)."""
        try:
            return self.handle(request)
        except SecureFedError as exc:
            return self._refuse(exc)

    def handle(self, request: Request) -> Reply:
        """One request in, one reply out.

        Raises:
            RemoteProtocolError: the request is illegal in this phase or inconsistent.
            LocalProtocolError, LedgerIntegrityError, OSError: this party's own failure.
        """
        if isinstance(request, Step) and self._rejoins(request):
            return self._after_leaving(request)
        if request.KIND not in TRANSITIONS[self.phase]:
            raise RemoteProtocolError(
                f"{type(request).__name__} is not accepted in phase {self.phase.value}"
            )
        handlers: dict[Kind, Callable[[Any], Reply]] = {
            Kind.JOIN: self._join,
            Kind.SETUP: self._setup_keys,
            Kind.ADVERT: self._advert,
            Kind.TRAIN: self._train,
            Kind.STEP: self._step,
            Kind.FINISH: self._finish,
            Kind.SEAL: self._seal,
        }
        return handlers[request.KIND](request)

    def close(self) -> None:
        self.ledger.close()

    # -- join and setup ------------------------------------------------------------------------

    def _join(self, request: Join) -> Joined:
        self._abandon()
        setup_key = b""
        if (
            request.setup
            and self.settings.sketches
            and self._sketch_seed is None
            and self._deals < self.settings.params.max_seed_deals
        ):
            self._setup = SessionSetupClient(
                self.roster,
                session_id=request.setup,
                index=self.index,
                identity=self._identity,
                random_bytes=self._random_bytes,
            )
            setup_key = self._setup.start().to_bytes()
        advert = None
        if request.next is not None:
            try:
                advert = self._advertise(request.next)
            except (RemoteProtocolError, LocalProtocolError) as exc:  # still join, without keys
                # for that round (a replay the round guard refused, or a round not new here)
                self._note(f"joined without keys for round {request.next.round}: {exc}")
        self.phase = InstitutionPhase.ADVERTISED if self._pending else InstitutionPhase.IDLE
        reply = Joined(
            party=self.party_id,
            head=self.ledger.head,
            dim=self._dim,
            info=self.learner.info(),
            evaluation=self._evaluation(self._evaluated),
            setup_key=setup_key,
            advert=advert,
        )
        return sign_joined(self._identity, self.roster, request, reply)

    def _setup_keys(self, request: Setup) -> SetupReply:
        if request.session:
            return self._begin_deal(request.session)
        if self._setup is None:
            # A directory goes only to parties that gave a key for it: this one lost that
            # setup since (a restart mid-deal). It keeps what it holds; the coordinator sees
            # the commitment it sketches under and leaves it out of the rounds of another seed.
            raise RemoteProtocolError(
                "a sketch-seed directory for a setup this party no longer holds (restarted?)"
            )
        directory = decode_protocol(request.directory)
        self._check_deal_members(directory)
        offers = self._setup.receive(directory)
        if self._sketch_seed is not None and self._setup.sketch_seed != self._sketch_seed:
            self._drop_seed()  # a new deal is under way: the old seed serves no more rounds
        self._keep_seed()
        return SetupReply(tuple(m.to_bytes() for m in offers))

    def _begin_deal(self, session: bytes) -> SetupReply:
        """A fresh sketch-seed deal between rounds (the coordinator saw the membership change):
        a new session key, unless this run's deals are used up (``max_seed_deals``: a server
        that deals again and again would give a colluding client new functionals of every model
        each time) or the session is the current setup's. Refusing changes nothing."""
        limit = self.settings.params.max_seed_deals
        if not self.settings.sketches:
            raise RemoteProtocolError("a sketch-seed deal in a run without sketches")
        if self._deals >= limit:
            raise RemoteProtocolError(f"this run's {limit} sketch-seed deals are used up")
        if self._setup is not None and self._setup.session_id == session:
            raise RemoteProtocolError("a new deal under the current setup's session")
        setup = SessionSetupClient(
            self.roster,
            session_id=session,
            index=self.index,
            identity=self._identity,
            random_bytes=self._random_bytes,
        )
        key = setup.start()
        self._setup = setup
        return SetupReply((key.to_bytes(),))

    def _check_deal_members(self, directory: object) -> None:
        """Refuse a directory that deals a new seed to exactly the parties that share the
        current one: a new deal is for a change of membership only (the setup itself then
        checks the directory's signatures)."""
        if self._seed_members is None or not isinstance(directory, SessionKeyDirectory):
            return
        members = tuple(sorted({key.sender for key in directory.keys}))
        if members == self._seed_members and self._sketch_seed is not None:
            raise RemoteProtocolError(
                "a new sketch seed for the parties that share the current one: the membership "
                "did not change"
            )

    def _drop_seed(self) -> None:
        self._sketch_seed = self._seed_commitment = None
        self._sketcher = None
        if self._seed_file is not None:
            with contextlib.suppress(FileNotFoundError):
                os.remove(self._seed_file)

    def _accept_delivery(self, delivery: bytes) -> None:
        if not delivery or self._sketch_seed is not None:
            return
        if self._setup is None:  # lost with a restart: this party sits out the sketches
            self._note("a sketch seed arrived for a setup this party no longer holds: ignored")
            return
        self._setup.receive(decode_protocol(delivery))
        self._keep_seed()

    def _keep_seed(self) -> None:
        """Hold the setup's seed once it has one: ledgered (``sketch.seed_dealt``) before it
        serves any sketch, then kept in the seed file."""
        setup = self._setup
        if setup is None or setup.sketch_seed is None or setup.commitment is None:
            return
        if setup.commitment == self._seed_commitment:
            return
        limit = self.settings.params.max_seed_deals
        if self._deals >= limit:  # a setup begun at a join may not pass the limit either
            self._setup = None
            raise RemoteProtocolError(f"this run's {limit} sketch-seed deals are used up")
        self._deals += 1
        self._seed_members = setup.members
        self.ledger.record(
            SketchSeedDealt(
                deal=self._deals,
                members=tuple(self.roster.client(i).party_id for i in setup.members),
                commitment=setup.commitment.hex(),
            )
        )
        self._sketch_seed, self._seed_commitment = setup.sketch_seed, setup.commitment
        self._sketcher = None
        if self._seed_file is not None:
            _save_seed(self._seed_file, self._sketch_seed + self._seed_commitment)

    # -- advertising -----------------------------------------------------------------------------

    def _advert(self, request: Advert) -> Advertised:
        self._check_new_round(request.next)  # a replay or a bad partition changes nothing
        self._accept_delivery(request.delivery)
        self._abandon()
        advert = self._advertise(request.next)
        self.phase = InstitutionPhase.ADVERTISED if self._pending else InstitutionPhase.IDLE
        if self._pending is not None and self._trained_round == request.next.round:
            # keys for the round this party has just trained in (a partition learned from its
            # sketches): the model goes to the protocol now
            refused = self._provide(self._pending, self.learner.parameters())
            self.phase = InstitutionPhase.ROUND if not refused else InstitutionPhase.IDLE
        return Advertised(advert)

    def _advertise(self, next_round: NextRound) -> AdvertPart:
        """Fresh keys for ``next_round`` in this party's group, or why it declines."""
        r = next_round.round
        self._check_new_round(next_round)
        partition = self._checked_partition(next_round.partition)
        self._advertised_round = r
        # keys for the round just trained (a partition learned from its sketches): it is paid
        refusal = None if self._trained_round == r else self.learner.budget_refusal(r)
        if refusal is not None:
            self._reported[r] = self.ledger.head
            return AdvertPart(r, self.ledger.head, declined=refusal)
        members = tuple(i for i, g in enumerate(partition) if g == partition[self.index])
        config = round_config(
            self.roster.sub_roster(members),
            self.settings.params,
            dim=self._dim,
            session_id=next_round.sessions[partition[self.index]],
            round_=r,
            mode=self.settings.aggregation,
        )
        history = None
        if self.settings.attention and len(members) == self.roster.size:
            history = self._releases.before(r)
        client = SecAggClient(
            config,
            index=members.index(self.index),
            identity=self._identity,
            random_bytes=self._random_bytes,
            guard=self._guard,
            history=history,
        )
        advert = client.advertise()
        if self._guard_file is not None:  # durable before the keys leave this party
            _save_guard(self._guard_file, self._guard, self.ledger.head)
        self._pending = _Round(r, client, members, partition)
        self._reported[r] = self.ledger.head
        return AdvertPart(r, self.ledger.head, advert=advert.to_bytes())

    def _check_new_round(self, next_round: NextRound) -> None:
        """Raise unless this party may advertise keys for ``next_round`` now: a round of this
        run it has neither advertised nor trained for yet, with a partition it accepts. Changes
        nothing."""
        r = next_round.round
        if r <= self._advertised_round or r < self._trained_round or r > self.settings.rounds:
            raise RemoteProtocolError(f"round {r} is not a new round of this run")
        self._check_partition(next_round.partition)

    def _check_partition(self, partition: tuple[int, ...]) -> None:
        """Raise unless this party may accept the coordinator's partition: the declared or
        single group, or -- learned -- one that fits the rules (and then stays fixed)."""
        if self._partition is not None:
            if partition != self._partition:
                raise RemoteProtocolError("the coordinator sent a different partition")
            return
        try:
            self.settings.check_partition(partition, self.roster.size)
        except ConfigError as exc:
            raise RemoteProtocolError(
                f"the coordinator's partition is not allowed: {exc}"
            ) from None

    def _checked_partition(self, partition: tuple[int, ...]) -> tuple[int, ...]:
        """The coordinator's partition once accepted (a learned one then stays fixed)."""
        self._check_partition(partition)
        self._partition = partition
        return partition

    # -- a round ---------------------------------------------------------------------------------

    def _train(self, request: Train) -> Trained:
        r = request.round
        if r <= self._begun_round:  # before anything is applied, checkpointed or abandoned
            raise RemoteProtocolError(f"round {r} has begun here already (a replayed Train)")
        self._begun_round = r
        self._accept_delivery(request.delivery)
        self._close_round(request.result, request.heads, round_=r - 1)
        evaluation = self._evaluation(r - 1)
        pending = self._pending if self._pending and self._pending.round == r else None
        if not request.train:
            self._abandon()
            self.phase = InstitutionPhase.IDLE
            return Trained(evaluation, self.ledger.head, trained=False, refused="not in this round")
        self._check_train_request(request, pending)
        if request.sketch and self._sketch_seed is None:
            self._abandon()
            return Trained(evaluation, self.ledger.head, trained=False, refused="no sketch seed")
        self._trained_round = r
        outcome = self.learner.train(r)
        if not outcome.trained:
            self._abandon()
            self.phase = InstitutionPhase.IDLE
            return Trained(
                evaluation, self.ledger.head, trained=False, refused=outcome.refused or ""
            )
        self._on_model(r)
        parameters = self.learner.parameters()
        refused = self._provide(pending, parameters)
        messages: tuple[bytes, ...] = ()
        if request.messages and self._pending is not None:
            try:
                messages = self._protocol(request.messages, context=request.context)
            except RemoteProtocolError as exc:
                self._abandon()
                refused = str(exc)
        if not self.settings.secure or not self.settings.aggregates:
            self._reported[r] = self.ledger.head
        self.phase = InstitutionPhase.ROUND
        return Trained(
            evaluation,
            self.ledger.head,
            trained=True,
            refused=refused,
            messages=messages,
            sketch=self._sketch(parameters, r) if request.sketch else None,
            commitment=(self._seed_commitment or b"") if request.sketch else b"",
            model=None if self.settings.secure else parameters,
            similarity=None if self.settings.secure else self.learner.similarity_input(),
        )

    def _check_train_request(self, request: Train, pending: _Round | None) -> None:
        """Refuse, before anything is trained or charged, a request this party cannot answer:
        a round it already trained (a replay), protocol messages for a round it holds no keys
        for, or a transcript that binds another head than the one it reported."""
        if request.round <= self._trained_round:
            raise RemoteProtocolError(f"round {request.round} was already trained")
        if request.round > self.settings.rounds:
            raise RemoteProtocolError(f"round {request.round} is beyond this run's rounds")
        if request.messages and pending is None:
            raise RemoteProtocolError(
                f"protocol messages for round {request.round}, which this party has no keys for"
            )
        if request.context:
            self._check_own_head(request.round, request.context)

    def _provide(self, pending: _Round | None, parameters: Vector) -> str:
        if pending is None:
            return ""
        try:
            pending.client.provide_input(parameters)
        except EncodingRangeError as exc:
            self._abandon()
            return f"the model is out of the codec's range: {exc}"
        return ""

    def _sketch(self, parameters: Vector, round_: int) -> Vector:
        if self._sketch_seed is None:
            raise RemoteProtocolError("a sketch was asked for before the sketch seed arrived")
        vector = self.learner.similarity_input() if self.settings.statistic else parameters
        if vector is None:
            raise LocalProtocolError("this party released no similarity statistic")
        per_seed = sketches_per_seed(self.settings.params, model_dim=vector.size)
        epoch = sketch_epoch(round_, per_seed)
        if self._sketcher is None or self._sketcher_key != (vector.size, epoch):
            self._sketcher = make_sketcher(
                self._sketch_seed, self.settings.params, model_dim=vector.size, epoch=epoch
            )
            self._sketcher_key = (vector.size, epoch)
        sketch: Vector = self._sketcher.distance_sketch(vector, round_=round_)
        self.ledger.record(SketchReleased(round=round_, epoch=epoch, per_seed=per_seed))
        return sketch

    def _step(self, request: Step) -> StepReply:
        pending = self._pending
        if pending is None or pending.round != request.round:
            raise RemoteProtocolError(f"no protocol round {request.round} in progress here")
        try:
            messages = self._protocol(request.messages, context=request.context)
        except RemoteProtocolError as exc:
            self._abandon()
            self.phase = InstitutionPhase.IDLE
            self._left_round = request.round
            if request.phase is StepPhase.UNMASK and request.next is not None:
                return StepReply(error=str(exc), advert=self._advertise(request.next))
            return StepReply(error=str(exc))
        advert = None
        if request.phase is StepPhase.UNMASK:
            self._finishing, self._pending = pending, None
            self.phase = InstitutionPhase.IDLE
            if request.next is not None:
                advert = self._advertise(request.next)
                if self._pending is not None:
                    self.phase = InstitutionPhase.ADVERTISED
        return StepReply(messages, advert=advert)

    def _rejoins(self, request: Step) -> bool:
        """A round's last step, carrying the next round, for the round this party refused
        earlier (e.g. at the consistency check): it advertises for the next round instead of
        sitting it out."""
        return (
            self.phase is InstitutionPhase.IDLE
            and request.next is not None
            and request.round == self._left_round
        )

    def _after_leaving(self, request: Step) -> StepReply:
        self._left_round = 0
        assert request.next is not None  # noqa: S101 - _rejoins checked it
        advert = self._advertise(request.next)
        if self._pending is not None:
            self.phase = InstitutionPhase.ADVERTISED
        return StepReply(error=f"this party left round {request.round}", advert=advert)

    def _protocol(self, messages: Sequence[bytes], *, context: Sequence[Head]) -> tuple[bytes, ...]:
        """The server's messages through this party's protocol client; its answers out."""
        pending = self._pending
        assert pending is not None  # noqa: S101 - callers check
        client = pending.client
        if context:
            bound = [ContextItem(HEADS_CONTEXT_LABEL, heads_context(context))]
            self._check_own_head(pending.round, context)
            self._bound[pending.round] = _sorted_heads(context)
            if self.settings.sketches:  # the session's sketch seed, as the server binds it
                bound.append(commitment_context(self._commitment()))
            client.bind_context(bound)
        replies: list[bytes] = []
        masked: list[npt.NDArray[Any]] = []
        try:
            for data in messages:
                for reply in client.receive(decode_protocol(data)):
                    if isinstance(reply, MaskedInput):
                        masked.append(np.asarray(reply.vector))
                    replies.append(reply.to_bytes())
        finally:
            self._record_refusals(pending.round, client)
            if len(pending.members) == self.roster.size:
                self._releases.update(client.history)  # persisted before the unmask answer
        if masked:  # ledgered before the masked update leaves this party
            self.learner.record_release(pending.round, masked)
        return tuple(replies)

    def _commitment(self) -> bytes:
        if self._seed_commitment is None:
            raise RemoteProtocolError("the sketch seed's commitment is unknown here")
        return self._seed_commitment

    def _record_refusals(self, round_: int, client: SecAggClient) -> None:
        refusals: list[tuple[int, str]] = []
        for event in client.drain_events():
            if isinstance(event, PolicyRefused):
                refusals.extend(event.violations or ((-1, event.reason),))
        if refusals:
            self.learner.record_refusals(round_, refusals)

    # -- the end of a round and of the run -------------------------------------------------------

    def _close_round(self, result: Result | None, heads: tuple[Head, ...], *, round_: int) -> None:
        """Apply round ``round_``'s result (if this party completed it) and checkpoint the
        heads bound into it."""
        if result is not None:
            try:
                if result.round != round_:
                    raise RemoteProtocolError(f"a result of round {result.round}, not {round_}")
                self._apply(result)
            except ProtocolError as exc:
                self._note(f"round {round_}: the coordinator's result was not applied: {exc}")
        self._finishing = None
        self._evaluated = max(self._evaluated, round_)
        if heads:
            try:
                checkpoint = self._checkpoint_heads(round_, heads)
            except RemoteProtocolError as exc:
                log.warning("%s: round %d: checkpoint not recorded: %s", self.party_id, round_, exc)
                sent = hashlib.sha256(b"".join(h.to_bytes() for h in heads)).hexdigest()
                self.ledger.record(
                    InconsistentHeads(round=round_, reason=str(exc)[:500], heads_sha256=sent)
                )
                return
            record_checkpoint(self.ledger, checkpoint, final=False)

    def _checkpoint_heads(self, round_: int, heads: Sequence[Head]) -> tuple[Head, ...]:
        """The heads this party checkpoints for ``round_``: exactly those it bound into the
        round's signed transcript, or -- in a round without one (local, plaintext) -- only its
        own, which it can vouch for. A coordinator cannot make it record another party's head
        that no transcript it signed holds (that would frame an intact ledger as edited)."""
        self._check_own_head(round_, heads)
        bound = self._bound.pop(round_, None)
        if bound is None:
            own = tuple(h for h in heads if h.actor == self.party_id)
            if not own:
                raise RemoteProtocolError("a checkpoint without this party's head")
            return own
        if _sorted_heads(heads) != bound:
            raise RemoteProtocolError("the checkpoint differs from the heads bound into the round")
        return bound

    def _check_own_head(self, round_: int, heads: Sequence[Head]) -> None:
        """The coordinator must bind or checkpoint exactly the head this party reported."""
        own = next((h for h in heads if h.actor == self.party_id), None)
        if own is not None and self._reported.get(round_) not in (None, own):
            raise RemoteProtocolError(
                f"the coordinator reports head seq {own.seq} for {self.party_id} in round "
                f"{round_}, not the head this party reported"
            )

    def _expected_result(self) -> ResultKind:
        if not self.settings.secure:
            return ResultKind.PLAIN
        return ResultKind.BLINDED if self.settings.attention else ResultKind.GROUP_SUM

    def _apply(self, result: Result) -> None:
        if result.kind is not self._expected_result():
            raise RemoteProtocolError(
                f"a {result.kind.name} result in a run whose results are "
                f"{self._expected_result().name}"
            )
        if result.kind is ResultKind.PLAIN:
            assert result.values is not None  # noqa: S101 - the message's own check
            self._personalize(result.round, result.values)
            return
        finishing = self._finishing
        if finishing is None or finishing.round != result.round:
            raise RemoteProtocolError(
                f"a result for round {result.round}, which this party did not finish"
            )
        self._finishing = None
        if result.kind is ResultKind.BLINDED:
            finishing.client.receive(decode_protocol(result.blinded))
            personalized = finishing.client.personalized
            if personalized is None:
                raise RemoteProtocolError("the blinded output did not complete the round")
            self._personalize(result.round, personalized)
            return
        assert result.values is not None  # noqa: S101 - the message's own check
        if finishing.client.stage is not Stage.DONE or self.index not in result.contributors:
            raise RemoteProtocolError("a group sum this party did not contribute to")
        if len(result.contributors) < 2:
            raise RemoteProtocolError("a group sum needs at least 2 contributors")
        if self.settings.mode is not PersonalizationMode.GROUP:
            self._personalize(result.round, result.values / len(result.contributors))
            return
        own = group_self_weight(finishing.partition, self.index, self.settings.params.self_weight)
        personalized = group_personalized(
            self.learner.parameters(),
            result.values,
            contributors=len(result.contributors),
            own=own,
        )
        self._personalize(result.round, personalized)

    def _personalize(self, round_: int, personalized: Vector) -> None:
        if personalized.size != self._dim:
            raise RemoteProtocolError("a personalized model of the wrong size")
        self.learner.receive(personalized, anchor=self.settings.anchor)
        self._on_model(round_)

    def _finish(self, request: Finish) -> Finished:
        if self.phase is InstitutionPhase.FINISHED and self._final_head is not None:
            return self._finished()
        if request.round > self.settings.rounds:
            raise RemoteProtocolError(
                f"the run cannot have finished {request.round} of its {self.settings.rounds} rounds"
            )
        self._close_round(request.result, request.heads, round_=request.round)
        self._abandon()
        self.ledger.record(RunFinished(rounds=request.round, status=request.status.value))
        self._final_head = self.ledger.head
        self.phase = InstitutionPhase.FINISHED
        return self._finished()

    def _finished(self) -> Finished:
        assert self._final_head is not None  # noqa: S101 - set before
        signature = sign_final_head(self._identity, self.roster, self._final_head)
        return Finished(self._evaluation(self._evaluated), self._final_head, signature)

    def _seal(self, request: Seal) -> Sealed:
        own = next((h for h in request.heads if h.actor == self.party_id), None)
        if own != self._final_head:
            raise RemoteProtocolError("the final checkpoint does not hold this party's last head")
        # only heads their owners signed: nobody can be framed through this ledger (refused
        # otherwise; a coordinator that withholds the seal is what verify reports then)
        verify_final_heads(self.roster, request.heads, request.signatures)
        record_checkpoint(self.ledger, request.heads, final=True)
        self.phase = InstitutionPhase.SEALED
        return Sealed(self._evaluation(self._evaluated))

    # -- helpers ---------------------------------------------------------------------------------

    def _evaluation(self, round_: int) -> Evaluation:
        return Evaluation(max(round_, 0), self.learner.accuracy(), self.learner.epsilon())

    def _abandon(self) -> None:
        """Drop a round this party can no longer finish (its secrets go with it)."""
        self._pending = None

    def _note(self, text: str) -> None:
        """Ledger something the coordinator sent that this party did not accept."""
        log.warning("%s: %s", self.party_id, text)
        self.ledger.record(Hazard(text=text[:1000]))

    def _refuse(self, exc: SecureFedError) -> Refused:
        log.warning("%s refused a request: %s", self.party_id, type(exc).__name__)
        if self.phase in (InstitutionPhase.FINISHED, InstitutionPhase.SEALED):
            # after run.finished the head is the one reported for the final checkpoint: an
            # entry now would make the seal impossible (and after it none is accepted)
            return Refused(type(exc).__name__, str(exc))
        with contextlib.suppress(SecureFedError, OSError):
            self.ledger.record(
                Hazard(
                    text=f"refused a coordinator request ({type(exc).__name__}): {str(exc)[:300]}"
                )
            )
        return Refused(type(exc).__name__, str(exc))


_ROUND_EVENTS = frozenset({"round.spend", "budget.refused", "update.released", "policy.refusal"})


def _last_round(ledger: Ledger) -> int:
    """The highest round this party's own ledger shows it took part in (0 if none)."""
    last = 0
    try:
        with open(ledger.path, encoding="utf-8") as handle:
            for line in handle:
                entry = json.loads(line)
                if entry.get("event") in _ROUND_EVENTS:
                    last = max(last, int(entry.get("payload", {}).get("round", 0)))
    except (OSError, ValueError, TypeError, AttributeError):
        return last
    return last


def _deal_entries(ledger: Ledger) -> list[dict[str, Any]]:
    """The payloads of this party's ``sketch.seed_dealt`` entries, in order."""
    found: list[dict[str, Any]] = []
    try:
        with open(ledger.path, encoding="utf-8") as handle:
            for line in handle:
                entry = json.loads(line)
                if entry.get("event") == EventType.SKETCH_SEED_DEALT.value:
                    found.append(dict(entry.get("payload", {})))
    except (OSError, ValueError, TypeError, AttributeError):
        return found
    return found


def _seed_deals(
    deals: Sequence[dict[str, Any]], roster: Roster
) -> tuple[int, tuple[int, ...] | None]:
    """How many seeds ``deals`` (this party's ``sketch.seed_dealt`` payloads) show dealt in the
    run, and the members (roster indices) of the last deal (None if none)."""
    if not deals:
        return 0, None
    names = deals[-1].get("members", [])
    known = {party.party_id: party.index for party in roster.clients}
    return len(deals), tuple(sorted(known[str(p)] for p in names if str(p) in known))


def _is_last_deal(deals: Sequence[dict[str, Any]], commitment: bytes | None) -> bool:
    """Whether ``commitment`` is the one ``deals`` (this party's ledger) record last."""
    return (
        commitment is not None and bool(deals) and deals[-1].get("commitment") == commitment.hex()
    )


def _sorted_heads(heads: Sequence[Head]) -> tuple[Head, ...]:
    return tuple(sorted(heads, key=lambda h: h.actor))


_GUARD_FORMAT = "securefed-round-guard"
_GUARD_BYTES = 1 << 22


def _load_guard(path: os.PathLike[str] | None) -> RoundGuard:
    """The round guard kept by an earlier start (empty if none). Never resets silently: an
    unreadable or malformed file raises ConfigError."""
    guard = RoundGuard()
    if path is None or not os.path.exists(path):
        return guard
    try:
        with open(path, "rb") as handle:
            data = handle.read(_GUARD_BYTES + 1)
        document = json.loads(data.decode("utf-8")) if len(data) <= _GUARD_BYTES else None
    except (OSError, UnicodeDecodeError, ValueError):
        document = None
    if not isinstance(document, dict) or document.get("format") != _GUARD_FORMAT:
        raise ConfigError(f"{os.fspath(path)} does not hold a round guard; refusing to start")
    guard.load_state_dict(document.get("guard", {}))
    return guard


def _save_guard(path: os.PathLike[str], guard: RoundGuard, head: Head) -> None:
    document = {
        "format": _GUARD_FORMAT,
        "guard": guard.state_dict(),
        "head": {"actor": head.actor, "seq": head.seq, "hash": head.hash},
    }
    write_atomic(os.fspath(path), json.dumps(document).encode(), mode=0o600)


def _load_seed(path: os.PathLike[str] | None) -> tuple[bytes | None, bytes | None]:
    """The sketch seed and its commitment kept by an earlier start (None, None if none)."""
    if path is None or not os.path.exists(path):
        return None, None
    with open(path, "rb") as handle:
        data = handle.read()
    if len(data) != 64:
        raise ConfigError(f"{os.fspath(path)} does not hold a sketch seed and its commitment")
    return data[:32], data[32:]


def _save_seed(path: os.PathLike[str], data: bytes) -> None:
    write_atomic(os.fspath(path), data, overwrite=True, mode=0o600)
