"""Typed protocol messages: one canonical encoding, validating constructors, strict decoding.

Valid instances of every message type come from three real rounds (the harness records every
hop): a sum round and an attention round, so that the fields whose content depends on the mode are
seen both ways (empty and non-empty target key and weights, MaskedInput with and without a target),
and a round under plain Shamir sharing in which one dealer deals a bad share, so that the
commitments are seen without their Feldman polynomials and a ShareReceipt carries a complaint;
plus the records that messages nest (ShareCommitment, DealtShare), a real sketch-seed session
setup and a signed Abort. Invalid content is refused twice: by the constructor
(LocalProtocolError: we tried to build it) and, crafted by hand with Writer, by the decoder
(RemoteProtocolError: a peer sent it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
from collections.abc import Callable, Sequence
from typing import Any
from unittest import mock

import numpy as np
import pytest

import securefed.secagg.messages as messages_module
from securefed.crypto import SigningKey, merkle, shamir, vss
from securefed.crypto.hashing import tree_sha256
from securefed.encoding import CodecConfig, RingBits
from securefed.errors import (
    InvalidSignature,
    LocalProtocolError,
    RemoteProtocolError,
)
from securefed.secagg import AggregationMode, SecAggClient, ShareScheme, Stage
from securefed.secagg.history import ReleaseHistory, released_rows
from securefed.secagg.messages import (
    MAX_PARTIES,
    MAX_WEIGHTS_BYTES,
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
    SealedShare,
    SessionKey,
    SessionKeyDirectory,
    ShareBundle,
    ShareCommitment,
    ShareKeys,
    ShareReceipt,
    SignedBy,
    SketchSeedCommitment,
    SketchSeedDelivery,
    SketchSeedOffer,
    UnmaskRequest,
    UnmaskResponse,
    dealt_leaves,
    decode,
    decode_as,
    sign_message,
)
from securefed.secagg.policy import WeightPolicy, encode_weights, enforce_policy
from securefed.secagg.server import Envelope
from securefed.secagg.session import SessionSetupClient, SessionSetupServer
from securefed.secagg.wire import Writer
from securefed.testing import run_round
from securefed.testing.harness import redeal
from tests.secagg.conftest import SESSION, config_for, federation, inputs_for

N_CLIENTS = 5
DROPPED = 4  # drops out before MASK: its mask key is revealed, so UnmaskResponse has both lists
DIM = 8
SUM_ROUND, ATTENTION_ROUND, COMPLAINT_ROUND = 1, 2, 3
# In the complaint round (plain Shamir sharing, nobody drops) CHEATER deals VICTIM a bad share and
# signs it: VICTIM complains with its key for the pair, the server convicts CHEATER, leaves it out.
CHEATER, VICTIM = 3, 0
POLICY = WeightPolicy(k_min=2.0, cap=0.6)
ABORT_REASON = "server aborted: only 2 masked inputs, threshold 4 (ünïcödé ✓)"
NO_TARGET = 2**32 - 1  # MaskedInput's wire form of target None
KEY_LIMIT = 133  # share-encryption, mask, target, agreement and complaint keys
POLYNOMIAL_LIMIT = 6 + 65 * 4096  # a Feldman commitment of degree < MAX_PARTIES (crypto.vss)

MESSAGE_CLASSES: tuple[type[Message], ...] = (
    AdvertiseKeys,
    KeyDirectory,
    ShareCommitment,
    ShareKeys,
    ShareBundle,
    MaskedInput,
    ConsistencyRequest,
    ConsistencySignature,
    UnmaskRequest,
    UnmaskResponse,
    Abort,
    BlindedOutput,
    SessionKey,
    SessionKeyDirectory,
    SketchSeedCommitment,
    SketchSeedOffer,
    SketchSeedDelivery,
    DealtShare,
    ShareReceipt,
    MaskRequest,
)
# Message types whose bodies carry a party index inside a nested record or message: DealtShare
# (its recipient in ShareKeys, its sender in ShareBundle, both on its own), RevealedShare (owner)
# and Complaint (dealer).
SHARE_CARRIERS = (
    MessageType.SHARE_KEYS,
    MessageType.SHARE_BUNDLE,
    MessageType.UNMASK_RESPONSE,
    MessageType.DEALT_SHARE,
    MessageType.SHARE_RECEIPT,
)
# Message types with two forms on the wire: (True for the second form, first name, second name).
FORMS: dict[type[Message], tuple[Callable[[Any], bool], str, str]] = {
    AdvertiseKeys: (lambda m: bool(m.target_key), "sum", "attention"),
    KeyDirectory: (lambda m: bool(m.weights), "sum", "attention"),
    MaskedInput: (lambda m: m.target is not None, "sum", "attention"),
    # plain Shamir sharing commits to the self seed only: both polynomials empty
    ShareCommitment: (lambda m: bool(m.mask_key_polynomial), "shamir", "feldman"),
    ShareReceipt: (lambda m: bool(m.complaints), "clean", "complaint"),
}
# One sample of every type, and of both forms of the types in FORMS.
VARIANTS = [
    name
    for cls in MESSAGE_CLASSES
    for name in (
        tuple(f"{cls.TYPE.name}-{form}" for form in FORMS[cls][1:])
        if cls in FORMS
        else (cls.TYPE.name,)
    )
]


# --- recording real rounds -----------------------------------------------------------------------


def attention_weights() -> np.ndarray[Any, np.dtype[np.float64]]:
    """A random row-stochastic N x N matrix with diagonal 0.4, made compliant by enforce_policy.

    The off-diagonal entries are drawn from [0.5, 1] before normalising, so every row still meets
    the policy when any one contributor drops out (3 contributors left: the largest carries at
    most 1/2 <= cap of the row, and N_eff >= 8/3 >= k_min).
    """
    off = np.random.default_rng(7).uniform(0.5, 1.0, (N_CLIENTS, N_CLIENTS))
    np.fill_diagonal(off, 0.0)
    weights = 0.6 * off / off.sum(axis=1, keepdims=True)
    np.fill_diagonal(weights, 0.4)
    return enforce_policy(weights, POLICY)


def record(
    round_: int,
    *,
    dropouts: dict[int, Stage] | None = None,
    tamper: Callable[[Message], Message] = lambda m: m,
    **options: Any,
) -> list[Message]:
    """Every message of one real 5-client round, in order of sending (what was delivered: after
    ``tamper``, which sees every client -> server message). ``dropouts`` defaults to client 4
    dropping before MASK; ``options`` go to config_for, except ``weights`` (to run_round)."""
    fed = federation(N_CLIENTS)
    weights = options.pop("weights", None)
    history = options.pop("history", None)
    sent: list[Message] = []

    def client_hook(sender: int, message: Message) -> Sequence[Message]:
        message = tamper(message)
        sent.append(message)
        return (message,)

    def server_hook(envelope: Envelope) -> Sequence[Envelope]:
        sent.append(envelope.message)
        return (envelope,)

    built = SecAggClient.__init__

    def keep(client: SecAggClient, *args: Any, **kwargs: Any) -> None:
        built(client, *args, **kwargs)
        CLIENTS[client.index] = client

    with mock.patch.object(SecAggClient, "__init__", keep):
        outcome = run_round(
            config_for(fed, round_=round_, dim=DIM, **options),
            fed,
            inputs_for(N_CLIENTS, DIM),
            dropouts={DROPPED: Stage.MASK} if dropouts is None else dropouts,
            client_hook=client_hook,
            server_hook=server_hook,
            weights=weights,
            history=history,
        )
    assert not outcome.aborted, (outcome.server_events, outcome.client_errors)
    return sent


# The clients of the round being recorded, by index (a dishonest dealer's hook needs its own).
CLIENTS: dict[int, SecAggClient] = {}


def flip_first_bit(data: bytes) -> bytes:
    return bytes([data[0] ^ 1]) + data[1:]


def deal_a_bad_share(message: Message) -> Message:
    """CHEATER's ShareKeys with its DealtShare for VICTIM corrupted -- committed to and re-signed
    with CHEATER's own key: a dishonest dealer, whose bad share the server cannot be blamed for."""
    if not isinstance(message, ShareKeys) or message.sender != CHEATER:
        return message
    key = federation(N_CLIENTS).client_keys[CHEATER]

    def corrupt(d: DealtShare) -> DealtShare:
        if d.recipient != VICTIM:
            return d
        return dataclasses.replace(d, ciphertext=flip_first_bit(d.ciphertext))

    return redeal(message, key, corrupt, dealer=CLIENTS[CHEATER])


def record_session_setup() -> list[Message]:
    """Every message of a real sketch-seed session setup (securefed.secagg.session), plus the
    dealer's nested commitment."""
    fed = federation(N_CLIENTS)
    server = SessionSetupServer(fed.roster, session_id=SESSION, identity=fed.server_key)
    clients = [
        SessionSetupClient(fed.roster, session_id=SESSION, index=i, identity=fed.client_keys[i])
        for i in range(N_CLIENTS)
    ]
    sent: list[Message] = []
    for client in clients:
        sent.append(client.start())
        server.receive(sent[-1])
    directory = server.directory()
    sent.append(directory)
    for client in clients:
        for offer in client.receive(directory):
            sent.append(offer)
            server.receive(offer)
    offers = [m for m in sent if isinstance(m, SketchSeedOffer)]
    sent += [offers[0].commitment]
    for recipient, delivery in server.deliveries():
        sent.append(delivery)
        clients[recipient].receive(delivery)
    assert all(c.sketch_seed == clients[0].sketch_seed for c in clients)
    return sent


def earlier_release() -> ReleaseHistory:
    """A release history for the attention round: an earlier round released its row to DROPPED
    alone (so the round's rows to the others are new, DROPPED's is unchanged, nothing is
    withheld, and the round completes although DROPPED leaves before MASK)."""
    rows = np.zeros((N_CLIENTS, N_CLIENTS))
    rows[DROPPED] = released_rows(attention_weights(), survivors=range(N_CLIENTS))[DROPPED]
    return ReleaseHistory(((ATTENTION_ROUND - 1, rows),), N_CLIENTS)


