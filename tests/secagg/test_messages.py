"""Typed protocol messages: one canonical encoding, validating constructors, strict decoding.

Valid instances of every message type come from two real rounds (the harness records every hop):
a sum round and an attention round, so that the fields whose content depends on the mode are seen
both ways (empty and non-empty target key and weights, MaskedInput with and without a target); plus
a signed Abort. Invalid content is refused twice: by the constructor (LocalProtocolError:
we tried to build it) and, crafted by hand with Writer, by the decoder (RemoteProtocolError: a
peer sent it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest

from securefed.crypto import SigningKey
from securefed.crypto.hashing import tree_sha256
from securefed.encoding import CodecConfig, RingBits
from securefed.errors import InvalidSignature, LocalProtocolError, RemoteProtocolError
from securefed.secagg import AggregationMode, Stage
from securefed.secagg.messages import (
    MAX_PARTIES,
    MAX_WEIGHTS_BYTES,
    Abort,
    AdvertiseKeys,
    BlindedOutput,
    ConsistencyRequest,
    ConsistencySignature,
    KeyDirectory,
    MaskedInput,
    Message,
    MessageType,
    SealedShare,
    SessionKey,
    SessionKeyDirectory,
    ShareBundle,
    ShareCommitment,
    ShareKeys,
    SignedBy,
    SketchSeedCommitment,
    SketchSeedDelivery,
    SketchSeedOffer,
    UnmaskRequest,
    UnmaskResponse,
    decode,
    decode_as,
    sign_message,
)
from securefed.secagg.policy import WeightPolicy, encode_weights, enforce_policy
from securefed.secagg.server import Envelope
from securefed.secagg.session import SessionSetupClient, SessionSetupServer
from securefed.secagg.wire import Writer
from securefed.testing import run_round
from tests.secagg.conftest import SESSION, config_for, federation, inputs_for

N_CLIENTS = 5
DROPPED = 4  # drops out before MASK: its mask key is revealed, so UnmaskResponse has both lists
DIM = 8
SUM_ROUND, ATTENTION_ROUND = 1, 2
POLICY = WeightPolicy(k_min=2.0, cap=0.6)
ABORT_REASON = "server aborted: only 2 masked inputs, threshold 4 (ünïcödé ✓)"
NO_TARGET = 2**32 - 1  # MaskedInput's wire form of target None

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
)
# Message types whose bodies carry SealedShare / RevealedShare records.
SHARE_CARRIERS = (MessageType.SHARE_KEYS, MessageType.SHARE_BUNDLE, MessageType.UNMASK_RESPONSE)
# Message types whose content depends on the mode: True where a message has the attention form.
MODAL: dict[type[Message], Callable[[Any], bool]] = {
    AdvertiseKeys: lambda m: bool(m.target_key),
    KeyDirectory: lambda m: bool(m.weights),
    MaskedInput: lambda m: m.target is not None,
}
# One sample of every type, and of both forms of the modal types.
VARIANTS = [
    name
    for cls in MESSAGE_CLASSES
    for name in (
        (f"{cls.TYPE.name}-sum", f"{cls.TYPE.name}-attention") if cls in MODAL else (cls.TYPE.name,)
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


def record(round_: int, **options: Any) -> list[Message]:
    """Every message of one real 5-client round (client 4 drops before MASK), in order of sending.
    ``options`` go to config_for, except ``weights`` (to run_round)."""
    fed = federation(N_CLIENTS)
    weights = options.pop("weights", None)
    sent: list[Message] = []

    def client_hook(sender: int, message: Message) -> Sequence[Message]:
        sent.append(message)
        return (message,)

    def server_hook(envelope: Envelope) -> Sequence[Envelope]:
        sent.append(envelope.message)
        return (envelope,)

    outcome = run_round(
        config_for(fed, round_=round_, dim=DIM, **options),
        fed,
        inputs_for(N_CLIENTS, DIM),
        dropouts={DROPPED: Stage.MASK},
        client_hook=client_hook,
        server_hook=server_hook,
        weights=weights,
    )
    assert not outcome.aborted, (outcome.server_events, outcome.client_errors)
    return sent


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


@functools.cache
def recorded() -> tuple[Message, ...]:
    """Every message of a sum round (64-bit ring) and of an attention round (32-bit ring, weights
    from attention_weights), in order of sending, followed by the ShareCommitments nested in
    ShareKeys and a server-signed Abort."""
    sent = record(SUM_ROUND, codec=CodecConfig.default(ring=RingBits.BITS64))
    sent += record(
        ATTENTION_ROUND,
        codec=CodecConfig(RingBits.BITS32, 16, 8.0),
        mode=AggregationMode.ATTENTION,
        policy=POLICY,
        min_contributors=2,
        weights=attention_weights(),
    )
    sent += [m.commitment for m in sent if isinstance(m, ShareKeys)]
    sent += record_session_setup()
    server_key = federation(N_CLIENTS).server_key
    sent.append(sign_message(Abort, server_key, SESSION, SUM_ROUND, reason=ABORT_REASON))
    return tuple(sent)


@functools.cache
def one_of_each() -> dict[MessageType, Message]:
    """The first recorded message of every type (the sum form of the modal types)."""
    first: dict[MessageType, Message] = {}
    for message in recorded():
        first.setdefault(message.TYPE, message)
    return first


def variant(message: Message) -> str:
    """The name of the message's type, with ``-sum`` or ``-attention`` for the modal types."""
    attention = MODAL.get(type(message))
    if attention is None:
        return message.TYPE.name
    return f"{message.TYPE.name}-{'attention' if attention(message) else 'sum'}"


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
    return lambda w: w.items(values, lambda w, p: w.u32(p[0]).blob(p[1]), limit=ANY)


