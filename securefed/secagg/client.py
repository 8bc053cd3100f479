"""The client side of one secure-aggregation round: a pure state machine.

``SecAggClient`` never touches a socket, a thread, a clock or a file. The driver calls
:meth:`SecAggClient.start` with the client's input, then feeds every message from the server to
:meth:`SecAggClient.receive`, which returns the messages to send back. Randomness for the
self-mask seed and the encoder's dither comes from ``random_bytes`` (``os.urandom`` by default);
key pairs come from the operating system's CSPRNG through the crypto layer.

Any problem with a server message -- illegal in the current stage, wrong session or round, bad
signature, inconsistent sets, a request for both shares of one client -- raises a
:class:`~securefed.errors.ProtocolError` and moves the client to ``ABORTED`` for good; a
:class:`~securefed.secagg.events.RoundAborted` event says why. An exact re-delivery of a message
already processed is ignored.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from securefed.crypto import (
    Aead,
    AgreementPrivateKey,
    AgreementPublicKey,
    SharedSecret,
    SigningKey,
    merkle,
)
from securefed.encoding import FixedPointCodec
from securefed.errors import (
    ConfigError,
    CryptoError,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
    WeightPolicyViolation,
)
from securefed.secagg.attention import (
    check_broadcast_weights,
    check_survivor_weights,
    unblind,
    weights_context,
)
from securefed.secagg.config import AggregationMode, RoundConfig
from securefed.secagg.dealing import advertised_key, channel_key, open_dealt, seal_shares
from securefed.secagg.events import OutputsWithheld, PolicyRefused, RoundAborted, UnmaskRefused
from securefed.secagg.graph import NeighbourhoodTooSmall, build_graph
from securefed.secagg.history import (
    ReleaseHistory,
    check_claimed_history,
    check_release,
    history_context,
    withheld_targets,
)
from securefed.secagg.masking import (
    encode_and_mask,
    round_outputs,
    self_seed_commitment,
    target_pad,
)
from securefed.secagg.messages import (
    Abort,
    AdvertiseKeys,
    BlindedOutput,
    Complaint,
    ConsistencyRequest,
    ConsistencySignature,
    DealtShare,
    KeyDirectory,
    MaskedInput,
    MaskRequest,
    Message,
    MessageType,
    RevealedShare,
    ShareBundle,
    ShareCommitment,
    ShareKeys,
    ShareReceipt,
    UnmaskRequest,
    UnmaskResponse,
    dealt_leaves,
    split_proof,
)
from securefed.secagg.party import ProtocolParty
from securefed.secagg.replay import RoundGuard
from securefed.secagg.sharing import (
    Committed,
    check_commitments,
    deal,
    draw_self_seed,
    failing_held_shares,
)
from securefed.secagg.stages import Role, Stage, next_stage, settle, start_stage
from securefed.secagg.transcript import ContextItem, transcript_hash
from securefed.secagg.verify import check_round, verify_client_signature, verify_server_signature

__all__ = ["SecAggClient"]

RingArray = npt.NDArray[np.unsignedinteger[Any]]


@dataclass(frozen=True, slots=True)
class _HeldShares:
    """The two encoded shares this client holds of one peer's secrets (checked on receipt)."""

    mask_key: bytes
    self_seed: bytes


@dataclass(frozen=True, slots=True)
class _Received:
    """One dealer's DealtShare as this client received it, with what the checks need: the
    dealer's commitment (decoded: ``committed``), the share's place under the dealer's root, and
    the two shares if the ciphertext opened (else None)."""

    dealt: DealtShare
    commitment: ShareCommitment
    committed: Committed
    index: int
    size: int
    proof: bytes
    shares: _HeldShares | None


