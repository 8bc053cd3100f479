"""Key handles and the suite registry: agreement, signatures, typed errors (DESIGN R3, R9)."""

from __future__ import annotations

import pytest

from securefed.crypto import CipherSuite, SuiteId, available_suites, get_suite, register_suite
from securefed.crypto import suites as suites_module
from securefed.crypto._p256 import ORDER
from securefed.errors import CipherSuiteUnavailable, ConfigError, InvalidKey, InvalidSignature

SUITES = [get_suite("default"), get_suite("fips-p256")]
IDS = ["default", "fips-p256"]


@pytest.mark.parametrize("suite", SUITES, ids=IDS)
def test_agreement_round_trip_and_serialization(suite: CipherSuite) -> None:
    alice, bob = suite.generate_agreement_key(), suite.generate_agreement_key()
    shared = alice.exchange(bob.public_key())
    assert shared == bob.exchange(alice.public_key())
    reloaded = suite.agreement_private_key(alice.secret_bytes_for_sharing())
    assert reloaded.public_key() == alice.public_key()
    assert suite.agreement_public_key(bob.public_key().to_bytes()) == bob.public_key()
    assert shared.material.hex() not in repr(shared)


@pytest.mark.parametrize("suite", SUITES, ids=IDS)
def test_signatures(suite: CipherSuite) -> None:
    key = suite.generate_signing_key()
    signature = key.sign(b"transcript")
    assert len(signature) == 64
    verify_key = suite.verify_key(key.verify_key().to_bytes())
    verify_key.verify(signature, b"transcript")
    with pytest.raises(InvalidSignature):
        verify_key.verify(signature, b"transcript!")
    forged = signature[:-1] + bytes([signature[-1] ^ 1])
    with pytest.raises(InvalidSignature):
        verify_key.verify(forged, b"transcript")
    with pytest.raises(InvalidSignature):
        verify_key.verify(signature[:-1], b"transcript")
    with pytest.raises(InvalidSignature):
        suite.generate_signing_key().verify_key().verify(signature, b"transcript")
    assert "secret" not in repr(key)
    assert len(repr(key)) < 80


def test_ecdsa_rejects_out_of_range_scalars() -> None:
    suite = get_suite("fips-p256")
    key = suite.generate_signing_key()
    zero_r = bytes(32) + key.sign(b"m")[32:]
    big_s = key.sign(b"m")[:32] + ORDER.to_bytes(32, "big")
    for signature in (zero_r, big_s):
        with pytest.raises(InvalidSignature):
            key.verify_key().verify(signature, b"m")


def test_x25519_rejects_all_zero_shared_secret() -> None:
    suite = get_suite("default")
    key = suite.generate_agreement_key()
    # u = 0 and u = 1 are low-order points: the shared secret is all-zero.
    for low_order in (bytes(32), (1).to_bytes(32, "little")):
        with pytest.raises(InvalidKey):
            key.exchange(suite.agreement_public_key(low_order))


@pytest.mark.parametrize(
    ("suite_name", "data"),
    [
        ("default", bytes(31)),
        ("default", bytes(33)),
        ("fips-p256", bytes(65)),
        ("fips-p256", b"\x04" + bytes(64)),
        ("fips-p256", b"\x02" + bytes(32)),
        ("fips-p256", b"\x04" + b"\x01" * 64),
    ],
    ids=[
        "x25519-short",
        "x25519-long",
        "p256-prefix",
        "p256-zero",
        "p256-compressed",
        "p256-off-curve",
    ],
)
def test_malformed_public_keys(suite_name: str, data: bytes) -> None:
    suite = get_suite(suite_name)
    with pytest.raises(InvalidKey):
        suite.agreement_public_key(data)
    with pytest.raises(InvalidKey):
        suite.verify_key(data)


@pytest.mark.parametrize(
    ("suite_name", "data"),
    [
        ("default", bytes(16)),
        ("fips-p256", bytes(32)),
        ("fips-p256", b"\xff" * 32),
        ("fips-p256", bytes(31)),
    ],
)
def test_malformed_private_keys(suite_name: str, data: bytes) -> None:
    with pytest.raises(InvalidKey):
        get_suite(suite_name).agreement_private_key(data)
    with pytest.raises(InvalidKey):
        get_suite(suite_name).signing_key(data)


def test_keys_from_different_suites_do_not_mix() -> None:
    x25519 = get_suite("default").generate_agreement_key()
    p256 = get_suite("fips-p256").generate_agreement_key()
    with pytest.raises(InvalidKey):
        x25519.exchange(p256.public_key())
    with pytest.raises(InvalidKey):
        p256.exchange(x25519.public_key())


def test_registry() -> None:
    assert get_suite(SuiteId.DEFAULT) is get_suite("default")
    assert set(available_suites()) >= {SuiteId.DEFAULT, SuiteId.FIPS_P256}
    with pytest.raises(ConfigError, match="unknown cipher suite"):
        get_suite("rot13")


def test_sm_slot_explains_itself_until_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(suites_module, "_REGISTRY", dict(suites_module._REGISTRY))
    with pytest.raises(CipherSuiteUnavailable, match="SM2") as info:
        get_suite("sm")
    assert isinstance(info.value, ConfigError)

    class FakeSm(suites_module._DefaultSuite):  # stands in for a provider package
        suite_id = SuiteId.SM

    provider = FakeSm()
    register_suite(provider)
    assert get_suite("sm") is provider
    assert SuiteId.SM in available_suites()
    with pytest.raises(ConfigError, match="already registered"):
        register_suite(FakeSm())