def blobs(values: Sequence[bytes]) -> Body:
    return lambda w: w.items(values, lambda w, b: w.blob(b), limit=ANY)


def advertise_body(sender: int, enc: bytes, mask: bytes, target_key: bytes) -> Body:
    return lambda w: w.u32(sender).blob(enc).blob(mask).blob(target_key)


def key_directory_body(adverts: Sequence[bytes], weights: bytes) -> Body:
    return lambda w: blobs(adverts)(w).blob(weights, limit=ANY)


def digest_body(sender: int, digest: bytes) -> Body:
    """ShareCommitment and ConsistencySignature share this layout (u32 sender, 32 bytes)."""
    return lambda w: w.u32(sender).fixed(digest, 32)


def share_keys_body(commitment: bytes, sealed: Sequence[tuple[int, bytes]]) -> Body:
    return lambda w: pairs(sealed)(w.blob(commitment))


def share_bundle_body(
    recipient: int, commitments: Sequence[bytes], sealed: Sequence[tuple[int, bytes]]
) -> Body:
    return lambda w: pairs(sealed)(blobs(commitments)(w.u32(recipient)))


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
    return lambda w: w.u32(recipient).blob(commitment).u32(dealer).blob(sealed)


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


def revealed(values: Sequence[Any]) -> list[tuple[int, bytes]]:
    return [(s.owner, s.share) for s in values]


