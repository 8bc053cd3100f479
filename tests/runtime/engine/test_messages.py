"""The engine's messages (securefed/runtime/engine/messages.py): one canonical encoding each.

Any bytes either decode to exactly one message or raise RemoteProtocolError -- nothing else, no
hang -- and what decodes re-encodes to the same bytes. Every kind round-trips; oversized fields,
trailing bytes, unknown kinds, other magic or versions are refused before anything is allocated.
"""

from __future__ import annotations

import math
import struct
from datetime import timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from securefed.audit import Head
from securefed.errors import ConfigError, RemoteProtocolError
from securefed.runtime.engine import messages as m

FUZZ = settings(max_examples=300, deadline=timedelta(milliseconds=500))
HEADER = m.MAGIC + bytes([m.VERSION])
HEAD = Head("bank-1", 7, "ab" * 32)
SERVER_HEAD = Head("server", 3, "cd" * 32)
NEXT = m.NextRound(2, (0, 1, 0, 1), (bytes(range(32)), bytes(range(1, 33))))
VECTOR = np.array([0.5, -1.25, 3.0])


def samples() -> list[m.Request | m.Reply]:
    """At least one message of every kind, with every optional part present somewhere."""
    part = m.AdvertPart(2, HEAD, advert=b"signed advertisement")
    evaluation = m.Evaluation(1, 0.75, 2.5)
    info = m.ClientInfo(100, 20, 1.1, 0.05, 7, 3.0)
    return [
        m.Join(bytes(32)),
        m.Join(bytes(range(32)), setup=bytes(32), next=NEXT),
        m.Setup(b"a key directory"),
        m.Setup(session=bytes(range(32))),
        m.Advert(NEXT),
        m.Advert(NEXT, delivery=b"sealed seed"),
        m.Train(1),
        m.Train(3, train=False),
        m.Train(
            2,
            result=m.Result(1, m.ResultKind.GROUP_SUM, values=VECTOR, contributors=(0, 1, 3)),
            heads=(HEAD, SERVER_HEAD),
            messages=(b"directory",),
            context=(HEAD, SERVER_HEAD),
            sketch=True,
            delivery=b"seed",
        ),
        m.Train(2, result=m.Result(1, m.ResultKind.BLINDED, blinded=b"blinded output")),
        m.Step(1, m.StepPhase.KEYS, (b"a", b"b"), context=(HEAD,)),
        m.Step(1, m.StepPhase.MASK, ()),
        m.Step(1, m.StepPhase.CONFIRM, (b"survivors",)),
        m.Step(1, m.StepPhase.UNMASK, (b"request",), next=NEXT),
        m.Finish(2, m.RunStatus.COMPLETED),
        m.Finish(
            2, m.RunStatus.INTERRUPTED, m.Result(2, m.ResultKind.PLAIN, values=VECTOR), (HEAD,)
        ),
        m.Seal((HEAD, SERVER_HEAD), (b"s" * 64, b"t" * 64)),
        m.Joined("bank-1", HEAD, 3, m.ClientInfo(1, 1), m.Evaluation(0, None, None)),
        m.Joined("bank-1", HEAD, 3, info, evaluation, b"setup key", part, b"signature"),
        m.SetupReply(),
        m.SetupReply((b"offer",)),
        m.Advertised(part),
        m.Advertised(m.AdvertPart(3, HEAD, declined="budget")),
        m.Trained(evaluation, HEAD, trained=False, refused="not in this round"),
        m.Trained(
            evaluation,
            HEAD,
            trained=True,
            messages=(b"shares",),
            sketch=VECTOR,
            model=VECTOR * 2,
            similarity=VECTOR[:2],
        ),
        m.StepReply(),
        m.StepReply((b"masked",), error="aborted", advert=part),
        m.Finished(evaluation, HEAD),
        m.Sealed(evaluation),
        m.Refused("RemoteProtocolError", "not accepted in phase new"),
    ]


