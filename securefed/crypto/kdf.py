"""Key derivation with mandatory purpose labels (DESIGN R4).

Every symmetric key in securefed comes out of :func:`derive_stream_key`,
:func:`derive_pairwise_key` or :func:`derive_directional_key`, all HKDF with

* ``salt = session_id || round`` (so no key is reused across sessions or rounds), and
* ``info = "securefed/v1/<purpose>" || 0 || suite name || session_id || round || bindings``
  (bindings length-prefixed)

where the bindings say whose key it is (a target index, an ordered pair, or a direction with the
fingerprints of both public keys). A :class:`DerivedKey` remembers its purpose, and the AEAD and
PRG refuse keys of the wrong kind, so no key can serve two purposes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from securefed.crypto.keys import AgreementPublicKey, SharedSecret
from securefed.crypto.suites import SYMMETRIC_KEY_BYTES, CipherSuite
from securefed.errors import ConfigError

__all__ = [
    "DerivedKey",
    "KdfContext",
    "KeyKind",
    "KeyPurpose",
    "derive_channel_key",
    "derive_directional_key",
    "derive_pairwise_key",
    "derive_stream_key",
]

LABEL_PREFIX = b"securefed/v1/"
SESSION_ID_BYTES = 32
MAX_ROUND = 2**63 - 1
MAX_INDEX = 2**32 - 1


class KeyKind(Enum):
    """What a derived key may be used for."""

    STREAM = "stream"  # AES-CTR keystream (masks, pads, dither, sketches)
    AEAD = "aead"  # authenticated encryption of messages


class KeyPurpose(Enum):
    """The label of every derivation. The value is the last component of the HKDF label."""

    MASK = "mask"  # pairwise mask streams PRG(s_uv, target)
    SELF = "self"  # self-mask streams PRG(b_u, target)
    TARGET = "target"  # target blinding pads PRG(tau_{u->i})
    SKETCH = "sketch"  # the secret sketch matrix stream
    DITHER = "dither"  # stochastic-rounding randomness of the encoder
    SHARE = "share"  # AEAD of Shamir shares sent client to client via the server
    SKETCH_SEED = "sketch-seed"  # AEAD of the sketch seed sent by its dealer to the others

    @property
    def kind(self) -> KeyKind:
        return KeyKind.AEAD if self in _AEAD_PURPOSES else KeyKind.STREAM

    @property
    def label(self) -> bytes:
        return LABEL_PREFIX + self.value.encode("ascii")


_AEAD_PURPOSES = frozenset({KeyPurpose.SHARE, KeyPurpose.SKETCH_SEED})


@dataclass(frozen=True, slots=True)
class KdfContext:
    """Where a key lives: one session (32 random bytes) and one round (>= 0)."""

    session_id: bytes
    round: int

    def __post_init__(self) -> None:
        if not isinstance(self.session_id, bytes) or len(self.session_id) != SESSION_ID_BYTES:
            raise ConfigError(f"session_id must be exactly {SESSION_ID_BYTES} bytes")
        if not isinstance(self.round, int) or isinstance(self.round, bool):
            raise ConfigError("round must be an int")
        if not 0 <= self.round <= MAX_ROUND:
            raise ConfigError("round must be in [0, 2**63)")

    def salt(self) -> bytes:
        return self.session_id + self.round.to_bytes(8, "big")


@dataclass(frozen=True, slots=True)
class DerivedKey:
    """A 32-byte symmetric key together with the suite and purpose it was derived for."""

    suite: CipherSuite
    purpose: KeyPurpose
    material: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.material) != SYMMETRIC_KEY_BYTES:
            raise ConfigError(f"derived keys are exactly {SYMMETRIC_KEY_BYTES} bytes")

    def require(self, kind: KeyKind) -> bytes:
        """The key bytes, if this key is of ``kind``; otherwise ConfigError (a caller bug)."""
        if self.purpose.kind is not kind:
            raise ConfigError(
                f"a {self.purpose.value!r} key is a {self.purpose.kind.value} key and cannot be "
                f"used as a {kind.value} key"
            )
        return self.material


def _index(value: int | None) -> bytes:
    """A target or party index as a binding; ``None`` encodes as an empty binding."""
    if value is None:
        return b""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_INDEX:
        raise ConfigError("party indices are ints in [0, 2**32)")
    return value.to_bytes(4, "big")


def _check_purpose(purpose: KeyPurpose) -> None:
    if not isinstance(purpose, KeyPurpose):
        raise ConfigError("every derivation needs a KeyPurpose label")


def _derive(
    suite: CipherSuite,
    ikm: bytes,
    *,
    purpose: KeyPurpose,
    context: KdfContext,
    bindings: tuple[bytes, ...],
) -> DerivedKey:
    _check_purpose(purpose)
    suite_name = suite.suite_id.value.encode("ascii")
    info = bytearray(
        purpose.label + b"\x00" + bytes([len(suite_name)]) + suite_name + context.salt()
    )
    for binding in bindings:
        info += len(binding).to_bytes(2, "big") + binding
    material = suite.hkdf(ikm, salt=context.salt(), info=bytes(info), length=SYMMETRIC_KEY_BYTES)
    return DerivedKey(suite, purpose, material)


def derive_stream_key(
    suite: CipherSuite,
    seed: bytes,
    *,
    purpose: KeyPurpose,
    context: KdfContext,
    target: int | None = None,
) -> DerivedKey:
    """Key for one stream from a party's own secret seed (self mask, dither, sketch).

    A separate key per ``(purpose, target, round)``: streams for different targets never
    overlap, because they are under different keys rather than at different counter offsets.

    Raises:
        ConfigError: seed shorter than 32 bytes, or a non-stream purpose.
    """
    if not isinstance(seed, bytes) or len(seed) < SYMMETRIC_KEY_BYTES:
        raise ConfigError("seeds are at least 32 bytes")
    _check_purpose(purpose)
    if purpose.kind is not KeyKind.STREAM:
        raise ConfigError(f"{purpose.value!r} is not a stream purpose")
    return _derive(
        suite, seed, purpose=purpose, context=context, bindings=(b"seed", _index(target))
    )


def derive_pairwise_key(
    secret: SharedSecret,
    *,
    purpose: KeyPurpose,
    context: KdfContext,
    pair: tuple[int, int],
    target: int | None = None,
) -> DerivedKey:
    """Symmetric key shared by the two parties of ``pair`` (order-independent), e.g. s_uv masks.

    Both parties derive the same key; the sign convention of the mask lives in the protocol.

    Raises:
        ConfigError: the pair is not two distinct indices.
    """
    first, second = sorted(pair)
    if first == second:
        raise ConfigError("a pairwise key needs two distinct parties")
    bindings = (b"pair", _index(first), _index(second), _index(target))
    return _derive(
        secret.suite, secret.material, purpose=purpose, context=context, bindings=bindings
    )


def derive_channel_key(
    secret: SharedSecret,
    *,
    purpose: KeyPurpose,
    context: KdfContext,
    own: tuple[int, AgreementPublicKey],
    peer: tuple[int, AgreementPublicKey],
    outgoing: bool,
) -> DerivedKey:
    """:func:`derive_directional_key` seen from one party: ``own`` and ``peer`` are (index, public
    key); ``outgoing`` picks the own -> peer direction, else peer -> own. Both parties of a
    channel get the same key for the same direction."""
    sender, recipient = (own, peer) if outgoing else (peer, own)
    return derive_directional_key(
        secret,
        purpose=purpose,
        context=context,
        sender=sender[0],
        recipient=recipient[0],
        sender_public=sender[1],
        recipient_public=recipient[1],
    )


def derive_directional_key(
    secret: SharedSecret,
    *,
    purpose: KeyPurpose,
    context: KdfContext,
    sender: int,
    recipient: int,
    sender_public: AgreementPublicKey,
    recipient_public: AgreementPublicKey,
) -> DerivedKey:
    """Key for traffic from ``sender`` to ``recipient`` only (DESIGN R3).

    The two directions of one agreement get different keys, so a (key, nonce) pair is never
    shared between two senders, and the key is bound to both public keys (no key confusion).

    Raises:
        ConfigError: sender equals recipient.
    """
    if sender == recipient:
        raise ConfigError("a directional key needs two distinct parties")
    bindings = (
        b"direction",
        _index(sender),
        _index(recipient),
        sender_public.fingerprint(),
        recipient_public.fingerprint(),
    )
    return _derive(
        secret.suite, secret.material, purpose=purpose, context=context, bindings=bindings
    )
