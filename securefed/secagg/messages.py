"""Typed protocol messages and their one canonical binary encoding.

One frozen, slotted dataclass per message. Constructors validate (an invalid message cannot
exist); :func:`decode` turns bytes back into a message or raises
:class:`~securefed.errors.RemoteProtocolError` -- nothing else escapes it.

Framing: ``b"SF" | version (1 byte) | type tag (1 byte) | fields... | signature (length-prefixed)``.
Every message carries ``session_id`` and ``round``; every message is signed by its sender (a
client's identity key, or the server's for broadcasts) over
``"securefed/v1/sig/<type>" | 0x00 | encoding without the signature``, in which vectors and nested
messages enter as their SHA-256 (:class:`~securefed.secagg.wire.Writer`), so a signature for one
message type, session or round never verifies as another. A DealtShare is the one exception: it
is signed through the Merkle root over all its dealer's DealtShares in the dealer's signed
ShareCommitment (``SignedBy.COVERED``).

Flow of one round (client ``u``, server ``S``)::

    u -> S  AdvertiseKeys        fresh public keys: c_uv per neighbour v (share encryption), s_u
                                 (masks)
    S -> u  KeyDirectory         all valid advertisements (defines U1)
    u -> S  ShareKeys            signed commitments to its sharing polynomials and to its dealt
                                 shares (a Merkle root) + one AEAD-sealed DealtShare per holder
    S -> v  ShareBundle          all commitments (defines U2) + the DealtShares for v, each
                                 with its inclusion proof
    u -> S  ShareReceipt         complaints: the dealers whose shares failed v's checks, each
                                 with v's key for that pair as evidence
    S -> u  MaskRequest          the members U2' who mask together (U2 less proven-bad dealers,
                                 false complainers and clients that sent no receipt)
    u -> S  MaskedInput          y_u = enc(x_u) + PRG(b_u) + sum_v +-PRG(s_uv)
    S -> u  ConsistencyRequest   the one survivor set U3 of the round
    u -> S  ConsistencySignature signature over the transcript hash (which includes U3)
    S -> u  UnmaskRequest        U3 and >= t consistency signatures
    u -> S  UnmaskResponse       b-shares of U3 members, s-shares of dropped U2 members
    S -> i  BlindedOutput        (attention mode) target i's output, still blinded by pads only i
                                 can remove
    S -> u  Abort                (any time) the reason the round ended without output

In attention mode a client sends one MaskedInput per target (enc(xi_iu w_u) + masks + pad), the
key directory carries the weight matrix xi, and AdvertiseKeys carries the target-blinding key.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, cast

import numpy as np
import numpy.typing as npt

from securefed.errors import ConfigError, LocalProtocolError, RemoteProtocolError
from securefed.secagg.wire import MAX_BLOB_BYTES, Reader, Writer

if TYPE_CHECKING:
    from securefed.crypto import SigningKey

__all__ = [
    "MAGIC",
    "MAX_PARTIES",
    "Abort",
    "AdvertiseKeys",
    "BlindedOutput",
    "Complaint",
    "ConsistencyRequest",
    "ConsistencySignature",
    "DealtShare",
    "KeyDirectory",
    "MaskRequest",
    "MaskedInput",
    "Message",
    "MessageType",
    "SealedShare",
    "SessionKey",
    "SessionKeyDirectory",
    "ShareBundle",
    "ShareCommitment",
    "ShareKeys",
    "ShareReceipt",
    "SignedBy",
    "SketchSeedCommitment",
    "SketchSeedDelivery",
    "SketchSeedOffer",
    "UnmaskRequest",
    "UnmaskResponse",
    "dealt_leaves",
    "decode",
    "decode_as",
    "join_proof",
    "sign_message",
    "split_proof",
]

MAGIC = b"SF"
WIRE_VERSION = 1
MAX_PARTIES = 4096
MAX_REASON_BYTES = 1024
SESSION_ID_BYTES = 32
DIGEST_BYTES = 32
_SIG_LIMIT = 256
_KEY_LIMIT = 133
_SHARE_LIMIT = 1024
# A commitment to a polynomial of degree < MAX_PARTIES (securefed.crypto.vss's encoding).
_POLYNOMIAL_LIMIT = 6 + 65 * 4096
_COMMITMENT_LIMIT = 2 * _POLYNOMIAL_LIMIT + 1024
# An audit path in a tree of at most MAX_PARTIES leaves: at most 16 hashes.
_PROOF_LIMIT = 16 * DIGEST_BYTES
# An advertisement with a share key for every other client (the complete graph at MAX_PARTIES).
_ADVERTISEMENT_LIMIT = MAX_PARTIES * (4 + _KEY_LIMIT) + 1024
MAX_WEIGHTS_BYTES = 1 << 20
# A release history: a header and up to 16 rounds (policy.MAX_HISTORY_ROUNDS), each a round
# number and a blob of the same encoding as the weights.
MAX_HISTORY_BYTES = 16 * (MAX_WEIGHTS_BYTES + 16) + 16
_NO_TARGET = 2**32 - 1  # the wire form of "no target" (sum mode)

M = TypeVar("M", bound="Message")


class MessageType(Enum):
    """Wire tags. Never reuse a number."""

    ADVERTISE_KEYS = 1
    KEY_DIRECTORY = 2
    SHARE_COMMITMENT = 3
    SHARE_KEYS = 4
    SHARE_BUNDLE = 5
    MASKED_INPUT = 6
    CONSISTENCY_REQUEST = 7
    CONSISTENCY_SIGNATURE = 8
    UNMASK_REQUEST = 9
    UNMASK_RESPONSE = 10
    ABORT = 11
    BLINDED_OUTPUT = 12
    SESSION_KEY = 13
    SESSION_KEY_DIRECTORY = 14
    SKETCH_SEED_COMMITMENT = 15
    SKETCH_SEED_OFFER = 16
    SKETCH_SEED_DELIVERY = 17
    DEALT_SHARE = 18
    SHARE_RECEIPT = 19
    MASK_REQUEST = 20


class SignedBy(Enum):
    """Whose identity key signs a message type."""

    CLIENT = "client"
    SERVER = "server"
    # Signed by no one on its own: covered by a signature over another message (a DealtShare is
    # a leaf of the Merkle root in its dealer's signed ShareCommitment).
    COVERED = "covered"


def _require(condition: bool, what: str) -> None:
    if not condition:
        raise LocalProtocolError(f"invalid message: {what}")


def _is_index(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < MAX_PARTIES


def _is_index_set(values: object) -> bool:
    """A canonical set of indices: a tuple, strictly increasing."""
    return (
        isinstance(values, tuple)
        and all(_is_index(v) for v in values)
        and all(a < b for a, b in itertools.pairwise(values))
    )


def _is_tuple_of(values: object, cls: type, key: str) -> bool:
    """A tuple of ``cls`` instances, strictly increasing in attribute ``key`` (a canonical set)."""
    return (
        isinstance(values, tuple)
        and len(values) <= MAX_PARTIES
        and all(isinstance(v, cls) for v in values)
        and _is_index_set(tuple(getattr(v, key) for v in values))
    )


def _is_text(value: object, limit: int) -> bool:
    """A str whose UTF-8 encoding exists (no lone surrogates) and is at most ``limit`` bytes."""
    if not isinstance(value, str):
        return False
    try:
        return len(value.encode("utf-8")) <= limit
    except UnicodeEncodeError:
        return False


def _is_ring_vector(value: object) -> bool:
    return (
        isinstance(value, np.ndarray)
        and value.ndim == 1
        and value.dtype in (np.dtype(np.uint32), np.dtype(np.uint64))
    )


def _is_bytes(value: object, limit: int, exact: int | None = None) -> bool:
    if not isinstance(value, bytes) or len(value) > limit:
        return False
    return exact is None or len(value) == exact


@dataclass(frozen=True, slots=True)
class Message:
    """Fields every message has. Subclasses add theirs and end with ``signature``."""

    TYPE: ClassVar[MessageType]
    SIGNER: ClassVar[SignedBy]
    # Whether the encodings may be kept once computed: False for messages carrying numpy
    # vectors (an array is mutable, so its encoding is recomputed on every call).
    CACHE_ENCODING: ClassVar[bool] = True
    # True for types without vectors or nested messages: their signed form is their wire form,
    # so a decoded one's signed payload is cut from the bytes it was decoded from.
    FLAT: ClassVar[bool] = False

    session_id: bytes
    round: int
    # Encodings computed so far (see _encoded): a message is immutable, and a nested commitment
    # or advertisement is encoded, hashed and signed-over many times in one round.
    _encodings: dict[str, bytes] = field(
        init=False, repr=False, compare=False, hash=False, default_factory=dict
    )

    def _validate_common(self) -> None:
        _require(_is_bytes(self.session_id, SESSION_ID_BYTES, SESSION_ID_BYTES), "session_id")
        _require(
            isinstance(self.round, int)
            and not isinstance(self.round, bool)
            and 0 <= self.round < 2**63,
            "round",
        )
        _require(_is_bytes(getattr(self, "signature", b""), _SIG_LIMIT), "signature")

    def _write_fields(self, w: Writer) -> None:
        raise NotImplementedError

    @classmethod
    def _read_fields(cls: type[M], r: Reader, session_id: bytes, round_: int) -> dict[str, Any]:
        raise NotImplementedError

    def _unsigned(self, *, digest_vectors: bool = False) -> bytes:
        w = Writer(digest_vectors=digest_vectors).fixed(MAGIC, 2).u8(WIRE_VERSION)
        w.u8(self.TYPE.value).fixed(self.session_id, SESSION_ID_BYTES).u64(self.round)
        self._write_fields(w)
        return w.getvalue()

    def _encoded(self, kind: str, compute: Callable[[], bytes]) -> bytes:
        """``compute()``, kept per message when its class allows (``CACHE_ENCODING``)."""
        if not self.CACHE_ENCODING:
            return compute()
        value = self._encodings.get(kind)
        if value is None:
            value = self._encodings[kind] = compute()
        return value

    def signed_payload(self) -> bytes:
        """The bytes the sender signs (domain-separated by message type).

        Vectors enter as their tree SHA-256 (see :class:`~securefed.secagg.wire.Writer`).
        """
        return self._encoded("signed", self._compute_signed_payload)

    def _compute_signed_payload(self) -> bytes:
        label = f"securefed/v1/sig/{self.TYPE.name.lower()}".encode()
        wire = self._encodings.get("wire")
        if self.FLAT and wire is not None:  # wire = unsigned form || u32 length || signature
            signature: bytes = getattr(self, "signature")  # noqa: B009 - every subclass has one
            return label + b"\x00" + wire[: len(wire) - 4 - len(signature)]
        return label + b"\x00" + self._unsigned(digest_vectors=True)

    def to_bytes(self) -> bytes:
        return self._encoded("wire", self._compute_bytes)

    def _compute_bytes(self) -> bytes:
        signature: bytes = getattr(self, "signature")  # noqa: B009 - every subclass defines it
        return self._unsigned() + Writer().blob(signature, limit=_SIG_LIMIT).getvalue()

    def digest(self) -> bytes:
        """SHA-256 of the full encoding (used in transcripts and duplicate detection)."""
        return self._encoded("digest", lambda: hashlib.sha256(self.to_bytes()).digest())


class _EqualByEncoding:
    """Equality and hashing by the wire encoding, for messages that carry numpy vectors (numpy
    arrays do not compare as plain values). Their encodings are not kept (a vector is mutable)."""

    __slots__ = ()
    CACHE_ENCODING: ClassVar[bool] = False

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self.to_bytes() == other.to_bytes()  # type: ignore[attr-defined, no-any-return]

    def __hash__(self) -> int:
        return hash(self.digest())  # type: ignore[attr-defined]


_REGISTRY: dict[int, type[Message]] = {}


def _register(cls: type[M]) -> type[M]:
    _REGISTRY[cls.TYPE.value] = cls
    return cls


def decode(data: bytes) -> Message:
    """Decode one message of any type. Raises RemoteProtocolError for anything malformed."""
    return _decode(data, None)


def decode_as(data: bytes, expected: type[M]) -> M:
    """Decode one message that must be of type ``expected`` (else RemoteProtocolError)."""
    message = _decode(data, expected)
    if not isinstance(message, expected):  # pragma: no cover - _decode checked the tag
        raise RemoteProtocolError("unexpected message type")
    return message


def _decode(data: bytes, expected: type[Message] | None) -> Message:
    r = Reader(data)
    if r.fixed(2) != MAGIC or r.u8() != WIRE_VERSION:
        raise RemoteProtocolError("not a securefed v1 message")
    cls = _REGISTRY.get(r.u8())
    if cls is None or (expected is not None and cls is not expected):
        raise RemoteProtocolError("unexpected message type")
    session_id, round_ = r.fixed(SESSION_ID_BYTES), r.u64()
    try:  # nested records validate while they are read: their errors are the peer's, too
        fields = cls._read_fields(r, session_id, round_)
        signature = r.blob(limit=_SIG_LIMIT)
        r.finish()
        message: Message = cast(Any, cls)(
            session_id=session_id, round=round_, **fields, signature=signature
        )
    except (LocalProtocolError, ConfigError, ValueError, TypeError) as exc:
        raise RemoteProtocolError(f"malformed {cls.__name__}") from exc
    if message.CACHE_ENCODING:  # the encoding is canonical: re-encoding gives these bytes
        message._encodings["wire"] = bytes(data)
    return message


def sign_message(
    cls: type[M], identity: SigningKey, session_id: bytes, round_: int, **fields: Any
) -> M:
    """A ``cls`` message with ``fields``, signed by ``identity`` over its signed payload."""
    factory = cast(Any, cls)
    unsigned = factory(session_id=session_id, round=round_, **fields, signature=b"")
    signature = identity.sign(unsigned.signed_payload())
    message: M = factory(session_id=session_id, round=round_, **fields, signature=signature)
    return message


def _nested(r: Reader, cls: type[M], limit: int = MAX_BLOB_BYTES) -> M:
    return decode_as(r.blob(limit=limit), cls)


@_register
@dataclass(frozen=True, slots=True)
class AdvertiseKeys(Message):
    """Client -> server: fresh public keys for this round, signed by the client's identity key.

    ``encryption_keys`` holds one share-encryption key per neighbour of the sender in the round's
    fixed masking graph, in neighbour order: the channel of a pair uses the two keys the pair's
    members advertised for each other, so a holder can reveal its key for one pair (to prove a
    dealer's share bad) without exposing any other channel.
    """

    TYPE = MessageType.ADVERTISE_KEYS
    FLAT = True
    SIGNER = SignedBy.CLIENT
    sender: int
    encryption_keys: tuple[bytes, ...]
    mask_key: bytes
    target_key: bytes  # empty in sum mode; the target-blinding key t_u in attention mode
    signature: bytes

    def __post_init__(self) -> None:
        self._validate_common()
        _require(_is_index(self.sender), "sender")
        _require(
            isinstance(self.encryption_keys, tuple)
            and len(self.encryption_keys) < MAX_PARTIES
            and all(_is_bytes(k, _KEY_LIMIT) and bool(k) for k in self.encryption_keys),
            "encryption keys",
        )
        _require(_is_bytes(self.mask_key, _KEY_LIMIT) and bool(self.mask_key), "key")
        _require(_is_bytes(self.target_key, _KEY_LIMIT), "key")

    def _write_fields(self, w: Writer) -> None:
        w.u32(self.sender)
        w.blobs(self.encryption_keys, limit=MAX_PARTIES, item_limit=_KEY_LIMIT)
        w.blob(self.mask_key).blob(self.target_key)

    @classmethod
    def _read_fields(cls, r: Reader, session_id: bytes, round_: int) -> dict[str, Any]:
        return {
            "sender": r.u32(),
            "encryption_keys": r.blobs(limit=MAX_PARTIES, item_limit=_KEY_LIMIT),
            "mask_key": r.blob(limit=_KEY_LIMIT),
            "target_key": r.blob(limit=_KEY_LIMIT),
        }


@_register
@dataclass(frozen=True, slots=True)
class KeyDirectory(Message):
    """Server -> every client in U1: the valid advertisements, sorted by sender, and in attention
    mode the encoded weight matrix xi of the round and the server's release history
    (:class:`~securefed.secagg.history.ReleaseHistory`; empty before the first release), both
    empty in sum mode."""

    TYPE = MessageType.KEY_DIRECTORY
    SIGNER = SignedBy.SERVER
    advertisements: tuple[AdvertiseKeys, ...]
    weights: bytes
    history: bytes
    signature: bytes

    def __post_init__(self) -> None:
        self._validate_common()
        _require(
            _is_tuple_of(self.advertisements, AdvertiseKeys, "sender"),
            "advertisements must be a tuple sorted by sender",
        )
        _require(_is_bytes(self.weights, MAX_WEIGHTS_BYTES), "weights")
        _require(_is_bytes(self.history, MAX_HISTORY_BYTES), "history")

    @property
    def senders(self) -> tuple[int, ...]:
        return tuple(a.sender for a in self.advertisements)

    def _write_fields(self, w: Writer) -> None:
        w.items(
            self.advertisements,
            lambda w, a: w.nested(a, limit=_ADVERTISEMENT_LIMIT),
            limit=MAX_PARTIES,
        )
        w.blob(self.weights, limit=MAX_WEIGHTS_BYTES)
        w.blob(self.history, limit=MAX_HISTORY_BYTES)

    @classmethod
    def _read_fields(cls, r: Reader, session_id: bytes, round_: int) -> dict[str, Any]:
        return {
            "advertisements": r.items(
                lambda r: _nested(r, AdvertiseKeys, _ADVERTISEMENT_LIMIT), limit=MAX_PARTIES
            ),
            "weights": r.blob(limit=MAX_WEIGHTS_BYTES),
            "history": r.blob(limit=MAX_HISTORY_BYTES),
        }


@_register
@dataclass(frozen=True, slots=True)
class ShareCommitment(Message):
    """Client-signed commitments: SHA-256 over a labelled encoding of its self-mask seed b_u,
    (verifiable sharing) the Feldman commitments to its mask-key and self-seed polynomials
    (:mod:`securefed.secagg.sharing`; both empty under plain Shamir sharing), and ``dealt_root``:
    the RFC 6962 Merkle root over the signed payloads of its DealtShares in recipient order
    (:func:`dealt_leaves`), so that one signature covers every share it dealt."""

    TYPE = MessageType.SHARE_COMMITMENT
    FLAT = True
    SIGNER = SignedBy.CLIENT
    sender: int
    self_seed_commitment: bytes
    mask_key_polynomial: bytes
    self_seed_polynomial: bytes
    dealt_root: bytes
    signature: bytes

    def __post_init__(self) -> None:
        self._validate_common()
        _require(_is_index(self.sender), "sender")
        _require(_is_bytes(self.self_seed_commitment, DIGEST_BYTES, DIGEST_BYTES), "commitment")
        _require(_is_bytes(self.mask_key_polynomial, _POLYNOMIAL_LIMIT), "polynomial")
        _require(_is_bytes(self.self_seed_polynomial, _POLYNOMIAL_LIMIT), "polynomial")
        _require(_is_bytes(self.dealt_root, DIGEST_BYTES, DIGEST_BYTES), "dealt root")

    def _write_fields(self, w: Writer) -> None:
        w.u32(self.sender).fixed(self.self_seed_commitment, DIGEST_BYTES)
        w.blob(self.mask_key_polynomial, limit=_POLYNOMIAL_LIMIT)
        w.blob(self.self_seed_polynomial, limit=_POLYNOMIAL_LIMIT)
        w.fixed(self.dealt_root, DIGEST_BYTES)

    @classmethod
    def _read_fields(cls, r: Reader, session_id: bytes, round_: int) -> dict[str, Any]:
        return {
            "sender": r.u32(),
            "self_seed_commitment": r.fixed(DIGEST_BYTES),
            "mask_key_polynomial": r.blob(limit=_POLYNOMIAL_LIMIT),
            "self_seed_polynomial": r.blob(limit=_POLYNOMIAL_LIMIT),
            "dealt_root": r.fixed(DIGEST_BYTES),
        }


@_register
@dataclass(frozen=True, slots=True)
class DealtShare(Message):
    """Dealer -> one holder (through the server): the dealer's two shares for ``recipient``,
    AEAD-sealed under the pair's channel key. Not signed on its own (``signature`` is empty):
    its signed payload is a leaf of the Merkle root in the dealer's signed ShareCommitment, and
    the holder gets the leaf's inclusion proof with it, so the server cannot alter it and a
    holder's complaint about it can be judged by anyone."""

    TYPE = MessageType.DEALT_SHARE
    FLAT = True
    SIGNER = SignedBy.COVERED
    sender: int
    recipient: int
    ciphertext: bytes
    signature: bytes = b""

    def __post_init__(self) -> None:
        self._validate_common()
        _require(_is_index(self.sender) and _is_index(self.recipient), "sender or recipient")
        _require(self.sender != self.recipient, "a dealer keeps its own share")
        _require(_is_bytes(self.ciphertext, _SHARE_LIMIT), "ciphertext")
        _require(self.signature == b"", "a dealt share is covered by its dealer's root")

    def _write_fields(self, w: Writer) -> None:
        w.u32(self.sender).u32(self.recipient).blob(self.ciphertext, limit=_SHARE_LIMIT)

    @classmethod
    def _read_fields(cls, r: Reader, session_id: bytes, round_: int) -> dict[str, Any]:
        return {
            "sender": r.u32(),
            "recipient": r.u32(),
            "ciphertext": r.blob(limit=_SHARE_LIMIT),
        }


@dataclass(frozen=True, slots=True)
class SealedShare:
    """Shares of one sender for one recipient, AEAD-sealed under the sender->recipient key."""

    peer: int  # the recipient in ShareKeys, the sender in ShareBundle
    ciphertext: bytes

    def __post_init__(self) -> None:
        _require(_is_index(self.peer), "peer")
        _require(_is_bytes(self.ciphertext, _SHARE_LIMIT), "ciphertext")

    def write(self, w: Writer) -> None:
        w.u32(self.peer).blob(self.ciphertext, limit=_SHARE_LIMIT)

    @classmethod
    def read(cls, r: Reader) -> SealedShare:
        return cls(r.u32(), r.blob(limit=_SHARE_LIMIT))


def _sealed_order_ok(sealed: tuple[SealedShare, ...]) -> bool:
    return _is_tuple_of(sealed, SealedShare, "peer")


class _CommittedSealed:
    """Shared by ShareKeys and SketchSeedOffer: a client's signed commitment (of type
    ``COMMITMENT``, which names the sender) and ciphertexts sealed for its peers, by recipient."""

    __slots__ = ()
    COMMITMENT: ClassVar[type[Any]]
    commitment: Any
    sealed: tuple[SealedShare, ...]

    if TYPE_CHECKING:

        def _validate_common(self) -> None: ...  # provided by Message (later in the MRO)

    def __post_init__(self) -> None:
        self._validate_common()
        _require(isinstance(self.commitment, self.COMMITMENT), "commitment")
        _require(_sealed_order_ok(self.sealed), "sealed values must be sorted by recipient")

    @property
    def sender(self) -> int:
        sender: int = self.commitment.sender
        return sender

    def _write_fields(self, w: Writer) -> None:
        w.nested(self.commitment)
        w.items(self.sealed, lambda w, s: s.write(w), limit=MAX_PARTIES)

    @classmethod
    def _read_fields(cls, r: Reader, session_id: bytes, round_: int) -> dict[str, Any]:
        return {
            "commitment": _nested(r, cls.COMMITMENT),
            "sealed": r.items(SealedShare.read, limit=MAX_PARTIES),
        }


@_register
@dataclass(frozen=True, slots=True)
class ShareKeys(Message):
    """Client -> server: its signed commitments and one DealtShare per holder (by recipient; the
    dealer keeps its own share), covered by the commitment's ``dealt_root``."""

    TYPE = MessageType.SHARE_KEYS
    SIGNER = SignedBy.CLIENT
    commitment: ShareCommitment
    dealt: tuple[DealtShare, ...]
    signature: bytes

    def __post_init__(self) -> None:
        self._validate_common()
        _require(isinstance(self.commitment, ShareCommitment), "commitment")
        _require(
            _is_tuple_of(self.dealt, DealtShare, "recipient"),
            "dealt shares must be a tuple sorted by recipient",
        )
        _require(all(d.sender == self.commitment.sender for d in self.dealt), "dealt by another")

    @property
    def sender(self) -> int:
        return self.commitment.sender

    def _write_fields(self, w: Writer) -> None:
        w.nested(self.commitment, limit=_COMMITMENT_LIMIT)
        w.items(self.dealt, lambda w, d: w.nested(d), limit=MAX_PARTIES)

    @classmethod
    def _read_fields(cls, r: Reader, session_id: bytes, round_: int) -> dict[str, Any]:
        return {
            "commitment": _nested(r, ShareCommitment, _COMMITMENT_LIMIT),
            "dealt": r.items(lambda r: _nested(r, DealtShare), limit=MAX_PARTIES),
        }


@_register
@dataclass(frozen=True, slots=True)
class ShareBundle(Message):
    """Server -> client v in U2: every commitment of U2, the DealtShares for v (by dealer), and
    for each the inclusion proof of its leaf under the dealer's ``dealt_root`` (``proofs[i]``
    for ``dealt[i]``: the audit path's hashes concatenated, :func:`split_proof`)."""

    TYPE = MessageType.SHARE_BUNDLE
    SIGNER = SignedBy.SERVER
    recipient: int
    commitments: tuple[ShareCommitment, ...]
    dealt: tuple[DealtShare, ...]
    proofs: tuple[bytes, ...]
    signature: bytes

    def __post_init__(self) -> None:
        self._validate_common()
        _require(_is_index(self.recipient), "recipient")
        _require(
            _is_tuple_of(self.commitments, ShareCommitment, "sender"),
            "commitments must be a tuple sorted by sender",
        )
        _require(
            _is_tuple_of(self.dealt, DealtShare, "sender"),
            "dealt shares must be a tuple sorted by sender",
        )
        _require(
            isinstance(self.proofs, tuple)
            and len(self.proofs) == len(self.dealt)
            and all(_is_proof(p) for p in self.proofs),
            "one inclusion proof per dealt share",
        )

    def _write_fields(self, w: Writer) -> None:
        w.u32(self.recipient)
        w.items(
            self.commitments,
            lambda w, c: w.nested(c, limit=_COMMITMENT_LIMIT),
            limit=MAX_PARTIES,
        )
        w.items(self.dealt, lambda w, d: w.nested(d), limit=MAX_PARTIES)
        w.items(self.proofs, lambda w, p: w.blob(p, limit=_PROOF_LIMIT), limit=MAX_PARTIES)

    @classmethod
    def _read_fields(cls, r: Reader, session_id: bytes, round_: int) -> dict[str, Any]:
        return {
            "recipient": r.u32(),
            "commitments": r.items(
                lambda r: _nested(r, ShareCommitment, _COMMITMENT_LIMIT), limit=MAX_PARTIES
            ),
            "dealt": r.items(lambda r: _nested(r, DealtShare), limit=MAX_PARTIES),
            "proofs": r.items(lambda r: r.blob(limit=_PROOF_LIMIT), limit=MAX_PARTIES),
        }


def dealt_leaves(dealt: Sequence[DealtShare]) -> list[bytes]:
    """The Merkle leaves a dealer's ``dealt_root`` is computed over: each DealtShare's signed
    payload (type-labelled, with session, round, dealer, recipient and ciphertext)."""
    return [d.signed_payload() for d in dealt]


def join_proof(path: Sequence[bytes]) -> bytes:
    """An audit path (32-byte hashes, the leaf's sibling first) as one wire field."""
    return b"".join(path)


def split_proof(proof: bytes) -> tuple[bytes, ...]:
    """The hashes of a wire-form audit path (the caller has checked :func:`_is_proof`)."""
    return tuple(proof[i : i + DIGEST_BYTES] for i in range(0, len(proof), DIGEST_BYTES))


def _is_proof(value: object) -> bool:
    return _is_bytes(value, _PROOF_LIMIT) and len(value) % DIGEST_BYTES == 0  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Complaint:
    """A holder's complaint about one dealer's shares: the holder's private share-encryption key
    for that pair, the dealer's DealtShare and signed ShareCommitment exactly as the holder
    checked them, and the evidence that the DealtShare is under the commitment's ``dealt_root``
    (leaf ``index`` of ``size``, audit path ``proof``: it proves the share is one the dealer
    committed to, not its position, which the share's own recipient field gives) -- with which
    anyone can open the share and judge (a dealer that committed to another version for someone
    else convicts itself with this one)."""

    dealer: int
    key: bytes = field(repr=False)
    dealt: DealtShare
    commitment: ShareCommitment
    index: int
    size: int
    proof: bytes

    def __post_init__(self) -> None:
        _require(_is_index(self.dealer), "dealer")
        _require(_is_bytes(self.key, _KEY_LIMIT) and bool(self.key), "key")
        _require(isinstance(self.dealt, DealtShare), "dealt share")
        _require(isinstance(self.commitment, ShareCommitment), "commitment")
        _require(
            self.dealt.sender == self.dealer and self.commitment.sender == self.dealer,
            "the complaint's messages are from another dealer",
        )
        _require(_is_index(self.index) and _is_index(self.size), "leaf index or tree size")
        _require(_is_proof(self.proof), "inclusion proof")

    def write(self, w: Writer) -> None:
        w.u32(self.dealer).blob(self.key, limit=_KEY_LIMIT).nested(self.dealt)
        w.nested(self.commitment, limit=_COMMITMENT_LIMIT)
        w.u32(self.index).u32(self.size).blob(self.proof, limit=_PROOF_LIMIT)

    @classmethod
    def read(cls, r: Reader) -> Complaint:
        return cls(
            r.u32(),
            r.blob(limit=_KEY_LIMIT),
            _nested(r, DealtShare),
            _nested(r, ShareCommitment, _COMMITMENT_LIMIT),
            r.u32(),
            r.u32(),
            r.blob(limit=_PROOF_LIMIT),
        )


@_register
@dataclass(frozen=True, slots=True)
class ShareReceipt(Message):
    """Client -> server, before any masking: the dealers whose shares failed its checks (by
    dealer; empty when every share was good)."""

    TYPE = MessageType.SHARE_RECEIPT
    SIGNER = SignedBy.CLIENT
    sender: int
    complaints: tuple[Complaint, ...]
    signature: bytes

    def __post_init__(self) -> None:
        self._validate_common()
        _require(_is_index(self.sender), "sender")
        _require(
            _is_tuple_of(self.complaints, Complaint, "dealer"),
            "complaints must be a tuple sorted by dealer",
        )

    def _write_fields(self, w: Writer) -> None:
        w.u32(self.sender).items(self.complaints, lambda w, c: c.write(w), limit=MAX_PARTIES)

    @classmethod
    def _read_fields(cls, r: Reader, session_id: bytes, round_: int) -> dict[str, Any]:
        return {"sender": r.u32(), "complaints": r.items(Complaint.read, limit=MAX_PARTIES)}


@_register
@dataclass(frozen=True, slots=True)
class MaskRequest(Message):
    """Server -> every member: U2', the clients that mask together this round."""

    TYPE = MessageType.MASK_REQUEST
    FLAT = True
    SIGNER = SignedBy.SERVER
    members: tuple[int, ...]
    signature: bytes

    def __post_init__(self) -> None:
        self._validate_common()
        _require(_is_index_set(self.members), "members must be sorted, distinct indices")
        _require(len(self.members) <= MAX_PARTIES, "members")

    def _write_fields(self, w: Writer) -> None:
        w.indices(self.members, limit=MAX_PARTIES)

    @classmethod
    def _read_fields(cls, r: Reader, session_id: bytes, round_: int) -> dict[str, Any]:
        return {"members": r.indices(limit=MAX_PARTIES)}


@_register
@dataclass(frozen=True, slots=True, eq=False)
class MaskedInput(_EqualByEncoding, Message):
    """Client -> server: one masked, encoded input -- for the sum (``target`` None) or, in
    attention mode, for one target's personalized output. Signed over the vector's tree hash."""

    TYPE = MessageType.MASKED_INPUT
    SIGNER = SignedBy.CLIENT
    sender: int
    target: int | None
    vector: npt.NDArray[np.unsignedinteger[Any]]
    signature: bytes

    def __post_init__(self) -> None:
        self._validate_common()
        _require(_is_index(self.sender), "sender")
        _require(self.target is None or _is_index(self.target), "target")
        _require(_is_ring_vector(self.vector), "vector must be a 1-D uint32/uint64 array")
        self.vector.setflags(write=False)  # the signature covers it: freeze it with the message

    def _write_fields(self, w: Writer) -> None:
        w.u32(self.sender).u32(_NO_TARGET if self.target is None else self.target)
        w.vector(self.vector)

    @classmethod
    def _read_fields(cls, r: Reader, session_id: bytes, round_: int) -> dict[str, Any]:
        sender, target = r.u32(), r.u32()
        return {
            "sender": sender,
            "target": None if target == _NO_TARGET else target,
            "vector": r.vector(),
        }


@_register
@dataclass(frozen=True, slots=True)
class ConsistencyRequest(Message):
    """Server -> every client in U3: the one survivor set of the round (R2)."""

    TYPE = MessageType.CONSISTENCY_REQUEST
    FLAT = True
    SIGNER = SignedBy.SERVER
    survivors: tuple[int, ...]
    signature: bytes

    def __post_init__(self) -> None:
        self._validate_common()
        _require(_is_index_set(self.survivors), "survivors must be sorted, distinct indices")
        _require(len(self.survivors) <= MAX_PARTIES, "survivors")

    def _write_fields(self, w: Writer) -> None:
        w.indices(self.survivors, limit=MAX_PARTIES)

    @classmethod
    def _read_fields(cls, r: Reader, session_id: bytes, round_: int) -> dict[str, Any]:
        return {"survivors": r.indices(limit=MAX_PARTIES)}


@_register
@dataclass(frozen=True, slots=True)
class ConsistencySignature(Message):
    """Client -> server: the client's signature over its transcript hash (which fixes U3).

    Other clients check it against *their own* transcript hash: a signature over a different
    view of the round (other U1, U2, U3, parameters or context) does not count for them.
    """

    TYPE = MessageType.CONSISTENCY_SIGNATURE
    FLAT = True
    SIGNER = SignedBy.CLIENT
    sender: int
    transcript_hash: bytes
    signature: bytes

    def __post_init__(self) -> None:
        self._validate_common()
        _require(_is_index(self.sender), "sender")
        _require(_is_bytes(self.transcript_hash, DIGEST_BYTES, DIGEST_BYTES), "transcript hash")

    def _write_fields(self, w: Writer) -> None:
        w.u32(self.sender).fixed(self.transcript_hash, DIGEST_BYTES)

    @classmethod
    def _read_fields(cls, r: Reader, session_id: bytes, round_: int) -> dict[str, Any]:
        return {"sender": r.u32(), "transcript_hash": r.fixed(DIGEST_BYTES)}


@_register
@dataclass(frozen=True, slots=True)
class UnmaskRequest(Message):
    """Server -> clients: U3 again, with the consistency signatures it collected (>= t)."""

    TYPE = MessageType.UNMASK_REQUEST
    SIGNER = SignedBy.SERVER
    survivors: tuple[int, ...]
    consistency: tuple[ConsistencySignature, ...]
    signature: bytes

    def __post_init__(self) -> None:
        self._validate_common()
        _require(_is_index_set(self.survivors), "survivors must be sorted, distinct indices")
        _require(
            _is_tuple_of(self.consistency, ConsistencySignature, "sender"),
            "consistency signatures must be a tuple sorted by sender",
        )

    def _write_fields(self, w: Writer) -> None:
        w.indices(self.survivors, limit=MAX_PARTIES)
        w.items(self.consistency, lambda w, c: w.nested(c), limit=MAX_PARTIES)

    @classmethod
    def _read_fields(cls, r: Reader, session_id: bytes, round_: int) -> dict[str, Any]:
        return {
            "survivors": r.indices(limit=MAX_PARTIES),
            "consistency": r.items(lambda r: _nested(r, ConsistencySignature), limit=MAX_PARTIES),
        }


@dataclass(frozen=True, slots=True)
class RevealedShare:
    """One Shamir share a client reveals: of ``owner``'s self seed or of its mask key."""

    owner: int
    share: bytes

    def __post_init__(self) -> None:
        _require(_is_index(self.owner), "owner")
        _require(_is_bytes(self.share, 64), "share")

    def write(self, w: Writer) -> None:
        w.u32(self.owner).blob(self.share, limit=64)

    @classmethod
    def read(cls, r: Reader) -> RevealedShare:
        return cls(r.u32(), r.blob(limit=64))


def _revealed_ok(values: tuple[RevealedShare, ...]) -> bool:
    return _is_tuple_of(values, RevealedShare, "owner")


@_register
@dataclass(frozen=True, slots=True)
class UnmaskResponse(Message):
    """Client -> server: self-seed shares of survivors and mask-key shares of dropped clients.

    The two owner sets are disjoint: never both shares of one client (the core invariant).
    """

    TYPE = MessageType.UNMASK_RESPONSE
    FLAT = True
    SIGNER = SignedBy.CLIENT
    sender: int
    self_seed_shares: tuple[RevealedShare, ...]
    mask_key_shares: tuple[RevealedShare, ...]
    signature: bytes

    def __post_init__(self) -> None:
        self._validate_common()
        _require(_is_index(self.sender), "sender")
        _require(_revealed_ok(self.self_seed_shares), "self-seed shares")
        _require(_revealed_ok(self.mask_key_shares), "mask-key shares")
        seeds = {s.owner for s in self.self_seed_shares}
        _require(
            seeds.isdisjoint(s.owner for s in self.mask_key_shares), "both shares of one client"
        )

    def _write_fields(self, w: Writer) -> None:
        w.u32(self.sender)
        w.items(self.self_seed_shares, lambda w, s: s.write(w), limit=MAX_PARTIES)
        w.items(self.mask_key_shares, lambda w, s: s.write(w), limit=MAX_PARTIES)

    @classmethod
    def _read_fields(cls, r: Reader, session_id: bytes, round_: int) -> dict[str, Any]:
        return {
            "sender": r.u32(),
            "self_seed_shares": r.items(RevealedShare.read, limit=MAX_PARTIES),
            "mask_key_shares": r.items(RevealedShare.read, limit=MAX_PARTIES),
        }


@_register
@dataclass(frozen=True, slots=True, eq=False)
class BlindedOutput(_EqualByEncoding, Message):
    """Server -> target i (attention mode): the unmasked but still target-blinded sum of the
    contributions for i, with the survivor set U3 it was computed over (R2). Only i can remove
    the blinding pads."""

    TYPE = MessageType.BLINDED_OUTPUT
    SIGNER = SignedBy.SERVER
    recipient: int
    survivors: tuple[int, ...]
    vector: npt.NDArray[np.unsignedinteger[Any]]
    signature: bytes

    def __post_init__(self) -> None:
        self._validate_common()
        _require(_is_index(self.recipient), "recipient")
        _require(_is_index_set(self.survivors), "survivors must be sorted, distinct indices")
        _require(_is_ring_vector(self.vector), "vector must be a 1-D uint32/uint64 array")
        self.vector.setflags(write=False)

    def _write_fields(self, w: Writer) -> None:
        w.u32(self.recipient).indices(self.survivors, limit=MAX_PARTIES).vector(self.vector)

    @classmethod
    def _read_fields(cls, r: Reader, session_id: bytes, round_: int) -> dict[str, Any]:
        return {
            "recipient": r.u32(),
            "survivors": r.indices(limit=MAX_PARTIES),
            "vector": r.vector(),
        }


@_register
@dataclass(frozen=True, slots=True)
class Abort(Message):
    """Server -> clients: the round ends without output, and why."""

    TYPE = MessageType.ABORT
    FLAT = True
    SIGNER = SignedBy.SERVER
    reason: str
    signature: bytes

    def __post_init__(self) -> None:
        self._validate_common()
        _require(_is_text(self.reason, MAX_REASON_BYTES), "reason must be UTF-8 text of <= 1 KiB")

    def _write_fields(self, w: Writer) -> None:
        w.blob(self.reason.encode(), limit=MAX_REASON_BYTES)

    @classmethod
    def _read_fields(cls, r: Reader, session_id: bytes, round_: int) -> dict[str, Any]:
        try:
            return {"reason": r.blob(limit=MAX_REASON_BYTES).decode("utf-8")}
        except UnicodeDecodeError:
            raise RemoteProtocolError("malformed Abort") from None


# --- session setup: the secret sketch seed (docs/fedamp.md; securefed.secagg.session) -------------


@_register
@dataclass(frozen=True, slots=True)
class SessionKey(Message):
    """Client -> server: a session-level key-agreement key, signed by the client's identity."""

    TYPE = MessageType.SESSION_KEY
    FLAT = True
    SIGNER = SignedBy.CLIENT
    sender: int
    agreement_key: bytes
    signature: bytes

    def __post_init__(self) -> None:
        self._validate_common()
        _require(_is_index(self.sender), "sender")
        _require(_is_bytes(self.agreement_key, _KEY_LIMIT) and bool(self.agreement_key), "key")

    def _write_fields(self, w: Writer) -> None:
        w.u32(self.sender).blob(self.agreement_key)

    @classmethod
    def _read_fields(cls, r: Reader, session_id: bytes, round_: int) -> dict[str, Any]:
        return {"sender": r.u32(), "agreement_key": r.blob(limit=_KEY_LIMIT)}


@_register
@dataclass(frozen=True, slots=True)
class SessionKeyDirectory(Message):
    """Server -> every client: the valid session keys, sorted by sender."""

    TYPE = MessageType.SESSION_KEY_DIRECTORY
    SIGNER = SignedBy.SERVER
    keys: tuple[SessionKey, ...]
    signature: bytes

    def __post_init__(self) -> None:
        self._validate_common()
        _require(_is_tuple_of(self.keys, SessionKey, "sender"), "keys must be sorted by sender")

    def _write_fields(self, w: Writer) -> None:
        w.items(self.keys, lambda w, k: w.nested(k), limit=MAX_PARTIES)

    @classmethod
    def _read_fields(cls, r: Reader, session_id: bytes, round_: int) -> dict[str, Any]:
        return {"keys": r.items(lambda r: _nested(r, SessionKey), limit=MAX_PARTIES)}


@_register
@dataclass(frozen=True, slots=True)
class SketchSeedCommitment(Message):
    """The dealer's signed commitment to the session's sketch seed."""

    TYPE = MessageType.SKETCH_SEED_COMMITMENT
    FLAT = True
    SIGNER = SignedBy.CLIENT
    sender: int
    commitment: bytes
    signature: bytes

    def __post_init__(self) -> None:
        self._validate_common()
        _require(_is_index(self.sender), "sender")
        _require(_is_bytes(self.commitment, DIGEST_BYTES, DIGEST_BYTES), "commitment")

    def _write_fields(self, w: Writer) -> None:
        w.u32(self.sender).fixed(self.commitment, DIGEST_BYTES)

    @classmethod
    def _read_fields(cls, r: Reader, session_id: bytes, round_: int) -> dict[str, Any]:
        return {"sender": r.u32(), "commitment": r.fixed(DIGEST_BYTES)}


@_register
@dataclass(frozen=True, slots=True)
class SketchSeedOffer(_CommittedSealed, Message):
    """Dealer -> server: its commitment and the seed sealed for every other client."""

    TYPE = MessageType.SKETCH_SEED_OFFER
    SIGNER = SignedBy.CLIENT
    commitment: SketchSeedCommitment
    sealed: tuple[SealedShare, ...]
    signature: bytes

    COMMITMENT = SketchSeedCommitment


@_register
@dataclass(frozen=True, slots=True)
class SketchSeedDelivery(Message):
    """Server -> one client: the dealer's commitment and the seed sealed for that client."""

    TYPE = MessageType.SKETCH_SEED_DELIVERY
    SIGNER = SignedBy.SERVER
    recipient: int
    commitment: SketchSeedCommitment
    sealed: SealedShare
    signature: bytes

    def __post_init__(self) -> None:
        self._validate_common()
        _require(_is_index(self.recipient), "recipient")
        _require(isinstance(self.commitment, SketchSeedCommitment), "commitment")
        _require(isinstance(self.sealed, SealedShare), "sealed seed")

    def _write_fields(self, w: Writer) -> None:
        w.u32(self.recipient).nested(self.commitment)
        self.sealed.write(w)

    @classmethod
    def _read_fields(cls, r: Reader, session_id: bytes, round_: int) -> dict[str, Any]:
        return {
            "recipient": r.u32(),
            "commitment": _nested(r, SketchSeedCommitment),
            "sealed": SealedShare.read(r),
        }