@functools.cache
def recorded() -> tuple[Message, ...]:
    """In order of sending: every message of a sum round (64-bit ring), a server-signed Abort
    with a non-ASCII reason (so that it is the Abort sample), every message of an attention round
    (32-bit ring, weights from attention_weights) and of the complaint round (plain Shamir
    sharing, 32-bit ring, nobody drops, CHEATER deals VICTIM a bad share); then the
    ShareCommitments and DealtShares nested in ShareKeys, and a real sketch-seed session setup.
    Both Feldman rounds come first: their messages are the samples of the types in one form."""
    server_key = federation(N_CLIENTS).server_key
    sent = record(SUM_ROUND, codec=CodecConfig.default(ring=RingBits.BITS64))
    sent.append(sign_message(Abort, server_key, SESSION, SUM_ROUND, reason=ABORT_REASON))
    sent += record(
        ATTENTION_ROUND,
        codec=CodecConfig(RingBits.BITS32, 16, 8.0),
        mode=AggregationMode.ATTENTION,
        policy=POLICY,
        min_contributors=2,
        weights=attention_weights(),
        history=earlier_release(),
    )
    sent += record(
        COMPLAINT_ROUND,
        dropouts={},
        tamper=deal_a_bad_share,
        codec=CodecConfig.default(ring=RingBits.BITS32),
        sharing=ShareScheme.SHAMIR,
    )
    share_keys = [m for m in sent if isinstance(m, ShareKeys)]
    sent += [m.commitment for m in share_keys]
    sent += [d for m in share_keys for d in m.dealt]
    sent += record_session_setup()
    return tuple(sent)


@functools.cache
def one_of_each() -> dict[MessageType, Message]:
    """The first recorded message of every type: for the types in FORMS, the sum form, the
    Feldman ShareCommitment and the ShareReceipt without complaints."""
    first: dict[MessageType, Message] = {}
    for message in recorded():
        first.setdefault(message.TYPE, message)
    return first


def variant(message: Message) -> str:
    """The name of the message's type, with the name of its form for the types in FORMS."""
    forms = FORMS.get(type(message))
    if forms is None:
        return message.TYPE.name
    second, *names = forms
    return f"{message.TYPE.name}-{names[int(second(message))]}"


@functools.cache
def samples() -> dict[str, Message]:
    """The first recorded message of every variant (see VARIANTS)."""
    first: dict[str, Message] = {}
    for message in recorded():
        first.setdefault(variant(message), message)
    return first


def sample(cls: type[Any]) -> Any:
    return one_of_each()[cls.TYPE]


def signer(message: Message) -> SigningKey:
    fed = federation(N_CLIENTS)
    if message.SIGNER is SignedBy.SERVER:
        return fed.server_key
    return fed.client_keys[getattr(message, "sender")]  # noqa: B009


# --- encoding by hand (the layout documented in messages.py, written field by field) -------------

Body = Callable[[Writer], object]
ANY = 2**32 - 1  # the hand encoder imposes no limits of its own: tests craft oversized fields


def unsigned_frame(tag: int, body: Body, *, round_: int = 1) -> bytes:
    """``b"SF" | 1 | tag | session_id | round | body`` written with Writer."""
    w = Writer().fixed(b"SF", 2).u8(1).u8(tag).fixed(SESSION, 32).u64(round_)
    body(w)
    return w.getvalue()


def frame(tag: int, body: Body, *, round_: int = 1, signature: bytes = b"") -> bytes:
    """``unsigned_frame | signature`` (the signature length-prefixed)."""
    return unsigned_frame(tag, body, round_=round_) + Writer().blob(signature).getvalue()


def pairs(values: Sequence[tuple[int, bytes]]) -> Body:
    return lambda w: w.items(values, lambda w, p: w.u32(p[0]).blob(p[1], limit=ANY), limit=ANY)


class Digest(bytes):
    """A nested message as a signed payload carries it: the SHA-256 of its encoding (32 bytes,
    no length prefix) instead of the encoding as a blob."""


def put(w: Writer, value: bytes) -> Writer:
    """A nested message's encoding as a blob, or a :class:`Digest` as its 32 bytes."""
    if isinstance(value, Digest):
        return w.fixed(bytes(value), 32)
    return w.blob(value, limit=ANY)


def blobs(values: Sequence[bytes]) -> Body:
    return lambda w: w.items(values, put, limit=ANY)


def advertise_body(sender: int, enc: Sequence[bytes], mask: bytes, target_key: bytes) -> Body:
    """u32 sender, the share-encryption keys (a count, then one blob each), mask key, target key."""
    return lambda w: blobs(enc)(w.u32(sender)).blob(mask).blob(target_key)


def key_directory_body(adverts: Sequence[bytes], weights: bytes, history: bytes = b"") -> Body:
    return lambda w: blobs(adverts)(w).blob(weights, limit=ANY).blob(history, limit=ANY)


def digest_body(sender: int, digest: bytes) -> Body:
    """SketchSeedCommitment and ConsistencySignature share this layout (u32 sender, 32 bytes)."""
    return lambda w: w.u32(sender).fixed(digest, 32)


def commitment_body(
    sender: int,
    digest: bytes,
    mask_key_polynomial: bytes,
    self_seed_polynomial: bytes,
    dealt_root: bytes = bytes(32),
) -> Body:
    """ShareCommitment: u32 sender, the 32-byte self-seed commitment, the two polynomial
    commitments as blobs, then the 32-byte Merkle root over the dealt shares."""
    return lambda w: (
        digest_body(sender, digest)(w)
        .blob(mask_key_polynomial, limit=ANY)
        .blob(self_seed_polynomial, limit=ANY)
        .fixed(dealt_root, len(dealt_root))
    )


def dealt_body(sender: int, recipient: int, ciphertext: bytes) -> Body:
    return lambda w: w.u32(sender).u32(recipient).blob(ciphertext)


def share_keys_body(commitment: bytes, dealt: Sequence[bytes]) -> Body:
    """ShareKeys: the commitment's encoding as a blob, then the DealtShares' encodings."""
    return lambda w: blobs(dealt)(put(w, commitment))


def share_bundle_body(
    recipient: int,
    commitments: Sequence[bytes],
    dealt: Sequence[bytes],
    proofs: Sequence[bytes] | None = None,
) -> Body:
    """ShareBundle: u32 recipient, the commitments, the DealtShares, then one inclusion proof
    (a blob of 32-byte hashes) per DealtShare (default: empty proofs, one per share)."""
    paths = [b""] * len(dealt) if proofs is None else proofs
    return lambda w: blobs(paths)(blobs(dealt)(blobs(commitments)(w.u32(recipient))))


def complaint_evidence(dealer: int) -> tuple[bytes, bytes]:
    """Encodings of a DealtShare and a (plain-Shamir form) ShareCommitment from ``dealer``, as a
    complaint about it nests them (written by hand: any index, even an invalid one)."""
    recipient = dealer + 1 if dealer + 1 < MAX_PARTIES else dealer - 1
    dealt = frame(MessageType.DEALT_SHARE.value, dealt_body(dealer, recipient, b"ct"))
    commitment = frame(
        MessageType.SHARE_COMMITMENT.value, commitment_body(dealer, bytes(32), b"", b"")
    )
    return dealt, commitment


ComplaintFields = tuple[int, bytes, bytes, bytes, int, int, bytes]


def receipt_body(sender: int, complaints: Sequence[tuple[int, bytes] | ComplaintFields]) -> Body:
    """ShareReceipt: u32 sender, then per complaint u32 dealer, blob key, blob DealtShare, blob
    ShareCommitment, u32 leaf index, u32 leaf count, blob inclusion proof. A (dealer, key) pair
    gets :func:`complaint_evidence` for the dealer, leaf 0 of 1, an empty proof."""
    full = [c if len(c) == 7 else (*c, *complaint_evidence(c[0]), 0, 1, b"") for c in complaints]

    def write(w: Writer, c: ComplaintFields) -> None:
        put(put(w.u32(c[0]).blob(c[1], limit=ANY), c[2]), c[3])
        w.u32(c[4]).u32(c[5]).blob(c[6], limit=ANY)

    return lambda w: w.u32(sender).items(full, write, limit=ANY)  # type: ignore[arg-type]


def complaint_of(dealer: int, key: bytes = b"k") -> Complaint:
    """A well-formed Complaint about ``dealer`` (unsigned nested messages: constructors do not
    check signatures)."""
    dealt, commitment = complaint_evidence(dealer)
    return Complaint(
        dealer, key, decode_as(dealt, DealtShare), decode_as(commitment, ShareCommitment), 0, 1, b""
    )


def seed_offer_body(commitment: bytes, sealed: Sequence[tuple[int, bytes]]) -> Body:
    """SketchSeedOffer: the commitment's encoding as a blob, then (u32 peer, blob) per recipient."""
    return lambda w: pairs(sealed)(put(w, commitment))


def vector_body(code: int, words: Sequence[int], *, signed: bool = False) -> Body:
    """A vector: u8 dtype code (the word size), u32 count, the words little-endian -- or, in a
    signed payload, the tree SHA-256 of those little-endian bytes instead of the bytes."""
    raw = b"".join(v.to_bytes(code, "little") for v in words)
    if signed:
        return lambda w: w.u8(code).u32(len(words)).fixed(tree_sha256(raw), 32)
    return lambda w: w.u8(code).u32(len(words)).fixed(raw, len(raw))


def masked_body(
    sender: int, target: int | None, code: int, words: Sequence[int], *, signed: bool = False
) -> Body:
    """``target`` None is written as 0xFFFFFFFF; an int as it is (tests craft invalid ones)."""
    vector = vector_body(code, words, signed=signed)
    return lambda w: vector(w.u32(sender).u32(NO_TARGET if target is None else target))


def survivors_body(survivors: Sequence[int]) -> Body:
    return lambda w: w.indices(survivors, limit=ANY)


def session_key_body(sender: int, key: bytes) -> Body:
    return lambda w: w.u32(sender).blob(key)


def seed_delivery_body(recipient: int, commitment: bytes, dealer: int, sealed: bytes) -> Body:
    return lambda w: put(w.u32(recipient), commitment).u32(dealer).blob(sealed)


def blinded_body(
    recipient: int,
    survivors: Sequence[int],
    code: int,
    words: Sequence[int],
    *,
    signed: bool = False,
) -> Body:
    vector = vector_body(code, words, signed=signed)
    return lambda w: vector(survivors_body(survivors)(w.u32(recipient)))


def unmask_request_body(survivors: Sequence[int], consistency: Sequence[bytes]) -> Body:
    return lambda w: blobs(consistency)(survivors_body(survivors)(w))


def unmask_response_body(
    sender: int, seeds: Sequence[tuple[int, bytes]], masks: Sequence[tuple[int, bytes]]
) -> Body:
    return lambda w: pairs(masks)(pairs(seeds)(w.u32(sender)))


def abort_body(reason: bytes) -> Body:
    return lambda w: w.blob(reason)


def sealed(values: Sequence[SealedShare]) -> list[tuple[int, bytes]]:
    return [(s.peer, s.ciphertext) for s in values]


