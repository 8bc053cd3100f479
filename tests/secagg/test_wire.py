"""The canonical field encoding under every message (securefed.secagg.wire).

Round trips for every field kind, one encoding per value, and the reader's promise: every failure
to read -- truncation, a length beyond its limit, trailing bytes, a bad dtype code -- is a
RemoteProtocolError raised before anything large is allocated. The writer refuses what it cannot
encode with ConfigError. In digest mode (``Writer(digest_vectors=True)``, the form signatures
cover) a vector is written as its dtype code, length and tree SHA-256, without copying it, and a
nested message as the SHA-256 of its encoding; every other field is written exactly as in the
wire encoding.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from securefed.crypto.hashing import TREE_CHUNK_BYTES, tree_sha256
from securefed.errors import ConfigError, RemoteProtocolError
from securefed.secagg.wire import MAX_BLOB_BYTES, MAX_VECTOR_WORDS, Reader, Writer

U32_MAX = 2**32 - 1
U64_MAX = 2**64 - 1


# --- a small record that uses every field kind --------------------------------------------------


def write_record(w: Writer) -> Writer:
    w.u8(7).u32(0xDEADBEEF).u64(2**63 + 5).fixed(b"\xaa\xbb\xcc", 3).blob(b"hello", limit=16)
    w.items([(1, b"x"), (2, b"")], lambda w, p: w.u32(p[0]).blob(p[1], limit=4), limit=4)
    w.indices([0, 3, 9], limit=8)
    w.vector(np.array([1, U32_MAX], dtype=np.uint32), limit=4)
    return w.vector(np.array([U64_MAX], dtype=np.uint64), limit=4)


def read_record(r: Reader) -> tuple[Any, ...]:
    fields = (
        r.u8(),
        r.u32(),
        r.u64(),
        r.fixed(3),
        r.blob(limit=16),
        r.items(lambda r: (r.u32(), r.blob(limit=4)), limit=4),
        r.indices(limit=8),
        r.vector(limit=4).tolist(),
        r.vector(limit=4).tolist(),
    )
    r.finish()
    return fields


RECORD_FIELDS = (
    7,
    0xDEADBEEF,
    2**63 + 5,
    b"\xaa\xbb\xcc",
    b"hello",
    ((1, b"x"), (2, b"")),
    (0, 3, 9),
    [1, U32_MAX],
    [U64_MAX],
)


def record(*, digest_vectors: bool = False) -> bytes:
    return write_record(Writer(digest_vectors=digest_vectors)).getvalue()


def digested(vector: np.ndarray[Any, Any]) -> bytes:
    """A vector as digest mode writes it: dtype code, u32 count, tree SHA-256 of the LE words."""
    code = vector.dtype.itemsize
    little = vector.astype(f"<u{code}").tobytes()
    return bytes([code]) + u32(vector.size) + tree_sha256(little)


def u32(value: int) -> bytes:
    return value.to_bytes(4, "big")


@contextmanager
def peak_allocation() -> Iterator[list[int]]:
    """Yields a one-item list that holds the peak traced allocation (bytes) once the block ends."""
    peak = [0]
    tracemalloc.start()
    try:
        yield peak
    finally:
        peak[0] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()


# --- round trips ---------------------------------------------------------------------------------


def test_record_round_trip_uses_big_endian_integers_and_little_endian_words() -> None:
    data = record()
    assert read_record(Reader(data)) == RECORD_FIELDS
    assert data[:13] == b"\x07\xde\xad\xbe\xef" + (2**63 + 5).to_bytes(8, "big")
    # uint32 vector: code 4, count 2, words little-endian
    assert u32(2) + (1).to_bytes(4, "little") + (U32_MAX).to_bytes(4, "little") in data
    assert data.endswith(b"\x08" + u32(1) + b"\xff" * 8)


@pytest.mark.parametrize(
    ("width", "value"),
    [(1, 0), (1, 255), (4, 0), (4, 1), (4, U32_MAX), (8, 0), (8, 2**32), (8, U64_MAX)],
)
def test_unsigned_integers_round_trip_at_their_bounds(width: int, value: int) -> None:
    write = {1: Writer.u8, 4: Writer.u32, 8: Writer.u64}[width]
    read = {1: Reader.u8, 4: Reader.u32, 8: Reader.u64}[width]
    data = write(Writer(), value).getvalue()
    assert data == value.to_bytes(width, "big")
    r = Reader(data)
    assert read(r) == value
    r.finish()


@pytest.mark.parametrize("data", [b"", b"\x00", bytes(range(256)) * 3])
def test_fixed_round_trips_without_a_length_prefix(data: bytes) -> None:
    encoded = Writer().fixed(data, len(data)).getvalue()
    assert encoded == data
    r = Reader(encoded)
    assert r.fixed(len(data)) == data
    r.finish()


@pytest.mark.parametrize(
    ("data", "limit"), [(b"", 0), (b"", 8), (b"abc", 3), (b"\x00" * MAX_BLOB_BYTES, MAX_BLOB_BYTES)]
)
def test_blob_round_trips_up_to_its_limit(data: bytes, limit: int) -> None:
    encoded = Writer().blob(data, limit=limit).getvalue()
    assert encoded == u32(len(data)) + data
    r = Reader(encoded)
    assert r.blob(limit=limit) == data
    r.finish()


def test_blob_default_limit_is_max_blob_bytes() -> None:
    at_limit = b"\x01" * MAX_BLOB_BYTES
    assert Reader(Writer().blob(at_limit).getvalue()).blob() == at_limit
    with pytest.raises(ConfigError):
        Writer().blob(at_limit + b"\x01")
    with pytest.raises(RemoteProtocolError):
        Reader(u32(MAX_BLOB_BYTES + 1) + at_limit + b"\x01").blob()


@pytest.mark.parametrize("values", [(), (0,), (1, 2, 3), (U32_MAX, 0)])
def test_indices_round_trip(values: tuple[int, ...]) -> None:
    encoded = Writer().indices(values, limit=4).getvalue()
    assert encoded == u32(len(values)) + b"".join(u32(v) for v in values)
    r = Reader(encoded)
    assert r.indices(limit=4) == values
    r.finish()


def test_items_round_trip_nested_records() -> None:
    values = [(0, b""), (5, b"abc"), (U32_MAX, b"\xff" * 10)]

    def write(w: Writer, value: tuple[int, bytes]) -> None:
        w.u32(value[0]).blob(value[1], limit=10)

    encoded = Writer().items(values, write, limit=3).getvalue()
    r = Reader(encoded)
    assert r.items(lambda r: (r.u32(), r.blob(limit=10)), limit=3) == tuple(values)
    r.finish()
    assert Reader(Writer().items([], write, limit=0).getvalue()).items(Reader.u32, limit=0) == ()


VECTOR_CASES = [
    np.array([], dtype=np.uint32),
    np.array([0], dtype=np.uint32),
    np.array([0, 1, 2**31, U32_MAX], dtype=np.uint32),
    np.array([], dtype=np.uint64),
    np.array([0, 1, 2**32, 2**63, U64_MAX], dtype=np.uint64),
    np.arange(200_000, dtype=np.uint32) * np.uint32(21_474),
    np.arange(100_000, dtype=np.uint64) * np.uint64(184_467_440_737_095),
]


@pytest.mark.parametrize("vector", VECTOR_CASES, ids=[f"{v.dtype}-{v.size}" for v in VECTOR_CASES])
def test_vector_round_trips_exactly(vector: np.ndarray[Any, Any]) -> None:
    encoded = Writer().vector(vector).getvalue()
    code = vector.dtype.itemsize
    assert encoded == bytes([code]) + u32(vector.size) + vector.astype(f"<u{code}").tobytes()
    r = Reader(encoded)
    decoded = r.vector()
    r.finish()
    assert decoded.dtype == vector.dtype
    assert decoded.dtype.isnative
    assert decoded.ndim == 1
    np.testing.assert_array_equal(decoded, vector)


def test_decoded_vector_is_read_only_and_immune_to_changes_of_a_mutable_input() -> None:
    """Decoding does not copy 4 MB vectors from immutable bytes; a bytearray is copied first."""
    data = bytearray(Writer().vector(np.array([1, 2, 3], dtype=np.uint32)).getvalue())
    decoded = Reader(data).vector()
    data[-4:] = b"\xff\xff\xff\xff"
    assert decoded.tolist() == [1, 2, 3]
    with pytest.raises(ValueError, match="read-only"):
        decoded[0] = 9


def test_reader_accepts_bytes_like_and_refuses_anything_else() -> None:
    data = Writer().u32(5).getvalue()
    assert Reader(bytearray(data)).u32() == 5
    assert Reader(memoryview(data)).u32() == 5
    for bad in ("text", None, 5, [0, 0, 0, 5]):
        with pytest.raises(RemoteProtocolError):
            Reader(bad)  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None)
@given(
    a=st.integers(0, 255),
    b=st.integers(0, U32_MAX),
    c=st.integers(0, U64_MAX),
    blob=st.binary(max_size=40),
    idx=st.lists(st.integers(0, U32_MAX), max_size=8),
    words=st.lists(st.integers(0, U64_MAX), max_size=16),
    wide=st.booleans(),
)
def test_any_field_sequence_round_trips(
    *, a: int, b: int, c: int, blob: bytes, idx: list[int], words: list[int], wide: bool
) -> None:
    dtype = np.uint64 if wide else np.uint32
    vector = np.array([w % (2**64 if wide else 2**32) for w in words], dtype=dtype)
    data = Writer().u8(a).u32(b).u64(c).blob(blob).indices(idx, limit=8).vector(vector).getvalue()
    r = Reader(data)
    assert (r.u8(), r.u32(), r.u64(), r.blob(), r.indices(limit=8)) == (a, b, c, blob, tuple(idx))
    np.testing.assert_array_equal(r.vector(), vector)
    r.finish()


# --- canonical encoding --------------------------------------------------------------------------


def test_same_value_gives_the_same_bytes() -> None:
    assert record() == record()


def test_vector_encoding_does_not_depend_on_memory_layout() -> None:
    base = np.arange(10, dtype=np.uint64) * np.uint64(2**40 + 3)
    strided = np.repeat(base, 2)[::2]
    fortran = np.asfortranarray(base)
    assert not strided.flags.c_contiguous
    reference = Writer().vector(base).getvalue()
    assert Writer().vector(strided).getvalue() == reference
    assert Writer().vector(fortran).getvalue() == reference


def test_same_words_in_another_ring_encode_differently() -> None:
    """The dtype code is part of the encoding: uint32 [1, 0] and uint64 [1] share raw bytes."""
    narrow = Writer().vector(np.array([1, 0], dtype=np.uint32)).getvalue()
    wide = Writer().vector(np.array([1], dtype=np.uint64)).getvalue()
    assert narrow[5:] == wide[5:]
    assert narrow != wide


# --- digest mode (what signatures cover) ---------------------------------------------------------


def test_writer_is_not_in_digest_mode_by_default_and_the_mode_is_keyword_only() -> None:
    vector = np.array([1, 2], dtype=np.uint32)
    assert Writer().vector(vector).getvalue() == b"\x04" + u32(2) + vector.astype("<u4").tobytes()
    with pytest.raises(TypeError):
        Writer(True)  # type: ignore[misc]


@pytest.mark.parametrize("vector", VECTOR_CASES, ids=[f"{v.dtype}-{v.size}" for v in VECTOR_CASES])
def test_digest_mode_writes_dtype_code_length_and_tree_hash(vector: np.ndarray[Any, Any]) -> None:
    encoded = Writer(digest_vectors=True).vector(vector).getvalue()
    assert encoded == digested(vector)
    assert len(encoded) == 1 + 4 + 32
    # the hash is the tree hash of exactly the bytes the wire encoding carries
    wire = Writer().vector(vector).getvalue()
    assert encoded[:5] == wire[:5]
    assert encoded[5:] == tree_sha256(wire[5:])


def test_digest_mode_changes_only_the_vectors() -> None:
    """Every other field is written as on the wire; each vector becomes code | count | hash."""
    narrow = np.array([1, U32_MAX], dtype=np.uint32)
    wide = np.array([U64_MAX], dtype=np.uint64)
    plain, digest = record(), record(digest_vectors=True)
    head = len(plain) - len(Writer().vector(narrow).vector(wide).getvalue())
    assert digest[:head] == plain[:head]
    assert digest[head:] == digested(narrow) + digested(wide)
    # interleaved with other fields, in order
    both = Writer(digest_vectors=True).u32(7).vector(narrow).blob(b"x").vector(wide).getvalue()
    assert both == u32(7) + digested(narrow) + u32(1) + b"x" + digested(wide)


def test_digest_mode_binds_the_ring_and_the_length() -> None:
    """uint32 [1, 0] and uint64 [1] have the same bytes, hence the same tree hash: the dtype code
    (and the count) keep their digest forms apart."""
    narrow = Writer(digest_vectors=True).vector(np.array([1, 0], dtype=np.uint32)).getvalue()
    wide = Writer(digest_vectors=True).vector(np.array([1], dtype=np.uint64)).getvalue()
    assert narrow[5:] == wide[5:]
    assert narrow[:5] == b"\x04" + u32(2)
    assert wide[:5] == b"\x08" + u32(1)


def test_digest_mode_sees_every_word_of_a_multi_chunk_vector() -> None:
    """Over several tree chunks: changing any one word, in any chunk, changes the digest."""
    words = 2 * TREE_CHUNK_BYTES // 4 + 3  # three chunks, the last one short
    vector = np.arange(words, dtype=np.uint32)
    reference = Writer(digest_vectors=True).vector(vector).getvalue()
    assert reference == digested(vector)
    for at in (0, TREE_CHUNK_BYTES // 4 - 1, TREE_CHUNK_BYTES // 4, words - 1):
        changed = vector.copy()
        changed[at] ^= 1
        assert Writer(digest_vectors=True).vector(changed).getvalue() != reference
    assert Writer(digest_vectors=True).vector(vector[:-1]).getvalue() != reference


def test_digest_mode_does_not_depend_on_memory_layout() -> None:
    base = np.arange(10, dtype=np.uint64) * np.uint64(2**40 + 3)
    reference = Writer(digest_vectors=True).vector(base).getvalue()
    for layout in (np.repeat(base, 2)[::2], np.asfortranarray(base)):
        assert Writer(digest_vectors=True).vector(layout).getvalue() == reference


def test_digest_mode_hashes_a_large_vector_without_copying_it() -> None:
    vector = np.arange(1 << 22, dtype=np.uint32)  # 16 MiB
    with peak_allocation() as peak:
        encoded = Writer(digest_vectors=True).vector(vector).getvalue()
    assert peak[0] < 1 << 20
    assert encoded == b"\x04" + u32(vector.size) + tree_sha256(vector.tobytes())


# --- reader failures -----------------------------------------------------------------------------


def test_every_truncation_of_a_record_is_a_remote_protocol_error() -> None:
    data = record()
    for cut in range(len(data)):
        with pytest.raises(RemoteProtocolError):
            read_record(Reader(data[:cut]))


@pytest.mark.parametrize("extra", [b"\x00", b"\xff" * 7])
def test_trailing_bytes_are_refused_by_finish(extra: bytes) -> None:
    with pytest.raises(RemoteProtocolError, match="trailing"):
        read_record(Reader(record() + extra))


def test_finish_on_an_empty_reader_is_fine_and_on_unread_data_is_not() -> None:
    Reader(b"").finish()
    with pytest.raises(RemoteProtocolError):
        Reader(b"\x00").finish()


@pytest.mark.parametrize(
    ("read", "data"),
    [
        (lambda r: r.u8(), b""),
        (lambda r: r.u32(), b"\x00\x00\x00"),
        (lambda r: r.u64(), b"\x00" * 7),
        (lambda r: r.fixed(4), b"abc"),
        (lambda r: r.blob(), u32(4) + b"abc"),
        (lambda r: r.indices(limit=4), u32(2) + u32(1)),
        (lambda r: r.vector(), b"\x04" + u32(2) + b"\x00" * 7),
        (lambda r: r.vector(), b"\x08" + u32(1) + b"\x00" * 7),
        (lambda r: r.vector(), b"\x04\x00\x00"),
    ],
    ids=["u8", "u32", "u64", "fixed", "blob", "indices", "vector32", "vector64", "vector-header"],
)
def test_each_field_kind_refuses_truncation(read: Callable[[Reader], object], data: bytes) -> None:
    with pytest.raises(RemoteProtocolError, match="truncated"):
        read(Reader(data))


def test_blob_length_above_limit_is_refused() -> None:
    with pytest.raises(RemoteProtocolError, match="limit"):
        Reader(u32(5) + b"abcde").blob(limit=4)
    assert Reader(u32(4) + b"abcd").blob(limit=4) == b"abcd"


def test_huge_blob_header_raises_immediately_without_allocating() -> None:
    data = u32(2**31) + b"\x00" * 6  # 10 bytes claiming 2 GiB
    with peak_allocation() as peak:
        with pytest.raises(RemoteProtocolError, match="limit"):
            Reader(data).blob()
        # even with a limit that admits it, truncation is noticed before the copy
        with pytest.raises(RemoteProtocolError, match="truncated"):
            Reader(data).blob(limit=U32_MAX)
        with pytest.raises(RemoteProtocolError, match="truncated"):
            Reader(b"\xff" * 10).blob(limit=U32_MAX)
    assert peak[0] < 1 << 20


def test_huge_vector_header_raises_immediately_without_allocating() -> None:
    with peak_allocation() as peak:
        # 2**28 uint64 words = 2 GiB claimed by a 13-byte input
        with pytest.raises(RemoteProtocolError, match="truncated"):
            Reader(b"\x08" + u32(MAX_VECTOR_WORDS) + b"\x00" * 8).vector()
        with pytest.raises(RemoteProtocolError, match="header"):
            Reader(b"\x08" + u32(MAX_VECTOR_WORDS + 1) + b"\x00" * 8).vector()
        with pytest.raises(RemoteProtocolError, match="header"):
            Reader(b"\x04" + u32(U32_MAX)).vector()
    assert peak[0] < 1 << 20


def test_vector_count_above_limit_is_refused() -> None:
    data = Writer().vector(np.zeros(5, dtype=np.uint32)).getvalue()
    with pytest.raises(RemoteProtocolError):
        Reader(data).vector(limit=4)
    assert Reader(data).vector(limit=5).size == 5


def test_list_count_above_limit_is_refused_before_reading_items() -> None:
    calls: list[int] = []

    def read(r: Reader) -> int:
        calls.append(1)
        return r.u32()

    data = u32(3) + u32(1) + u32(2) + u32(3)
    with pytest.raises(RemoteProtocolError, match="limit"):
        Reader(data).items(read, limit=2)
    assert calls == []
    with pytest.raises(RemoteProtocolError, match="limit"):
        Reader(data).indices(limit=2)
    assert Reader(data).indices(limit=3) == (1, 2, 3)


def test_huge_list_count_raises_immediately() -> None:
    with peak_allocation() as peak:
        with pytest.raises(RemoteProtocolError, match="limit"):
            Reader(u32(U32_MAX)).indices(limit=4096)
        # a count within the limit but beyond the data fails on the first missing item
        with pytest.raises(RemoteProtocolError, match="truncated"):
            Reader(u32(4096) + u32(0)).indices(limit=4096)
    assert peak[0] < 1 << 20


@pytest.mark.parametrize("code", [c for c in range(256) if c not in (4, 8)])
def test_unknown_vector_dtype_code_is_refused(code: int) -> None:
    with pytest.raises(RemoteProtocolError, match="header"):
        Reader(bytes([code]) + u32(1) + b"\x00" * 8).vector()


# --- writer refusals -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("width", "value"),
    [
        (1, 256),
        (1, -1),
        (4, 2**32),
        (4, -1),
        (8, 2**64),
        (8, -(2**63)),
        (4, True),
        (4, 1.0),
        (4, "1"),
        (8, None),
    ],
)
def test_writer_refuses_integers_that_do_not_fit(width: int, value: Any) -> None:
    write = {1: Writer.u8, 4: Writer.u32, 8: Writer.u64}[width]
    w = Writer()
    with pytest.raises(ConfigError):
        write(w, value)
    assert w.getvalue() == b""


@pytest.mark.parametrize(
    ("data", "length"),
    [(b"abc", 4), (b"abcde", 4), (b"", 1), (bytearray(b"abcd"), 4), ("abcd", 4)],
)
def test_writer_refuses_wrong_fixed_fields(data: Any, length: int) -> None:
    with pytest.raises(ConfigError):
        Writer().fixed(data, length)


@pytest.mark.parametrize(
    ("data", "limit"), [(b"abcde", 4), (b"\x00", 0), (bytearray(b"ab"), 4), ("ab", 4)]
)
def test_writer_refuses_oversized_or_non_bytes_blobs(data: Any, limit: int) -> None:
    w = Writer()
    with pytest.raises(ConfigError):
        w.blob(data, limit=limit)
    assert w.getvalue() == b""


def test_writer_refuses_too_many_items_and_out_of_range_indices() -> None:
    with pytest.raises(ConfigError):
        Writer().items([1, 2, 3], Writer.u32, limit=2)
    with pytest.raises(ConfigError):
        Writer().indices([1, 2, 3], limit=2)
    with pytest.raises(ConfigError):
        Writer().indices([2**32], limit=2)
    with pytest.raises(ConfigError):
        Writer().indices([-1], limit=2)


BAD_VECTORS = {
    "2-D": np.zeros((2, 2), dtype=np.uint32),
    "0-D": np.array(5, dtype=np.uint64),
    "float64": np.zeros(3),
    "int32": np.zeros(3, dtype=np.int32),
    "int64": np.zeros(3, dtype=np.int64),
    "uint16": np.zeros(3, dtype=np.uint16),
    "uint8": np.zeros(3, dtype=np.uint8),
    "big-endian-uint32": np.zeros(3, dtype=">u4"),
    "bool": np.zeros(3, dtype=bool),
}


MODES = pytest.mark.parametrize("digest", [False, True], ids=["wire", "digest"])


@MODES
@pytest.mark.parametrize("vector", BAD_VECTORS.values(), ids=BAD_VECTORS.keys())
def test_writer_refuses_vectors_outside_the_rings(
    vector: np.ndarray[Any, Any], *, digest: bool
) -> None:
    w = Writer(digest_vectors=digest)
    with pytest.raises(ConfigError):
        w.vector(vector)
    assert w.getvalue() == b""


@MODES
def test_writer_refuses_vectors_above_the_limit(*, digest: bool) -> None:
    with pytest.raises(ConfigError):
        Writer(digest_vectors=digest).vector(np.zeros(5, dtype=np.uint32), limit=4)
    at_limit = Writer(digest_vectors=digest).vector(np.zeros(4, dtype=np.uint32), limit=4)
    assert len(at_limit.getvalue()) == 5 + (32 if digest else 16)


@MODES
def test_vector_of_a_plain_list_is_a_config_error(*, digest: bool) -> None:
    with pytest.raises(ConfigError):
        Writer(digest_vectors=digest).vector([1, 2])  # type: ignore[arg-type]


def read_all(reader: Reader, limit: int, item_limit: int) -> tuple[bytes, ...]:
    values = reader.blobs(limit=limit, item_limit=item_limit)
    reader.finish()
    return values


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=30), st.integers(0, 40), st.integers(0, 30))
def test_blobs_writes_and_reads_exactly_what_items_of_blobs_does(
    values: list[bytes], item_limit: int, limit: int
) -> None:
    """The one-pass list of blobs (the advertisement's keys) is items(blob), byte for byte,
    with the same refusals on both sides."""
    fits = len(values) <= limit and all(len(v) <= item_limit for v in values)
    plain = Writer().items(values, lambda w, v: w.blob(v, limit=U32_MAX), limit=U32_MAX)
    data = plain.getvalue()
    if fits:
        assert Writer().blobs(values, limit=limit, item_limit=item_limit).getvalue() == data
    else:
        with pytest.raises(ConfigError):
            Writer().blobs(values, limit=limit, item_limit=item_limit)
    for cut in (len(data), len(data) - 1, len(data) // 2):
        fast, slow = Reader(data[:cut]), Reader(data[:cut])
        try:
            expected = slow.items(lambda r: r.blob(limit=item_limit), limit=limit)
            slow.finish()
        except RemoteProtocolError:
            with pytest.raises(RemoteProtocolError):
                read_all(fast, limit, item_limit)
            continue
        assert read_all(fast, limit, item_limit) == expected
