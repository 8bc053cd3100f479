"""Cipher suites: which algorithms one deployment uses, chosen once and pinned in its config.

A :class:`CipherSuite` bundles key agreement, signatures, the KDF hash, the AEAD and the stream
cipher of the PRG. Code above this module asks a suite for keys and primitives and never names an
algorithm itself, so switching a deployment from ``default`` to ``fips-p256`` is a config change.

Suites (see ``docs/design-notes.md``):

============ ============== ================== ============ ============= ===============
suite        key agreement  signatures         KDF          AEAD          PRG
============ ============== ================== ============ ============= ===============
default      X25519         Ed25519            HKDF-SHA256  AES-256-GCM   AES-256-CTR
fips-p256    ECDH P-256     ECDSA P-256/SHA256 HKDF-SHA256  AES-256-GCM   AES-256-CTR
sm           SM2            SM2                HKDF-SM3     SM4-GCM       SM4-CTR
============ ============== ================== ============ ============= ===============

``sm`` (China's commercial cryptography, GB/T 32918 / 32905 / 32907, expected by JR/T 0196
deployments) is a slot: :func:`get_suite` raises :class:`~securefed.errors.CipherSuiteUnavailable`
unless an implementation has been registered with :func:`register_suite` or installed as an entry
point in the ``securefed.cipher_suites`` group.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from enum import Enum
from importlib.metadata import entry_points
from typing import Protocol

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, x25519
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from securefed.crypto import _curve25519, _p256
from securefed.crypto.keys import AgreementPrivateKey, AgreementPublicKey, SigningKey, VerifyKey
from securefed.errors import CipherSuiteUnavailable, ConfigError

__all__ = [
    "AeadPrimitive",
    "CipherSuite",
    "KeystreamContext",
    "SuiteId",
    "available_suites",
    "get_suite",
    "register_suite",
]

ENTRY_POINT_GROUP = "securefed.cipher_suites"
SYMMETRIC_KEY_BYTES = 32


class SuiteId(Enum):
    """Names of the cipher suites a deployment can pin."""

    DEFAULT = "default"
    FIPS_P256 = "fips-p256"
    SM = "sm"


class AeadPrimitive(Protocol):
    """An AEAD with a 12-byte nonce and a 16-byte tag (RFC 5116 interface)."""

    def encrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None) -> bytes: ...

    def decrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None) -> bytes: ...


class KeystreamContext(Protocol):
    """A stateful stream-cipher encryptor that can write into a caller's buffer."""

    def update_into(self, data: bytes | memoryview, buf: memoryview) -> int: ...


class CipherSuite(ABC):
    """One fixed choice of algorithms. Instances are stateless singletons obtained via get_suite."""

    suite_id: SuiteId

    # --- asymmetric -------------------------------------------------------------------------
    @abstractmethod
    def generate_agreement_key(self) -> AgreementPrivateKey:
        """A fresh key-agreement key pair from the operating system's CSPRNG."""

    @abstractmethod
    def agreement_public_key(self, data: bytes) -> AgreementPublicKey:
        """Load a peer's public key. Raises InvalidKey if it is malformed or not on the curve."""

    @abstractmethod
    def agreement_private_key(self, data: bytes) -> AgreementPrivateKey:
        """Load a private key from its 32 secret bytes (e.g. after Shamir reconstruction)."""

    @abstractmethod
    def generate_signing_key(self) -> SigningKey:
        """A fresh identity (signing) key from the operating system's CSPRNG."""

    @abstractmethod
    def verify_key(self, data: bytes) -> VerifyKey:
        """Load a public identity key. Raises InvalidKey if it is malformed."""

    @abstractmethod
    def signing_key(self, data: bytes) -> SigningKey:
        """Load a signing key from its 32 secret bytes (used by the key-file readers)."""

    # --- symmetric --------------------------------------------------------------------------
    @abstractmethod
    def hkdf(self, ikm: bytes, *, salt: bytes, info: bytes, length: int) -> bytes:
        """HKDF (RFC 5869) with the suite's hash."""

    @abstractmethod
    def digest(self, data: bytes) -> bytes:
        """The suite's hash of ``data`` (32 bytes)."""

    @abstractmethod
    def aead(self, key: bytes) -> AeadPrimitive:
        """The suite's AEAD keyed with a 32-byte key."""

    @abstractmethod
    def keystream(self, key: bytes, *, start_block: int = 0) -> KeystreamContext:
        """The suite's stream cipher keyed with a 32-byte key, positioned at ``start_block``.

        ``start_block`` is random access into ONE stream (to produce its parts in parallel).
        Different streams are always separated by different keys, never by block offsets.
        """

    def __repr__(self) -> str:
        return f"<CipherSuite {self.suite_id.value}>"


class _AesSha256Suite(CipherSuite, ABC):
    """Symmetric half shared by ``default`` and ``fips-p256``."""

    def hkdf(self, ikm: bytes, *, salt: bytes, info: bytes, length: int) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)

    def digest(self, data: bytes) -> bytes:
        return hashlib.sha256(data).digest()

    def aead(self, key: bytes) -> AeadPrimitive:
        _check_symmetric_key(key)
        return AESGCM(key)

    def keystream(self, key: bytes, *, start_block: int = 0) -> KeystreamContext:
        _check_symmetric_key(key)
        if not 0 <= start_block < 2**128:
            raise ConfigError("start_block must be in [0, 2**128)")
        return _aes256_ctr(key, initial_counter_block=start_block.to_bytes(16, "big"))