def test_the_samples_cover_every_kind() -> None:
    assert {s.KIND for s in samples()} == set(m.Kind)


@pytest.mark.parametrize("message", samples(), ids=lambda s: type(s).__name__)
def test_every_kind_round_trips_canonically(message: m.Request | m.Reply) -> None:
    data = m.encode(message)
    assert data[:4] == HEADER + bytes([message.KIND])
    decoded = m.decode(data)
    assert type(decoded) is type(message)
    assert m.encode(decoded) == data
    for name in ("sketch", "model", "similarity"):  # vectors compare by value
        if hasattr(message, name):
            a, b = getattr(message, name), getattr(decoded, name)
            assert (a is None and b is None) or np.array_equal(a, b)
    if isinstance(message, m.Train | m.Finish) and message.result is not None:
        assert decoded.result is not None  # type: ignore[union-attr]
        assert m.encode(m.Finish(1, m.RunStatus.COMPLETED, decoded.result)) == m.encode(  # type: ignore[union-attr]
            m.Finish(1, m.RunStatus.COMPLETED, message.result)
        )
    assert m.encode(m.decode_as(data, type(message))) == data


def test_decode_as_refuses_another_kind_and_passes_refusals() -> None:
    with pytest.raises(RemoteProtocolError, match="expected Trained, got Sealed"):
        m.decode_as(m.encode(m.Sealed(m.Evaluation(0, None, None))), m.Trained)
    refused = m.Refused("RemoteProtocolError", "no")
    assert m.decode_as(m.encode(refused), m.Trained) == refused


# --- rejections --------------------------------------------------------------------------------


