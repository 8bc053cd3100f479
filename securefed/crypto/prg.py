"""The PRG: a keystream under a purpose-bound key, read as ring elements (DESIGN R5).

``KeyStream(key)`` is the suite's stream cipher (AES-256-CTR for ``default`` and ``fips-p256``)
run from counter block 0 under a :class:`~securefed.crypto.kdf.DerivedKey` of kind ``STREAM``.
Different streams (purposes, targets, rounds) always use different keys, never different counter
offsets of one key, so no two streams can overlap.

Guarantees:

* Bytes are consumed in order: producing ``n`` bytes in any sequence of calls (of any sizes and
  through any of :meth:`fill`, :meth:`add_into`, :meth:`subtract_from`) yields exactly the first
  ``n`` bytes of the stream. A long mask can therefore be produced in chunks.
* Words are little-endian on every platform.
* :meth:`add_into` / :meth:`subtract_from` work in place, modulo ``2**32`` or ``2**64``, through a
  small cache-resident scratch buffer: the mask is never materialised in full.
"""

from __future__ import annotations

import sys

import numpy as np
import numpy.typing as npt

from securefed.crypto.kdf import DerivedKey, KeyKind
from securefed.errors import ConfigError

__all__ = ["RING_DTYPES", "KeyStream"]

# Keystream is produced in pieces of this size: small enough to stay in L2 cache, large enough
# that the per-call overhead is negligible (measured: 256 KiB-1 MiB are equally fast here).
CHUNK_BYTES = 1 << 19
RING_DTYPES = (np.dtype(np.uint32), np.dtype(np.uint64))
_FILL_DTYPES = (np.dtype(np.uint8), *RING_DTYPES)
_ZEROS = bytes(CHUNK_BYTES)
_BIG_ENDIAN = sys.byteorder == "big"


def _check_buffer(array: npt.NDArray[np.generic], allowed: tuple[np.dtype[np.generic], ...]) -> None:
    if not isinstance(array, np.ndarray):
        raise ConfigError("expected a numpy array")
    if array.dtype not in allowed:
        names = ", ".join(str(d) for d in allowed)
        raise ConfigError(f"array dtype must be one of {names}, got {array.dtype}")
    if not (array.flags.c_contiguous and array.flags.writeable):
        raise ConfigError("array must be C-contiguous and writeable")


class KeyStream:
    """A stateful, forward-only keystream. Not thread-safe; one object per stream."""

    __slots__ = ("_encryptor", "_position", "_scratch")

    def __init__(self, key: DerivedKey) -> None:
        """Start the stream of ``key``.

        Raises:
            ConfigError: ``key`` is not a STREAM key (e.g. a share-encryption key).
        """
        if not isinstance(key, DerivedKey):
            raise ConfigError("KeyStream needs a DerivedKey")
        self._encryptor = key.suite.keystream(key.require(KeyKind.STREAM))
        self._position = 0
        self._scratch: npt.NDArray[np.uint8] | None = None

    @property
    def position(self) -> int:
        """Number of keystream bytes consumed so far."""
        return self._position

    def _emit(self, out: memoryview) -> None:
        """Write the next ``len(out)`` keystream bytes into ``out`` (a flat byte view)."""
        for start in range(0, len(out), CHUNK_BYTES):
            piece = out[start : start + CHUNK_BYTES]
            self._encryptor.update_into(_ZEROS[: len(piece)], piece)
        self._position += len(out)

    def fill(self, out: npt.NDArray[np.generic]) -> None:
        """Overwrite ``out`` (uint8, uint32 or uint64) with the next ``out.nbytes`` bytes.

        Raises:
            ConfigError: wrong dtype, or ``out`` not contiguous and writeable.
        """
        _check_buffer(out, _FILL_DTYPES)
        self._emit(memoryview(out).cast("B"))
        if _BIG_ENDIAN and out.dtype.itemsize > 1:
            out.byteswap(inplace=True)

    def words(self, count: int, dtype: npt.DTypeLike = np.uint32) -> npt.NDArray[np.generic]:
        """A new array of the next ``count`` words of ``dtype`` (uint8, uint32 or uint64)."""
        if count < 0:
            raise ConfigError("count must be >= 0")
        out = np.empty(count, dtype=dtype)
        self.fill(out)
        return out

    def add_into(self, acc: npt.NDArray[np.unsignedinteger]) -> None:
        """``acc += next acc.size words`` modulo 2**(8*itemsize), in place."""
        self._combine(acc, np.add)

    def subtract_from(self, acc: npt.NDArray[np.unsignedinteger]) -> None:
        """``acc -= next acc.size words`` modulo 2**(8*itemsize), in place."""
        self._combine(acc, np.subtract)

    def _combine(self, acc: npt.NDArray[np.unsignedinteger], op: np.ufunc) -> None:
        _check_buffer(acc, RING_DTYPES)
        flat = acc.reshape(-1)
        if self._scratch is None:
            self._scratch = np.empty(CHUNK_BYTES, dtype=np.uint8)
        words_per_chunk = CHUNK_BYTES // acc.dtype.itemsize
        little = acc.dtype.newbyteorder("<")
        for start in range(0, flat.size, words_per_chunk):
            target = flat[start : start + words_per_chunk]
            raw = self._scratch[: target.nbytes]
            self._emit(memoryview(raw))
            op(target, raw.view(little), out=target)