def encoding(value: Message, signed: bool = False) -> bytes:
    """A nested message as its parent writes it: the encoding, or in the signed form its
    digest."""
    return Digest(value.digest()) if signed else value.to_bytes()


def encodings(values: Sequence[Message], signed: bool = False) -> list[bytes]:
    return [encoding(v, signed) for v in values]


def complaints(values: Sequence[Complaint], signed: bool = False) -> list[ComplaintFields]:
    return [
        (
            c.dealer,
            c.key,
            encoding(c.dealt, signed),
            encoding(c.commitment, signed),
            c.index,
            c.size,
            c.proof,
        )
        for c in values
    ]


def revealed(values: Sequence[Any]) -> list[tuple[int, bytes]]:
    return [(s.owner, s.share) for s in values]


# The body of each type by hand; ``signed``: as it enters the signed payload (vectors and nested
# messages as digests).
HAND_BODIES: dict[type[Message], Callable[[Any, bool], Body]] = {
    AdvertiseKeys: lambda m, _: advertise_body(
        m.sender, m.encryption_keys, m.mask_key, m.target_key
    ),
    KeyDirectory: lambda m, signed: key_directory_body(
        encodings(m.advertisements, signed), m.weights, m.history
    ),
    ShareCommitment: lambda m, _: commitment_body(
        m.sender,
        m.self_seed_commitment,
        m.mask_key_polynomial,
        m.self_seed_polynomial,
        m.dealt_root,
    ),
    DealtShare: lambda m, _: dealt_body(m.sender, m.recipient, m.ciphertext),
    ShareKeys: lambda m, signed: share_keys_body(
        encoding(m.commitment, signed), encodings(m.dealt, signed)
    ),
    ShareBundle: lambda m, signed: share_bundle_body(
        m.recipient, encodings(m.commitments, signed), encodings(m.dealt, signed), m.proofs
    ),
    ShareReceipt: lambda m, signed: receipt_body(m.sender, complaints(m.complaints, signed)),
    MaskRequest: lambda m, _: survivors_body(m.members),
    MaskedInput: lambda m, signed: masked_body(
        m.sender, m.target, m.vector.dtype.itemsize, m.vector.tolist(), signed=signed
    ),
    ConsistencyRequest: lambda m, _: survivors_body(m.survivors),
    ConsistencySignature: lambda m, _: digest_body(m.sender, m.transcript_hash),
    UnmaskRequest: lambda m, signed: unmask_request_body(
        m.survivors, encodings(m.consistency, signed)
    ),
    UnmaskResponse: lambda m, _: unmask_response_body(
        m.sender, revealed(m.self_seed_shares), revealed(m.mask_key_shares)
    ),
    Abort: lambda m, _: abort_body(m.reason.encode()),
    BlindedOutput: lambda m, signed: blinded_body(
        m.recipient, m.survivors, m.vector.dtype.itemsize, m.vector.tolist(), signed=signed
    ),
    SessionKey: lambda m, _: session_key_body(m.sender, m.agreement_key),
    SessionKeyDirectory: lambda m, signed: blobs(encodings(m.keys, signed)),
    SketchSeedCommitment: lambda m, _: digest_body(m.sender, m.commitment),
    SketchSeedOffer: lambda m, signed: seed_offer_body(
        encoding(m.commitment, signed), sealed(m.sealed)
    ),
    SketchSeedDelivery: lambda m, signed: seed_delivery_body(
        m.recipient, encoding(m.commitment, signed), m.sealed.peer, m.sealed.ciphertext
    ),
}


def body_of(message: Message, *, signed: bool = False) -> Body:
    """The hand-written body of ``message`` (mirrors the documented layout)."""
    return HAND_BODIES[type(message)](message, signed)


def index_overflow(kind: MessageType, index: int = MAX_PARTIES) -> bytes:
    """A share-carrying message whose one nested party index is ``index`` (default: one past the
    last valid index; ``MAX_PARTIES - 1`` gives its valid twin): the recipient of the DealtShare
    in ShareKeys (and of a DealtShare alone), the sender of the one in ShareBundle, the owner of a
    RevealedShare, the dealer of a Complaint."""
    commitment = sample(ShareCommitment)
    dealer = commitment.sender

    def dealt(sender: int, recipient: int) -> bytes:
        return frame(MessageType.DEALT_SHARE.value, dealt_body(sender, recipient, b"ct"))

    bodies = {
        MessageType.SHARE_KEYS: share_keys_body(commitment.to_bytes(), [dealt(dealer, index)]),
        MessageType.SHARE_BUNDLE: share_bundle_body(
            dealer, [commitment.to_bytes()], [dealt(index, dealer)]
        ),
        MessageType.UNMASK_RESPONSE: unmask_response_body(0, [], [(index, b"share")]),
        MessageType.DEALT_SHARE: dealt_body(dealer, index, b"ct"),
        MessageType.SHARE_RECEIPT: receipt_body(dealer, [(index, b"key")]),
    }
    return frame(kind.value, bodies[kind])


def ids(values: Sequence[Any]) -> list[str]:
    return [v.name if isinstance(v, MessageType) else type(v).__name__ for v in values]


ALL_TYPES = list(MessageType)


# --- the recording itself ------------------------------------------------------------------------


def of_round(cls: type[Any], round_: int) -> list[Any]:
    """The recorded messages of type ``cls`` sent in round ``round_``, in order of sending."""
    return [m for m in recorded() if isinstance(m, cls) and m.round == round_]


def test_the_recording_has_every_message_type_and_rich_content() -> None:
    assert {c.TYPE for c in MESSAGE_CLASSES} == set(MessageType)
    assert len(MESSAGE_CLASSES) == len(MessageType)
    assert set(one_of_each()) == set(MessageType)
    assert set(samples()) == set(VARIANTS)
    responses = [m for m in recorded() if isinstance(m, UnmaskResponse)]
    assert {r.round for r in responses} == {SUM_ROUND, ATTENTION_ROUND, COMPLAINT_ROUND}
    for response in responses:
        assert response.self_seed_shares
        if response.round == COMPLAINT_ROUND:  # nobody dropped: no mask key is revealed
            assert not response.mask_key_shares
        else:
            assert {s.owner for s in response.mask_key_shares} == {DROPPED}
        # Feldman shares (the default) are 36 bytes; plain Shamir shares 37
        size = shamir.SHARE_BYTES if response.round == COMPLAINT_ROUND else vss.SHARE_BYTES
        shares = (*response.self_seed_shares, *response.mask_key_shares)
        assert {len(s.share) for s in shares} == {size}
    assert (vss.SHARE_BYTES, shamir.SHARE_BYTES) == (36, 37)
    assert sample(UnmaskRequest).consistency
    assert sample(ShareKeys).dealt
    assert sample(ShareBundle).dealt
    assert sample(KeyDirectory).advertisements
    assert sample(MaskRequest).members == tuple(range(N_CLIENTS))
    # both rings
    assert {m.vector.dtype for m in recorded() if isinstance(m, MaskedInput)} == {
        np.dtype(np.uint32),
        np.dtype(np.uint64),
    }


def test_the_attention_round_carries_target_keys_weights_targets_and_blinded_outputs() -> None:
    adverts = [m for m in recorded() if isinstance(m, AdvertiseKeys)]
    assert all(bool(a.target_key) == (a.round == ATTENTION_ROUND) for a in adverts)
    directories = [m for m in recorded() if isinstance(m, KeyDirectory)]
    for directory in directories:
        if directory.round == ATTENTION_ROUND:
            assert directory.weights == encode_weights(attention_weights())
            assert all(a.target_key for a in directory.advertisements)
        else:
            assert directory.weights == b""
            assert not any(a.target_key for a in directory.advertisements)
    inputs = [m for m in recorded() if isinstance(m, MaskedInput)]
    assert {(m.sender, m.target) for m in inputs if m.round == SUM_ROUND} == {
        (u, None) for u in range(N_CLIENTS) if u != DROPPED
    }
    assert {(m.sender, m.target) for m in inputs if m.round == ATTENTION_ROUND} == {
        (u, i) for u in range(N_CLIENTS) if u != DROPPED for i in range(N_CLIENTS) if i != u
    }
    outputs = [m for m in recorded() if isinstance(m, BlindedOutput)]
    survivors = tuple(u for u in range(N_CLIENTS) if u != DROPPED)
    assert {o.recipient for o in outputs} == set(survivors)
    assert all(o.survivors == survivors and o.round == ATTENTION_ROUND for o in outputs)
    assert all(o.vector.dtype == np.uint32 and o.vector.size == DIM for o in outputs)


def test_every_client_advertises_one_share_key_per_neighbour() -> None:
    """The masking graph is complete: N - 1 keys each, a fresh one for every pair."""
    adverts = [m for m in recorded() if isinstance(m, AdvertiseKeys)]
    assert {a.round for a in adverts} == {SUM_ROUND, ATTENTION_ROUND, COMPLAINT_ROUND}
    for advert in adverts:
        assert len(advert.encryption_keys) == N_CLIENTS - 1
        assert len(set(advert.encryption_keys)) == N_CLIENTS - 1
        assert advert.mask_key not in advert.encryption_keys
    every_key = [k for a in adverts for k in a.encryption_keys]
    assert len(set(every_key)) == len(every_key)


@pytest.mark.parametrize("round_", [SUM_ROUND, ATTENTION_ROUND, COMPLAINT_ROUND])
def test_dealt_shares_reach_their_holders_unchanged(round_: int) -> None:
    """Every client deals one signed DealtShare to every other client (by recipient); the server
    forwards each holder exactly the ones dealt to it (by dealer), and every commitment."""
    share_keys = of_round(ShareKeys, round_)
    assert [m.sender for m in share_keys] == list(range(N_CLIENTS))
    for message in share_keys:
        assert [d.recipient for d in message.dealt] == [
            v for v in range(N_CLIENTS) if v != message.sender
        ]
        assert all(d.sender == message.sender and d.round == round_ for d in message.dealt)
    commitments = tuple(m.commitment for m in share_keys)
    bundles = of_round(ShareBundle, round_)
    assert [b.recipient for b in bundles] == list(range(N_CLIENTS))
    for bundle in bundles:
        assert bundle.commitments == commitments
        assert bundle.dealt == tuple(
            d for m in share_keys for d in m.dealt if d.recipient == bundle.recipient
        )
    polynomials = {
        len(p) for c in commitments for p in (c.mask_key_polynomial, c.self_seed_polynomial)
    }
    # plain Shamir commits to the seed only; Feldman to t = 4 coefficients of 65 bytes each
    assert polynomials == ({0} if round_ == COMPLAINT_ROUND else {6 + 65 * 4})


