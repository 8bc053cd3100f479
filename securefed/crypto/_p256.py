"""ECDH and ECDSA on NIST P-256 with SHA-256, for the FIPS-style suite (SP 800-56A, FIPS 186-5).

Public keys travel as 65-byte uncompressed SEC1 points (validated on load: on the curve, not the
point at infinity); signatures as fixed-length 64-byte ``r || s`` so that message layouts do not
depend on DER lengths.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidSignature as _LibInvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

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

CURVE = ec.SECP256R1()
POINT_BYTES = 65
SCALAR_BYTES = 32
SIGNATURE_BYTES = 64
# Order of the P-256 base point (FIPS 186-5 / SEC 2).
ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def _load_point(data: bytes) -> ec.EllipticCurvePublicKey:
    if not isinstance(data, bytes) or len(data) != POINT_BYTES or data[0] != 0x04:
        raise InvalidKey("a P-256 public key must be a 65-byte uncompressed SEC1 point")
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(CURVE, data)
    except ValueError as exc:
        raise InvalidKey("the P-256 public key is not a valid curve point") from exc


def _point_bytes(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)


def _load_scalar(data: bytes) -> ec.EllipticCurvePrivateKey:
    if not isinstance(data, bytes) or len(data) != SCALAR_BYTES:
        raise InvalidKey("a P-256 private key must be exactly 32 bytes")
    value = int.from_bytes(data, "big")
    if not 0 < value < ORDER:
        raise InvalidKey("the P-256 private scalar is out of range")
    return ec.derive_private_key(value, CURVE)


def _scalar_bytes(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_numbers().private_value.to_bytes(SCALAR_BYTES, "big")


class P256PublicKey(AgreementPublicKey):
    def __init__(self, suite: CipherSuite, data: bytes) -> None:
        self.suite = suite
        self._key = _load_point(data)

    def to_bytes(self) -> bytes:
        return _point_bytes(self._key)


class P256PrivateKey(AgreementPrivateKey):
    def __init__(self, suite: CipherSuite, key: ec.EllipticCurvePrivateKey) -> None:
        self.suite = suite
        self._key = key

    @classmethod
    def from_bytes(cls, suite: CipherSuite, data: bytes) -> P256PrivateKey:
        return cls(suite, _load_scalar(data))

    def public_key(self) -> P256PublicKey:
        return P256PublicKey(self.suite, _point_bytes(self._key.public_key()))

    def exchange(self, peer: AgreementPublicKey) -> SharedSecret:
        if not isinstance(peer, P256PublicKey) or peer.suite is not self.suite:
            raise InvalidKey("peer key belongs to another cipher suite")
        try:
            secret = self._key.exchange(ec.ECDH(), peer._key)
        except ValueError as exc:
            raise InvalidKey("key agreement produced an unsafe shared secret") from exc
        return SharedSecret(self.suite, secret)

    def secret_bytes_for_sharing(self) -> bytes:
        return _scalar_bytes(self._key)


class EcdsaP256VerifyKey(VerifyKey):
    def __init__(self, suite: CipherSuite, data: bytes) -> None:
        self.suite = suite
        self._key = _load_point(data)

    def to_bytes(self) -> bytes:
        return _point_bytes(self._key)

    def verify(self, signature: bytes, message: bytes) -> None:
        if not isinstance(signature, bytes) or len(signature) != SIGNATURE_BYTES:
            raise InvalidSignature("signature verification failed")
        r = int.from_bytes(signature[:SCALAR_BYTES], "big")
        s = int.from_bytes(signature[SCALAR_BYTES:], "big")
        if not (0 < r < ORDER and 0 < s < ORDER):
            raise InvalidSignature("signature verification failed")
        try:
            self._key.verify(encode_dss_signature(r, s), message, ec.ECDSA(hashes.SHA256()))
        except _LibInvalidSignature as exc:
            raise InvalidSignature("signature verification failed") from exc


class EcdsaP256SigningKey(SigningKey):
    def __init__(self, suite: CipherSuite, key: ec.EllipticCurvePrivateKey) -> None:
        self.suite = suite
        self._key = key

    @classmethod
    def from_bytes(cls, suite: CipherSuite, data: bytes) -> EcdsaP256SigningKey:
        return cls(suite, _load_scalar(data))

    def verify_key(self) -> EcdsaP256VerifyKey:
        return EcdsaP256VerifyKey(self.suite, _point_bytes(self._key.public_key()))

    def sign(self, message: bytes) -> bytes:
        r, s = decode_dss_signature(self._key.sign(message, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(SCALAR_BYTES, "big") + s.to_bytes(SCALAR_BYTES, "big")

    def secret_bytes_for_storage(self) -> bytes:
        return _scalar_bytes(self._key)
