"""Canonical binary encoding primitives for protocol messages (no pickle, no self-description).

A message is a fixed sequence of fields written with :class:`Writer` and read back with
:class:`Reader`. Integers are big-endian and fixed-width; byte strings and lists carry a 4-byte
length that is checked against an explicit limit *before* anything is allocated; ring vectors are
little-endian words. The encoding of a value is unique (canonical), so signatures over encodings
are signatures over values.

Every failure to read -- truncation, a length beyond its limit, trailing bytes, a bad tag -- raises
:class:`~securefed.errors.RemoteProtocolError`; no other exception escapes a :class:`Reader`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from securefed.crypto.hashing import tree_sha256
from securefed.errors import ConfigError, RemoteProtocolError

__all__ = ["MAX_BLOB_BYTES", "MAX_VECTOR_WORDS", "Reader", "Writer"]

T = TypeVar("T")


class Encoded(Protocol):
    """A nested message: its canonical encoding and that encoding's SHA-256."""

    def to_bytes(self) -> bytes: ...

    def digest(self) -> bytes: ...


MAX_BLOB_BYTES = 1 << 16  # keys, signatures, sealed shares, nested small messages
MAX_VECTOR_WORDS = 1 << 28  # 1 GiB of uint32: far beyond any model we aggregate
_RING_CODES: dict[np.dtype[Any], int] = {np.dtype(np.uint32): 4, np.dtype(np.uint64): 8}
_CODE_DTYPES: dict[int, np.dtype[Any]] = {4: np.dtype("<u4"), 8: np.dtype("<u8")}


class Writer:
    """Appends fields to a growing byte string.

    With ``digest_vectors=True`` (the form that signatures cover) a vector is written as its
    dtype, length and tree SHA-256 instead of its contents, so that signing a 4 MB vector never
    copies it, and a nested message as the SHA-256 of its encoding, so that a bundle of N
    commitments is signed over N digests, not N commitments. Both are as binding as the contents
    under SHA-256's collision resistance, the encodings being canonical.
    """

    __slots__ = ("_digest_vectors", "_parts")

    def __init__(self, *, digest_vectors: bool = False) -> None:
        self._parts: list[bytes | memoryview] = []
        self._digest_vectors = digest_vectors

    def uint(self, value: int, width: int) -> Writer:
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or not 0 <= value < 1 << (8 * width)
        ):
            raise ConfigError(f"value does not fit an unsigned {8 * width}-bit field")
        self._parts.append(value.to_bytes(width, "big"))
        return self

    def u8(self, value: int) -> Writer:
        return self.uint(value, 1)

    def u32(self, value: int) -> Writer:
        return self.uint(value, 4)

    def u64(self, value: int) -> Writer:
        return self.uint(value, 8)

    def fixed(self, data: bytes, length: int) -> Writer:
        if not isinstance(data, bytes) or len(data) != length:
            raise ConfigError(f"field must be exactly {length} bytes")
        self._parts.append(data)
        return self

    def blob(self, data: bytes, *, limit: int = MAX_BLOB_BYTES) -> Writer:
        if not isinstance(data, bytes) or len(data) > limit:
            raise ConfigError(f"field must be bytes of at most {limit} bytes")
        self.u32(len(data))
        self._parts.append(data)
        return self

    def blobs(self, values: Sequence[bytes], *, limit: int, item_limit: int) -> Writer:
        """``items(values, blob)`` in one pass: a count, then each value length-prefixed (the
        same bytes; for long lists of keys)."""
        if len(values) > limit:
            raise ConfigError(f"at most {limit} items")
        if not all(isinstance(v, bytes) and len(v) <= item_limit for v in values):
            raise ConfigError(f"field must be bytes of at most {item_limit} bytes")
        self.u32(len(values))
        self._parts.append(b"".join(len(v).to_bytes(4, "big") + v for v in values))
        return self

    def nested(self, message: Encoded, *, limit: int = MAX_BLOB_BYTES) -> Writer:
        """A nested message: its encoding as a blob, or in the signed form its 32-byte digest."""
        if self._digest_vectors:
            return self.fixed(message.digest(), 32)
        return self.blob(message.to_bytes(), limit=limit)

    def items(
        self, values: Sequence[T], write: Callable[[Writer, T], object], *, limit: int
    ) -> Writer:
        if len(values) > limit:
            raise ConfigError(f"at most {limit} items")
        self.u32(len(values))
        for value in values:
            write(self, value)
        return self

    def indices(self, values: Sequence[int], *, limit: int) -> Writer:
        return self.items(values, Writer.u32, limit=limit)

    def vector(
        self, values: npt.NDArray[np.unsignedinteger[Any]], *, limit: int = MAX_VECTOR_WORDS
    ) -> Writer:
        code = _RING_CODES.get(values.dtype) if isinstance(values, np.ndarray) else None
        if code is None or values.ndim != 1 or values.size > limit:
            raise ConfigError("vectors are 1-D uint32/uint64 arrays within the size limit")
        self.u8(code).u32(values.size)
        little = np.ascontiguousarray(values.astype(_CODE_DTYPES[code], copy=False))
        if self._digest_vectors:
            return self.fixed(tree_sha256(little.data), 32)
        self._parts.append(little.data.cast("B"))  # copied once, by getvalue's join
        return self

    def getvalue(self) -> bytes:
        return b"".join(self._parts)