def _u32(value: int) -> bytes:
    return value.to_bytes(4, "big")


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "truncated"),
        (b"SE", "truncated"),
        (b"XX" + bytes([m.VERSION, m.Kind.SEAL]) + _u32(0), "not a securefed engine message"),
        (m.MAGIC + bytes([m.VERSION + 1, m.Kind.SEAL]) + _u32(0), "another version"),
        (HEADER + bytes([50]), "unknown message kind"),
        (HEADER + bytes([0]), "unknown message kind"),
        (m.encode(m.Seal(())) + b"\x00", "trailing bytes"),
        (m.encode(m.Train(1))[:-1], "truncated"),
        # a text field beyond MAX_TEXT, refused on its length prefix alone
        (HEADER + bytes([m.Kind.REFUSED]) + _u32(m.MAX_TEXT + 1), "exceeds its length limit"),
        # a key directory beyond its limit (16 MiB): nothing is read or allocated
        (HEADER + bytes([m.Kind.SETUP]) + _u32((1 << 24) + 1), "exceeds its length limit"),
        # more protocol messages than MAX_MESSAGES
        (HEADER + bytes([m.Kind.SETUP_REPLY]) + _u32((1 << 16) + 1), "list exceeds"),
        # a flag that is neither 0 nor 1
        (m.encode(m.Train(1))[:8] + b"\x02" + m.encode(m.Train(1))[9:], "a flag is 0 or 1"),
        # round 0 does not exist
        (HEADER + bytes([m.Kind.TRAIN]) + _u32(0) + m.encode(m.Train(1))[8:], "round"),
        (HEADER + bytes([m.Kind.STEP]) + _u32(1) + _u32(4) + b"lazy", "unknown step phase"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_malformed_messages_are_refused(data: bytes, match: str) -> None:
    with pytest.raises(RemoteProtocolError, match=match):
        m.decode(data)


def test_non_finite_numbers_are_refused_and_none_has_one_encoding() -> None:
    evaluation = m.Evaluation(0, None, None)
    good = m.encode(m.Trained(evaluation, HEAD, True, sketch=VECTOR))
    raw = np.ascontiguousarray(VECTOR, dtype="<f8").tobytes()
    for bad in (np.nan, np.inf):
        vector = np.ascontiguousarray([0.5, bad, 3.0], dtype="<f8").tobytes()
        with pytest.raises(RemoteProtocolError, match="NaN or infinite"):
            m.decode(good.replace(raw, vector))
    ragged = good.replace(_u32(len(raw)) + raw, _u32(len(raw) - 1) + raw[:-1])
    with pytest.raises(RemoteProtocolError, match="multiple of 8"):
        m.decode(ragged)
    # None is one NaN bit pattern; another NaN (or an infinity) is not a second spelling of it
    sealed = m.encode(m.Sealed(evaluation))
    none = struct.pack(">d", math.nan)
    assert sealed.endswith(none + none)
    for other in (
        bytes.fromhex("fff8000000000000"),
        bytes.fromhex("7ff8000000000001"),
        struct.pack(">d", math.inf),
    ):
        with pytest.raises(RemoteProtocolError, match="NaN or infinite"):
            m.decode(sealed[: -len(none)] + other)
    assert m.decode(m.encode(m.Sealed(m.Evaluation(0, math.nan, 1.0)))) == m.Sealed(
        m.Evaluation(0, None, 1.0)
    )


def test_encoding_a_field_beyond_its_limit_is_a_local_error() -> None:
    with pytest.raises(ConfigError):
        m.encode(
            m.Joined(
                "bank-1",
                HEAD,
                3,
                m.ClientInfo(1, 1),
                m.Evaluation(0, None, None),
                signature=b"x" * 1025,
            )
        )
    with pytest.raises(RemoteProtocolError, match="a challenge is 32 bytes"):
        m.Join(bytes(31))  # an invalid message cannot exist


# --- the fuzz ----------------------------------------------------------------------------------


def decodes_or_rejects(data: bytes) -> m.Request | m.Reply | None:
    """The decoder invariant: a message whose encoding is ``data``, or RemoteProtocolError."""
    try:
        message = m.decode(data)
    except RemoteProtocolError:
        return None
    except BaseException as exc:  # anything else breaks the invariant
        exc.add_note(f"decode() raised {type(exc).__name__} on {data.hex()}")
        raise
    assert m.encode(message) == data, "accepted a non-canonical encoding"
    return message


@FUZZ
@given(data=st.binary(max_size=2048))
def test_arbitrary_bytes_decode_or_raise_remote_protocol_error(data: bytes) -> None:
    decodes_or_rejects(data)


@FUZZ
@given(kind=st.sampled_from(sorted(m.Kind)), body=st.binary(max_size=512))
def test_a_valid_header_with_any_body(kind: m.Kind, body: bytes) -> None:
    decodes_or_rejects(HEADER + bytes([kind]) + body)


ENCODED = [m.encode(s) for s in samples()]


@FUZZ
@given(
    which=st.integers(0, len(ENCODED) - 1),
    edits=st.lists(
        st.tuples(
            st.sampled_from(["flip", "insert", "delete", "truncate"]),
            st.integers(0, 1 << 16),
            st.binary(min_size=1, max_size=8),
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_mutated_encodings_decode_or_raise(which: int, edits: list[tuple[str, int, bytes]]) -> None:
    data = ENCODED[which]
    for edit, position, payload in edits:
        at = position % (len(data) + 1)
        if edit == "flip" and at < len(data):
            data = data[:at] + bytes([data[at] ^ (payload[0] or 1)]) + data[at + 1 :]
        elif edit == "insert":
            data = data[:at] + payload + data[at:]
        elif edit == "delete":
            data = data[:at] + data[at + len(payload) :]
        elif edit == "truncate":
            data = data[:at]
    decodes_or_rejects(data)


def test_every_single_byte_edit_of_every_sample() -> None:
    """Deterministic sweep: each byte of each encoding set to 0x00, 0xff and its complement,
    and each prefix."""
    for data in ENCODED:
        for at in range(len(data)):
            for value in {0x00, 0xFF, data[at] ^ 0xFF}:
                decodes_or_rejects(data[:at] + bytes([value]) + data[at + 1 :])
            decodes_or_rejects(data[:at])
