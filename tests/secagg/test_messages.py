"""Typed protocol messages: one canonical encoding, validating constructors, strict decoding.

One valid instance of every message type comes from a real round (the harness records every hop)
plus a signed Abort. Invalid content is refused twice: by the constructor (LocalProtocolError:
we tried to build it) and, crafted by hand with Writer, by the decoder (RemoteProtocolError: a
peer sent it).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest

from securefed.crypto import SigningKey
from securefed.errors import InvalidSignature, LocalProtocolError, RemoteProtocolError
from securefed.secagg import Stage
from securefed.secagg.messages import (
    MAX_PARTIES,
    Abort,
    AdvertiseKeys,
    ConsistencyRequest,
    ConsistencySignature,
    KeyDirectory,
    MaskedInput,
    Message,
    MessageType,
    SealedShare,
    ShareBundle,
    ShareCommitment,
    ShareKeys,
    SignedBy,
    UnmaskRequest,
    UnmaskResponse,
    decode,
    decode_as,
    sign_message,
)
from securefed.secagg.server import Envelope
from securefed.secagg.wire import Writer
from securefed.testing import run_round
from tests.secagg.conftest import SESSION, config_for, federation, inputs_for

N_CLIENTS = 5
DROPPED = 4  # drops out before MASK: its mask key is revealed, so UnmaskResponse has both lists
ABORT_REASON = "server aborted: only 2 masked inputs, threshold 4 (ünïcödé ✓)"

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
)
# Message types whose bodies carry SealedShare / RevealedShare records.
SHARE_CARRIERS = (MessageType.SHARE_KEYS, MessageType.SHARE_BUNDLE, MessageType.UNMASK_RESPONSE)


# --- recording one real round --------------------------------------------------------------------


@functools.cache
def recorded() -> tuple[Message, ...]:
    """Every message of a real 5-client round (client 4 drops before MASK), in order of sending,
    followed by the ShareCommitments nested in ShareKeys and a server-signed Abort."""
    fed = federation(N_CLIENTS)
    sent: list[Message] = []

    def client_hook(sender: int, message: Message) -> Sequence[Message]:
        sent.append(message)
        return (message,)

    def server_hook(envelope: Envelope) -> Sequence[Envelope]:
        sent.append(envelope.message)
        return (envelope,)

    outcome = run_round(
        config_for(fed, dim=8),
        fed,
        inputs_for(N_CLIENTS, 8),
        dropouts={DROPPED: Stage.MASK},
        client_hook=client_hook,
        server_hook=server_hook,
    )
    assert not outcome.aborted, outcome.server_events
    sent += [m.commitment for m in sent if isinstance(m, ShareKeys)]
    sent.append(sign_message(Abort, fed.server_key, SESSION, 1, reason=ABORT_REASON))
    return tuple(sent)


@functools.cache
def one_of_each() -> dict[MessageType, Message]:
    """The first recorded message of every type."""
    first: dict[MessageType, Message] = {}
    for message in recorded():
        first.setdefault(message.TYPE, message)
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


def frame(tag: int, body: Body, *, round_: int = 1, signature: bytes = b"") -> bytes:
    """``b"SF" | 1 | tag | session_id | round | body | signature`` written with Writer."""
    w = Writer().fixed(b"SF", 2).u8(1).u8(tag).fixed(SESSION, 32).u64(round_)
    body(w)
    return w.blob(signature).getvalue()


def pairs(values: Sequence[tuple[int, bytes]]) -> Body:
    return lambda w: w.items(values, lambda w, p: w.u32(p[0]).blob(p[1]), limit=ANY)


def blobs(values: Sequence[bytes]) -> Body:
    return lambda w: w.items(values, lambda w, b: w.blob(b), limit=ANY)


def advertise_body(sender: int, enc: bytes, mask: bytes) -> Body:
    return lambda w: w.u32(sender).blob(enc).blob(mask)


def digest_body(sender: int, digest: bytes) -> Body:
    """ShareCommitment and ConsistencySignature share this layout (u32 sender, 32 bytes)."""
    return lambda w: w.u32(sender).fixed(digest, 32)


def share_keys_body(commitment: bytes, sealed: Sequence[tuple[int, bytes]]) -> Body:
    return lambda w: pairs(sealed)(w.blob(commitment))


def share_bundle_body(
    recipient: int, commitments: Sequence[bytes], sealed: Sequence[tuple[int, bytes]]
) -> Body:
    return lambda w: pairs(sealed)(blobs(commitments)(w.u32(recipient)))


def masked_body(sender: int, code: int, words: Sequence[int]) -> Body:
    raw = b"".join(v.to_bytes(code, "little") for v in words)
    return lambda w: w.u32(sender).u8(code).u32(len(words)).fixed(raw, len(raw))


def survivors_body(survivors: Sequence[int]) -> Body:
    return lambda w: w.indices(survivors, limit=ANY)


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


HAND_BODIES: dict[type[Message], Callable[[Any], Body]] = {
    AdvertiseKeys: lambda m: advertise_body(m.sender, m.encryption_key, m.mask_key),
    KeyDirectory: lambda m: blobs([a.to_bytes() for a in m.advertisements]),
    ShareCommitment: lambda m: digest_body(m.sender, m.self_seed_commitment),
    ShareKeys: lambda m: share_keys_body(m.commitment.to_bytes(), sealed(m.sealed)),
    ShareBundle: lambda m: share_bundle_body(
        m.recipient, [c.to_bytes() for c in m.commitments], sealed(m.sealed)
    ),
    MaskedInput: lambda m: masked_body(m.sender, m.vector.dtype.itemsize, m.vector.tolist()),
    ConsistencyRequest: lambda m: survivors_body(m.survivors),
    ConsistencySignature: lambda m: digest_body(m.sender, m.transcript_hash),
    UnmaskRequest: lambda m: unmask_request_body(
        m.survivors, [c.to_bytes() for c in m.consistency]
    ),
    UnmaskResponse: lambda m: unmask_response_body(
        m.sender, revealed(m.self_seed_shares), revealed(m.mask_key_shares)
    ),
    Abort: lambda m: abort_body(m.reason.encode()),
}


def body_of(message: Message) -> Body:
    """The hand-written body of ``message`` (mirrors the documented layout)."""
    return HAND_BODIES[type(message)](message)


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
    response = sample(UnmaskResponse)
    assert response.self_seed_shares
    assert {s.owner for s in response.mask_key_shares} == {DROPPED}
    assert sample(UnmaskRequest).consistency
    assert sample(ShareBundle).sealed
    assert sample(KeyDirectory).advertisements


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


@pytest.mark.parametrize("kind", ALL_TYPES, ids=ids(ALL_TYPES))
def test_encoding_follows_the_documented_layout(kind: MessageType) -> None:
    """Writing the fields by hand gives exactly to_bytes(): the layout is the documented one."""
    message: Any = one_of_each()[kind]
    assert message.to_bytes() == frame(kind.value, body_of(message), signature=message.signature)


@pytest.mark.parametrize("kind", ALL_TYPES, ids=ids(ALL_TYPES))
def test_decode_as_accepts_only_its_own_type(kind: MessageType) -> None:
    message = one_of_each()[kind]
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


def test_masked_inputs_compare_by_encoding() -> None:
    m = sample(MaskedInput)
    same = dataclasses.replace(m, vector=m.vector.copy())
    wider = dataclasses.replace(m, vector=m.vector.astype(np.uint64))
    assert same == m
    assert hash(same) == hash(m)
    assert wider != m


# --- signatures are domain-separated -------------------------------------------------------------


def test_signed_payload_starts_with_a_prefix_free_type_label() -> None:
    labels = []
    for kind, message in one_of_each().items():
        label = f"securefed/v1/sig/{kind.name.lower()}".encode() + b"\x00"
        assert message.signed_payload().startswith(label)
        labels.append(label)
    for a, b in itertools.permutations(labels, 2):
        assert not b.startswith(a)


def test_no_signed_payload_is_a_prefix_of_another_types_payload() -> None:
    for a, b in itertools.permutations(recorded(), 2):
        if a.TYPE is not b.TYPE:
            assert not b.signed_payload().startswith(a.signed_payload())


def test_the_signature_is_not_part_of_the_signed_payload() -> None:
    for message in one_of_each().values():
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


@pytest.mark.parametrize("kind", ALL_TYPES, ids=ids(ALL_TYPES))
def test_a_signature_never_verifies_for_another_session_or_round(kind: MessageType) -> None:
    message: Any = one_of_each()[kind]
    verify_key = signer(message).verify_key()
    other_session = bytes(32)
    for moved in (
        dataclasses.replace(message, round=message.round + 1),
        dataclasses.replace(message, session_id=other_session),
    ):
        with pytest.raises(InvalidSignature):
            verify_key.verify(moved.signature, moved.signed_payload())


def test_masked_input_payload_binds_the_ring_not_just_the_raw_bytes() -> None:
    m = sample(MaskedInput)
    narrow = dataclasses.replace(m, vector=np.array([1, 0, 2, 0], dtype=np.uint32))
    wide = dataclasses.replace(m, vector=np.array([1, 2], dtype=np.uint64))
    assert narrow.vector_digest() == wide.vector_digest()
    assert narrow.signed_payload() != wide.signed_payload()
    changed = m.vector.copy()
    changed[-1] ^= 1
    assert dataclasses.replace(m, vector=changed).signed_payload() != m.signed_payload()


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
        (KeyDirectory, "advertisements", tuple(reversed(adverts))),
        (KeyDirectory, "advertisements", (adverts[0], adverts[0])),
        (KeyDirectory, "advertisements", (sample(ConsistencySignature),)),
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
        "sender>=MAX": twins(1, advertise_body(4095, key, key), advertise_body(4096, key, key)),
        "empty-key": twins(1, advertise_body(0, key, b"k"), advertise_body(0, key, b"")),
        "key-134": twins(
            1, advertise_body(0, long_key, key), advertise_body(0, long_key + b"6", key)
        ),
        "adverts-unsorted": twins(2, blobs(adverts[:2]), blobs(adverts[1::-1])),
        "adverts-duplicate": twins(2, blobs(adverts[:1]), blobs(adverts[:1] * 2)),
        "adverts-wrong-nested-type": twins(2, blobs(adverts[:1]), blobs([commitment])),
        "adverts-nested-trailing-byte": twins(2, blobs(adverts[:1]), blobs([adverts[0] + b"\0"])),
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
        "masked-sender": twins(6, masked_body(0, 4, [1]), masked_body(4096, 4, [1])),
        "masked-dtype-code": twins(6, masked_body(0, 8, [1]), masked_body(0, 2, [1, 2, 3, 4])),
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
        b"SF\x01\x0c",
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


@pytest.mark.parametrize("kind", ALL_TYPES, ids=ids(ALL_TYPES))
def test_decoder_refuses_every_truncation_and_any_trailing_byte(kind: MessageType) -> None:
    data = one_of_each()[kind].to_bytes()
    for cut in range(len(data)):
        with pytest.raises(RemoteProtocolError):
            decode(data[:cut])
    with pytest.raises(RemoteProtocolError):
        decode(data + b"\x00")


def test_masked_input_vector_is_frozen_with_the_message() -> None:
    message = sample(MaskedInput)
    with pytest.raises(ValueError, match="read-only"):
        message.vector[0] = 1
    decoded = decode(message.to_bytes())
    assert isinstance(decoded, MaskedInput)
    assert not decoded.vector.flags.writeable
