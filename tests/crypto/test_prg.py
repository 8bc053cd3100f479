"""The PRG: chunking equivalence, in-place ring arithmetic, stream separation (DESIGN R5)."""

from __future__ import annotations

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from securefed.crypto import KdfContext, KeyPurpose, KeyStream, derive_stream_key, get_suite
from securefed.crypto.prg import CHUNK_BYTES, PARALLEL_MIN_PART_BYTES, add_streams
from securefed.errors import ConfigError

SUITE = get_suite("default")
CONTEXT = KdfContext(bytes(32), 1)


def stream(
    target: int | None = 0,
    purpose: KeyPurpose = KeyPurpose.MASK,
    seed: bytes = bytes(32),
    *,
    parallel: bool = True,
) -> KeyStream:
    key = derive_stream_key(SUITE, seed, purpose=purpose, context=CONTEXT, target=target)
    return KeyStream(key, parallel=parallel)


def test_stream_is_aes_ctr_from_counter_zero() -> None:
    key = derive_stream_key(SUITE, bytes(32), purpose=KeyPurpose.MASK, context=CONTEXT, target=0)
    expected = (
        Cipher(algorithms.AES256(key.material), modes.CTR(bytes(16))).encryptor().update(bytes(100))
    )
    assert stream().words(100, np.uint8).tobytes() == expected


@settings(max_examples=40, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=3 * CHUNK_BYTES), min_size=1, max_size=5))
def test_bytes_in_chunks_equal_bytes_at_once(cuts: list[int]) -> None:
    total = sum(cuts)
    whole = stream().words(total, np.uint8)
    chunked = stream()
    pieces = [chunked.words(n, np.uint8) for n in cuts]
    assert np.array_equal(np.concatenate(pieces), whole)
    assert chunked.position == total


@settings(max_examples=30, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=CHUNK_BYTES // 2), min_size=1, max_size=4),
    wide=st.booleans(),
)
def test_add_in_chunks_equals_adding_the_whole_mask(sizes: list[int], wide: bool) -> None:
    dtype = np.uint64 if wide else np.uint32
    base = np.arange(sum(sizes), dtype=dtype) * dtype(2654435761)
    expected = base + stream().words(base.size, dtype)  # wraps modulo 2**k

    acc = base.copy()
    chunked = stream()
    start = 0
    for size in sizes:
        chunked.add_into(acc[start : start + size])
        start += size
    assert np.array_equal(acc, expected)


def test_subtract_undoes_add_and_mixes_with_fill() -> None:
    acc = np.arange(3 * CHUNK_BYTES // 8 + 5, dtype=np.uint64)
    original = acc.copy()
    stream(7).add_into(acc)
    assert not np.array_equal(acc, original)
    stream(7).subtract_from(acc)
    assert np.array_equal(acc, original)

    mixed = stream(7)
    head = mixed.words(3, np.uint32)
    tail = np.zeros(5, dtype=np.uint32)
    mixed.add_into(tail)
    assert np.array_equal(np.concatenate([head, tail]), stream(7).words(8, np.uint32))


def test_little_endian_words() -> None:
    raw = stream().words(8, np.uint8).tobytes()
    assert stream().words(2, np.uint32).tolist() == [
        int.from_bytes(raw[:4], "little"),
        int.from_bytes(raw[4:], "little"),
    ]


def test_add_into_multidimensional_accumulator() -> None:
    acc = np.zeros((3, 5), dtype=np.uint32)
    stream().add_into(acc)
    assert np.array_equal(acc.reshape(-1), stream().words(15))


def test_streams_differ_across_targets_purposes_and_seeds() -> None:
    outputs = {
        stream(target=t, purpose=p, seed=s).words(8).tobytes()
        for t in (None, 0, 1)
        for p in (KeyPurpose.MASK, KeyPurpose.SELF, KeyPurpose.TARGET, KeyPurpose.DITHER)
        for s in (bytes(32), bytes(31) + b"\x01")
    }
    assert len(outputs) == 3 * 4 * 2


def test_adjacent_targets_do_not_overlap() -> None:
    """An offset-counter design would make target 1's stream a shifted copy of target 0's."""
    first = stream(0).words(4096, np.uint8).tobytes()
    second = stream(1).words(4096, np.uint8).tobytes()
    assert second[:16] not in first


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros(4, dtype=np.int32),
        np.zeros(4, dtype=np.float64),
        np.zeros((4, 4), dtype=np.uint32)[:, 0],
        np.zeros(4, dtype=np.uint32)[::2],
        [0, 0, 0],
    ],
    ids=["signed", "float", "column", "strided", "list"],
)
def test_rejects_unsuitable_accumulators(bad: object) -> None:
    ks = stream()
    with pytest.raises(ConfigError):
        ks.add_into(bad)  # type: ignore[arg-type]
    assert ks.position == 0