@pytest.mark.parametrize("round_", [SUM_ROUND, ATTENTION_ROUND])
def test_in_an_honest_round_every_receipt_is_clean_and_everyone_masks(round_: int) -> None:
    receipts = of_round(ShareReceipt, round_)
    assert [r.sender for r in receipts] == list(range(N_CLIENTS))  # DROPPED drops after its receipt
    assert all(r.complaints == () for r in receipts)
    requests = of_round(MaskRequest, round_)
    assert len(requests) == N_CLIENTS
    assert all(r.members == tuple(range(N_CLIENTS)) for r in requests)


def test_a_dealer_of_a_bad_share_draws_a_complaint_and_is_left_out() -> None:
    receipts = of_round(ShareReceipt, COMPLAINT_ROUND)
    assert [r.sender for r in receipts] == list(range(N_CLIENTS))
    assert [r.complaints != () for r in receipts] == [v == VICTIM for v in range(N_CLIENTS)]
    complaint = receipts[VICTIM].complaints
    assert [c.dealer for c in complaint] == [CHEATER]
    assert len(complaint[0].key) == 32  # VICTIM's private key for the pair (X25519)
    assert repr(complaint[0].key) not in repr(complaint[0])  # a private key: never in a repr
    assert samples()["SHARE_RECEIPT-complaint"] is receipts[VICTIM]
    members = tuple(v for v in range(N_CLIENTS) if v != CHEATER)
    requests = of_round(MaskRequest, COMPLAINT_ROUND)
    assert len(requests) == len(members)
    assert all(r.members == members for r in requests)
    assert len(of_round(Abort, COMPLAINT_ROUND)) == 1  # the server's word to CHEATER
    assert {m.sender for m in of_round(MaskedInput, COMPLAINT_ROUND)} == set(members)


@pytest.mark.parametrize("kind", ALL_TYPES, ids=ids(ALL_TYPES))
def test_every_recorded_message_is_signed_by_its_sender(kind: MessageType) -> None:
    """Every message is signed by its sender -- a DealtShare through its dealer's signed root:
    its signed payload is a leaf of the ``dealt_root`` of the dealer's ShareCommitment."""
    for message in recorded():
        if message.TYPE is not kind:
            continue
        signature: bytes = getattr(message, "signature")  # noqa: B009
        if isinstance(message, DealtShare):
            assert signature == b""
            assert any(
                message.signed_payload() in dealt_leaves(keys.dealt)
                and keys.commitment.dealt_root == merkle.root(dealt_leaves(keys.dealt))
                for keys in recorded()
                if isinstance(keys, ShareKeys)
            )
            continue
        signer(message).verify_key().verify(signature, message.signed_payload())


# --- round trip and canonical encoding -----------------------------------------------------------


@pytest.mark.parametrize("kind", ALL_TYPES, ids=ids(ALL_TYPES))
def test_decode_inverts_to_bytes(kind: MessageType) -> None:
    for message in recorded():
        if message.TYPE is kind:
            data = message.to_bytes()
            decoded = decode(data)
            assert type(decoded) is type(message)
            assert decoded == message
            assert hash(decoded) == hash(message)
            assert decoded.to_bytes() == data
            assert decoded._compute_bytes() == data  # re-encoded from the fields, not kept
            assert decoded.digest() == message.digest()
            assert decode(bytearray(data)) == message


@pytest.mark.parametrize("name", VARIANTS)
def test_encoding_follows_the_documented_layout(name: str) -> None:
    """Writing the fields by hand gives exactly to_bytes(): the layout is the documented one."""
    message: Any = samples()[name]
    expected = frame(
        message.TYPE.value, body_of(message), round_=message.round, signature=message.signature
    )
    assert message.to_bytes() == expected


@pytest.mark.parametrize("name", VARIANTS)
def test_signed_payload_follows_the_documented_layout(name: str) -> None:
    """Type label, NUL, then the encoding without the signature, vectors entering as digests."""
    message = samples()[name]
    label = f"securefed/v1/sig/{message.TYPE.name.lower()}".encode() + b"\x00"
    body = body_of(message, signed=True)
    expected = label + unsigned_frame(message.TYPE.value, body, round_=message.round)
    assert message.signed_payload() == expected


@pytest.mark.parametrize("name", VARIANTS)
def test_decode_as_accepts_only_its_own_type(name: str) -> None:
    message = samples()[name]
    data = message.to_bytes()
    assert decode_as(data, type(message)) == message
    for cls in MESSAGE_CLASSES:
        if cls is not type(message):
            with pytest.raises(RemoteProtocolError):
                decode_as(data, cls)
    with pytest.raises(RemoteProtocolError):
        decode_as(data, Message)


def test_equal_messages_encode_identically() -> None:
    for message in recorded():
        copy = dataclasses.replace(message)
        assert copy == message
        assert copy.to_bytes() == message.to_bytes()


VECTOR_CARRIERS = ["MASKED_INPUT-sum", "MASKED_INPUT-attention", "BLINDED_OUTPUT"]


