"""The PRG: a keystream under a purpose-bound key, read as ring elements (DESIGN R5).

``KeyStream(key)`` is the suite's stream cipher (AES-256-CTR for ``default`` and ``fips-p256``)
run from counter block 0 under a :class:`~securefed.crypto.kdf.DerivedKey` of kind ``STREAM``.
Different streams (purposes, targets, rounds) always use different keys, never different counter
offsets of one key, so no two streams can overlap.

Guarantees:

* Bytes are consumed in order: producing ``n`` bytes in any sequence of calls (of any sizes and
  through any of :meth:`~KeyStream.fill`, :meth:`~KeyStream.add_into`,
  :meth:`~KeyStream.subtract_from`, :func:`add_streams`) yields exactly the first ``n`` bytes of
  the stream, so a long mask can be produced in chunks.
* Words are little-endian on every platform.
* :meth:`~KeyStream.add_into` / :meth:`~KeyStream.subtract_from` work in place, modulo ``2**32``
  or ``2**64``, through small cache-resident scratch buffers: the mask is never materialised.
* Large accumulators (``PARALLEL_MIN_PART_BYTES`` per part or more) are split into contiguous
  parts that helper threads process at once, each from its own position of the SAME stream
  (counter-mode random access). The result is bit-identical to the sequential computation; the
  parallelism only exists because generating keystream and adding it are two memory passes that
  one core cannot overlap (see ``docs/design-notes.md``).
"""

from __future__ import annotations

import functools
import sys
import threading
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

from securefed.crypto.kdf import DerivedKey, KeyKind
from securefed.crypto.suites import KeystreamContext
from securefed.errors import ConfigError
from securefed.parallel import MAX_WORKERS, run_all

__all__ = ["RING_DTYPES", "KeyStream", "add_streams"]

# Keystream is produced in pieces of this size: small enough to stay in L2 cache, large enough
# that the per-call overhead is negligible (measured: 256 KiB-1 MiB are equally fast here).
CHUNK_BYTES = 1 << 19
# Below this many bytes per part, a helper thread costs more than it saves.
PARALLEL_MIN_PART_BYTES = 1 << 20
MAX_PARTS = MAX_WORKERS
BLOCK_BYTES = 16
RING_DTYPES = (np.dtype(np.uint32), np.dtype(np.uint64))
_FILL_DTYPES = (np.dtype(np.uint8), *RING_DTYPES)
# The plaintext AES-CTR encrypts into keystream; sliced through a memoryview (no copies).
_ZEROS = memoryview(bytes(CHUNK_BYTES))
_BIG_ENDIAN = sys.byteorder == "big"

RingArray = npt.NDArray[np.unsignedinteger]
RingOp = Callable[..., object]


def _check_buffer(
    array: npt.NDArray[np.generic], allowed: tuple[np.dtype[np.generic], ...]
) -> None:
    if not isinstance(array, np.ndarray):
        raise ConfigError("expected a numpy array")
    if array.dtype not in allowed:
        names = ", ".join(str(d) for d in allowed)
        raise ConfigError(f"array dtype must be one of {names}, got {array.dtype}")
    if not (array.flags.c_contiguous and array.flags.writeable):
        raise ConfigError("array must be C-contiguous and writeable")


def _emit(encryptor: KeystreamContext, out: memoryview) -> None:
    """Write the next ``len(out)`` keystream bytes of ``encryptor`` into ``out`` (flat bytes)."""
    for start in range(0, len(out), CHUNK_BYTES):
        piece = out[start : start + CHUNK_BYTES]
        encryptor.update_into(_ZEROS[: len(piece)], piece)


_LOCAL = threading.local()


def _scratch() -> npt.NDArray[np.uint8]:
    """This thread's keystream scratch buffer (allocated once per thread, reused by every call:
    a fresh large allocation per call costs page faults)."""
    buffer: npt.NDArray[np.uint8] | None = getattr(_LOCAL, "scratch", None)
    if buffer is None:
        buffer = _LOCAL.scratch = np.empty(CHUNK_BYTES, dtype=np.uint8)
    return buffer


_LITTLE: dict[np.dtype[np.generic], np.dtype[np.generic]] = {
    np.dtype(np.uint32): np.dtype("<u4"),
    np.dtype(np.uint64): np.dtype("<u8"),
}


def _combine_range(encryptor: KeystreamContext, target: RingArray, op: RingOp) -> None:
    """``target = op(target, next keystream words)`` chunk by chunk (flat, contiguous target).

    This is the hot loop of masking; it avoids per-call allocations and Python-level checks.
    """
    _combine_streams(target, [(encryptor, op)])


def _combine_streams(target: RingArray, ops: Sequence[tuple[KeystreamContext, RingOp]]) -> None:
    """``target = op(target, next keystream words of encryptor)`` for every ``(encryptor, op)``
    in order, chunk by chunk: each chunk of ``target`` stays in cache while every stream is
    combined into it (flat, contiguous target)."""
    scratch = _scratch()
    little = _LITTLE[target.dtype]
    words_per_chunk = CHUNK_BYTES // target.dtype.itemsize
    for start in range(0, target.size, words_per_chunk):
        piece = target[start : start + words_per_chunk]
        raw = scratch[: piece.nbytes]
        words = raw.view(little)
        zeros = _ZEROS[: piece.nbytes]
        for encryptor, op in ops:
            encryptor.update_into(zeros, raw.data)
            op(piece, words, out=piece)