# The body of each type by hand; ``signed``: as it enters the signed payload (vectors as digests).
HAND_BODIES: dict[type[Message], Callable[[Any, bool], Body]] = {
    AdvertiseKeys: lambda m, _: advertise_body(
        m.sender, m.encryption_key, m.mask_key, m.target_key
    ),
    KeyDirectory: lambda m, _: key_directory_body(
        [a.to_bytes() for a in m.advertisements], m.weights
    ),
    ShareCommitment: lambda m, _: digest_body(m.sender, m.self_seed_commitment),
    ShareKeys: lambda m, _: share_keys_body(m.commitment.to_bytes(), sealed(m.sealed)),
    ShareBundle: lambda m, _: share_bundle_body(
        m.recipient, [c.to_bytes() for c in m.commitments], sealed(m.sealed)
    ),
    MaskedInput: lambda m, signed: masked_body(
        m.sender, m.target, m.vector.dtype.itemsize, m.vector.tolist(), signed=signed
    ),
    ConsistencyRequest: lambda m, _: survivors_body(m.survivors),
    ConsistencySignature: lambda m, _: digest_body(m.sender, m.transcript_hash),
    UnmaskRequest: lambda m, _: unmask_request_body(
        m.survivors, [c.to_bytes() for c in m.consistency]
    ),
    UnmaskResponse: lambda m, _: unmask_response_body(
        m.sender, revealed(m.self_seed_shares), revealed(m.mask_key_shares)
    ),
    Abort: lambda m, _: abort_body(m.reason.encode()),
    BlindedOutput: lambda m, signed: blinded_body(
        m.recipient, m.survivors, m.vector.dtype.itemsize, m.vector.tolist(), signed=signed
    ),
    SessionKey: lambda m, _: session_key_body(m.sender, m.agreement_key),
    SessionKeyDirectory: lambda m, _: blobs([k.to_bytes() for k in m.keys]),
    SketchSeedCommitment: lambda m, _: digest_body(m.sender, m.commitment),
    SketchSeedOffer: lambda m, _: share_keys_body(m.commitment.to_bytes(), sealed(m.sealed)),
    SketchSeedDelivery: lambda m, _: seed_delivery_body(
        m.recipient, m.commitment.to_bytes(), m.sealed.peer, m.sealed.ciphertext
    ),
}


def body_of(message: Message, *, signed: bool = False) -> Body:
    """The hand-written body of ``message`` (mirrors the documented layout)."""
    return HAND_BODIES[type(message)](message, signed)


def index_overflow(kind: MessageType, index: int = MAX_PARTIES) -> bytes:
    """A share-carrying message whose one sealed/revealed share names ``index`` (default: one
    past the last valid index; ``MAX_PARTIES - 1`` gives its valid twin)."""
    commitment = sample(ShareCommitment).to_bytes()
    bodies = {
        MessageType.SHARE_KEYS: share_keys_body(commitment, [(index, b"ct")]),
        MessageType.SHARE_BUNDLE: share_bundle_body(0, [commitment], [(index, b"ct")]),
        MessageType.UNMASK_RESPONSE: unmask_response_body(0, [], [(index, b"share")]),
    }
    return frame(kind.value, bodies[kind])


def ids(values: Sequence[Any]) -> list[str]:
    return [v.name if isinstance(v, MessageType) else type(v).__name__ for v in values]


ALL_TYPES = list(MessageType)


# --- the recording itself ------------------------------------------------------------------------


def test_the_recording_has_every_message_type_and_rich_content() -> None:
    assert {c.TYPE for c in MESSAGE_CLASSES} == set(MessageType)
    assert set(one_of_each()) == set(MessageType)
    assert set(samples()) == set(VARIANTS)
    responses = [m for m in recorded() if isinstance(m, UnmaskResponse)]
    assert {r.round for r in responses} == {SUM_ROUND, ATTENTION_ROUND}
    for response in responses:
        assert response.self_seed_shares
        assert {s.owner for s in response.mask_key_shares} == {DROPPED}
    assert sample(UnmaskRequest).consistency
    assert sample(ShareBundle).sealed
    assert sample(KeyDirectory).advertisements
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


@pytest.mark.parametrize("kind", ALL_TYPES, ids=ids(ALL_TYPES))
def test_every_recorded_message_is_signed_by_its_sender(kind: MessageType) -> None:
    for message in recorded():
        if message.TYPE is kind:
            signature: bytes = getattr(message, "signature")  # noqa: B009
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


def test_the_signature_is_not_part_of_the_signed_payload() -> None:
    for message in samples().values():
        resigned = dataclasses.replace(message, signature=b"\x00" * 64)
        assert resigned.signed_payload() == message.signed_payload()
        assert resigned.to_bytes() != message.to_bytes()


