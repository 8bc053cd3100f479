"""Identity-key files: encrypted by default, cleartext only through the *_unsafe API."""

from __future__ import annotations

import pytest

from securefed.crypto import encrypt_signing_key, get_suite, load_signing_key
from securefed.crypto.cleartext import (
    export_unencrypted_signing_key_unsafe,
    load_unencrypted_signing_key_unsafe,
)
from securefed.crypto.keyfile import armor, unarmor
from securefed.errors import ConfigError, DecryptionError, InvalidKey

PASSPHRASE = b"correct horse battery staple"
NOT_BASE64 = (
    b"-----BEGIN SECUREFED ENCRYPTED PRIVATE KEY-----\n!!!\n"
    b"-----END SECUREFED ENCRYPTED PRIVATE KEY-----\n"
)
FAST = {"work_factor_log2": 14}  # the minimum; production uses the default 2**17


@pytest.mark.parametrize("suite_name", ["default", "fips-p256"])
def test_round_trip(suite_name: str) -> None:
    key = get_suite(suite_name).generate_signing_key()
    data = encrypt_signing_key(key, PASSPHRASE, **FAST)
    assert data.startswith(b"-----BEGIN SECUREFED ENCRYPTED PRIVATE KEY-----\n")
    assert key.secret_bytes_for_storage() not in unarmor(data)[1]
    loaded = load_signing_key(data, PASSPHRASE)
    assert loaded.suite is key.suite
    assert loaded.verify_key() == key.verify_key()


def test_wrong_passphrase_and_tampering_raise_one_error() -> None:
    data = encrypt_signing_key(get_suite("default").generate_signing_key(), PASSPHRASE, **FAST)
    with pytest.raises(DecryptionError):
        load_signing_key(data, b"wrong passphrase!!")
    label, blob = unarmor(data)
    for index in (len(blob) - 1, len(blob) - 40):  # tag, then the authenticated nonce
        tampered = blob[:index] + bytes([blob[index] ^ 1]) + blob[index + 1 :]
        with pytest.raises(DecryptionError):
            load_signing_key(armor(label, tampered), PASSPHRASE)


def test_work_factor_in_header_is_authenticated() -> None:
    data = encrypt_signing_key(
        get_suite("default").generate_signing_key(), PASSPHRASE, work_factor_log2=15
    )
    label, blob = unarmor(data)
    factor_at = 5 + blob[4]
    assert blob[factor_at] == 15
    downgraded = blob[:factor_at] + bytes([14]) + blob[factor_at + 1 :]
    with pytest.raises(DecryptionError):
        load_signing_key(armor(label, downgraded), PASSPHRASE)


def test_cleartext_needs_the_unsafe_api() -> None:
    key = get_suite("fips-p256").generate_signing_key()
    data = export_unencrypted_signing_key_unsafe(key)
    with pytest.raises(InvalidKey, match="NOT encrypted"):
        load_signing_key(data, PASSPHRASE)
    assert load_unencrypted_signing_key_unsafe(data).verify_key() == key.verify_key()
    with pytest.raises(InvalidKey):
        load_unencrypted_signing_key_unsafe(encrypt_signing_key(key, PASSPHRASE, **FAST))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"garbage",
        NOT_BASE64,
        armor("SECUREFED ENCRYPTED PRIVATE KEY", b"SFK1"),
        armor("SECUREFED ENCRYPTED PRIVATE KEY", b"XXXX" + bytes(60)),
        armor("PRIVATE KEY", bytes(40)),
        armor("SECUREFED ENCRYPTED PRIVATE KEY", b"SFK1\x04rot1" + bytes(40)),
        armor("SECUREFED UNENCRYPTED PRIVATE KEY", b"SFK0\x04rot1" + bytes(32)),
        b"\xff\xfe",
    ],
)
def test_malformed_files(data: bytes) -> None:
    with pytest.raises(InvalidKey):
        load_signing_key(data, PASSPHRASE)
    with pytest.raises(InvalidKey):
        load_unencrypted_signing_key_unsafe(data)


def test_argument_validation() -> None:
    key = get_suite("default").generate_signing_key()
    with pytest.raises(ConfigError):
        encrypt_signing_key(key, b"short")
    with pytest.raises(ConfigError):
        encrypt_signing_key(key, PASSPHRASE, work_factor_log2=10)