class _DefaultSuite(_AesSha256Suite):
    suite_id = SuiteId.DEFAULT

    def generate_agreement_key(self) -> AgreementPrivateKey:
        return _curve25519.X25519PrivateKey(self, x25519.X25519PrivateKey.generate())

    def agreement_public_key(self, data: bytes) -> AgreementPublicKey:
        return _curve25519.X25519PublicKey(self, data)

    def agreement_private_key(self, data: bytes) -> AgreementPrivateKey:
        return _curve25519.X25519PrivateKey.from_bytes(self, data)

    def generate_signing_key(self) -> SigningKey:
        return _curve25519.Ed25519SigningKey(self, ed25519.Ed25519PrivateKey.generate())

    def verify_key(self, data: bytes) -> VerifyKey:
        return _curve25519.Ed25519VerifyKey(self, data)

    def signing_key(self, data: bytes) -> SigningKey:
        return _curve25519.Ed25519SigningKey.from_bytes(self, data)


class _FipsP256Suite(_AesSha256Suite):
    suite_id = SuiteId.FIPS_P256

    def generate_agreement_key(self) -> AgreementPrivateKey:
        return _p256.P256PrivateKey(self, ec.generate_private_key(_p256.CURVE))

    def agreement_public_key(self, data: bytes) -> AgreementPublicKey:
        return _p256.P256PublicKey(self, data)

    def agreement_private_key(self, data: bytes) -> AgreementPrivateKey:
        return _p256.P256PrivateKey.from_bytes(self, data)

    def generate_signing_key(self) -> SigningKey:
        return _p256.EcdsaP256SigningKey(self, ec.generate_private_key(_p256.CURVE))

    def verify_key(self, data: bytes) -> VerifyKey:
        return _p256.EcdsaP256VerifyKey(self, data)

    def signing_key(self, data: bytes) -> SigningKey:
        return _p256.EcdsaP256SigningKey.from_bytes(self, data)


def _aes256_ctr(key: bytes, *, initial_counter_block: bytes) -> KeystreamContext:
    """AES-256-CTR encryptor. Only the known-answer tests pass a non-zero initial block: streams
    are separated by keys, never by counter offsets (DESIGN R5)."""
    return Cipher(algorithms.AES256(key), modes.CTR(initial_counter_block)).encryptor()


def _check_symmetric_key(key: bytes) -> None:
    if not isinstance(key, bytes) or len(key) != SYMMETRIC_KEY_BYTES:
        raise ConfigError(f"symmetric keys are exactly {SYMMETRIC_KEY_BYTES} bytes")


_SM_UNAVAILABLE = (
    "cipher suite 'sm' (SM2 key agreement and signatures, SM3 hash, SM4 cipher; GB/T 32918, "
    "32905, 32907) has no implementation installed. The 'cryptography' library offers SM3 and SM4 "
    "but not SM2, so securefed cannot provide it by itself. Install a package that registers a "
    f"CipherSuite under the entry point group '{ENTRY_POINT_GROUP}' with the name 'sm' (or call "
    "securefed.crypto.register_suite), or pin suite 'default' or 'fips-p256' in the deployment."
)

_REGISTRY: dict[SuiteId, CipherSuite] = {
    SuiteId.DEFAULT: _DefaultSuite(),
    SuiteId.FIPS_P256: _FipsP256Suite(),
}


def register_suite(suite: CipherSuite) -> None:
    """Register an implementation (e.g. an SM suite from a provider package).

    Raises:
        ConfigError: a different implementation is already registered under the same id.
    """
    existing = _REGISTRY.get(suite.suite_id)
    if existing is not None and existing is not suite:
        raise ConfigError(f"cipher suite {suite.suite_id.value!r} is already registered")
    _REGISTRY[suite.suite_id] = suite


def get_suite(suite_id: SuiteId | str) -> CipherSuite:
    """The implementation of ``suite_id`` (an enum member or its name, e.g. ``"fips-p256"``).

    Raises:
        ConfigError: the name is not a known suite.
        CipherSuiteUnavailable: the suite is known but not installed (the ``sm`` slot).
    """
    try:
        key = SuiteId(suite_id)
    except ValueError:
        known = ", ".join(s.value for s in SuiteId)
        raise ConfigError(f"unknown cipher suite {suite_id!r}; known suites: {known}") from None
    if key not in _REGISTRY:
        _load_entry_point(key)
    try:
        return _REGISTRY[key]
    except KeyError:
        raise CipherSuiteUnavailable(_SM_UNAVAILABLE) from None


def available_suites() -> tuple[SuiteId, ...]:
    """The suites that can be used now (built-in ones plus registered providers)."""
    return tuple(s for s in SuiteId if s in _REGISTRY)


def _load_entry_point(key: SuiteId) -> None:
    for entry in entry_points(group=ENTRY_POINT_GROUP, name=key.value):
        suite = entry.load()
        if not isinstance(suite, CipherSuite) or suite.suite_id is not key:
            raise ConfigError(f"entry point {entry.value!r} does not provide suite {key.value!r}")
        register_suite(suite)