def assert_signature_does_not_transfer(a: Any, b: Any, key: SigningKey) -> None:
    """``a`` is signed by ``key``; ``b`` (another type, same field values) reuses its signature."""
    key.verify_key().verify(a.signature, a.signed_payload())
    forged = dataclasses.replace(b, signature=a.signature)
    with pytest.raises(InvalidSignature):
        key.verify_key().verify(forged.signature, forged.signed_payload())


def test_a_client_signature_never_verifies_as_another_type_with_the_same_fields() -> None:
    """ShareCommitment and ConsistencySignature have the same fields (u32 sender, 32 bytes)."""
    key = federation(N_CLIENTS).client_keys[1]
    digest = bytes(range(100, 132))
    commitment = sign_message(
        ShareCommitment, key, SESSION, 1, sender=1, self_seed_commitment=digest
    )
    consistency = sign_message(
        ConsistencySignature, key, SESSION, 1, sender=1, transcript_hash=digest
    )
    unsigned = [dataclasses.replace(m, signature=b"").to_bytes() for m in (commitment, consistency)]
    assert unsigned[0][4:] == unsigned[1][4:]  # only the tag byte differs on the wire
    assert_signature_does_not_transfer(commitment, consistency, key)
    assert_signature_does_not_transfer(consistency, commitment, key)


def test_a_server_signature_never_verifies_as_another_type_with_the_same_fields() -> None:
    key = federation(N_CLIENTS).server_key
    request = sign_message(ConsistencyRequest, key, SESSION, 1, survivors=(0, 1, 2))
    unmask = sign_message(UnmaskRequest, key, SESSION, 1, survivors=(0, 1, 2), consistency=())
    assert_signature_does_not_transfer(request, unmask, key)
    assert_signature_does_not_transfer(unmask, request, key)


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
    bundle = sample(ShareBundle)
    request = sample(UnmaskRequest)
    response = sample(UnmaskResponse)
    ct = SealedShare(1, b"ct")
    big = "é" * 513  # 513 characters, 1026 bytes: the limit counts bytes
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
        (AdvertiseKeys, "encryption_key", b""),
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
        (ShareKeys, "commitment", sample(ConsistencySignature)),
        (ShareKeys, "sealed", (SealedShare(2, b""), ct)),
        (ShareKeys, "sealed", (ct, ct)),
        (ShareBundle, "recipient", MAX_PARTIES),
        (ShareBundle, "commitments", tuple(reversed(bundle.commitments))),
        (ShareBundle, "commitments", (bundle.commitments[0],) * 2),
        (ShareBundle, "sealed", (ct, ct)),
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


def test_limits_are_inclusive() -> None:
    assert dataclasses.replace(sample(Abort), reason="é" * 512).reason == "é" * 512
    top = dataclasses.replace(sample(AdvertiseKeys), sender=MAX_PARTIES - 1, round=2**63 - 1)
    assert decode(top.to_bytes()) == top
    at_limit: list[Message] = [
        dataclasses.replace(sample(AdvertiseKeys), target_key=b"\x01" * 133),
        dataclasses.replace(sample(KeyDirectory), weights=b"\x01" * MAX_WEIGHTS_BYTES),
        dataclasses.replace(sample(MaskedInput), target=MAX_PARTIES - 1),
        dataclasses.replace(
            sample(BlindedOutput), recipient=MAX_PARTIES - 1, survivors=tuple(range(MAX_PARTIES))
        ),
    ]
    for message in at_limit:
        assert decode(message.to_bytes()) == message


def test_abort_refuses_unencodable_reason_with_local_protocol_error() -> None:
    with pytest.raises(LocalProtocolError):
        dataclasses.replace(sample(Abort), reason="lone surrogate \ud800")


def test_key_directory_refuses_non_messages_with_local_protocol_error() -> None:
    with pytest.raises(LocalProtocolError):
        dataclasses.replace(sample(KeyDirectory), advertisements=(b"not a message",))


