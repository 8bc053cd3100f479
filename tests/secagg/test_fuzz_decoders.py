"""Fuzzing the message decoder (the h11 invariant, STYLE.md).

Any input either decodes to a Message or raises RemoteProtocolError -- no other exception, no
hang -- and an input that decodes is the canonical encoding of what it decodes to (re-encoding
gives the same bytes). Inputs: (a) arbitrary bytes; (b) real encodings of every message type (in
both forms where a type has two on the wire: sum and attention, Feldman and plain Shamir
commitments, receipts with and without a complaint), mutated by flips, overwrites, insertions,
deletions, truncations and splices, plus a deterministic sweep of every single-byte edit; (c)
valid headers followed by random bodies, either a soup of field-shaped tokens or each type's
fields written with random, often invalid, values.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from securefed.errors import RemoteProtocolError
from securefed.secagg.messages import MAX_PARTIES, MAX_WEIGHTS_BYTES, Message, MessageType, decode
from securefed.secagg.wire import Writer
from tests.secagg.conftest import SESSION
from tests.secagg.test_messages import (
    NO_TARGET,
    POLYNOMIAL_LIMIT,
    VARIANTS,
    Body,
    abort_body,
    advertise_body,
    blinded_body,
    blobs,
    commitment_body,
    dealt_body,
    digest_body,
    key_directory_body,
    masked_body,
    receipt_body,
    recorded,
    samples,
    seed_delivery_body,
    seed_offer_body,
    session_key_body,
    share_bundle_body,
    share_keys_body,
    survivors_body,
    unmask_request_body,
    unmask_response_body,
)

FUZZ = settings(max_examples=120, deadline=timedelta(milliseconds=500))
HEADER = len(b"SF") + 2  # magic, version, tag: mutations after it keep the message type


def decodes_or_rejects(data: bytes) -> Message | None:
    """The decoder invariant. Returns the message, or None when it was rejected properly."""
    try:
        message = decode(data)
    except RemoteProtocolError:
        return None
    except BaseException as exc:  # anything else breaks the invariant: re-raise, exact type
        exc.add_note(f"decode() raised {type(exc).__name__}, not RemoteProtocolError, on")
        exc.add_note(data.hex())
        raise
    assert isinstance(message, Message)
    # Re-encoded from the fields (to_bytes() keeps the decoded bytes): canonical or refused.
    assert message._compute_bytes() == data, "accepted a non-canonical encoding"
    return message


KINDS = [pytest.param(kind, id=kind.name) for kind in MessageType]
KNOWN_TAGS = {kind.value for kind in MessageType}


def u32(value: int) -> bytes:
    return value.to_bytes(4, "big")


# --- (a) arbitrary bytes -------------------------------------------------------------------------


@settings(FUZZ, max_examples=400)
@given(data=st.binary(max_size=4096))
def test_arbitrary_bytes_decode_or_raise_remote_protocol_error(data: bytes) -> None:
    decodes_or_rejects(data)


@settings(FUZZ, max_examples=200)
@given(
    prefix=st.sampled_from([b"", b"S", b"SF", b"SF\x01", b"SF\x00", b"SF\x02"]), data=st.binary()
)
def test_partial_headers_are_rejected(prefix: bytes, data: bytes) -> None:
    if not (prefix + data).startswith(b"SF\x01"):
        with pytest.raises(RemoteProtocolError):
            decode(prefix + data)


# --- (b) real encodings, mutated -----------------------------------------------------------------


def _flip(data: bytes, at: int, m: Mutation) -> bytes:
    if at == len(data):
        return data
    return data[:at] + bytes([data[at] ^ (m.payload[0] or 1)]) + data[at + 1 :]


def _overwrite(data: bytes, at: int, m: Mutation) -> bytes:
    return data[:at] + m.payload + data[at + len(m.payload) :]


def _insert(data: bytes, at: int, m: Mutation) -> bytes:
    return data[:at] + m.payload + data[at:]


def _delete(data: bytes, at: int, m: Mutation) -> bytes:
    return data[:at] + data[at + 1 + m.other_position % 16 :]


def _truncate(data: bytes, at: int, m: Mutation) -> bytes:
    return data[:at]


def _splice(data: bytes, at: int, m: Mutation) -> bytes:
    tail = recorded()[m.other % len(recorded())].to_bytes()
    return data[:at] + tail[m.other_position % (len(tail) + 1) :]


@dataclass(frozen=True)
class Mutation:
    """One edit of an encoding. Positions are reduced modulo the body so that any draw applies;
    edits never touch the 4-byte header, so the message type stays the one under test (the
    deterministic sweep below covers the header)."""

    edit: Callable[[bytes, int, Mutation], bytes]
    position: int
    payload: bytes = b""
    other: int = 0  # which recorded message a splice takes its tail from
    other_position: int = 0

    def apply(self, data: bytes) -> bytes:
        body = max(len(data) - HEADER, 0)
        return self.edit(data, HEADER + self.position % (body + 1), self)


INTERESTING_U32 = [0, 1, 2, 32, 64, 4095, 4096, 65536, 2**31, 2**32 - 1]
positions = st.integers(0, 1 << 16)
mutations = st.one_of(
    st.builds(Mutation, st.just(_flip), positions, st.binary(min_size=1, max_size=1)),
    st.builds(Mutation, st.just(_overwrite), positions, st.binary(min_size=1, max_size=4)),
    st.builds(Mutation, st.just(_overwrite), positions, st.sampled_from(INTERESTING_U32).map(u32)),
    st.builds(Mutation, st.just(_insert), positions, st.binary(min_size=1, max_size=8)),
    st.builds(Mutation, st.just(_delete), positions, other_position=st.integers(0, 15)),
    st.builds(Mutation, st.just(_truncate), positions),
    st.builds(
        Mutation,
        st.just(_splice),
        positions,
        other=st.integers(0, 1 << 10),
        other_position=positions,
    ),
)


def mutate(data: bytes, program: Sequence[Mutation]) -> bytes:
    for mutation in program:
        data = mutation.apply(data)
    return data


@FUZZ
@given(program=st.lists(mutations, min_size=1, max_size=4))
def fuzz_mutations(name: str, program: list[Mutation]) -> None:
    decodes_or_rejects(mutate(samples()[name].to_bytes(), program))


@pytest.mark.parametrize("name", VARIANTS)
def test_mutated_encodings_decode_canonically_or_raise_remote_protocol_error(name: str) -> None:
    fuzz_mutations(name=name)


def single_byte_edits(data: bytes) -> list[bytes]:
    """Every single-byte flip (low and high bit), 0x00/0xff overwrite, deletion and insertion."""
    edits = []
    for at in range(len(data)):
        head, byte, tail = data[:at], data[at], data[at + 1 :]
        for value in {byte ^ 0x01, byte ^ 0x80, 0x00, 0xFF} - {byte}:
            edits.append(head + bytes([value]) + tail)
        edits += [head + tail, head + b"\x00" + data[at:]]
    return edits


@pytest.mark.parametrize("name", VARIANTS)
def test_every_single_byte_edit_decodes_canonically_or_raises(name: str) -> None:
    """Deterministic sweep over the whole encoding, header included."""
    message = samples()[name]
    accepted = [
        m for m in map(decodes_or_rejects, single_byte_edits(message.to_bytes())) if m is not None
    ]
    # edits inside the signature (and keys, hashes, shares, words) still decode: the invariant
    # was exercised on both branches
    assert accepted
    assert all(m.TYPE is message.TYPE for m in accepted)


# --- (c) valid header, random body ---------------------------------------------------------------
#
# Two kinds of body: a soup of loosely typed tokens (counts, blobs, digests, nested messages), and
# a per-type grammar that writes the documented fields with random -- often invalid -- values
# (indices at and past MAX_PARTIES, lengths at and past each limit, unsorted and duplicate lists).
# The grammar reaches the constructors' validation; the soup reaches framing errors.


def nested_encodings() -> list[bytes]:
    """Real encodings of the types that other messages nest, to get random bodies deeper."""
    nested = ["ADVERTISE_KEYS-sum", "ADVERTISE_KEYS-attention"]
    nested += ["SHARE_COMMITMENT-feldman", "SHARE_COMMITMENT-shamir", "DEALT_SHARE"]
    nested += ["CONSISTENCY_SIGNATURE", "SESSION_KEY", "SKETCH_SEED_COMMITMENT"]
    return [samples()[name].to_bytes() for name in nested]


def with_length(data: bytes) -> bytes:
    return u32(len(data)) + data


nested = st.one_of(st.deferred(lambda: st.sampled_from(nested_encodings())), st.binary(max_size=40))
tokens = st.one_of(
    st.integers(0, 6).map(u32),  # counts, indices, small lengths
    st.sampled_from(INTERESTING_U32).map(u32),
    st.binary(max_size=48).map(with_length),  # a blob
    nested.map(with_length),
    st.sampled_from([b"\x04", b"\x08"]),  # vector dtype codes
    st.binary(min_size=32, max_size=32),  # digests
    st.binary(max_size=8),
)
soups = st.lists(tokens, max_size=12).map(b"".join)

indices = st.one_of(st.integers(0, 6), st.sampled_from([MAX_PARTIES - 1, MAX_PARTIES, 2**32 - 1]))
index_lists = st.one_of(
    st.lists(indices, max_size=4), st.lists(indices, max_size=4, unique=True).map(sorted)
)
LENGTHS = [0, 1, 31, 32, 33, 36, 37, 64, 65, 133, 134, 256, 257, 1024, 1025]
fields = st.one_of(st.binary(max_size=40), st.sampled_from(LENGTHS).map(lambda n: b"\x01" * n))
field_lists = st.lists(fields, max_size=4)
# Feldman commitments: a short blob, the size of a real one (t = 4), or at and past the limit
polynomials = st.one_of(
    fields,
    st.sampled_from([6 + 65 * 4, POLYNOMIAL_LIMIT, POLYNOMIAL_LIMIT + 1]).map(
        lambda n: b"\x01" * n
    ),
)
digests = st.binary(min_size=32, max_size=32)  # fixed-width: a wrong length is a framing error
pair_lists = st.one_of(
    st.lists(st.tuples(indices, fields), max_size=3),
    st.lists(st.tuples(indices, fields), max_size=3, unique_by=lambda p: p[0]).map(sorted),
)
nested_lists = st.lists(nested, max_size=3)
words = st.lists(st.integers(0, 255), max_size=6)
codes = st.sampled_from([4, 8, 2])  # uint32, uint64, and a code outside the rings
# None is the sentinel 0xFFFFFFFF; its neighbours and the index bounds are invalid or edge values
targets = st.one_of(st.none(), indices, st.sampled_from([NO_TARGET - 1, 2**31]))
# weights: a short blob, or a run of bytes at and past MAX_WEIGHTS_BYTES
weight_blobs = st.one_of(
    fields,
    st.sampled_from([MAX_WEIGHTS_BYTES, MAX_WEIGHTS_BYTES + 1]).map(lambda n: b"\x01" * n),
)
GRAMMAR: dict[MessageType, st.SearchStrategy[Body]] = {
    MessageType.ADVERTISE_KEYS: st.builds(advertise_body, indices, field_lists, fields, fields),
    MessageType.KEY_DIRECTORY: st.builds(key_directory_body, nested_lists, weight_blobs),
    MessageType.SHARE_COMMITMENT: st.builds(
        commitment_body, indices, digests, polynomials, polynomials
    ),
    MessageType.DEALT_SHARE: st.builds(dealt_body, indices, indices, fields),
    MessageType.SHARE_KEYS: st.builds(share_keys_body, nested, nested_lists),
    MessageType.SHARE_BUNDLE: st.builds(share_bundle_body, indices, nested_lists, nested_lists),
    MessageType.SHARE_RECEIPT: st.builds(receipt_body, indices, pair_lists),
    MessageType.MASK_REQUEST: index_lists.map(survivors_body),
    MessageType.MASKED_INPUT: st.builds(masked_body, indices, targets, codes, words),
    MessageType.CONSISTENCY_REQUEST: index_lists.map(survivors_body),
    MessageType.CONSISTENCY_SIGNATURE: st.builds(digest_body, indices, digests),
    MessageType.UNMASK_REQUEST: st.builds(unmask_request_body, index_lists, nested_lists),
    MessageType.UNMASK_RESPONSE: st.builds(unmask_response_body, indices, pair_lists, pair_lists),
    MessageType.ABORT: st.one_of(fields, st.text(max_size=20).map(str.encode)).map(abort_body),
    MessageType.BLINDED_OUTPUT: st.builds(blinded_body, indices, index_lists, codes, words),
    MessageType.SESSION_KEY: st.builds(session_key_body, indices, fields),
    MessageType.SESSION_KEY_DIRECTORY: nested_lists.map(blobs),
    MessageType.SKETCH_SEED_COMMITMENT: st.builds(digest_body, indices, digests),
    MessageType.SKETCH_SEED_OFFER: st.builds(seed_offer_body, nested, pair_lists),
    MessageType.SKETCH_SEED_DELIVERY: st.builds(
        seed_delivery_body, indices, nested, indices, fields
    ),
}


def written(body: Body) -> bytes:
    w = Writer()
    body(w)
    return w.getvalue()


# Tails after the body: mostly a well-formed signature field, sometimes none, an oversized one
# (257 bytes) or trailing junk.
signatures = st.sampled_from(
    [with_length(b"s" * n) for n in (0, 64, 64, 256, 257)] + [b"", b"\x00\x00", b"\x00" * 5]
)
preambles = st.builds(
    lambda session, round_: session + round_.to_bytes(8, "big"),
    st.one_of(st.just(SESSION), st.binary(min_size=32, max_size=32)),
    st.sampled_from([0, 1, 2**63 - 1, 2**63, 2**64 - 1]),
)


@FUZZ
@given(preamble=preambles, data=st.data(), signature=signatures)
def fuzz_bodies(kind: MessageType, preamble: bytes, data: st.DataObject, signature: bytes) -> None:
    body = data.draw(st.one_of(soups, GRAMMAR[kind].map(written)), label="body")
    message = decodes_or_rejects(b"SF\x01" + bytes([kind.value]) + preamble + body + signature)
    assert message is None or message.TYPE is kind


@pytest.mark.parametrize("kind", KINDS)
def test_valid_header_with_random_body_decodes_canonically_or_raises(kind: MessageType) -> None:
    fuzz_bodies(kind=kind)


def test_the_grammar_covers_every_type() -> None:
    assert set(GRAMMAR) == set(MessageType)


UNKNOWN_TAGS = sorted(set(range(256)) - KNOWN_TAGS)


@settings(FUZZ, max_examples=100)
@given(tag=st.sampled_from(UNKNOWN_TAGS), body=st.binary(max_size=512))
def test_unknown_tags_are_rejected(tag: int, body: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        decode(b"SF\x01" + bytes([tag]) + body)
