"""Published known-answer tests, run through securefed's own crypto API (not the library's).

Sources are named in each JSON file: RFC 7748 (X25519), RFC 8032 (Ed25519), RFC 5869 (HKDF),
NIST SP 800-38A F.5.5 (AES-256-CTR), McGrew-Viega GCM test cases 13-16 (AES-256-GCM),
RFC 5903 §8.1 (P-256 ECDH), RFC 6979 A.2.5 (ECDSA P-256/SHA-256).
"""

from __future__ import annotations

from typing import Any

import pytest

from securefed.crypto import Aead, DerivedKey, KeyPurpose, get_suite
from securefed.crypto.suites import _aes256_ctr
from tests.crypto.vectors import case_ids, load_vectors, unhex

DEFAULT = get_suite("default")
FIPS = get_suite("fips-p256")


def _x25519(scalar: bytes, u: bytes) -> bytes:
    private = DEFAULT.agreement_private_key(scalar)
    return private.exchange(DEFAULT.agreement_public_key(u)).material


X25519_MULT = load_vectors("x25519_rfc7748", "scalar_mult")
X25519_ITER = load_vectors("x25519_rfc7748", "iterated")
X25519_DH = load_vectors("x25519_rfc7748", "diffie_hellman")


@pytest.mark.parametrize("case", X25519_MULT, ids=case_ids(X25519_MULT))
def test_x25519_scalar_multiplication(case: dict[str, Any]) -> None:
    assert _x25519(unhex(case["scalar"]), unhex(case["u"])) == unhex(case["output"])


@pytest.mark.parametrize("case", X25519_ITER, ids=case_ids(X25519_ITER))
def test_x25519_iterated(case: dict[str, Any]) -> None:
    k, u = unhex(case["k"]), unhex(case["u"])
    for _ in range(case["iterations"]):
        k, u = _x25519(k, u), k
    assert k == unhex(case["output"])


@pytest.mark.parametrize("case", X25519_DH, ids=case_ids(X25519_DH))
def test_x25519_diffie_hellman(case: dict[str, Any]) -> None:
    alice = DEFAULT.agreement_private_key(unhex(case["alice_private"]))
    bob = DEFAULT.agreement_private_key(unhex(case["bob_private"]))
    assert alice.public_key().to_bytes() == unhex(case["alice_public"])
    assert bob.public_key().to_bytes() == unhex(case["bob_public"])
    assert alice.exchange(bob.public_key()).material == unhex(case["shared"])
    assert bob.exchange(alice.public_key()).material == unhex(case["shared"])


ED25519 = load_vectors("ed25519_rfc8032")


@pytest.mark.parametrize("case", ED25519, ids=case_ids(ED25519))
def test_ed25519(case: dict[str, Any]) -> None:
    key = DEFAULT.signing_key(unhex(case["secret_key"]))
    message, signature = unhex(case["message"]), unhex(case["signature"])
    assert key.verify_key().to_bytes() == unhex(case["public_key"])
    assert key.sign(message) == signature
    DEFAULT.verify_key(unhex(case["public_key"])).verify(signature, message)


HKDF = load_vectors("hkdf_rfc5869")


@pytest.mark.parametrize("suite", [DEFAULT, FIPS], ids=["default", "fips-p256"])
@pytest.mark.parametrize("case", HKDF, ids=case_ids(HKDF))
def test_hkdf_sha256(case: dict[str, Any], suite: Any) -> None:
    okm = suite.hkdf(
        unhex(case["ikm"]),
        salt=unhex(case["salt"]),
        info=unhex(case["info"]),
        length=case["length"],
    )
    assert okm == unhex(case["okm"])


CTR = load_vectors("aes256_ctr_sp800_38a")


@pytest.mark.parametrize("case", CTR, ids=case_ids(CTR))
def test_aes256_ctr(case: dict[str, Any]) -> None:
    encryptor = _aes256_ctr(
        unhex(case["key"]), initial_counter_block=unhex(case["initial_counter_block"])
    )
    for plaintext, ciphertext in zip(
        case["plaintext_blocks"], case["ciphertext_blocks"], strict=True
    ):
        out = bytearray(16)
        encryptor.update_into(unhex(plaintext), memoryview(out))
        assert bytes(out) == unhex(ciphertext)


GCM = load_vectors("aes_gcm")


@pytest.mark.parametrize("case", GCM, ids=case_ids(GCM))
def test_aes256_gcm_primitive(case: dict[str, Any]) -> None:
    aad = unhex(case["aad"]) or None
    sealed = DEFAULT.aead(unhex(case["key"])).encrypt(
        unhex(case["iv"]), unhex(case["plaintext"]), aad
    )
    assert sealed == unhex(case["ciphertext"]) + unhex(case["tag"])


@pytest.mark.parametrize("case", [c for c in GCM if c["aad"]], ids=lambda c: c["name"])
def test_aead_opens_published_ciphertext(case: dict[str, Any]) -> None:
    aead = Aead(DerivedKey(DEFAULT, KeyPurpose.SHARE, unhex(case["key"])))
    sealed = unhex(case["iv"]) + unhex(case["ciphertext"]) + unhex(case["tag"])
    assert aead.open(sealed, associated_data=unhex(case["aad"])) == unhex(case["plaintext"])


ECDH = load_vectors("p256_ecdh")


def _point(x: str, y: str) -> bytes:
    return b"\x04" + unhex(x) + unhex(y)


@pytest.mark.parametrize("case", ECDH, ids=case_ids(ECDH))
def test_p256_ecdh(case: dict[str, Any]) -> None:
    initiator = FIPS.agreement_private_key(unhex(case["i"]))
    responder = FIPS.agreement_private_key(unhex(case["r"]))
    assert initiator.public_key().to_bytes() == _point(case["gix"], case["giy"])
    assert responder.public_key().to_bytes() == _point(case["grx"], case["gry"])
    peer = FIPS.agreement_public_key(_point(case["grx"], case["gry"]))
    assert initiator.exchange(peer).material == unhex(case["girx"])
    assert responder.exchange(initiator.public_key()).material == unhex(case["girx"])


ECDSA = load_vectors("p256_ecdsa")


@pytest.mark.parametrize("case", ECDSA, ids=case_ids(ECDSA))
def test_p256_ecdsa(case: dict[str, Any]) -> None:
    public = _point(case["ux"], case["uy"])
    message, signature = unhex(case["message"]), unhex(case["r"]) + unhex(case["s"])
    FIPS.verify_key(public).verify(signature, message)
    key = FIPS.signing_key(unhex(case["x"]))
    assert key.verify_key().to_bytes() == public
    key.verify_key().verify(key.sign(message), message)