def add_streams(acc: RingArray, streams: Sequence[tuple[int, KeyStream]]) -> None:
    """``acc += sign * (next acc.size words of stream)`` modulo 2**(8*itemsize), in place, for
    every ``(sign, stream)`` (sign > 0: add, else subtract).

    The result and every stream's position are exactly those of calling
    :meth:`KeyStream.add_into` / :meth:`KeyStream.subtract_from` of each stream in turn; the work
    stays on the calling thread (callers that split a vector into ranges run one range per
    thread), and each cache-sized chunk of ``acc`` takes every stream before the next chunk.

    Raises:
        ConfigError: ``acc`` is not a contiguous, writeable uint32/uint64 array.
    """
    _check_buffer(acc, RING_DTYPES)
    flat = acc.reshape(-1)
    _combine_streams(
        flat, [(stream._encryptor, np.add if sign > 0 else np.subtract) for sign, stream in streams]
    )
    for _, stream in streams:
        stream._position += flat.nbytes


class KeyStream:
    """A stateful, forward-only keystream. Not thread-safe; one object per stream."""

    __slots__ = ("_encryptor", "_key", "_parallel", "_position")

    def __init__(self, key: DerivedKey, *, parallel: bool = True, start: int = 0) -> None:
        """Open the stream of ``key`` at byte ``start`` (random access into the same stream).

        ``parallel=False`` keeps all work on the calling thread (results are identical).

        Raises:
            ConfigError: ``key`` is not a STREAM key (e.g. a share-encryption key), or
                ``start`` is negative.
        """
        if not isinstance(key, DerivedKey):
            raise ConfigError("KeyStream needs a DerivedKey")
        if isinstance(start, bool) or not isinstance(start, int) or start < 0:
            raise ConfigError("start must be an int >= 0")
        self._key = key
        key.require(KeyKind.STREAM)
        self._position = start
        self._encryptor = self._seek(start)
        self._parallel = parallel and MAX_PARTS > 1

    @property
    def position(self) -> int:
        """Number of keystream bytes consumed so far."""
        return self._position

    def fill(self, out: npt.NDArray[np.generic]) -> None:
        """Overwrite ``out`` (uint8, uint32 or uint64) with the next ``out.nbytes`` bytes.

        Raises:
            ConfigError: wrong dtype, or ``out`` not contiguous and writeable.
        """
        _check_buffer(out, _FILL_DTYPES)
        _emit(self._encryptor, out.data.cast("B"))
        self._position += out.nbytes
        if _BIG_ENDIAN and out.dtype.itemsize > 1:
            out.byteswap(inplace=True)

    def words(self, count: int, dtype: npt.DTypeLike = np.uint32) -> npt.NDArray[np.generic]:
        """A new array of the next ``count`` words of ``dtype`` (uint8, uint32 or uint64)."""
        if count < 0:
            raise ConfigError("count must be >= 0")
        out = np.empty(count, dtype=dtype)
        self.fill(out)
        return out

    def add_into(self, acc: RingArray) -> None:
        """``acc += next acc.size words`` modulo 2**(8*itemsize), in place."""
        self._combine(acc, np.add)

    def subtract_from(self, acc: RingArray) -> None:
        """``acc -= next acc.size words`` modulo 2**(8*itemsize), in place."""
        self._combine(acc, np.subtract)

    def _combine(self, acc: RingArray, op: RingOp) -> None:
        _check_buffer(acc, RING_DTYPES)
        flat = acc.reshape(-1)
        parts = self._parts(flat) if self._parallel and flat.nbytes > CHUNK_BYTES else [flat]
        if len(parts) == 1:
            _combine_range(self._encryptor, flat, op)
        else:
            self._combine_parallel(parts, op)
        self._position += flat.nbytes

    def _parts(self, flat: RingArray) -> list[RingArray]:
        count = min(MAX_PARTS, flat.nbytes // PARALLEL_MIN_PART_BYTES)
        if count < 2:
            return [flat]
        words = -(-flat.size // count)
        return [flat[i : i + words] for i in range(0, flat.size, words)]

    def _seek(self, position: int) -> KeystreamContext:
        """A second encryptor of this stream, positioned at byte ``position``."""
        block, skip = divmod(position, BLOCK_BYTES)
        encryptor = self._key.suite.keystream(self._key.material, start_block=block)
        if skip:
            encryptor.update_into(_ZEROS[:skip], memoryview(bytearray(skip)))
        return encryptor

    def _combine_parallel(self, parts: list[RingArray], op: RingOp) -> None:
        offsets = np.cumsum([0] + [p.nbytes for p in parts[:-1]])
        encryptors = [self._encryptor] + [self._seek(self._position + int(o)) for o in offsets[1:]]
        run_all(
            [
                functools.partial(_combine_range, encryptor, part, op)
                for encryptor, part in zip(encryptors, parts, strict=True)
            ]
        )
        self._encryptor = encryptors[-1]  # the last part ends where the whole range ends