class SecAggClient(ProtocolParty):
    """One client's view of one round. Single use: a new round needs a new object."""

    def __init__(
        self,
        config: RoundConfig,
        *,
        index: int,
        identity: SigningKey,
        context: Sequence[ContextItem] = (),
        random_bytes: Callable[[int], bytes] = os.urandom,
        guard: RoundGuard | None = None,
        history: ReleaseHistory | None = None,
    ) -> None:
        """Raises ConfigError if ``index`` is not in the roster or ``identity`` is not its key,
        or ``history`` is for another federation size or not before this round.

        ``guard`` (the client's persisted :class:`~securefed.secagg.replay.RoundGuard`) makes
        :meth:`start` refuse a round this client already started. ``history`` (attention mode):
        this client's own record of the last releases it took part in (the :attr:`history` of
        its previous round's client, kept by the caller); the server's claim is checked against
        it (:func:`~securefed.secagg.history.check_claimed_history`).
        """
        if not config.roster.is_member(index):
            raise ConfigError(f"client index {index} is not in the roster")
        if identity.verify_key() != config.roster.client(index).identity:
            raise ConfigError("identity key does not match the roster entry of this client")
        if history is not None and (
            history.n_clients != config.n_clients or history.round >= config.round
        ):
            raise ConfigError("the release history is for another federation or round")
        super().__init__(config, identity, Stage.IDLE)
        self.index = index
        self._own_history = history
        self._claimed_history: ReleaseHistory | None = None
        self._history = history
        self._withheld: tuple[int, ...] = ()
        self._context = tuple(context)
        self._random_bytes = random_bytes
        self._guard = guard
        self._processed: dict[MessageType, Message] = {}
        self._values: npt.NDArray[np.float64] | None = None
        self._encryption_keys: dict[int, AgreementPrivateKey] = {}
        self._share_secrets: dict[int, SharedSecret] = {}
        self._mask_key: AgreementPrivateKey | None = None
        self._advertisement: AdvertiseKeys | None = None
        self._directory: KeyDirectory | None = None
        self._self_seed = b""
        self._commitment: ShareCommitment | None = None
        self._commitments: tuple[ShareCommitment, ...] = ()
        self._held: dict[int, _HeldShares] = {}
        self._complained: tuple[int, ...] = ()
        self._members: tuple[int, ...] = ()
        self._survivors: tuple[int, ...] = ()
        self._transcript = b""
        self._target_key: AgreementPrivateKey | None = None
        self._weights: npt.NDArray[np.float64] | None = None
        self.personalized: npt.NDArray[np.float64] | None = None

    # --- entry points ---------------------------------------------------------------------------
    def start(self, values: npt.ArrayLike) -> AdvertiseKeys:
        """Encode ``values`` and advertise fresh keys (:meth:`advertise` then
        :meth:`provide_input`, with the input checked first).

        Raises:
            LocalProtocolError: not in IDLE.
            ConfigError: wrong input length.
            EncodingRangeError: a value is out of the codec's range; the client stays IDLE.
            LocalProtocolError: the guard says this round was already started (a replay).
        """
        start_stage(Role.CLIENT, self._stage)
        checked = self._checked_input(values)
        advert = self.advertise()
        self._values = checked
        return advert

    def advertise(self) -> AdvertiseKeys:
        """Advertise fresh keys before the input exists (a deployment advertises round r + 1's
        keys with round r's last message); :meth:`provide_input` must follow before the key
        directory arrives.

        Raises:
            LocalProtocolError: not in IDLE, or the guard says this round was already started.
        """
        next_ = start_stage(Role.CLIENT, self._stage)
        if self._guard is not None:
            self._guard.claim(self.config.session_id, self.config.round)
        # The graph is fixed by roster and round, not by keys or U1. One share-encryption key
        # per neighbour in it (securefed.secagg.dealing says why).
        self._graph = build_graph(self.config)
        suite = self.config.suite
        self._encryption_keys = {
            v: suite.generate_agreement_key() for v in self._graph.neighbours(self.index)
        }
        self._mask_key = self.config.mask_suite.generate_agreement_key()
        target_key = b""
        if self._attention:
            self._target_key = self.config.suite.generate_agreement_key()
            target_key = self._target_key.public_key().to_bytes()
        self._advertisement = self._sign(
            AdvertiseKeys,
            sender=self.index,
            encryption_keys=tuple(
                key.public_key().to_bytes() for _, key in sorted(self._encryption_keys.items())
            ),
            mask_key=self._mask_key.public_key().to_bytes(),
            target_key=target_key,
        )
        self._stage = next_
        return self._advertisement

    def provide_input(self, values: npt.ArrayLike) -> None:
        """Give the round's input after :meth:`advertise`, before the key directory.

        Raises:
            LocalProtocolError: not in ADVERTISE, or an input was already given.
            ConfigError: wrong input length.
            EncodingRangeError: a value is out of the codec's range (the client stays as it is).
        """
        if self._stage is not Stage.ADVERTISE or self._values is not None:
            raise LocalProtocolError("the input is given once, after advertising, before shares")
        self._values = self._checked_input(values)

    def bind_context(self, context: Sequence[ContextItem]) -> None:
        """Add signed context (e.g. the parties' ledger heads) known only after advertising; it
        enters the transcript every party signs at the consistency check.

        Raises:
            LocalProtocolError: the key directory was already processed.
        """
        if self._stage not in (Stage.IDLE, Stage.ADVERTISE):
            raise LocalProtocolError("context is bound before the key directory arrives")
        self._context = (*self._context, *context)

    def _checked_input(self, values: npt.ArrayLike) -> npt.NDArray[np.float64]:
        flat = np.asarray(values).reshape(-1)
        if flat.size != self.config.vector_length:
            raise ConfigError(
                f"input has {flat.size} values, the round expects {self.config.vector_length}"
            )
        checked: npt.NDArray[np.float64] = FixedPointCodec(self.config.codec).check_range(flat)
        return checked.copy()

    def receive(self, message: Message) -> list[Message]:
        """Process one message from the server; return the messages to send to it.

        Raises:
            LocalProtocolError: the client is already DONE or ABORTED.
            RemoteProtocolError: the message is illegal, forged, replayed or inconsistent; the
                client is now ABORTED.
        """
        if self._stage.terminal:
            raise LocalProtocolError(f"the round is over for this client ({self._stage.value})")
        if self._processed.get(message.TYPE) == message:
            return []  # an exact re-delivery of a message already processed
        if isinstance(message, KeyDirectory) and self._values is None:
            raise LocalProtocolError("provide_input() must come before the key directory")
        try:
            next_ = next_stage(Role.CLIENT, self._stage, message.TYPE)
            check_round(self.config, message)
            verify_server_signature(self.config, message)
            replies = self._handle(message)
        except NeighbourhoodTooSmall as exc:
            self._abort(str(exc))
            raise  # typed: the reason (LONELY or STARVED) and the counts travel with it
        except WeightPolicyViolation as exc:
            self._events.append(
                PolicyRefused(self.config.round, self._stage, str(exc), exc.violations)
            )
            self._abort(str(exc))
            raise RemoteProtocolError(f"client {self.index} refused the weights: {exc}") from exc
        except (ProtocolError, CryptoError) as exc:
            self._abort(str(exc))
            raise RemoteProtocolError(f"client {self.index} aborted: {exc}") from exc
        self._processed[message.TYPE] = message
        awaiting = self._attention and self.index not in self._withheld
        self._stage = settle(Role.CLIENT, next_, awaiting_output=awaiting)
        return replies

    @property
    def history(self) -> ReleaseHistory | None:
        """Attention mode: this client's record of the releases it took part in, including this
        round once it saw the consistency check close (t valid signatures in the unmask
        request); the history it was given before that. Keep it for the next round's client."""
        return self._history

    @property
    def withheld(self) -> tuple[int, ...]:
        """Attention mode: the targets whose outputs this round withholds (set at the mask
        request; this client's own index among them means it gets no output this round)."""
        return self._withheld

    @property
    def _attention(self) -> bool:
        return self.config.mode is AggregationMode.ATTENTION

    # --- handlers ---------------------------------------------------------------------------------
    def _handle(self, message: Message) -> list[Message]:
        handlers: dict[type[Message], Callable[[Any], Message | list[Message] | None]] = {
            Abort: self._on_abort,
            KeyDirectory: self._on_key_directory,
            ShareBundle: self._on_share_bundle,
            MaskRequest: self._on_mask_request,
            ConsistencyRequest: self._on_consistency_request,
            UnmaskRequest: self._on_unmask_request,
            BlindedOutput: self._on_blinded_output,
        }
        handler = handlers.get(type(message))
        if handler is None:  # pragma: no cover - the transition table let it through
            raise RemoteProtocolError(f"unexpected {type(message).__name__}")
        replies = handler(message)
        if replies is None:
            return []
        return replies if isinstance(replies, list) else [replies]

    def _on_abort(self, message: Abort) -> None:
        self._forget_secrets()
        self._events.append(
            RoundAborted(self.config.round, self._stage, f"server aborted: {message.reason}")
        )

    def _on_key_directory(self, directory: KeyDirectory) -> ShareKeys:
        for advert in directory.advertisements:
            check_round(self.config, advert)
            verify_client_signature(self.config, advert)
        if self._advertisement not in directory.advertisements:
            raise RemoteProtocolError(
                "the key directory does not contain this client's advertisement"
            )
        if len(directory.advertisements) < self.config.threshold:
            raise RemoteProtocolError("fewer than t clients in the key directory")
        if any(bool(a.target_key) != self._attention for a in directory.advertisements):
            raise RemoteProtocolError("target keys must be advertised exactly in attention mode")
        if self._attention:
            self._weights = check_broadcast_weights(self.config, directory.weights)
            self._context = (*self._context, weights_context(directory.weights))
            claimed = (
                ReleaseHistory.from_bytes(directory.history, self.config.n_clients)
                if directory.history
                else None
            )
            check_claimed_history(
                claimed,
                self._own_history,
                round_=self.config.round,
                rounds=self.config.policy.history_rounds,
            )
            self._claimed_history = claimed
            self._context = (*self._context, history_context(directory.history))
        elif directory.weights or directory.history:
            raise RemoteProtocolError("a sum-mode key directory carries no weights or history")
        self._directory = directory
        self._graph = build_graph(self.config)  # the same (cached) graph as when advertising
        # Thresholds are over the full fixed neighbourhood: holders missing from U1 count as
        # dropped, and below the threshold this client refuses before it deals or masks anything.
        self._mask_graph.check_member(self.index, directory.senders)
        self._self_seed = draw_self_seed(self.config.sharing, self._random_bytes)
        holders = self._mask_graph.present_holders(self.index, directory.senders)
        dealing = deal(
            self.config.sharing,
            mask_key=self._mask_key_secret(),
            self_seed=self._self_seed,
            threshold=self._mask_graph.threshold(self.index),
            holders=holders,
            random_bytes=self._random_bytes,
        )
        dealt = []
        for holder in holders:
            mask_share, seed_share = dealing.shares[holder]
            if holder == self.index:
                self._held[holder] = _HeldShares(mask_share, seed_share)
                continue
            ciphertext = seal_shares(
                self.config,
                self._channel(holder, outgoing=True),
                dealer=self.index,
                holder=holder,
                mask_share=mask_share,
                seed_share=seed_share,
            )
            dealt.append(
                DealtShare(
                    session_id=self.config.session_id,
                    round=self.config.round,
                    sender=self.index,
                    recipient=holder,
                    ciphertext=ciphertext,
                )
            )
        # One signature covers every dealt share: the commitment carries their Merkle root.
        self._commitment = self._sign(
            ShareCommitment,
            sender=self.index,
            self_seed_commitment=self_seed_commitment(self.config, self.index, self._self_seed),
            mask_key_polynomial=dealing.mask_key_polynomial,
            self_seed_polynomial=dealing.self_seed_polynomial,
            dealt_root=merkle.root(dealt_leaves(dealt)),
        )
        return self._sign(ShareKeys, commitment=self._commitment, dealt=tuple(dealt))

    def _mask_key_secret(self) -> bytes:
        assert self._mask_key is not None  # noqa: S101 - set in advertise()
        return self._mask_key.secret_bytes_for_sharing()

    def _advert_of(self, peer: int) -> AdvertiseKeys:
        assert self._directory is not None  # noqa: S101 - set before any caller
        for advert in self._directory.advertisements:
            if advert.sender == peer:
                return advert
        raise RemoteProtocolError(f"client {peer} is not in the key directory")

    def _peer_keys(self, peer: int) -> tuple[AgreementPublicKey, ...]:
        """(share key for this client, mask key[, target key]) that ``peer`` advertised."""
        advert = self._advert_of(peer)
        keys = [
            advertised_key(self.config, self._mask_graph, advert, self.index),
            self.config.mask_suite.agreement_public_key(advert.mask_key),
        ]
        if advert.target_key:
            keys.append(self.config.suite.agreement_public_key(advert.target_key))
        return tuple(keys)

    def _channel(self, peer: int, *, outgoing: bool) -> Aead:
        """The AEAD of this client's share channel with ``peer`` in one direction (one key
        agreement per peer serves both directions)."""
        own = self._encryption_keys[peer]
        peer_key = self._peer_keys(peer)[0]
        if peer not in self._share_secrets:
            self._share_secrets[peer] = own.exchange(peer_key)
        return channel_key(
            self.config,
            own=(self.index, own),
            peer=(peer, peer_key),
            outgoing=outgoing,
            secret=self._share_secrets[peer],
        )

    def _on_share_bundle(self, bundle: ShareBundle) -> ShareReceipt:
        """Check every dealt share; complain (with this pair's key as evidence) about each
        dealer whose shares fail, before anything is masked."""
        assert self._directory is not None  # noqa: S101 - stage guarantees it
        if bundle.recipient != self.index:
            raise RemoteProtocolError("share bundle addressed to another client")
        members = set(self._directory.senders)
        for commitment in bundle.commitments:
            check_round(self.config, commitment)
            verify_client_signature(self.config, commitment)
            if commitment.sender not in members:
                raise RemoteProtocolError("a share commitment from a client outside U1")
        if self._commitment not in bundle.commitments:
            raise RemoteProtocolError("the share bundle does not contain this client's commitment")
        u2 = tuple(c.sender for c in bundle.commitments)
        if len(u2) < self.config.threshold:
            raise RemoteProtocolError("fewer than t clients completed key sharing")
        self._mask_graph.check_survivors([self.index], u2)
        peers = self._mask_graph.present_neighbours(self.index, u2)
        if tuple(d.sender for d in bundle.dealt) != peers:
            raise RemoteProtocolError(
                "the share bundle does not hold exactly one dealt share from every neighbour in U2"
            )
        commitment_of = {c.sender: c for c in bundle.commitments}
        received: list[_Received] = []
        for dealt, proof in zip(bundle.dealt, bundle.proofs, strict=True):
            if dealt.recipient != self.index:
                raise RemoteProtocolError("a dealt share addressed to another client")
            check_round(self.config, dealt)
            commitment = commitment_of[dealt.sender]
            index, size = self._leaf_position(dealt.sender, members)
            if not merkle.verify_inclusion(
                dealt.signed_payload(), index, size, split_proof(proof), commitment.dealt_root
            ):  # the dealer's root covers what it dealt: the server altered this share
                raise RemoteProtocolError("a dealt share is not under its dealer's signed root")
            # Public checks: a server that forwards a commitment failing them is at fault.
            committed = check_commitments(
                self.config.sharing,
                mask_key_polynomial=commitment.mask_key_polynomial,
                self_seed_polynomial=commitment.self_seed_polynomial,
                threshold=self._mask_graph.threshold(dealt.sender),
                mask_key=self._advert_of(dealt.sender).mask_key,
            )
            opened = self._opened(dealt)
            received.append(_Received(dealt, commitment, committed, index, size, proof, opened))
        complaints = self._judge_received(received)
        self._commitments = bundle.commitments
        self._complained = tuple(c.dealer for c in complaints)
        return self._sign(ShareReceipt, sender=self.index, complaints=tuple(complaints))

    def _leaf_position(self, dealer: int, u1: Collection[int]) -> tuple[int, int]:
        """(this client's leaf index, leaf count) in ``dealer``'s dealt root: the dealer dealt
        to its neighbours in U1, in roster order (the server checked that it did)."""
        recipients = self._mask_graph.present_neighbours(dealer, u1)
        return recipients.index(self.index), len(recipients)

    def _opened(self, dealt: DealtShare) -> _HeldShares | None:
        """The two encoded shares in ``dealt`` if it opens under the pair's key, else None."""
        try:
            mask_share, seed_share = open_dealt(
                self.config, self._channel(dealt.sender, outgoing=False), dealt
            )
        except (CryptoError, RemoteProtocolError):
            return None
        return _HeldShares(mask_share, seed_share)

    def _judge_received(self, received: Sequence[_Received]) -> list[Complaint]:
        """Keep the shares that opened and lie on their dealers' polynomials (all dealers'
        checked at once: :func:`~securefed.secagg.sharing.failing_held_shares`); a complaint,
        with this pair's key as evidence, about every other dealer."""
        opened = [(r, r.shares) for r in received if r.shares is not None]
        failing = failing_held_shares(
            [(r.committed, shares.mask_key, shares.self_seed) for r, shares in opened],
            holder=self.index,
        )
        good = {r.dealt.sender for i, (r, _) in enumerate(opened) if i not in failing}
        complaints = []
        for r in received:
            dealer = r.dealt.sender
            if dealer in good and r.shares is not None:
                self._held[dealer] = r.shares
                continue
            key = self._encryption_keys[dealer].secret_bytes_for_sharing()
            complaints.append(
                Complaint(dealer, key, r.dealt, r.commitment, r.index, r.size, r.proof)
            )
        return complaints

    def _on_mask_request(self, request: MaskRequest) -> list[Message]:
        """Mask with the members the server settled on: U2 less the clients it left out."""
        u2 = {c.sender for c in self._commitments}
        if not set(request.members) <= u2 or self.index not in request.members:
            raise RemoteProtocolError("the members are not a subset of U2 containing this client")
        if len(request.members) < self.config.threshold:
            raise RemoteProtocolError("fewer than t members")
        kept = sorted(set(self._complained) & set(request.members))
        if kept:
            raise RemoteProtocolError(
                f"the server kept dealers {kept} whose shares to this client were bad"
            )
        self._mask_graph.check_survivors([self.index], request.members)
        self._members = request.members
        if self._weights is not None:
            self._withheld = withheld_targets(
                self._weights,
                self.config.policy,
                members=request.members,
                history=self._claimed_history,
                round_=self.config.round,
            )
            if self._withheld:
                self._events.append(OutputsWithheld(self.config.round, self._stage, self._withheld))
        return self._masked_input(self._mask_graph.present_neighbours(self.index, request.members))

    def _masked_input(self, peers: tuple[int, ...]) -> list[Message]:
        """One masked vector per output: the sum, or (attention) each target in U2 but us."""
        assert self._values is not None  # noqa: S101 - set in start()
        assert self._mask_key is not None  # noqa: S101 - set in start()
        secrets = {v: self._mask_key.exchange(self._peer_keys(v)[1]) for v in peers}
        members = (self.index, *peers)
        messages: list[Message] = []
        for output in round_outputs(self.config, members):
            if output.target == self.index or output.target in self._withheld:
                continue  # a target never contributes to its own output, nor to a withheld one
            vector = encode_and_mask(
                self._values,
                config=self.config,
                owner=self.index,
                output=output,
                dither_seed=self._random_bytes(32),
                self_seed=self._self_seed,
                pair_secrets={v: s for v, s in secrets.items() if v != output.target},
                **self._attention_terms(output.target),
            )
            messages.append(
                self._sign(MaskedInput, sender=self.index, target=output.target, vector=vector)
            )
        return messages

    def _attention_terms(self, target: int | None) -> dict[str, Any]:
        """Attention mode: the weight xi_{target, self} and the pad tau_{self -> target}."""
        if target is None:
            return {}
        assert self._weights is not None  # noqa: S101 - set with the key directory
        assert self._target_key is not None  # noqa: S101 - set in start()
        peer_key = self._peer_keys(target)[2]
        pad = target_pad(
            self.config,
            self._target_key.exchange(peer_key),
            sender=self.index,
            recipient=target,
            sender_public=self._target_key.public_key(),
            recipient_public=peer_key,
            sign=1,
        )
        return {"scale": float(self._weights[target, self.index]), "extra_terms": [pad]}

    def _on_consistency_request(self, request: ConsistencyRequest) -> ConsistencySignature:
        assert self._directory is not None  # noqa: S101 - stage guarantees it
        if not set(request.survivors) <= set(self._members) or self.index not in request.survivors:
            raise RemoteProtocolError(
                "the survivor set is not a subset of the members containing this client"
            )
        if len(request.survivors) < self.config.threshold:
            raise RemoteProtocolError("fewer than t survivors")
        self._mask_graph.check_survivors([self.index], request.survivors)
        if self._weights is not None:
            check_survivor_weights(
                self.config,
                self._weights,
                owner=self.index,
                survivors=request.survivors,
                withheld=self._withheld,
            )
            check_release(
                self._weights,
                self.config.policy,
                survivors=request.survivors,
                withheld=self._withheld,
                history=self._claimed_history,
                round_=self.config.round,
            )
        self._survivors = request.survivors
        self._transcript = transcript_hash(
            self.config,
            advertisements=self._directory.advertisements,
            commitments=self._commitments,
            members=self._members,
            survivors=request.survivors,
            context=self._context,
        )
        return self._sign(ConsistencySignature, sender=self.index, transcript_hash=self._transcript)

    def _on_unmask_request(self, request: UnmaskRequest) -> UnmaskResponse:
        if request.survivors != self._survivors:
            reason = "unmask request names a different survivor set than the consistency check"
            self._events.append(UnmaskRefused(self.config.round, self._stage, reason))
            raise RemoteProtocolError(reason)
        if any(signed.sender not in self._survivors for signed in request.consistency):
            raise RemoteProtocolError("a consistency signature from outside U3")
        valid = 0
        for signed in request.consistency:
            if valid == self.config.threshold:
                break  # t valid signatures on this transcript are all the check needs
            if signed.transcript_hash != self._transcript:
                continue  # signed a different view of the round: it does not count
            check_round(self.config, signed)
            verify_client_signature(self.config, signed)
            valid += 1
        if valid < self.config.threshold:
            raise RemoteProtocolError("fewer than t clients signed this client's transcript")
        if self._weights is not None:  # the server can unmask now: the rows count as released
            before = self._claimed_history or ReleaseHistory.empty(self.config.n_clients)
            self._history = before.after(
                self.config.round,
                self._weights,
                survivors=self._survivors,
                withheld=self._withheld,
                rounds=self.config.policy.history_rounds,
            )
        survivors = set(self._survivors)
        owners = sorted(v for v in self._held if v in self._members)  # itself and neighbours
        seeds = tuple(RevealedShare(v, self._held[v].self_seed) for v in owners if v in survivors)
        keys = tuple(RevealedShare(v, self._held[v].mask_key) for v in owners if v not in survivors)
        response = self._sign(
            UnmaskResponse, sender=self.index, self_seed_shares=seeds, mask_key_shares=keys
        )
        self._forget_shares()
        if not self._attention:
            self._forget_secrets()
        return response

    def _on_blinded_output(self, output: BlindedOutput) -> None:
        """Attention mode: remove the pads from this client's output and personalize."""
        assert self._target_key is not None  # noqa: S101 - set in start()
        assert self._values is not None  # noqa: S101 - kept until the output arrives
        assert self._weights is not None  # noqa: S101 - set with the key directory
        if output.recipient != self.index or output.survivors != self._survivors:
            raise RemoteProtocolError("the output names another target or another survivor set")
        ring = self.config.codec.ring
        if output.vector.dtype != ring.dtype or output.vector.size != self.config.vector_length:
            raise RemoteProtocolError("the output has the wrong length or ring")
        contributors = [u for u in self._survivors if u != self.index]
        self.personalized = unblind(
            output.vector,
            config=self.config,
            target=self.index,
            target_key=self._target_key,
            contributors=contributors,
            contributor_keys={u: self._peer_keys(u)[2] for u in contributors},
            weights=self._weights,
            own_values=self._values,
        )
        self._forget_secrets()

    # --- helpers ----------------------------------------------------------------------------------
    def _forget_shares(self) -> None:
        """Drop what unmasking needed: held shares, share keys, the self seed, the mask key."""
        self._held.clear()
        self._share_secrets.clear()
        self._self_seed = b""
        self._mask_key = None
        self._encryption_keys = {}

    def _forget_secrets(self) -> None:
        self._forget_shares()
        self._values = None
        self._target_key = None

    def _abort(self, reason: str) -> None:
        self._events.append(RoundAborted(self.config.round, self._stage, reason))
        self._stage = Stage.ABORTED
        self._forget_secrets()