def other_ring(vector: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """The same words in the other ring (uint32 <-> uint64)."""
    return vector.astype(np.uint32 if vector.dtype == np.uint64 else np.uint64)


@pytest.mark.parametrize("name", VECTOR_CARRIERS)
def test_vector_messages_compare_by_encoding(name: str) -> None:
    m: Any = samples()[name]
    same = dataclasses.replace(m, vector=m.vector.copy())
    assert same == m
    assert hash(same) == hash(m)
    assert dataclasses.replace(m, vector=other_ring(m.vector)) != m
    changed = m.vector.copy()
    changed[0] ^= 1
    assert dataclasses.replace(m, vector=changed) != m
    if isinstance(m, MaskedInput):
        assert dataclasses.replace(m, target=None if m.target is not None else 0) != m
    else:
        assert dataclasses.replace(m, survivors=m.survivors[1:]) != m


def test_masked_input_target_none_and_zero_are_distinct_on_the_wire() -> None:
    m = samples()["MASKED_INPUT-sum"]
    header = 2 + 1 + 1 + 32 + 8  # magic, version, tag, session_id, round; then u32 sender
    assert m.to_bytes()[header + 4 : header + 8] == b"\xff" * 4
    targeted = dataclasses.replace(m, target=0)
    assert targeted.to_bytes()[header + 4 : header + 8] == bytes(4)
    assert decode_as(targeted.to_bytes(), MaskedInput).target == 0
    assert decode_as(m.to_bytes(), MaskedInput).target is None


# --- signatures are domain-separated -------------------------------------------------------------


def test_signed_payload_starts_with_a_prefix_free_type_label() -> None:
    labels = []
    assert MessageType.BLINDED_OUTPUT in one_of_each()
    for kind, message in one_of_each().items():
        label = f"securefed/v1/sig/{kind.name.lower()}".encode() + b"\x00"
        assert message.signed_payload().startswith(label)
        labels.append(label)
    assert len(labels) == len(MessageType)
    for a, b in itertools.permutations(labels, 2):
        assert not b.startswith(a)


def test_no_signed_payload_is_a_prefix_of_another_types_payload() -> None:
    payloads = [(m.TYPE, m.signed_payload()) for m in recorded()]
    assert MessageType.BLINDED_OUTPUT in {kind for kind, _ in payloads}
    for (kind_a, a), (kind_b, b) in itertools.permutations(payloads, 2):
        if kind_a is not kind_b:
            assert not b.startswith(a)


@pytest.mark.parametrize("kind", ALL_TYPES, ids=ids(ALL_TYPES))
def test_a_decoded_message_signs_over_what_its_fields_give(kind: MessageType) -> None:
    """A decoded message of a FLAT type cuts its signed payload from the bytes it was decoded
    from; for every type, that payload equals the one written field by field (vectors and
    nested messages as digests), and FLAT is set exactly on types whose signed form is their
    wire form."""
    for message in recorded():
        if message.TYPE is not kind:
            continue
        decoded = decode(message.to_bytes())
        label = f"securefed/v1/sig/{kind.name.lower()}".encode() + b"\x00"
        written = label + decoded._unsigned(digest_vectors=True)
        assert decoded.signed_payload() == written == message.signed_payload()
        if type(message).FLAT:
            assert decoded._unsigned(digest_vectors=True) == decoded._unsigned()
    flat_types = {cls.TYPE for cls in messages_module._REGISTRY.values() if cls.FLAT}
    nesting = {
        MessageType.KEY_DIRECTORY,
        MessageType.SHARE_KEYS,
        MessageType.SHARE_BUNDLE,
        MessageType.SHARE_RECEIPT,
        MessageType.MASKED_INPUT,
        MessageType.UNMASK_REQUEST,
        MessageType.BLINDED_OUTPUT,
        MessageType.SESSION_KEY_DIRECTORY,
        MessageType.SKETCH_SEED_OFFER,
        MessageType.SKETCH_SEED_DELIVERY,
    }
    assert flat_types == set(MessageType) - nesting


def test_the_signature_is_not_part_of_the_signed_payload() -> None:
    for message in samples().values():
        if message.SIGNER is SignedBy.COVERED:
            continue  # carries no signature of its own (DealtShare: its dealer's root covers it)
        resigned = dataclasses.replace(message, signature=b"\x00" * 64)
        assert resigned.signed_payload() == message.signed_payload()
        assert resigned.to_bytes() != message.to_bytes()


def assert_signature_does_not_transfer(a: Any, b: Any, key: SigningKey) -> None:
    """``a`` is signed by ``key``; ``b`` (another type, same field values) reuses its signature."""
    key.verify_key().verify(a.signature, a.signed_payload())
    forged = dataclasses.replace(b, signature=a.signature)
    with pytest.raises(InvalidSignature):
        key.verify_key().verify(forged.signature, forged.signed_payload())


def unsigned_body(message: Any) -> bytes:
    """The encoding after the tag byte, without the signature (or its length)."""
    return bytes(dataclasses.replace(message, signature=b"").to_bytes()[4:-4])


def same_body(a: Message, b: Message) -> bool:
    """Whether two messages differ on the wire in their tag byte only (signatures left out)."""
    return a.TYPE is not b.TYPE and unsigned_body(a) == unsigned_body(b)


def test_a_client_signature_never_verifies_as_another_type_with_the_same_fields() -> None:
    """SketchSeedCommitment and ConsistencySignature have the same fields (u32 sender, 32 bytes);
    a ShareCommitment without polynomials is that body followed by two empty blobs (u32 0, u32 0)
    and an all-zero dealt root."""
    key = federation(N_CLIENTS).client_keys[1]
    digest = bytes(range(100, 132))
    seed = sign_message(SketchSeedCommitment, key, SESSION, 1, sender=1, commitment=digest)
    consistency = sign_message(
        ConsistencySignature, key, SESSION, 1, sender=1, transcript_hash=digest
    )
    assert same_body(seed, consistency)
    share = sign_message(
        ShareCommitment,
        key,
        SESSION,
        1,
        sender=1,
        self_seed_commitment=digest,
        mask_key_polynomial=b"",
        self_seed_polynomial=b"",
        dealt_root=bytes(32),
    )
    assert unsigned_body(share) == unsigned_body(consistency) + bytes(8) + bytes(32)
    for a, b in itertools.permutations((seed, consistency, share), 2):
        assert_signature_does_not_transfer(a, b, key)


def test_a_server_signature_never_verifies_as_another_type_with_the_same_fields() -> None:
    """ConsistencyRequest and MaskRequest are both one list of indices; an UnmaskRequest without
    consistency signatures is that list and a count of 0."""
    key = federation(N_CLIENTS).server_key
    request = sign_message(ConsistencyRequest, key, SESSION, 1, survivors=(0, 1, 2))
    members = sign_message(MaskRequest, key, SESSION, 1, members=(0, 1, 2))
    unmask = sign_message(UnmaskRequest, key, SESSION, 1, survivors=(0, 1, 2), consistency=())
    assert same_body(request, members)
    for a, b in itertools.permutations((request, members, unmask), 2):
        assert_signature_does_not_transfer(a, b, key)


@pytest.mark.parametrize("signed_by", list(SignedBy), ids=[s.name for s in SignedBy])
def test_blinded_output_and_masked_input_share_a_body_but_not_signatures(
    signed_by: SignedBy,
) -> None:
    """BlindedOutput(recipient 1, no survivors, v) and MaskedInput(sender 1, target 0, v) have
    the same body on the wire (u32 1, u32 0, v): only the type separates their signatures."""
    fed = federation(N_CLIENTS)
    key = fed.server_key if signed_by is SignedBy.SERVER else fed.client_keys[1]
    vector = np.arange(1, DIM + 1, dtype=np.uint32)
    output = sign_message(BlindedOutput, key, SESSION, 1, recipient=1, survivors=(), vector=vector)
    masked = sign_message(MaskedInput, key, SESSION, 1, sender=1, target=0, vector=vector)
    unsigned = [dataclasses.replace(m, signature=b"").to_bytes() for m in (output, masked)]
    assert unsigned[0][4:] == unsigned[1][4:]  # only the tag byte differs on the wire
    assert_signature_does_not_transfer(output, masked, key)
    assert_signature_does_not_transfer(masked, output, key)


@pytest.mark.parametrize("name", VARIANTS)
def test_a_signature_never_verifies_for_another_session_or_round(name: str) -> None:
    message: Any = samples()[name]
    verify_key = signer(message).verify_key()
    other_session = bytes(32)
    for moved in (
        dataclasses.replace(message, round=message.round + 1),
        dataclasses.replace(message, session_id=other_session),
    ):
        with pytest.raises(InvalidSignature):
            verify_key.verify(moved.signature, moved.signed_payload())


@pytest.mark.parametrize("name", VECTOR_CARRIERS)
def test_vector_payload_is_the_tree_hash_and_binds_the_ring(name: str) -> None:
    """A vector is signed as its dtype code, length and tree SHA-256 -- never its raw words -- and
    the same bytes in another ring (uint32 [1, 0, 2, 0] vs uint64 [1, 2]) sign differently."""
    m: Any = samples()[name]
    code = m.vector.dtype.itemsize
    little = m.vector.astype(f"<u{code}").tobytes()
    payload = m.signed_payload()
    assert payload.endswith(bytes([code]) + m.vector.size.to_bytes(4, "big") + tree_sha256(little))
    assert little not in payload
    assert m.to_bytes().find(little) > 0  # the wire carries the words themselves

    narrow = dataclasses.replace(m, vector=np.array([1, 0, 2, 0], dtype=np.uint32))
    wide = dataclasses.replace(m, vector=np.array([1, 2], dtype=np.uint64))
    assert narrow.vector.tobytes() == wide.vector.tobytes()
    assert narrow.signed_payload()[-32:] == wide.signed_payload()[-32:]  # same tree hash
    assert narrow.signed_payload() != wide.signed_payload()
    changed = m.vector.copy()
    changed[-1] ^= 1
    assert dataclasses.replace(m, vector=changed).signed_payload() != payload
    verify_key = signer(m).verify_key()
    for other in (narrow, wide, dataclasses.replace(m, vector=other_ring(m.vector))):
        with pytest.raises(InvalidSignature):
            verify_key.verify(m.signature, other.signed_payload())


def test_masked_input_payload_binds_the_target() -> None:
    m: Any = samples()["MASKED_INPUT-attention"]
    verify_key = signer(m).verify_key()
    verify_key.verify(m.signature, m.signed_payload())
    others = {t for t in range(N_CLIENTS) if t not in (m.sender, m.target)}
    for target in (None, *sorted(others)):
        moved = dataclasses.replace(m, target=target)
        with pytest.raises(InvalidSignature):
            verify_key.verify(m.signature, moved.signed_payload())


def test_blinded_output_payload_binds_recipient_and_survivors() -> None:
    m: Any = samples()["BLINDED_OUTPUT"]
    verify_key = signer(m).verify_key()
    verify_key.verify(m.signature, m.signed_payload())
    for moved in (
        dataclasses.replace(m, recipient=(m.recipient + 1) % N_CLIENTS),
        dataclasses.replace(m, survivors=m.survivors[:-1]),
        dataclasses.replace(m, survivors=tuple(range(N_CLIENTS))),
    ):
        with pytest.raises(InvalidSignature):
            verify_key.verify(m.signature, moved.signed_payload())


# --- constructors refuse invalid fields (LocalProtocolError) -------------------------------------


def invalid_fields() -> list[Any]:
    """(message type, field, invalid value): each one the constructor must refuse."""
    adverts = sample(KeyDirectory).advertisements
    keys = sample(AdvertiseKeys).encryption_keys
    share_keys = sample(ShareKeys)
    bundle = sample(ShareBundle)
    dealt = sample(DealtShare)
    request = sample(UnmaskRequest)
    response = sample(UnmaskResponse)
    ct = SealedShare(1, b"ct")
    first, second = complaint_of(1, b"k1"), complaint_of(2, b"k2")
    big = "é" * 513  # 513 characters, 1026 bytes: the limit counts bytes
    too_long = b"\x01" * (POLYNOMIAL_LIMIT + 1)
    cases: list[tuple[type[Message], str, Any]] = [
        (AdvertiseKeys, "session_id", SESSION[:31]),
        (AdvertiseKeys, "session_id", SESSION + b"\x00"),
        (AdvertiseKeys, "session_id", bytearray(SESSION)),
        (AdvertiseKeys, "round", -1),
        (AdvertiseKeys, "round", 2**63),
        (AdvertiseKeys, "round", True),
        (AdvertiseKeys, "signature", b"\x00" * 257),
        (AdvertiseKeys, "sender", MAX_PARTIES),
        (AdvertiseKeys, "sender", -1),
        (AdvertiseKeys, "encryption_keys", (b"",)),
        (AdvertiseKeys, "encryption_keys", (*keys, b"")),
        (AdvertiseKeys, "encryption_keys", (b"\x01" * 134,)),
        (AdvertiseKeys, "encryption_keys", (bytearray(keys[0]),)),
        (AdvertiseKeys, "encryption_keys", (None,)),
        (AdvertiseKeys, "encryption_keys", ("key",)),
        (AdvertiseKeys, "encryption_keys", keys[0]),  # bytes, not a tuple of bytes
        (AdvertiseKeys, "encryption_keys", (keys[0],) * MAX_PARTIES),  # fewer than MAX_PARTIES
        (AdvertiseKeys, "encryption_keys", None),
        (AdvertiseKeys, "mask_key", b""),
        (AdvertiseKeys, "mask_key", b"\x01" * 134),
        (AdvertiseKeys, "target_key", b"\x01" * 134),
        (AdvertiseKeys, "target_key", bytearray(b"\x01" * 32)),
        (AdvertiseKeys, "target_key", None),
        (KeyDirectory, "advertisements", tuple(reversed(adverts))),
        (KeyDirectory, "advertisements", (adverts[0], adverts[0])),
        (KeyDirectory, "advertisements", (sample(ConsistencySignature),)),
        (KeyDirectory, "weights", b"\x00" * (MAX_WEIGHTS_BYTES + 1)),
        (KeyDirectory, "weights", bytearray(b"\x00" * 8)),
        (KeyDirectory, "weights", None),
        (ShareCommitment, "sender", MAX_PARTIES),
        (ShareCommitment, "self_seed_commitment", b"\x00" * 31),
        (ShareCommitment, "self_seed_commitment", b"\x00" * 33),
        (ShareCommitment, "mask_key_polynomial", too_long),
        (ShareCommitment, "mask_key_polynomial", bytearray(b"\x01" * 8)),
        (ShareCommitment, "mask_key_polynomial", None),
        (ShareCommitment, "self_seed_polynomial", too_long),
        (ShareCommitment, "self_seed_polynomial", bytearray(b"\x01" * 8)),
        (ShareCommitment, "self_seed_polynomial", None),
        (ShareCommitment, "signature", b"\x00" * 257),
        (DealtShare, "session_id", SESSION[:31]),
        (DealtShare, "round", -1),
        (DealtShare, "sender", MAX_PARTIES),
        (DealtShare, "sender", None),
        (DealtShare, "recipient", MAX_PARTIES),
        (DealtShare, "recipient", -1),
        (DealtShare, "recipient", True),
        (DealtShare, "recipient", dealt.sender),  # a dealer keeps its own share
        (DealtShare, "ciphertext", b"c" * 1025),
        (DealtShare, "ciphertext", bytearray(b"ct")),
        (DealtShare, "ciphertext", None),
        (DealtShare, "signature", b"\x00" * 257),
        (ShareKeys, "commitment", sample(ConsistencySignature)),
        (ShareKeys, "commitment", bundle.commitments[1]),  # another client's: dealt by another
        (ShareKeys, "dealt", tuple(reversed(share_keys.dealt))),
        (ShareKeys, "dealt", (share_keys.dealt[0],) * 2),
        (ShareKeys, "dealt", (bundle.dealt[0], *share_keys.dealt)),  # one dealt by client 1
        (ShareKeys, "dealt", (ct,)),
        (ShareKeys, "dealt", (share_keys.dealt[0].to_bytes(),)),
        (ShareBundle, "recipient", MAX_PARTIES),
        (ShareBundle, "commitments", tuple(reversed(bundle.commitments))),
        (ShareBundle, "commitments", (bundle.commitments[0],) * 2),
        (ShareBundle, "commitments", (sample(SketchSeedCommitment),)),
        (ShareBundle, "dealt", tuple(reversed(bundle.dealt))),
        (ShareBundle, "dealt", (bundle.dealt[0],) * 2),
        (ShareBundle, "dealt", (ct,)),
        (ShareReceipt, "sender", MAX_PARTIES),
        (ShareReceipt, "complaints", (second, first)),
        (ShareReceipt, "complaints", (first, first)),
        (ShareReceipt, "complaints", (first, complaint_of(1, b"other key"))),  # one dealer twice
        (ShareReceipt, "complaints", (SealedShare(1, b"k1"),)),
        (ShareReceipt, "complaints", ((1, b"k1"),)),
        (ShareReceipt, "complaints", None),
        (MaskRequest, "members", (2, 1)),
        (MaskRequest, "members", (1, 1)),
        (MaskRequest, "members", (0, MAX_PARTIES)),
        (MaskRequest, "members", (-1, 0)),
        (MaskRequest, "members", (0, True)),
        (MaskRequest, "members", [0, 1]),
        (MaskRequest, "signature", b"\x00" * 257),
        (MaskedInput, "sender", MAX_PARTIES),
        (MaskedInput, "target", MAX_PARTIES),
        (MaskedInput, "target", NO_TARGET),  # the sentinel is the wire form of None, not a value
        (MaskedInput, "target", -1),
        (MaskedInput, "target", True),
        (MaskedInput, "target", 1.0),
        (MaskedInput, "vector", np.zeros((2, 2), dtype=np.uint32)),
        (MaskedInput, "vector", np.zeros(2)),
        (MaskedInput, "vector", np.zeros(2, dtype=np.int64)),
        (MaskedInput, "vector", np.zeros(2, dtype=">u4")),
        (MaskedInput, "vector", [0, 1]),
        (ConsistencyRequest, "survivors", (2, 1)),
        (ConsistencyRequest, "survivors", (1, 1)),
        (ConsistencyRequest, "survivors", (0, MAX_PARTIES)),
        (ConsistencyRequest, "survivors", (-1, 0)),
        (ConsistencyRequest, "survivors", [0, 1]),
        (ConsistencySignature, "sender", MAX_PARTIES),
        (ConsistencySignature, "transcript_hash", b"\x00" * 33),
        (UnmaskRequest, "survivors", (3, 1)),
        (UnmaskRequest, "consistency", tuple(reversed(request.consistency))),
        (UnmaskRequest, "consistency", (request.consistency[0],) * 2),
        (UnmaskResponse, "sender", MAX_PARTIES),
        (UnmaskResponse, "mask_key_shares", response.self_seed_shares[:1]),
        (UnmaskResponse, "self_seed_shares", tuple(reversed(response.self_seed_shares))),
        (UnmaskResponse, "self_seed_shares", response.self_seed_shares[:1] * 2),
        (Abort, "reason", "x" * 1025),
        (Abort, "reason", big),
        (Abort, "reason", b"bytes"),
        (BlindedOutput, "session_id", SESSION[:31]),
        (BlindedOutput, "round", -1),
        (BlindedOutput, "recipient", MAX_PARTIES),
        (BlindedOutput, "recipient", None),
        (BlindedOutput, "survivors", (2, 1)),
        (BlindedOutput, "survivors", (1, 1)),
        (BlindedOutput, "survivors", (0, MAX_PARTIES)),
        (BlindedOutput, "survivors", (-1, 0)),
        (BlindedOutput, "survivors", [0, 1]),
        (BlindedOutput, "vector", np.zeros((2, 2), dtype=np.uint32)),
        (BlindedOutput, "vector", np.zeros(2)),
        (BlindedOutput, "vector", np.zeros(2, dtype=np.int64)),
        (BlindedOutput, "vector", np.zeros(2, dtype=">u4")),
        (BlindedOutput, "vector", [0, 1]),
        (BlindedOutput, "signature", b"\x00" * 257),
        (SketchSeedOffer, "commitment", sample(ShareCommitment)),
        (SketchSeedOffer, "sealed", (SealedShare(2, b""), ct)),
        (SketchSeedOffer, "sealed", (ct, ct)),
        (SketchSeedOffer, "sealed", (dealt,)),
        (SketchSeedDelivery, "sealed", dealt),
        (SketchSeedDelivery, "recipient", MAX_PARTIES),
    ]
    return [
        pytest.param(cls, f, v, id=f"{cls.__name__}-{f}-{i}") for i, (cls, f, v) in enumerate(cases)
    ]


@pytest.mark.parametrize(("cls", "field", "value"), invalid_fields())
def test_constructors_refuse_invalid_fields(cls: type[Message], field: str, value: Any) -> None:
    with pytest.raises(LocalProtocolError):
        dataclasses.replace(sample(cls), **{field: value})


def test_share_records_refuse_invalid_fields() -> None:
    from securefed.secagg.messages import RevealedShare  # noqa: PLC0415 - not in __all__

    for bad in (lambda: SealedShare(MAX_PARTIES, b""), lambda: SealedShare(0, b"\x00" * 1025)):
        with pytest.raises(LocalProtocolError):
            bad()
    for bad in (lambda: RevealedShare(MAX_PARTIES, b""), lambda: RevealedShare(0, b"\x00" * 65)):
        with pytest.raises(LocalProtocolError):
            bad()
    for dealer, key in [
        (MAX_PARTIES, b"k"),
        (-1, b"k"),
        (True, b"k"),
        (None, b"k"),
        (0, b""),  # a complaint without its evidence
        (0, b"\x01" * (KEY_LIMIT + 1)),
        (0, bytearray(b"k")),
        (0, None),
    ]:
        evidence = complaint_of(0)
        with pytest.raises(LocalProtocolError):
            Complaint(dealer, key, evidence.dealt, evidence.commitment, 0, 1, b"")  # type: ignore[arg-type]
    assert complaint_of(MAX_PARTIES - 1, b"\x01" * KEY_LIMIT).dealer == MAX_PARTIES - 1
    other = complaint_of(1)
    with pytest.raises(LocalProtocolError):  # the nested messages are from another dealer
        Complaint(0, b"k", other.dealt, complaint_of(0).commitment, 0, 1, b"")
    with pytest.raises(LocalProtocolError):
        Complaint(0, b"k", complaint_of(0).dealt, other.commitment, 0, 1, b"")


def test_limits_are_inclusive() -> None:
    assert dataclasses.replace(sample(Abort), reason="é" * 512).reason == "é" * 512
    top = dataclasses.replace(sample(AdvertiseKeys), sender=MAX_PARTIES - 1, round=2**63 - 1)
    assert decode(top.to_bytes()) == top
    at_limit: list[Message] = [
        dataclasses.replace(sample(AdvertiseKeys), target_key=b"\x01" * KEY_LIMIT),
        dataclasses.replace(
            sample(AdvertiseKeys),
            encryption_keys=(b"\x01" * KEY_LIMIT,) * (MAX_PARTIES - 1),
            mask_key=b"\x01" * KEY_LIMIT,
        ),
        dataclasses.replace(sample(AdvertiseKeys), encryption_keys=()),  # a client alone
        dataclasses.replace(sample(KeyDirectory), weights=b"\x01" * MAX_WEIGHTS_BYTES),
        dataclasses.replace(sample(MaskedInput), target=MAX_PARTIES - 1),
        dataclasses.replace(
            sample(BlindedOutput), recipient=MAX_PARTIES - 1, survivors=tuple(range(MAX_PARTIES))
        ),
        dataclasses.replace(sample(MaskRequest), members=tuple(range(MAX_PARTIES))),
        dataclasses.replace(
            sample(ShareReceipt),
            sender=MAX_PARTIES - 1,
            complaints=tuple(complaint_of(i, b"\x01" * KEY_LIMIT) for i in range(MAX_PARTIES)),
        ),
    ]
    # The largest records that ShareKeys and ShareBundle nest still fit their nesting limits.
    commitment = dataclasses.replace(
        sample(ShareCommitment),
        sender=MAX_PARTIES - 1,
        mask_key_polynomial=b"\x01" * POLYNOMIAL_LIMIT,
        self_seed_polynomial=b"\x02" * POLYNOMIAL_LIMIT,
        signature=b"s" * 256,
    )
    dealt = dataclasses.replace(
        sample(DealtShare),
        sender=MAX_PARTIES - 1,
        recipient=MAX_PARTIES - 2,
        ciphertext=b"c" * 1024,
    )
    at_limit += [
        commitment,
        dealt,
        dataclasses.replace(sample(ShareKeys), commitment=commitment, dealt=(dealt,)),
        dataclasses.replace(
            sample(ShareBundle),
            recipient=MAX_PARTIES - 2,
            commitments=(commitment,),
            dealt=(dealt,),
            proofs=(b"\x03" * 32 * 16,),  # the longest audit path: 16 hashes
        ),
    ]
    for message in at_limit:
        assert decode(message.to_bytes()) == message


def most_keys_advert() -> AdvertiseKeys:
    """A valid advertisement of the largest size: a key of the longest kind for every one of
    MAX_PARTIES - 1 neighbours (about 560 KB)."""
    key = b"\x01" * KEY_LIMIT
    advert: AdvertiseKeys = dataclasses.replace(
        sample(AdvertiseKeys),
        encryption_keys=(key,) * (MAX_PARTIES - 1),
        mask_key=key,
        target_key=key,
        signature=b"s" * 256,
    )
    assert decode(advert.to_bytes()) == advert
    return advert


# A valid advertisement exceeds 64 KiB from about 1,800 neighbours (32-byte keys; about 940 with
# 65-byte keys): KeyDirectory nests advertisements under a limit that fits the largest one.
def test_a_key_directory_encodes_the_largest_valid_advertisement() -> None:
    directory = dataclasses.replace(sample(KeyDirectory), advertisements=(most_keys_advert(),))
    assert decode(directory.to_bytes()) == directory


def test_a_key_directory_decodes_the_largest_valid_advertisement() -> None:
    data = frame(
        MessageType.KEY_DIRECTORY.value, key_directory_body([most_keys_advert().to_bytes()], b"")
    )
    assert decode(data)._compute_bytes() == data


def test_abort_refuses_unencodable_reason_with_local_protocol_error() -> None:
    with pytest.raises(LocalProtocolError):
        dataclasses.replace(sample(Abort), reason="lone surrogate \ud800")


def test_key_directory_refuses_non_messages_with_local_protocol_error() -> None:
    with pytest.raises(LocalProtocolError):
        dataclasses.replace(sample(KeyDirectory), advertisements=(b"not a message",))


LIST_FIELDS = [  # (variant, field): every one non-empty in its sample
    ("ADVERTISE_KEYS-sum", "encryption_keys"),
    ("KEY_DIRECTORY-sum", "advertisements"),
    ("SHARE_KEYS", "dealt"),
    ("SHARE_BUNDLE", "commitments"),
    ("SHARE_BUNDLE", "dealt"),
    ("SHARE_RECEIPT-complaint", "complaints"),
    ("MASK_REQUEST", "members"),
    ("UNMASK_REQUEST", "consistency"),
    ("UNMASK_RESPONSE", "self_seed_shares"),
    ("UNMASK_RESPONSE", "mask_key_shares"),
    ("CONSISTENCY_REQUEST", "survivors"),
    ("UNMASK_REQUEST", "survivors"),
    ("BLINDED_OUTPUT", "survivors"),
    ("SESSION_KEY_DIRECTORY", "keys"),
    ("SKETCH_SEED_OFFER", "sealed"),
]


@pytest.mark.parametrize(("name", "field"), LIST_FIELDS, ids=[f"{n}-{f}" for n, f in LIST_FIELDS])
def test_collection_fields_must_be_tuples(name: str, field: str) -> None:
    """A list would let a frozen message be reordered after validation (and be unhashable)."""
    message = samples()[name]
    values = getattr(message, field)
    assert values
    with pytest.raises(LocalProtocolError):
        dataclasses.replace(message, **{field: list(values)})


# --- the decoder refuses the same content (RemoteProtocolError) ----------------------------------


def invalid_encodings() -> list[Any]:
    """Hand-written encodings of invalid content, each next to a valid twin that decodes."""
    ad = sample(AdvertiseKeys)
    adverts = [a.to_bytes() for a in sample(KeyDirectory).advertisements]
    directory: Any = samples()["KEY_DIRECTORY-attention"]
    targeted = [a.to_bytes() for a in directory.advertisements]
    weights = encode_weights(attention_weights())
    commitment = sample(ShareCommitment).to_bytes()
    dealer = sample(ShareCommitment).sender
    assert dealer == 0  # the dealt shares below are 0's
    signatures = [c.to_bytes() for c in sample(UnmaskRequest).consistency]
    key, digest = b"\x01" * 32, bytes(32)
    long_key = key * 4 + b"12345"  # 133 bytes: the key limit
    polynomial = b"\x01" * POLYNOMIAL_LIMIT
    largest_commitment = dataclasses.replace(
        sample(ShareCommitment),
        mask_key_polynomial=polynomial,
        self_seed_polynomial=polynomial,
        signature=b"s" * 256,
    ).to_bytes()
    # the blob limit under which ShareKeys and ShareBundle nest a commitment
    commitment_limit = 2 * POLYNOMIAL_LIMIT + 1024
    assert len(largest_commitment) <= commitment_limit

    def dealt(sender: int, recipient: int, ciphertext: bytes = b"ct") -> bytes:
        return frame(MessageType.DEALT_SHARE.value, dealt_body(sender, recipient, ciphertext))

    def twins(tag: int, valid: Body, invalid: Body) -> tuple[bytes, bytes]:
        return frame(tag, valid), frame(tag, invalid)

    cases: dict[str, tuple[bytes, bytes]] = {
        "round-2**63": (
            frame(1, body_of(ad), round_=2**63 - 1),
            frame(1, body_of(ad), round_=2**63),
        ),
        "signature-257": (
            frame(7, survivors_body([0]), signature=b"s" * 256),
            frame(7, survivors_body([0]), signature=b"s" * 257),
        ),
        "sender>=MAX": twins(
            1, advertise_body(4095, [key], key, b""), advertise_body(4096, [key], key, b"")
        ),
        "empty-mask-key": twins(
            1, advertise_body(0, [key], b"k", b""), advertise_body(0, [key], b"", b"")
        ),
        "empty-encryption-key": twins(
            1, advertise_body(0, [key, b"k"], key, b""), advertise_body(0, [key, b""], key, b"")
        ),
        "encryption-key-134": twins(
            1,
            advertise_body(0, [key, long_key], key, b""),
            advertise_body(0, [key, long_key + b"6"], key, b""),
        ),
        "encryption-keys-count>=MAX": twins(
            1,
            advertise_body(0, [b"k"] * (MAX_PARTIES - 1), key, b""),
            advertise_body(0, [b"k"] * MAX_PARTIES, key, b""),  # read, then refused
        ),
        "encryption-keys-count>MAX": twins(
            1,
            advertise_body(0, [b"k"] * (MAX_PARTIES - 1), key, b""),
            advertise_body(0, [b"k"] * (MAX_PARTIES + 1), key, b""),
        ),
        "encryption-keys-count-past-the-data": twins(
            1,
            lambda w: w.u32(0).u32(1).blob(key).blob(key).blob(b""),
            lambda w: w.u32(0).u32(2).blob(key).blob(key).blob(b""),
        ),
        "advert-single-key-layout": twins(  # protocol v1: one blob, no count
            1,
            advertise_body(0, [key], key, b""),
            lambda w: w.u32(0).blob(key).blob(key).blob(b""),
        ),
        "mask-key-134": twins(
            1,
            advertise_body(0, [key], long_key, b""),
            advertise_body(0, [key], long_key + b"6", b""),
        ),
        "target-key-134": twins(
            1,
            advertise_body(0, [key], key, long_key),
            advertise_body(0, [key], key, long_key + b"6"),
        ),
        "advert-missing-target-key": twins(
            1, advertise_body(0, [key], key, b""), lambda w: blobs([key])(w.u32(0)).blob(key)
        ),
        "adverts-unsorted": twins(
            2, key_directory_body(adverts[:2], b""), key_directory_body(adverts[1::-1], b"")
        ),
        "adverts-duplicate": twins(
            2, key_directory_body(adverts[:1], b""), key_directory_body(adverts[:1] * 2, b"")
        ),
        "adverts-wrong-nested-type": twins(
            2, key_directory_body(adverts[:1], b""), key_directory_body([commitment], b"")
        ),
        "adverts-nested-trailing-byte": twins(
            2, key_directory_body(adverts[:1], b""), key_directory_body([adverts[0] + b"\0"], b"")
        ),
        "weights-over-limit": twins(
            2,
            key_directory_body(targeted[:2], b"\x01" * MAX_WEIGHTS_BYTES),
            key_directory_body(targeted[:2], b"\x01" * (MAX_WEIGHTS_BYTES + 1)),
        ),
        "weights-length-past-the-data": twins(
            2,
            key_directory_body(targeted, weights),
            lambda w: blobs(targeted)(w).u32(len(weights) + 1).fixed(weights, len(weights)),
        ),
        "key-directory-missing-weights": twins(
            2, key_directory_body(adverts[:1], b""), blobs(adverts[:1])
        ),
        "commitment-sender": twins(
            3, commitment_body(5, digest, b"", b""), commitment_body(4096, digest, b"", b"")
        ),
        "commitment-mask-key-polynomial-over-limit": twins(
            3,
            commitment_body(0, digest, polynomial, b""),
            commitment_body(0, digest, polynomial + b"\x01", b""),
        ),
        "commitment-self-seed-polynomial-over-limit": twins(
            3,
            commitment_body(0, digest, b"", polynomial),
            commitment_body(0, digest, b"", polynomial + b"\x01"),
        ),
        "commitment-digest-only-layout": twins(  # protocol v1: no polynomials
            3, commitment_body(0, digest, b"", b""), digest_body(0, digest)
        ),
        "commitment-missing-self-seed-polynomial": twins(
            3,
            commitment_body(0, digest, b"p", b""),
            lambda w: digest_body(0, digest)(w).blob(b"p"),
        ),
        "dealt-sender>=MAX": twins(18, dealt_body(4095, 0, b"ct"), dealt_body(4096, 0, b"ct")),
        "dealt-recipient>=MAX": twins(18, dealt_body(0, 4095, b"ct"), dealt_body(0, 4096, b"ct")),
        "dealt-to-the-dealer": twins(18, dealt_body(1, 2, b"ct"), dealt_body(2, 2, b"ct")),
        "dealt-ciphertext-1025": twins(
            18, dealt_body(0, 1, b"c" * 1024), dealt_body(0, 1, b"c" * 1025)
        ),
        "dealt-missing-recipient": twins(
            18, dealt_body(0, 1, b"ct"), lambda w: w.u32(0).blob(b"ct")
        ),
        "share-keys-unsorted": twins(
            4,
            share_keys_body(commitment, [dealt(0, 1), dealt(0, 2)]),
            share_keys_body(commitment, [dealt(0, 2), dealt(0, 1)]),
        ),
        "share-keys-duplicate": twins(
            4,
            share_keys_body(commitment, [dealt(0, 1)]),
            share_keys_body(commitment, [dealt(0, 1), dealt(0, 1)]),
        ),
        "share-keys-dealt-by-another": twins(
            4,
            share_keys_body(commitment, [dealt(0, 1), dealt(0, 2)]),
            share_keys_body(commitment, [dealt(0, 1), dealt(1, 2)]),
        ),
        "share-keys-dealt-to-the-dealer": twins(
            4,
            share_keys_body(commitment, [dealt(0, 1)]),
            share_keys_body(commitment, [dealt(0, 0)]),
        ),
        "share-keys-ciphertext-1025": twins(
            4,
            share_keys_body(commitment, [dealt(0, 1, b"c" * 1024)]),
            share_keys_body(commitment, [dealt(0, 1, b"c" * 1025)]),
        ),
        "share-keys-nested-wrong-type": twins(
            4, share_keys_body(commitment, []), share_keys_body(signatures[0], [])
        ),
        "share-keys-dealt-wrong-type": twins(
            4, share_keys_body(commitment, [dealt(0, 1)]), share_keys_body(commitment, [commitment])
        ),
        "share-keys-dealt-nested-trailing-byte": twins(
            4,
            share_keys_body(commitment, [dealt(0, 1)]),
            share_keys_body(commitment, [dealt(0, 1) + b"\0"]),
        ),
        "share-keys-sealed-share-layout": twins(  # protocol v1: (u32 peer, blob) per recipient
            4,
            share_keys_body(commitment, [dealt(0, 1)]),
            seed_offer_body(commitment, [(1, b"ct")]),
        ),
        "share-keys-commitment-blob-over-limit": twins(
            4,
            share_keys_body(largest_commitment, []),
            share_keys_body(largest_commitment.ljust(commitment_limit + 1, b"\0"), []),
        ),
        "share-bundle-recipient": twins(
            5, share_bundle_body(4095, [commitment], []), share_bundle_body(4096, [commitment], [])
        ),
        "share-bundle-duplicate-commitments": twins(
            5, share_bundle_body(0, [commitment], []), share_bundle_body(0, [commitment] * 2, [])
        ),
        "share-bundle-commitment-wrong-type": twins(
            5, share_bundle_body(0, [commitment], []), share_bundle_body(0, [dealt(1, 0)], [])
        ),
        "share-bundle-dealt-unsorted": twins(
            5,
            share_bundle_body(0, [commitment], [dealt(1, 0), dealt(2, 0)]),
            share_bundle_body(0, [commitment], [dealt(2, 0), dealt(1, 0)]),
        ),
        "share-bundle-dealt-duplicate": twins(
            5,
            share_bundle_body(0, [commitment], [dealt(1, 0)]),
            share_bundle_body(0, [commitment], [dealt(1, 0)] * 2),
        ),
        "share-bundle-dealt-wrong-type": twins(
            5,
            share_bundle_body(0, [commitment], [dealt(1, 0)]),
            share_bundle_body(0, [commitment], [signatures[0]]),
        ),
        "share-bundle-sealed-share-layout": twins(  # protocol v1: (u32 peer, blob) per dealer
            5,
            share_bundle_body(0, [commitment], [dealt(1, 0)]),
            lambda w: pairs([(1, b"ct")])(blobs([commitment])(w.u32(0))),
        ),
        "share-bundle-commitment-blob-over-limit": twins(
            5,
            share_bundle_body(0, [largest_commitment], []),
            share_bundle_body(0, [largest_commitment.ljust(commitment_limit + 1, b"\0")], []),
        ),
        "receipt-sender>=MAX": twins(19, receipt_body(4095, []), receipt_body(4096, [])),
        "receipt-unsorted": twins(
            19, receipt_body(0, [(1, key), (2, key)]), receipt_body(0, [(2, key), (1, key)])
        ),
        "receipt-one-dealer-twice": twins(
            19, receipt_body(0, [(1, key)]), receipt_body(0, [(1, key), (1, long_key)])
        ),
        "receipt-empty-key": twins(19, receipt_body(0, [(1, b"k")]), receipt_body(0, [(1, b"")])),
        "receipt-key-134": twins(
            19, receipt_body(0, [(1, long_key)]), receipt_body(0, [(1, long_key + b"6")])
        ),
        "receipt-count>MAX": twins(
            19,
            receipt_body(0, [(i, b"k") for i in range(MAX_PARTIES)]),
            receipt_body(0, [(i, b"k") for i in range(MAX_PARTIES + 1)]),
        ),
        "receipt-missing-complaints": twins(19, receipt_body(0, []), lambda w: w.u32(0)),
        "members-unsorted": twins(20, survivors_body([1, 2]), survivors_body([2, 1])),
        "members-duplicate": twins(20, survivors_body([1]), survivors_body([1, 1])),
        "members>=MAX": twins(20, survivors_body([4095]), survivors_body([4096])),
        "members-count>MAX": twins(20, survivors_body(range(4096)), survivors_body(range(4097))),
        "masked-sender": twins(6, masked_body(0, None, 4, [1]), masked_body(4096, None, 4, [1])),
        "masked-target>=MAX": twins(6, masked_body(0, 4095, 4, [1]), masked_body(0, 4096, 4, [1])),
        "masked-target-next-to-sentinel": twins(
            6, masked_body(0, NO_TARGET, 4, [1]), masked_body(0, NO_TARGET - 1, 4, [1])
        ),
        "masked-target-2**31": twins(6, masked_body(0, 0, 4, [1]), masked_body(0, 2**31, 4, [1])),
        "masked-missing-target": twins(
            6, masked_body(0, None, 4, []), lambda w: vector_body(4, [])(w.u32(0))
        ),
        "masked-dtype-code": twins(
            6, masked_body(0, None, 8, [1]), masked_body(0, None, 2, [1, 2, 3, 4])
        ),
        "survivors-unsorted": twins(7, survivors_body([1, 2]), survivors_body([2, 1])),
        "survivors-duplicate": twins(7, survivors_body([1]), survivors_body([1, 1])),
        "survivors>=MAX": twins(7, survivors_body([4095]), survivors_body([4096])),
        "survivors-count>MAX": twins(7, survivors_body(range(4096)), survivors_body(range(4097))),
        "consistency-sender": twins(8, digest_body(0, digest), digest_body(4096, digest)),
        "unmask-request-unsorted": twins(
            9, unmask_request_body([0], signatures[:2]), unmask_request_body([0], signatures[1::-1])
        ),
        "both-shares-of-one-owner": twins(
            10,
            unmask_response_body(0, [(1, b"s")], [(2, b"s")]),
            unmask_response_body(0, [(1, b"s")], [(1, b"s")]),
        ),
        "revealed-unsorted": twins(
            10,
            unmask_response_body(0, [(1, b""), (2, b"")], []),
            unmask_response_body(0, [(2, b""), (1, b"")], []),
        ),
        "revealed-share-65": twins(
            10,
            unmask_response_body(0, [(1, b"s" * 64)], []),
            unmask_response_body(0, [(1, b"s" * 65)], []),
        ),
        "abort-reason-1025": twins(11, abort_body(b"x" * 1024), abort_body(b"x" * 1025)),
        "abort-reason-truncated-utf8": twins(11, abort_body(b"\xc3\xa9"), abort_body(b"\xc3")),
        "abort-reason-overlong-utf8": twins(11, abort_body(b"/"), abort_body(b"\xc0\xaf")),
        "abort-reason-surrogate": twins(11, abort_body(b"x"), abort_body(b"\xed\xa0\x80")),
        "blinded-recipient>=MAX": twins(
            12, blinded_body(4095, [0], 4, [1]), blinded_body(4096, [0], 4, [1])
        ),
        "blinded-survivors-unsorted": twins(
            12, blinded_body(0, [1, 2], 4, [1]), blinded_body(0, [2, 1], 4, [1])
        ),
        "blinded-survivors-duplicate": twins(
            12, blinded_body(0, [1], 4, [1]), blinded_body(0, [1, 1], 4, [1])
        ),
        "blinded-survivors>=MAX": twins(
            12, blinded_body(0, [4095], 4, [1]), blinded_body(0, [4096], 4, [1])
        ),
        "blinded-survivors-count>MAX": twins(
            12, blinded_body(0, range(4096), 8, []), blinded_body(0, range(4097), 8, [])
        ),
        "blinded-dtype-code": twins(
            12, blinded_body(0, [0], 8, [1]), blinded_body(0, [0], 2, [1, 2, 3, 4])
        ),
        "blinded-dtype-code-0": twins(12, blinded_body(0, [0], 4, []), blinded_body(0, [0], 0, [])),
        "blinded-vector-truncated": twins(
            12,
            blinded_body(0, [0], 8, [1]),
            lambda w: survivors_body([0])(w.u32(0)).u8(8).u32(2).fixed(bytes(8), 8),
        ),
    }
    params = [pytest.param(valid, invalid, id=name) for name, (valid, invalid) in cases.items()]
    # share records validate while their message's fields are read: still the peer's fault
    params += [
        pytest.param(
            index_overflow(kind, MAX_PARTIES - 1),
            index_overflow(kind),
            id=f"{kind.name.lower()}-share-index>=MAX",
        )
        for kind in SHARE_CARRIERS
    ]
    return params


@pytest.mark.parametrize(("valid", "invalid"), invalid_encodings())
def test_decoder_refuses_invalid_content_as_remote_protocol_error(
    valid: bytes, invalid: bytes
) -> None:
    assert decode(valid)._compute_bytes() == valid
    with pytest.raises(RemoteProtocolError):  # any other exception propagates and fails
        decode(invalid)


def test_wire_tags_are_the_documented_numbers() -> None:
    """Tags are never reused: the three messages of the verify phase took new numbers."""
    assert {kind.name: kind.value for kind in MessageType} == {
        "ADVERTISE_KEYS": 1,
        "KEY_DIRECTORY": 2,
        "SHARE_COMMITMENT": 3,
        "SHARE_KEYS": 4,
        "SHARE_BUNDLE": 5,
        "MASKED_INPUT": 6,
        "CONSISTENCY_REQUEST": 7,
        "CONSISTENCY_SIGNATURE": 8,
        "UNMASK_REQUEST": 9,
        "UNMASK_RESPONSE": 10,
        "ABORT": 11,
        "BLINDED_OUTPUT": 12,
        "SESSION_KEY": 13,
        "SESSION_KEY_DIRECTORY": 14,
        "SKETCH_SEED_COMMITMENT": 15,
        "SKETCH_SEED_OFFER": 16,
        "SKETCH_SEED_DELIVERY": 17,
        "DEALT_SHARE": 18,
        "SHARE_RECEIPT": 19,
        "MASK_REQUEST": 20,
    }
    assert ShareReceipt.SIGNER is SignedBy.CLIENT
    assert DealtShare.SIGNER is SignedBy.COVERED  # by its dealer's signed dealt root
    assert MaskRequest.SIGNER is SignedBy.SERVER


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"SF",
        b"SF\x01",
        b"XF\x01\x01",
        b"SF\x02\x01",
        b"SF\x01\x00",
        b"SF\x01\x15",  # 20 is MASK_REQUEST, the last tag in use
        b"SF\x01\xff",
    ],
)
def test_decoder_refuses_bad_headers(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        decode(data + b"\x00" * 64)


def test_decoder_refuses_non_bytes() -> None:
    for bad in (None, "SF", 5, [83, 70]):
        with pytest.raises(RemoteProtocolError):
            decode(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", VARIANTS)
def test_decoder_refuses_every_truncation_and_any_trailing_byte(name: str) -> None:
    data = samples()[name].to_bytes()
    for cut in range(len(data)):
        with pytest.raises(RemoteProtocolError):
            decode(data[:cut])
    with pytest.raises(RemoteProtocolError):
        decode(data + b"\x00")


@pytest.mark.parametrize("name", VECTOR_CARRIERS)
def test_the_vector_is_frozen_with_the_message(name: str) -> None:
    message: Any = samples()[name]
    with pytest.raises(ValueError, match="read-only"):
        message.vector[0] = 1
    decoded: Any = decode(message.to_bytes())
    assert type(decoded) is type(message)
    assert not decoded.vector.flags.writeable
    # the caller's array cannot change the message (and its signed payload) after the fact
    fresh = np.arange(4, dtype=np.uint64)
    built = dataclasses.replace(message, vector=fresh)
    encoded, payload = built.to_bytes(), built.signed_payload()
    with contextlib.suppress(ValueError):
        fresh[0] = 9
    assert built.to_bytes() == encoded
    assert built.signed_payload() == payload