def test_rejects_read_only_buffer() -> None:
    acc = np.zeros(4, dtype=np.uint32)
    acc.setflags(write=False)
    with pytest.raises(ConfigError):
        stream().add_into(acc)


@pytest.mark.parametrize("dtype", [np.uint32, np.uint64])
@pytest.mark.parametrize("skip", [0, 5, 16])
def test_parallel_parts_equal_the_sequential_stream(dtype: type, skip: int) -> None:
    """Large accumulators are split over threads, each seeking into the same stream."""
    size = (5 * PARALLEL_MIN_PART_BYTES + 12) // np.dtype(dtype).itemsize
    base = np.arange(size, dtype=dtype)
    sequential, parallel = stream(parallel=False), stream(parallel=True)
    sequential.words(skip, np.uint8)
    parallel.words(skip, np.uint8)  # an unaligned start position, then a split add
    expected, actual = base.copy(), base.copy()
    sequential.add_into(expected)
    parallel.add_into(actual)
    assert np.array_equal(actual, expected)
    # Both streams continue from the same position afterwards.
    assert parallel.position == sequential.position
    assert np.array_equal(parallel.words(64, np.uint8), sequential.words(64, np.uint8))
    parallel_again = stream(parallel=True)
    parallel_again.words(skip, np.uint8)
    parallel_again.subtract_from(actual)
    assert np.array_equal(actual, base)


@pytest.mark.parametrize("start", [0, 1, 15, 16, 17, 4096 + 3])
def test_a_stream_opened_at_a_position_continues_the_same_stream(start: int) -> None:
    key = derive_stream_key(SUITE, bytes(32), purpose=KeyPurpose.MASK, context=CONTEXT, target=0)
    whole = KeyStream(key).words(start + 100, np.uint8)
    opened = KeyStream(key, start=start)
    assert opened.position == start
    assert np.array_equal(opened.words(100, np.uint8), whole[start:])
    with pytest.raises(ConfigError):
        KeyStream(key, start=-1)


@pytest.mark.parametrize("dtype", [np.uint32, np.uint64])
@pytest.mark.parametrize("skip", [0, 3, 16])
def test_add_streams_equals_adding_each_stream_in_turn(dtype: type, skip: int) -> None:
    """Several streams combined chunk by chunk, with signs, over more than one chunk."""
    size = (2 * CHUNK_BYTES + 20) // np.dtype(dtype).itemsize
    base = np.arange(size, dtype=dtype) * dtype(2654435761)
    signs = [1, -1, 1]

    def opened() -> list[KeyStream]:
        streams = [stream(target=t, parallel=False) for t in range(len(signs))]
        for s in streams:
            s.words(skip, np.uint8)  # an unaligned start position
        return streams

    expected = base.copy()
    one_by_one = opened()
    for sign, s in zip(signs, one_by_one, strict=True):
        (s.add_into if sign > 0 else s.subtract_from)(expected)

    actual = base.copy()
    together = opened()
    add_streams(actual, list(zip(signs, together, strict=True)))
    assert np.array_equal(actual, expected)
    for a, b in zip(together, one_by_one, strict=True):
        assert a.position == b.position == skip + base.nbytes
        assert np.array_equal(a.words(32, np.uint8), b.words(32, np.uint8))


def test_add_streams_with_no_streams_or_an_empty_block() -> None:
    acc = np.arange(10, dtype=np.uint32)
    add_streams(acc, [])
    assert np.array_equal(acc, np.arange(10, dtype=np.uint32))
    s = stream()
    add_streams(acc[:0], [(1, s)])
    assert s.position == 0


def test_add_streams_rejects_unsuitable_accumulators() -> None:
    s = stream()
    with pytest.raises(ConfigError):
        add_streams(np.zeros(4, dtype=np.uint32)[::2], [(1, s)])
    read_only = np.zeros(4, dtype=np.uint32)
    read_only.setflags(write=False)
    with pytest.raises(ConfigError):
        add_streams(read_only, [(1, s)])
    assert s.position == 0
