"""Opaque asymmetric key handles shared by every cipher suite.

Callers never touch a ``cryptography`` key object directly: a suite hands out these handles, and
they only offer the operations the protocol needs. Raw private bytes are reachable only through
methods whose names say why they exist (:meth:`AgreementPrivateKey.secret_bytes_for_sharing`).
"""

from __future__ import annotations

import hashlib
import hmac
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from securefed.errors import InvalidKey

if TYPE_CHECKING:
    from securefed.crypto.suites import CipherSuite

__all__ = [
    "AgreementPrivateKey",
    "AgreementPublicKey",
    "SharedSecret",
    "SigningKey",
    "VerifyKey",
]


@dataclass(frozen=True, slots=True)
class SharedSecret:
    """The raw output of a key agreement. Feed it to a KDF; never use it as a key directly.

    Guarantee: never all-zero (agreement with a low-order point is rejected before this exists).
    """

    suite: CipherSuite
    material: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not self.material or not any(self.material):
            raise InvalidKey("key agreement produced an unsafe shared secret")


class _PublicKey(ABC):
    """What every public key offers: a canonical encoding, a fingerprint, value equality."""

    suite: CipherSuite
    _kind: bytes  # separates the fingerprints of agreement and verification keys

    @abstractmethod
    def to_bytes(self) -> bytes:
        """Canonical encoding (X25519/Ed25519: 32 raw bytes; P-256: 65-byte uncompressed point)."""

    def fingerprint(self) -> bytes:
        """SHA-256 over a domain label, the suite name, the key kind and the encoding (32 bytes)."""
        digest = hashlib.sha256()
        parts = (b"securefed/v1/fingerprint", self.suite.suite_id.value.encode(), self._kind)
        for part in (*parts, self.to_bytes()):
            digest.update(len(part).to_bytes(2, "big"))
            digest.update(part)
        return digest.digest()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _PublicKey) or other._kind != self._kind:
            return NotImplemented
        return other.suite is self.suite and hmac.compare_digest(other.to_bytes(), self.to_bytes())

    def __hash__(self) -> int:
        return hash((self._kind, self.to_bytes()))


class AgreementPublicKey(_PublicKey):
    """A public key for Diffie-Hellman key agreement, bound to one suite."""

    _kind = b"agreement"


class AgreementPrivateKey(ABC):
    """A private key for key agreement. ``repr`` never shows key material."""

    suite: CipherSuite

    @abstractmethod
    def public_key(self) -> AgreementPublicKey:
        """The matching public key."""

    @abstractmethod
    def exchange(self, peer: AgreementPublicKey) -> SharedSecret:
        """Agree on a shared secret with ``peer``.

        Raises:
            InvalidKey: ``peer`` belongs to another suite, or the result is all-zero
                (a low-order or invalid peer point).
        """

    @abstractmethod
    def secret_bytes_for_sharing(self) -> bytes:
        """The 32-byte private scalar, for Shamir sharing (dropout recovery) only.

        Hazardous: whoever holds these bytes can compute every mask derived from this key.
        """

    def __repr__(self) -> str:
        return f"<{type(self).__name__} suite={self.suite.suite_id.value}>"


class VerifyKey(_PublicKey):
    """A public signature-verification key (an identity key), bound to one suite."""

    _kind = b"verify"

    @abstractmethod
    def verify(self, signature: bytes, message: bytes) -> None:
        """Return silently if ``signature`` is valid for ``message``.

        Raises:
            InvalidSignature: for any invalid, malformed or wrong-length signature.
        """


class SigningKey(ABC):
    """A private signing key (an institution's or the server's identity key)."""

    suite: CipherSuite

    @abstractmethod
    def verify_key(self) -> VerifyKey:
        """The matching public verification key."""

    @abstractmethod
    def sign(self, message: bytes) -> bytes:
        """Sign ``message`` (Ed25519: 64 bytes; ECDSA P-256/SHA-256: 64 bytes r || s)."""

    @abstractmethod
    def secret_bytes_for_storage(self) -> bytes:
        """The 32-byte private key, for the key-file writers in :mod:`securefed.crypto.keyfile`."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} suite={self.suite.suite_id.value}>"
