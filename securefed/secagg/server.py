"""The server side of one secure-aggregation round: a pure state machine.

The driver feeds each client message to :meth:`SecAggServer.receive` and calls
:meth:`SecAggServer.advance` when a phase should close (all expected messages arrived, or its
deadline passed -- time is the driver's business). ``advance`` returns the messages to send, each
in an :class:`Envelope` naming its recipient.

A bad client message never aborts the round: it is refused with a
:class:`~securefed.secagg.events.MessageRejected` event and that client counts as dropped.
The round aborts (an :class:`~securefed.secagg.messages.Abort` to every live client, a
:class:`~securefed.secagg.events.RoundAborted` event) only when fewer than ``t`` clients remain or
a secret cannot be reconstructed.

What the server learns: in ``sum`` mode, the sum of the survivors' inputs -- and nothing about any
single input, as long as fewer than ``t`` clients collude with it (R1) and every client follows
the consistency check.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from securefed.crypto import AgreementPrivateKey, SigningKey, merkle
from securefed.encoding import FixedPointCodec
from securefed.errors import (
    ConfigError,
    CryptoError,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
)
from securefed.secagg.attention import weights_context
from securefed.secagg.config import AggregationMode, RoundConfig
from securefed.secagg.dealing import Verdict, advertised_key, judge_complaint
from securefed.secagg.events import (
    ClientsDropped,
    ClientsExcluded,
    ComplaintJudged,
    ExclusionReason,
    MessageRejected,
    OutputsWithheld,
    RoundAborted,
    RoundCompleted,
    ShareRejected,
    UnmaskPerformed,
)
from securefed.secagg.graph import build_graph
from securefed.secagg.history import ReleaseHistory, history_context, withheld_targets
from securefed.secagg.masking import Output, round_outputs, self_seed_commitment, unmask_sum
from securefed.secagg.messages import (
    Abort,
    AdvertiseKeys,
    BlindedOutput,
    ConsistencyRequest,
    ConsistencySignature,
    DealtShare,
    KeyDirectory,
    MaskedInput,
    MaskRequest,
    Message,
    RevealedShare,
    ShareBundle,
    ShareKeys,
    ShareReceipt,
    UnmaskRequest,
    UnmaskResponse,
    dealt_leaves,
    join_proof,
)
from securefed.secagg.party import ProtocolParty
from securefed.secagg.policy import decode_weights, encode_weights
from securefed.secagg.sharing import check_commitments, reconstruct
from securefed.secagg.stages import Role, Stage, advance_stage, next_stage
from securefed.secagg.transcript import ContextItem, transcript_hash
from securefed.secagg.verify import check_round, verify_client_signature

__all__ = ["AggregateResult", "Envelope", "SecAggServer"]

RingArray = npt.NDArray[np.unsignedinteger[Any]]


@dataclass(frozen=True, slots=True)
class Envelope:
    """A server message and the roster index of the client it goes to."""

    recipient: int
    message: Message


@dataclass(frozen=True, slots=True, eq=False)
class AggregateResult:
    """The unmasked output of a ``sum`` round.

    Attributes:
        contributors: U3, the clients whose inputs are in the sum.
        ring_sum: the sum of their encoded inputs in the ring.
        values: the decoded sum (float64).
        error_bound: per-coordinate bound on ``|values - sum of true inputs|`` (codec rounding).
    """

    contributors: tuple[int, ...]
    ring_sum: RingArray
    values: npt.NDArray[np.float64]
    error_bound: float


class SecAggServer(ProtocolParty):
    """The server's view of one round. Single use."""

    def __init__(
        self,
        config: RoundConfig,
        *,
        identity: SigningKey,
        context: Sequence[ContextItem] = (),
        weights: npt.NDArray[np.float64] | None = None,
        history: ReleaseHistory | None = None,
    ) -> None:
        """``weights`` (attention mode only): the N x N matrix xi the server computed for this
        round (already conforming to ``config.policy``); it is broadcast and bound into the
        transcript. ``history`` (attention mode only): what earlier rounds of this federation
        released (:mod:`securefed.secagg.history`; None before the first release); it is
        broadcast and bound too, and outputs that would expose a party together with it are
        withheld. After the consistency check :attr:`history` holds the updated history.

        Raises:
            ConfigError: ``identity`` is not the roster's server key, ``weights`` or ``history``
                given in sum mode, ``weights`` missing or malformed in attention mode, or a
                ``history`` for another number of clients or not before this round.
        """
        if identity.verify_key() != config.roster.server.identity:
            raise ConfigError("identity key does not match the roster's server entry")
        super().__init__(config, identity, Stage.ADVERTISE)
        self._context = tuple(context)
        self._encoded_weights = b""
        if config.mode is AggregationMode.ATTENTION:
            if weights is None:
                raise ConfigError("attention mode needs the round's weight matrix")
            self._encoded_weights = encode_weights(np.asarray(weights, dtype=np.float64))
            decode_weights(self._encoded_weights, config.n_clients)  # shape and values check
            self._context = (*self._context, weights_context(self._encoded_weights))
            if history is not None and (
                history.n_clients != config.n_clients or history.round >= config.round
            ):
                raise ConfigError("the release history is for another federation or round")
            encoded = history.to_bytes() if history is not None else b""
            self._context = (*self._context, history_context(encoded))
        elif weights is not None or history is not None:
            raise ConfigError("sum mode takes no weights and no release history")
        self._history_before = history
        self._history = history
        self._withheld: tuple[int, ...] = ()
        self._graph = build_graph(config)  # fixed by roster and round, not by U1 or keys
        self._adverts: dict[int, AdvertiseKeys] = {}
        self._share_keys: dict[int, ShareKeys] = {}
        self._bad_commitments: set[int] = set()
        # party -> the signed messages that convict it (the dealer's, the holder's): evidence
        self._evidence: dict[int, tuple[Message, ...]] = {}
        self._receipts: dict[int, ShareReceipt] = {}
        # Masked inputs are folded into one running sum per output as soon as a client's upload
        # is complete (memory O(outputs * d), not O(N * outputs * d)); until then they wait here.
        self._pending: dict[int, dict[int | None, MaskedInput]] = {}
        self._input_signatures: dict[tuple[int, int | None], bytes] = {}
        self._sums: dict[int | None, RingArray] = {}
        self._complete: list[int] = []
        self.blinded_outputs: dict[int, RingArray] = {}
        # What unmasking reconstructed (the server's knowledge, kept for audits and tests):
        self.reconstructed_self_seeds: dict[int, bytes] = {}
        self.reconstructed_mask_keys: dict[int, bytes] = {}
        self._signatures: dict[int, ConsistencySignature] = {}
        self._responses: dict[int, UnmaskResponse] = {}
        # dealer -> the inclusion proof of each of its dealt shares (wire form), from the check
        # of its ShareKeys, in recipient order
        self._dealt_proofs: dict[int, tuple[bytes, ...]] = {}
        # field -> owner -> holder -> revealed share, built when UNMASK closes (_revealed)
        self._revealed_by_owner: dict[str, dict[int, dict[int, bytes]]] = {}
        self._u1: tuple[int, ...] = ()
        self._dealers: tuple[int, ...] = ()  # U2: the clients whose shares went out
        self._u2: tuple[int, ...] = ()  # U2': the members who mask together
        self._u3: tuple[int, ...] = ()
        self._transcript = b""
        self.result: AggregateResult | None = None

    @property
    def history(self) -> ReleaseHistory | None:
        """Attention mode: the release history including this round once its consistency check
        closed (the history given at construction before that); None in sum mode."""
        return self._history

    @property
    def withheld(self) -> tuple[int, ...]:
        """Attention mode: the targets whose outputs this round withholds (set when the members
        are settled; :func:`~securefed.secagg.history.withheld_targets`)."""
        return self._withheld

    def held_bytes(self) -> int:
        """Bytes of vectors the server holds now (running sums, pending uploads, outputs)."""
        pending = sum(
            m.vector.nbytes for waiting in self._pending.values() for m in waiting.values()
        )
        sums = sum(v.nbytes for v in self._sums.values())
        outputs = sum(v.nbytes for v in self.blinded_outputs.values())
        return pending + sums + outputs

    def evidence(self, party: int) -> tuple[Message, ...]:
        """The signed messages on which this round convicted ``party`` (empty if it did not):
        its advertisement and ShareKeys for a commitment failing the public checks; both
        advertisements and the holder's ShareReceipt (whose complaint carries the dealer's signed
        DealtShare and ShareCommitment as the holder checked them) for a judged complaint
        (:func:`~securefed.secagg.dealing.judge_complaint` reruns on them); the owner's
        ShareKeys (its commitments) and the holder's UnmaskResponse for a revealed share off the
        polynomial. Anyone with the roster can check every signature."""
        return self._evidence.get(party, ())

    @property
    def survivors(self) -> tuple[int, ...]:
        """U3, once the consistency phase has started."""
        return self._u3

    # --- receiving ------------------------------------------------------------------------------
    def receive(self, message: Message) -> None:
        """Collect one client message. Never raises for a client's fault: it records a
        MessageRejected event instead (the client then counts as dropped).

        Raises:
            LocalProtocolError: the round is over.
        """
        if self._stage.terminal:
            raise LocalProtocolError(f"the round is over ({self._stage.value})")
        sender = getattr(message, "sender", None)
        try:
            next_stage(Role.SERVER, self._stage, message.TYPE)
            check_round(self.config, message)
            verify_client_signature(self.config, message)
            self._collect(message)
        except (ProtocolError, CryptoError) as exc:
            self._events.append(MessageRejected(self.config.round, self._stage, sender, str(exc)))

    def _collect(self, message: Message) -> None:
        collectors: dict[type[Message], tuple[dict[Any, Any], Callable[[Any], None]]] = {
            AdvertiseKeys: (self._adverts, self._check_advert),
            ShareKeys: (self._share_keys, self._check_share_keys),
            ShareReceipt: (self._receipts, self._check_receipt),
            MaskedInput: (self._input_signatures, self._fold_masked_input),
            ConsistencySignature: (self._signatures, self._check_consistency),
            UnmaskResponse: (self._responses, self._check_unmask_response),
        }
        store, check = collectors[type(message)]
        sender: int = getattr(message, "sender")  # noqa: B009 - client messages name a sender
        key = (sender, message.target) if isinstance(message, MaskedInput) else sender
        if key in store:
            same = store[key] == (
                message.signature if isinstance(message, MaskedInput) else message
            )
            reason = "duplicate" if same else "a second, different message"
            raise RemoteProtocolError(f"{reason} from client {sender} in this phase")
        check(message)
        store[key] = message.signature if isinstance(message, MaskedInput) else message

    def _check_advert(self, advert: AdvertiseKeys) -> None:
        suite = self.config.suite
        for peer in self._mask_graph.neighbours(advert.sender):
            advertised_key(self.config, self._mask_graph, advert, peer)
        self.config.mask_suite.agreement_public_key(advert.mask_key)
        if bool(advert.target_key) != self._attention:
            raise RemoteProtocolError("a target key is advertised exactly in attention mode")
        if advert.target_key:
            suite.agreement_public_key(advert.target_key)

    def _check_share_keys(self, message: ShareKeys) -> None:
        sender = message.sender
        if sender not in self._u1:
            raise RemoteProtocolError(f"client {sender} is not in U1")
        commitment = message.commitment
        check_round(self.config, commitment)
        verify_client_signature(self.config, commitment)
        expected = self._mask_graph.present_neighbours(sender, self._u1)
        if tuple(d.recipient for d in message.dealt) != expected:
            raise RemoteProtocolError(
                "ShareKeys must hold exactly one dealt share per neighbour in U1"
            )
        for dealt in message.dealt:
            check_round(self.config, dealt)
        # One signature covers them all: the signed commitment's Merkle root over the leaves.
        root, proofs = merkle.inclusion_proofs(dealt_leaves(message.dealt))
        if root != commitment.dealt_root:
            raise RemoteProtocolError("the dealt shares do not match the dealer's signed root")
        try:  # the public checks: a dealer failing them is left out before any share is used
            check_commitments(
                self.config.sharing,
                mask_key_polynomial=commitment.mask_key_polynomial,
                self_seed_polynomial=commitment.self_seed_polynomial,
                threshold=self._mask_graph.threshold(sender),
                mask_key=self._adverts[sender].mask_key,
            )
        except CryptoError:
            self._bad_commitments.add(sender)
            self._evidence[sender] = (self._adverts[sender], message)
            raise
        self._dealt_proofs[sender] = tuple(join_proof(proof) for proof in proofs)

    def _check_receipt(self, receipt: ShareReceipt) -> None:
        if receipt.sender not in self._dealers:
            raise RemoteProtocolError(f"client {receipt.sender} is not in U2")
        dealers = set(self._mask_graph.present_neighbours(receipt.sender, self._dealers))
        if not {c.dealer for c in receipt.complaints} <= dealers:
            raise RemoteProtocolError("a complaint about a client that dealt this one nothing")

    def _check_masked_input(self, message: MaskedInput) -> None:
        if message.sender not in self._u2:
            raise RemoteProtocolError(f"client {message.sender} is not in U2")
        ring = self.config.codec.ring
        if message.vector.dtype != ring.dtype or message.vector.size != self.config.vector_length:
            raise RemoteProtocolError("masked input has the wrong length or ring")
        if message.target not in self._expected_targets(message.sender):
            raise RemoteProtocolError("masked input for a target this client does not serve")

    def _fold_masked_input(self, message: MaskedInput) -> None:
        """Check a masked input; once its sender's upload is complete, add it to the sums."""
        self._check_masked_input(message)
        waiting = self._pending.setdefault(message.sender, {})
        waiting[message.target] = message
        expected = self._expected_targets(message.sender)
        if len(waiting) < len(expected):
            return
        for target, pending in self._pending.pop(message.sender).items():
            total = self._sums.get(target)
            if total is None:
                self._sums[target] = pending.vector.copy()
            else:
                np.add(total, pending.vector, out=total)
        self._complete.append(message.sender)

    @property
    def _attention(self) -> bool:
        return self.config.mode is AggregationMode.ATTENTION

    def _expected_targets(self, sender: int) -> tuple[int | None, ...]:
        """The outputs ``sender`` must upload a vector for: the sum, or every other U2 member."""
        outputs = round_outputs(self.config, self._u2)
        skipped = {sender, *self._withheld}
        return tuple(o.target for o in outputs if o.target not in skipped)

    def _check_consistency(self, message: ConsistencySignature) -> None:
        if message.sender not in self._u3:
            raise RemoteProtocolError(f"client {message.sender} is not in U3")
        if message.transcript_hash != self._transcript:
            raise RemoteProtocolError(f"client {message.sender} signed a different transcript")

    def _check_unmask_response(self, message: UnmaskResponse) -> None:
        if message.sender not in self._signatures:
            raise RemoteProtocolError(f"client {message.sender} did not sign the consistency check")
        held = set(self._mask_graph.neighbours(message.sender)) | {message.sender}
        seeds = tuple(v for v in self._u3 if v in held)
        keys = tuple(v for v in self._u2 if v not in self._u3 and v in held)
        if tuple(s.owner for s in message.self_seed_shares) != seeds:
            raise RemoteProtocolError("self-seed shares must cover exactly its holdings in U3")
        if tuple(s.owner for s in message.mask_key_shares) != keys:
            raise RemoteProtocolError("mask-key shares must cover exactly its holdings of dropouts")

    # --- advancing ------------------------------------------------------------------------------
    def advance(self) -> list[Envelope]:
        """Close the current phase and return the messages that open the next one.

        Raises:
            LocalProtocolError: nothing to advance (round over).
        """
        if self._stage.terminal:
            raise LocalProtocolError(f"the round is over ({self._stage.value})")
        handlers = {
            Stage.ADVERTISE: self._close_advertise,
            Stage.SHARE: self._close_share,
            Stage.VERIFY: self._close_verify,
            Stage.MASK: self._close_mask,
            Stage.CONSISTENCY: self._close_consistency,
            Stage.UNMASK: self._close_unmask,
        }
        stage = self._stage
        try:
            envelopes = handlers[stage]()
        except RemoteProtocolError as exc:
            return self._abort(str(exc), self._live_clients())
        self._stage = advance_stage(Role.SERVER, stage)
        return envelopes

    def _live_clients(self) -> tuple[int, ...]:
        for members in (self._u3, self._u2, self._u1):
            if members:
                return members
        return tuple(sorted(self._adverts))

    def _require_quorum(
        self,
        members: Sequence[int],
        previous: Sequence[int],
        what: str,
        excluded: Collection[int] = (),
    ) -> None:
        """Record who dropped (``previous`` minus ``members``, not counting ``excluded``, who
        were left out with a ClientsExcluded event); raise if fewer than t remain."""
        dropped = tuple(v for v in previous if v not in members and v not in excluded)
        if dropped:
            self._events.append(ClientsDropped(self.config.round, self._stage, dropped))
        if len(members) < self.config.threshold:
            raise RemoteProtocolError(
                f"only {len(members)} clients {what}; the threshold is {self.config.threshold}"
            )

    def _close_advertise(self) -> list[Envelope]:
        advertised = tuple(sorted(self._adverts))
        u1, aborts = self._admit(advertised)
        excluded = set(advertised) - set(u1)
        self._require_quorum(u1, range(self.config.n_clients), "advertised keys", excluded)
        self._u1 = u1  # set only now: an abort for too few goes to every client that advertised
        directory = self._sign(
            KeyDirectory,
            advertisements=tuple(self._adverts[v] for v in self._u1),
            weights=self._encoded_weights,
            history=self._history_before.to_bytes() if self._history_before else b"",
        )
        return [*aborts, *(Envelope(v, directory) for v in self._u1)]

    def _admit(
        self, candidates: tuple[int, ...], faults: dict[int, ExclusionReason] | None = None
    ) -> tuple[tuple[int, ...], list[Envelope]]:
        """The candidates that keep their guarantee together (the graph's fixpoint) after the
        clients in ``faults`` are left out for misbehaving, and an Abort for each one left out,
        with a ClientsExcluded event per reason."""
        faults = faults or {}
        admitted, excluded = self._mask_graph.admit([v for v in candidates if v not in faults])
        excluded = {**faults, **excluded}
        aborts = []
        for reason in ExclusionReason:
            clients = tuple(sorted(v for v, r in excluded.items() if r is reason))
            if not clients:
                continue
            self._events.append(ClientsExcluded(self.config.round, self._stage, clients, reason))
            for v in clients:
                problem = None if v in faults else self._mask_graph.exclusion(v, admitted)
                detail = str(problem) if problem is not None else reason.value
                aborts.append(Envelope(v, self._sign(Abort, reason=f"left out: {detail}")))
        return admitted, aborts

    def _close_share(self) -> list[Envelope]:
        shared = tuple(sorted({*self._share_keys, *self._bad_commitments}))
        faults = dict.fromkeys(self._bad_commitments, ExclusionReason.BAD_COMMITMENT)
        u2, aborts = self._admit(shared, faults)
        self._require_quorum(u2, self._u1, "shared keys", set(shared) - set(u2))
        self._dealers = self._u2 = u2
        commitments = tuple(self._share_keys[v].commitment for v in u2)
        # Every dealt share of U2 with its inclusion proof, by (dealer, recipient).
        dealt_to: dict[tuple[int, int], tuple[DealtShare, bytes]] = {}
        for u in u2:
            proofs = self._dealt_proofs[u]
            for share, proof in zip(self._share_keys[u].dealt, proofs, strict=True):
                dealt_to[(u, share.recipient)] = (share, proof)
        envelopes = []
        for v in u2:
            held = [dealt_to[(u, v)] for u in self._mask_graph.present_neighbours(v, u2)]
            bundle = self._sign(
                ShareBundle,
                recipient=v,
                commitments=commitments,
                dealt=tuple(share for share, _ in held),
                proofs=tuple(proof for _, proof in held),
            )
            envelopes.append(Envelope(v, bundle))
        return [*aborts, *envelopes]

    def _close_verify(self) -> list[Envelope]:
        """Judge every complaint (:func:`~securefed.secagg.dealing.judge_complaint`): a dealer
        proven at fault, or a holder that complained falsely, is left out before anything is
        masked; so is a client that sent no receipt. The rest mask together."""
        receipts = tuple(sorted(self._receipts))
        faults: dict[int, ExclusionReason] = {}
        for holder in receipts:
            for complaint in self._receipts[holder].complaints:
                dealer = complaint.dealer
                verdict = judge_complaint(
                    self.config,
                    self._mask_graph,
                    complaint=complaint,
                    holder_advert=self._adverts[holder],
                    dealer_advert=self._adverts[dealer],
                )
                self._events.append(
                    ComplaintJudged(self.config.round, self._stage, dealer, holder, verdict.value)
                )
                convicted = dealer if verdict is Verdict.DEALER_AT_FAULT else holder
                if convicted in faults:
                    continue  # one conviction (and one piece of evidence) per party is enough
                faults[convicted] = (
                    ExclusionReason.BAD_SHARES
                    if verdict is Verdict.DEALER_AT_FAULT
                    else ExclusionReason.FALSE_COMPLAINT
                )
                self._evidence[convicted] = (
                    self._adverts[dealer],
                    self._adverts[holder],
                    self._receipts[holder],  # with the dealer's messages the holder checked
                )
        members, aborts = self._admit(receipts, faults)
        left_out = (set(receipts) - set(members)) | set(faults)
        self._require_quorum(members, self._dealers, "confirmed their shares", left_out)
        self._u2 = members
        if self._attention:
            self._withheld = withheld_targets(
                decode_weights(self._encoded_weights, self.config.n_clients),
                self.config.policy,
                members=members,
                history=self._history_before,
                round_=self.config.round,
            )
            if self._withheld:
                self._events.append(OutputsWithheld(self.config.round, self._stage, self._withheld))
            # A member that serves no output (every other target withheld) has nothing to
            # upload: its input is in no output, so it counts as complete without a message.
            self._complete.extend(v for v in members if not self._expected_targets(v))
        request = self._sign(MaskRequest, members=members)
        return [*aborts, *(Envelope(v, request) for v in members)]

    def _close_mask(self) -> list[Envelope]:
        self._u3 = tuple(sorted(self._complete))  # a partial upload counts as a dropout
        self._pending.clear()
        self._require_quorum(self._u3, self._u2, "sent masked inputs")
        graph = self._mask_graph
        graph.check_survivors((*self._u3, *self._dropped_neighbours()), self._u3)
        self._transcript = transcript_hash(
            self.config,
            advertisements=[self._adverts[v] for v in self._u1],
            commitments=[self._share_keys[v].commitment for v in self._dealers],
            members=self._u2,
            survivors=self._u3,
            context=self._context,
        )
        request = self._sign(ConsistencyRequest, survivors=self._u3)
        return [Envelope(v, request) for v in self._u3]

    def _close_consistency(self) -> list[Envelope]:
        signers = tuple(sorted(self._signatures))
        self._require_quorum(signers, self._u3, "signed the consistency check")
        if self._attention:  # from here on the server can unmask: the rows count as released
            before = self._history_before or ReleaseHistory.empty(self.config.n_clients)
            self._history = before.after(
                self.config.round,
                decode_weights(self._encoded_weights, self.config.n_clients),
                survivors=self._u3,
                withheld=self._withheld,
                rounds=self.config.policy.history_rounds,
            )
        request = self._sign(
            UnmaskRequest,
            survivors=self._u3,
            consistency=tuple(self._signatures[v] for v in signers),
        )
        return [Envelope(v, request) for v in signers]

    def _close_unmask(self) -> list[Envelope]:
        responders = tuple(sorted(self._responses))
        self._require_quorum(
            responders, tuple(sorted(self._signatures)), "answered the unmask request"
        )
        dropped = self._dropped_neighbours()
        self._mask_graph.check_survivors((*self._u3, *dropped), responders)
        seeds = {v: self._reconstruct_self_seed(v) for v in self._u3}
        mask_keys = {v: self._reconstruct_mask_key(v) for v in dropped}
        self.reconstructed_self_seeds = dict(seeds)
        self.reconstructed_mask_keys = {
            v: key.secret_bytes_for_sharing() for v, key in mask_keys.items()
        }
        self._events.append(UnmaskPerformed(self.config.round, self._stage, tuple(seeds), dropped))
        if not self._attention:
            self.result = self._unmask(seeds, mask_keys)
            self._events.append(RoundCompleted(self.config.round, self._stage, self._u3))
            return []
        envelopes = []
        for output in round_outputs(self.config, self._u3):
            assert output.target is not None  # noqa: S101 - attention outputs have targets
            if output.target in self._withheld:
                continue
            vector = self._unmask_output(output, seeds, mask_keys)
            self._sums.pop(output.target, None)  # replaced by its output: memory stays O(N d)
            self.blinded_outputs[output.target] = vector
            blinded = self._sign(
                BlindedOutput, recipient=output.target, survivors=self._u3, vector=vector
            )
            envelopes.append(Envelope(output.target, blinded))
        self._events.append(RoundCompleted(self.config.round, self._stage, self._u3))
        return envelopes

    def _dropped_neighbours(self) -> tuple[int, ...]:
        """Clients in U2 but not U3 that masked with a survivor: their mask keys are needed."""
        survivors = set(self._u3)
        return tuple(
            v
            for v in self._u2
            if v not in survivors and any(u in survivors for u in self._mask_graph.neighbours(v))
        )

    # --- reconstruction and unmasking -----------------------------------------------------------
    def _revealed(self, owner: int, field: str) -> dict[int, bytes]:
        """The encoded shares of ``owner``'s secret that holders revealed, by holder (the
        responses are indexed by owner once per field: one pass, not one per owner)."""
        index = self._revealed_by_owner.get(field)
        if index is None:
            index = self._revealed_by_owner[field] = {}
            for holder, response in self._responses.items():
                revealed: tuple[RevealedShare, ...] = getattr(response, field)
                for item in revealed:
                    index.setdefault(item.owner, {})[holder] = item.share
        return dict(index.get(owner, {}))

    def _reconstruct(
        self, owner: int, field: str, polynomial: bytes, accept: Callable[[bytes], bool]
    ) -> bytes:
        """The secret of ``owner`` from the revealed shares (:func:`~securefed.secagg.sharing.
        reconstruct`: no subset search). Names the holders of discarded shares in a
        ShareRejected event.

        Raises:
            RemoteProtocolError: too few valid shares (the holders at fault are named first).
        """
        try:
            result = reconstruct(
                self.config.sharing,
                polynomial=polynomial,
                shares=self._revealed(owner, field),
                threshold=self._mask_graph.threshold(owner),
                accept=accept,
            )
        except CryptoError as exc:
            rejected = tuple(getattr(exc, "rejected", ()))
            if rejected:
                self._events.append(ShareRejected(self.config.round, self._stage, owner, rejected))
                self._convict_holders(owner, rejected)
            raise RemoteProtocolError(
                f"could not reconstruct a verified secret of client {owner}: {exc}"
            ) from exc
        if result.rejected:
            self._events.append(
                ShareRejected(self.config.round, self._stage, owner, result.rejected)
            )
            self._convict_holders(owner, result.rejected)
        return result.secret

    def _convict_holders(self, owner: int, holders: Sequence[int]) -> None:
        for holder in holders:
            if holder not in self._evidence:
                self._evidence[holder] = (self._share_keys[owner], self._responses[holder])

    def _reconstruct_self_seed(self, owner: int) -> bytes:
        commitment = self._share_keys[owner].commitment
        return self._reconstruct(
            owner,
            "self_seed_shares",
            commitment.self_seed_polynomial,
            lambda seed: (
                self_seed_commitment(self.config, owner, seed) == commitment.self_seed_commitment
            ),
        )

    def _reconstruct_mask_key(self, owner: int) -> AgreementPrivateKey:
        suite = self.config.mask_suite
        advertised = suite.agreement_public_key(self._adverts[owner].mask_key)

        def matches(secret: bytes) -> bool:
            try:
                return suite.agreement_private_key(secret).public_key() == advertised
            except CryptoError:
                return False

        polynomial = self._share_keys[owner].commitment.mask_key_polynomial
        return suite.agreement_private_key(
            self._reconstruct(owner, "mask_key_shares", polynomial, matches)
        )

    def _unmask_output(
        self, output: Output, seeds: dict[int, bytes], mask_keys: dict[int, AgreementPrivateKey]
    ) -> RingArray:
        """The sum of ``output``'s contributions minus self masks and dropped peers' masks (in
        attention mode still blinded by the target pads)."""
        contributors = output.contributors(self._u3)
        suite = self.config.mask_suite
        dropped_secrets = {
            (u, dropped): private.exchange(suite.agreement_public_key(self._adverts[u].mask_key))
            for dropped, private in mask_keys.items()
            for u in contributors
            if u in self._mask_graph.neighbours(dropped) and dropped != output.target
        }
        return unmask_sum(
            [self._sums[output.target]],
            config=self.config,
            output=output,
            self_seeds={u: seeds[u] for u in contributors},
            dropped_secrets=dropped_secrets,
        )

    def _unmask(
        self, seeds: dict[int, bytes], mask_keys: dict[int, AgreementPrivateKey]
    ) -> AggregateResult:
        (output,) = round_outputs(self.config, self._u3)  # sum mode: one output
        contributors = output.contributors(self._u3)
        total = self._unmask_output(output, seeds, mask_keys)
        codec = FixedPointCodec(self.config.codec)
        n = len(contributors)
        return AggregateResult(
            contributors, total, codec.decode(total, n_terms=n), codec.decode_error_bound(n)
        )

    # --- helpers ----------------------------------------------------------------------------------
    def _abort(self, reason: str, recipients: Sequence[int]) -> list[Envelope]:
        self._events.append(RoundAborted(self.config.round, self._stage, reason))
        self._stage = Stage.ABORTED
        abort = self._sign(Abort, reason=reason)
        return [Envelope(v, abort) for v in recipients]
