"""X25519 key agreement and Ed25519 signatures (RFC 7748, RFC 8032) for the default suite."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidSignature as _LibInvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from securefed.crypto.keys import (
    AgreementPrivateKey,
    AgreementPublicKey,
    SharedSecret,
    SigningKey,
    VerifyKey,
)
from securefed.errors import InvalidKey, InvalidSignature

if TYPE_CHECKING:
    from securefed.crypto.suites import CipherSuite

KEY_BYTES = 32
SIGNATURE_BYTES = 64
_P = 2**255 - 19
# The u-coordinates of the points of order 1, 2, 4 and 8 (RFC 7748 section 6.1 warns of them;
# the same list as libsodium's has_small_order): X25519 with any of them gives the all-zero
# secret, whatever the private key. Compared after masking bit 255 and reducing mod p, so that
# non-canonical encodings are caught too.
_SMALL_ORDER_U = frozenset(
    {
        0,
        1,
        _P - 1,
        325606250916557431795983626356110631294008115727848805560023387167927233504,
        39382357235489614581723060781553021112529911719440698176882885853963445705823,
    }
)


def _require_length(data: bytes, length: int, what: str) -> None:
    if not isinstance(data, bytes) or len(data) != length:
        raise InvalidKey(f"{what} must be exactly {length} bytes")


class X25519PublicKey(AgreementPublicKey):
    """An X25519 public key; one of small order (which would make every agreement with it the
    all-zero secret) is refused on load, so a peer cannot advertise it."""

    def __init__(self, suite: CipherSuite, data: bytes) -> None:
        _require_length(data, KEY_BYTES, "an X25519 public key")
        if (int.from_bytes(data, "little") & ((1 << 255) - 1)) % _P in _SMALL_ORDER_U:
            raise InvalidKey("the X25519 public key has small order")
        self.suite = suite
        self._key = x25519.X25519PublicKey.from_public_bytes(data)

    def to_bytes(self) -> bytes:
        return self._key.public_bytes(Encoding.Raw, PublicFormat.Raw)


class X25519PrivateKey(AgreementPrivateKey):
    def __init__(self, suite: CipherSuite, key: x25519.X25519PrivateKey) -> None:
        self.suite = suite
        self._key = key

    @classmethod
    def from_bytes(cls, suite: CipherSuite, data: bytes) -> X25519PrivateKey:
        _require_length(data, KEY_BYTES, "an X25519 private key")
        return cls(suite, x25519.X25519PrivateKey.from_private_bytes(data))

    def public_key(self) -> X25519PublicKey:
        raw = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return X25519PublicKey(self.suite, raw)

    def exchange(self, peer: AgreementPublicKey) -> SharedSecret:
        if not isinstance(peer, X25519PublicKey) or peer.suite is not self.suite:
            raise InvalidKey("peer key belongs to another cipher suite")
        try:
            secret = self._key.exchange(peer._key)
        except ValueError as exc:  # the library refuses an all-zero result
            raise InvalidKey("key agreement produced an unsafe shared secret") from exc
        return SharedSecret(self.suite, secret)

    def secret_bytes_for_sharing(self) -> bytes:
        return self._key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


class Ed25519VerifyKey(VerifyKey):
    def __init__(self, suite: CipherSuite, data: bytes) -> None:
        _require_length(data, KEY_BYTES, "an Ed25519 public key")
        self.suite = suite
        try:
            self._key = ed25519.Ed25519PublicKey.from_public_bytes(data)
        except ValueError as exc:
            raise InvalidKey("malformed Ed25519 public key") from exc

    def to_bytes(self) -> bytes:
        return self._key.public_bytes(Encoding.Raw, PublicFormat.Raw)

    def verify(self, signature: bytes, message: bytes) -> None:
        if not isinstance(signature, bytes) or len(signature) != SIGNATURE_BYTES:
            raise InvalidSignature("signature verification failed")
        try:
            self._key.verify(signature, message)
        except _LibInvalidSignature as exc:
            raise InvalidSignature("signature verification failed") from exc


class Ed25519SigningKey(SigningKey):
    def __init__(self, suite: CipherSuite, key: ed25519.Ed25519PrivateKey) -> None:
        self.suite = suite
        self._key = key

    @classmethod
    def from_bytes(cls, suite: CipherSuite, data: bytes) -> Ed25519SigningKey:
        _require_length(data, KEY_BYTES, "an Ed25519 private key")
        return cls(suite, ed25519.Ed25519PrivateKey.from_private_bytes(data))

    def verify_key(self) -> Ed25519VerifyKey:
        return Ed25519VerifyKey(
            self.suite, self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        )

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)

    def secret_bytes_for_storage(self) -> bytes:
        return self._key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