LIST_FIELDS = [
    (KeyDirectory, "advertisements"),
    (ShareKeys, "sealed"),
    (ShareBundle, "commitments"),
    (ShareBundle, "sealed"),
    (UnmaskRequest, "consistency"),
    (UnmaskResponse, "self_seed_shares"),
    (UnmaskResponse, "mask_key_shares"),
    (ConsistencyRequest, "survivors"),
    (UnmaskRequest, "survivors"),
    (BlindedOutput, "survivors"),
]


@pytest.mark.parametrize(
    ("cls", "field"), LIST_FIELDS, ids=[f"{c.__name__}-{f}" for c, f in LIST_FIELDS]
)
def test_collection_fields_must_be_tuples(cls: type[Message], field: str) -> None:
    """A list would let a frozen message be reordered after validation (and be unhashable)."""
    message = sample(cls)
    with pytest.raises(LocalProtocolError):
        dataclasses.replace(message, **{field: list(getattr(message, field))})


# --- the decoder refuses the same content (RemoteProtocolError) ----------------------------------


def invalid_encodings() -> list[Any]:
    """Hand-written encodings of invalid content, each next to a valid twin that decodes."""
    ad = sample(AdvertiseKeys)
    adverts = [a.to_bytes() for a in sample(KeyDirectory).advertisements]
    directory: Any = samples()["KEY_DIRECTORY-attention"]
    targeted = [a.to_bytes() for a in directory.advertisements]
    weights = encode_weights(attention_weights())
    commitment = sample(ShareCommitment).to_bytes()
    signatures = [c.to_bytes() for c in sample(UnmaskRequest).consistency]
    key, digest = b"\x01" * 32, bytes(32)
    long_key = key * 4 + b"12345"  # 133 bytes: the key limit

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
            1, advertise_body(4095, key, key, b""), advertise_body(4096, key, key, b"")
        ),
        "empty-key": twins(1, advertise_body(0, key, b"k", b""), advertise_body(0, key, b"", b"")),
        "key-134": twins(
            1, advertise_body(0, long_key, key, b""), advertise_body(0, long_key + b"6", key, b"")
        ),
        "target-key-134": twins(
            1, advertise_body(0, key, key, long_key), advertise_body(0, key, key, long_key + b"6")
        ),
        "advert-missing-target-key": twins(
            1, advertise_body(0, key, key, b""), lambda w: w.u32(0).blob(key).blob(key)
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
        "commitment-sender": twins(3, digest_body(5, digest), digest_body(4096, digest)),
        "share-keys-unsorted": twins(
            4,
            share_keys_body(commitment, [(1, b""), (2, b"")]),
            share_keys_body(commitment, [(2, b""), (1, b"")]),
        ),
        "share-keys-duplicate": twins(
            4,
            share_keys_body(commitment, [(1, b"")]),
            share_keys_body(commitment, [(1, b""), (1, b"")]),
        ),
        "share-keys-ciphertext-1025": twins(
            4,
            share_keys_body(commitment, [(1, b"c" * 1024)]),
            share_keys_body(commitment, [(1, b"c" * 1025)]),
        ),
        "share-keys-nested-wrong-type": twins(
            4, share_keys_body(commitment, []), share_keys_body(signatures[0], [])
        ),
        "share-bundle-recipient": twins(
            5, share_bundle_body(4095, [commitment], []), share_bundle_body(4096, [commitment], [])
        ),
        "share-bundle-duplicate-commitments": twins(
            5, share_bundle_body(0, [commitment], []), share_bundle_body(0, [commitment] * 2, [])
        ),
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
    assert decode(valid).to_bytes() == valid
    with pytest.raises(RemoteProtocolError):  # any other exception propagates and fails
        decode(invalid)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"SF",
        b"SF\x01",
        b"XF\x01\x01",
        b"SF\x02\x01",
        b"SF\x01\x00",
        b"SF\x01\x0d",  # 12 is BLINDED_OUTPUT, the last tag in use
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
