"""The deployment's messages: one versioned encoding, shared by coordinator and institutions.

A deployment message is ``MAGIC "SF" || u8 version || blob kind || u32 count || (blob name ||
blob value)*``: a kind (what to do) and named byte fields, every length bounded. Protocol
messages travel inside, as their own signed wire encoding (:mod:`securefed.secagg.messages`);
Flower carries the whole thing as one ``bytes`` value of a ``ConfigRecord`` and never parses it.
Decoding never evaluates anything (no pickle): every problem is a
:class:`~securefed.errors.RemoteProtocolError`.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from securefed.errors import ConfigError, RemoteProtocolError
from securefed.secagg.wire import Reader, Writer

__all__ = [
    "DEPLOY_VERSION",
    "MAX_FIELD_BYTES",
    "DeployMessage",
    "decode_deploy",
    "pack_blobs",
    "pack_floats",
    "pack_ints",
    "unpack_blobs",
    "unpack_floats",
    "unpack_ints",
]

MAGIC = b"SF"
DEPLOY_VERSION = 1
MAX_FIELD_BYTES = 1 << 30  # one field: a model or a masked vector (well above d = 10^7 floats)
MAX_FIELDS = 64
MAX_ITEMS = 1 << 16
_NAME_LIMIT = 64


@dataclass(frozen=True, slots=True)
class DeployMessage:
    """One deployment message: ``kind`` and its named fields (bytes)."""

    kind: str
    fields: Mapping[str, bytes] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        """The canonical encoding. Raises ConfigError for an oversized kind, name or field."""
        if len(self.fields) > MAX_FIELDS:
            raise ConfigError(f"a deployment message has at most {MAX_FIELDS} fields")
        try:
            kind = self.kind.encode("ascii")
            names = {name: name.encode("ascii") for name in self.fields}
        except UnicodeEncodeError:
            raise ConfigError("deployment message kinds and field names are ASCII") from None
        w = Writer().fixed(MAGIC, 2).u8(DEPLOY_VERSION).blob(kind, limit=_NAME_LIMIT)
        w.u32(len(self.fields))
        for name in sorted(self.fields):
            w.blob(names[name], limit=_NAME_LIMIT).blob(self.fields[name], limit=MAX_FIELD_BYTES)
        return w.getvalue()

    def get(self, name: str) -> bytes:
        """Field ``name``; RemoteProtocolError if absent (the sender broke the format)."""
        try:
            return self.fields[name]
        except KeyError:
            raise RemoteProtocolError(f"{self.kind} message without field {name!r}") from None

    def text(self, name: str) -> str:
        try:
            return self.get(name).decode("utf-8")
        except UnicodeDecodeError:
            raise RemoteProtocolError(f"field {name!r} is not UTF-8") from None

    def integer(self, name: str) -> int:
        data = self.get(name)
        if len(data) != 8:
            raise RemoteProtocolError(f"field {name!r} is not a u64")
        return int.from_bytes(data, "big")


def decode_deploy(data: bytes) -> DeployMessage:
    """Decode one deployment message (RemoteProtocolError for anything malformed)."""
    r = Reader(data)
    if r.fixed(2) != MAGIC or r.u8() != DEPLOY_VERSION:
        raise RemoteProtocolError("not a securefed v1 deployment message")
    try:
        kind = r.blob(limit=_NAME_LIMIT).decode("ascii")
    except UnicodeDecodeError:
        raise RemoteProtocolError("malformed message kind") from None
    count = r.u32()
    if count > MAX_FIELDS:
        raise RemoteProtocolError("too many fields")
    fields: dict[str, bytes] = {}
    for _ in range(count):
        try:
            name = r.blob(limit=_NAME_LIMIT).decode("ascii")
        except UnicodeDecodeError:
            raise RemoteProtocolError("malformed field name") from None
        if fields and name <= next(reversed(fields)):
            raise RemoteProtocolError("fields out of order or repeated (the encoding is canonical)")
        fields[name] = r.blob(limit=MAX_FIELD_BYTES)
    r.finish()
    return DeployMessage(kind, fields)


def u64(value: int) -> bytes:
    return Writer().u64(value).getvalue()


def pack_blobs(items: Sequence[bytes]) -> bytes:
    """A list of byte strings (e.g. several protocol messages for one recipient)."""
    return (
        Writer()
        .items(list(items), lambda w, b: w.blob(b, limit=MAX_FIELD_BYTES), limit=MAX_ITEMS)
        .getvalue()
    )


def unpack_blobs(data: bytes) -> tuple[bytes, ...]:
    r = Reader(data)
    items = r.items(lambda rd: rd.blob(limit=MAX_FIELD_BYTES), limit=MAX_ITEMS)
    r.finish()
    return items


def pack_ints(values: Sequence[int]) -> bytes:
    return Writer().items(list(values), Writer.u64, limit=MAX_ITEMS).getvalue()


def unpack_ints(data: bytes) -> tuple[int, ...]:
    r = Reader(data)
    values = r.items(Reader.u64, limit=MAX_ITEMS)
    r.finish()
    return values


def pack_floats(values: npt.ArrayLike) -> bytes:
    """A float64 vector, little-endian."""
    return np.ascontiguousarray(np.asarray(values, dtype="<f8").reshape(-1)).tobytes()


def unpack_floats(data: bytes) -> npt.NDArray[np.float64]:
    if len(data) % 8:
        raise RemoteProtocolError("a float64 vector has a length that is a multiple of 8")
    vector = np.frombuffer(data, dtype="<f8").astype(np.float64)
    if not np.isfinite(vector).all():
        raise RemoteProtocolError("vector holds NaN or infinite values")
    return vector


def pack_float(value: float | None) -> bytes:
    """One optional float (NaN stands for None)."""
    return struct.pack(">d", float("nan") if value is None else value)


def unpack_float(data: bytes) -> float | None:
    if len(data) != 8:
        raise RemoteProtocolError("not a float64")
    (value,) = struct.unpack(">d", data)
    return None if math.isnan(value) else float(value)