class Reader:
    """Reads fields in order from ``data``; every problem is a RemoteProtocolError."""

    __slots__ = ("_data", "_offset")

    def __init__(self, data: bytes) -> None:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise RemoteProtocolError("message must be bytes")
        # Decoded vectors are views of the input: take an immutable copy of mutable buffers.
        self._data = memoryview(data if isinstance(data, bytes) else bytes(data)).cast("B")
        self._offset = 0

    def _take(self, length: int) -> memoryview:
        end = self._offset + length
        if length < 0 or end > len(self._data):
            raise RemoteProtocolError("message is truncated")
        view = self._data[self._offset : end]
        self._offset = end
        return view

    def uint(self, width: int) -> int:
        return int.from_bytes(self._take(width), "big")

    def u8(self) -> int:
        return self.uint(1)

    def u32(self) -> int:
        return self.uint(4)

    def u64(self) -> int:
        return self.uint(8)

    def fixed(self, length: int) -> bytes:
        return bytes(self._take(length))

    def blob(self, *, limit: int = MAX_BLOB_BYTES) -> bytes:
        length = self.u32()
        if length > limit:
            raise RemoteProtocolError("field exceeds its length limit")
        return bytes(self._take(length))

    def blobs(self, *, limit: int, item_limit: int) -> tuple[bytes, ...]:
        """``items(blob)`` in one loop: the same checks and result (for long lists of keys)."""
        count = self.u32()
        if count > limit:
            raise RemoteProtocolError("list exceeds its length limit")
        data, offset, size = self._data, self._offset, len(self._data)
        values = []
        for _ in range(count):
            start = offset + 4
            if start > size:
                raise RemoteProtocolError("message is truncated")
            length = int.from_bytes(data[offset:start], "big")
            if length > item_limit:
                raise RemoteProtocolError("field exceeds its length limit")
            offset = start + length
            if offset > size:
                raise RemoteProtocolError("message is truncated")
            values.append(bytes(data[start:offset]))
        self._offset = offset
        return tuple(values)

    def items(self, read: Callable[[Reader], T], *, limit: int) -> tuple[T, ...]:
        count = self.u32()
        if count > limit:
            raise RemoteProtocolError("list exceeds its length limit")
        return tuple(read(self) for _ in range(count))

    def indices(self, *, limit: int) -> tuple[int, ...]:
        return self.items(Reader.u32, limit=limit)

    def vector(self, *, limit: int = MAX_VECTOR_WORDS) -> npt.NDArray[np.unsignedinteger[Any]]:
        code = self.u8()
        dtype = _CODE_DTYPES.get(code)
        count = self.u32()
        if dtype is None or count > limit:
            raise RemoteProtocolError("malformed vector header")
        raw = self._take(count * code)
        # A read-only view of the received bytes, in native byte order (a copy only on big-endian).
        vector: npt.NDArray[np.unsignedinteger[Any]] = np.frombuffer(raw, dtype=dtype).astype(
            dtype.newbyteorder("="), copy=False
        )
        return vector

    def finish(self) -> None:
        """Raise unless every byte was consumed (no trailing data: one encoding per value)."""
        if self._offset != len(self._data):
            raise RemoteProtocolError("trailing bytes after message")
