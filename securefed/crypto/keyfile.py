"""Identity keys on disk, encrypted under a passphrase (scrypt + AES-256-GCM).

Format (ASCII armour around one binary blob)::

    -----BEGIN SECUREFED ENCRYPTED PRIVATE KEY-----
    base64( magic "SFK1" | suite name (1-byte length + ASCII) | log2(N) | r | p
            | 16-byte salt | 12-byte nonce | AES-256-GCM(key bytes, AD = everything before) )
    -----END SECUREFED ENCRYPTED PRIVATE KEY-----

The key-encryption key is ``scrypt(passphrase, salt, N, r, p)`` (RFC 7914); the default work
factor follows OWASP's 2024 guidance (N = 2**17, r = 8, p = 1, 128 MiB). The header is
authenticated, so an attacker cannot downgrade the work factor or swap the suite.

Writing a key in the clear needs the separate, deliberately named functions of
:mod:`securefed.crypto.cleartext`; :func:`load_signing_key` refuses such files.
"""

from __future__ import annotations

import base64
import binascii
import os
import re

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from securefed.crypto.keys import SigningKey
from securefed.crypto.suites import CipherSuite, SuiteId, get_suite
from securefed.errors import ConfigError, DecryptionError, InvalidKey

__all__ = [
    "DEFAULT_WORK_FACTOR_LOG2",
    "encrypt_signing_key",
    "load_signing_key",
    "passphrase_from_env",
]

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

MAGIC = b"SFK1"
ENCRYPTED_LABEL = "SECUREFED ENCRYPTED PRIVATE KEY"
CLEARTEXT_LABEL = "SECUREFED UNENCRYPTED PRIVATE KEY"
DEFAULT_WORK_FACTOR_LOG2 = 17
MIN_WORK_FACTOR_LOG2 = 14
MAX_WORK_FACTOR_LOG2 = 22
_SCRYPT_R = 8
_SCRYPT_P = 1
_SALT_BYTES = 16
_NONCE_BYTES = 12
MIN_PASSPHRASE_BYTES = 12


def armor(label: str, blob: bytes) -> bytes:
    """PEM-style armour with 64-character lines."""
    body = base64.b64encode(blob).decode("ascii")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return "\n".join([f"-----BEGIN {label}-----", *lines, f"-----END {label}-----", ""]).encode()


def unarmor(data: bytes) -> tuple[str, bytes]:
    """(label, blob) of an armoured file. Raises InvalidKey if it is not one."""
    try:
        lines = data.decode("ascii").strip().splitlines()
        begin, end = lines[0], lines[-1]
        if not (begin.startswith("-----BEGIN ") and begin.endswith("-----")):
            raise ValueError
        label = begin[len("-----BEGIN ") : -len("-----")]
        if end != f"-----END {label}-----":
            raise ValueError
        return label, base64.b64decode("".join(lines[1:-1]), validate=True)
    except (UnicodeDecodeError, IndexError, ValueError, binascii.Error):
        raise InvalidKey("not a securefed key file") from None


def suite_from_header(name: bytes) -> CipherSuite:
    """The suite a key file names. Raises InvalidKey for an unknown name (a malformed file) and
    CipherSuiteUnavailable for a known suite that is not installed."""
    try:
        suite_id = SuiteId(name.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise InvalidKey("the key file names an unknown cipher suite") from None
    return get_suite(suite_id)


def _kek(passphrase: bytes, salt: bytes, log2_n: int) -> bytes:
    kdf = Scrypt(salt=salt, length=32, n=2**log2_n, r=_SCRYPT_R, p=_SCRYPT_P)
    return kdf.derive(passphrase)


def _check_passphrase(passphrase: bytes) -> None:
    if not isinstance(passphrase, bytes) or len(passphrase) < MIN_PASSPHRASE_BYTES:
        raise ConfigError(f"passphrases are bytes of at least {MIN_PASSPHRASE_BYTES} characters")


def encrypt_signing_key(
    key: SigningKey, passphrase: bytes, *, work_factor_log2: int = DEFAULT_WORK_FACTOR_LOG2
) -> bytes:
    """The armoured, passphrase-encrypted file contents for ``key``.

    Raises:
        ConfigError: passphrase shorter than 12 bytes, or a work factor outside [14, 22].
    """
    _check_passphrase(passphrase)
    if not MIN_WORK_FACTOR_LOG2 <= work_factor_log2 <= MAX_WORK_FACTOR_LOG2:
        raise ConfigError(
            f"work_factor_log2 must be in [{MIN_WORK_FACTOR_LOG2}, {MAX_WORK_FACTOR_LOG2}]"
        )
    suite_name = key.suite.suite_id.value.encode("ascii")
    salt, nonce = os.urandom(_SALT_BYTES), os.urandom(_NONCE_BYTES)
    header = (
        MAGIC
        + bytes([len(suite_name)])
        + suite_name
        + bytes([work_factor_log2, _SCRYPT_R, _SCRYPT_P])
        + salt
        + nonce
    )
    sealed = AESGCM(_kek(passphrase, salt, work_factor_log2)).encrypt(
        nonce, key.secret_bytes_for_storage(), header
    )
    return armor(ENCRYPTED_LABEL, header + sealed)


def load_signing_key(data: bytes, passphrase: bytes) -> SigningKey:
    """Decrypt a file written by :func:`encrypt_signing_key`.

    Raises:
        DecryptionError: wrong passphrase or a tampered file (one error for both).
        InvalidKey: not a securefed encrypted key file (a cleartext file included: load those
            with :func:`securefed.crypto.cleartext.load_unencrypted_signing_key_unsafe`).
        CipherSuiteUnavailable: the file names a suite that is not installed.
    """
    label, blob = unarmor(data)
    if label == CLEARTEXT_LABEL:
        raise InvalidKey(
            "this key file is NOT encrypted; load it with "
            "securefed.crypto.cleartext.load_unencrypted_signing_key_unsafe if that is intended"
        )
    if label != ENCRYPTED_LABEL or blob[:4] != MAGIC or len(blob) < 5:
        raise InvalidKey("not a securefed encrypted key file")
    name_end = 5 + blob[4]
    header_end = name_end + 3 + _SALT_BYTES + _NONCE_BYTES
    if len(blob) < header_end:
        raise InvalidKey("not a securefed encrypted key file")
    suite = suite_from_header(blob[5:name_end])
    log2_n, r, p = blob[name_end : name_end + 3]
    if (r, p) != (
        _SCRYPT_R,
        _SCRYPT_P,
    ) or not MIN_WORK_FACTOR_LOG2 <= log2_n <= MAX_WORK_FACTOR_LOG2:
        raise InvalidKey("unsupported key-file parameters")
    salt = blob[name_end + 3 : name_end + 3 + _SALT_BYTES]
    header = blob[:header_end]
    try:
        secret = AESGCM(_kek(passphrase, salt, log2_n)).decrypt(
            header[-_NONCE_BYTES:], blob[header_end:], header
        )
    except Exception:  # InvalidTag, or a malformed passphrase type
        raise DecryptionError("could not decrypt the key file") from None
    return suite.signing_key(secret)


def passphrase_from_env(variable: str) -> bytes:
    """The passphrase held in environment variable ``variable`` (never taken from argv, where
    other users of the machine could read it).

    Raises:
        ConfigError: ``variable`` is not a valid name, is unset or empty, or holds fewer than
            ``MIN_PASSPHRASE_BYTES`` bytes (the message never contains the value).
    """
    if not _ENV_NAME.fullmatch(variable):  # do not echo it: it may be a passphrase typed by mistake
        raise ConfigError("--passphrase-env takes the NAME of an environment variable")
    value = os.environ.get(variable)
    if not value:
        raise ConfigError(
            f"environment variable {variable} is not set or empty; it must hold "
            "the passphrase that encrypts the identity key"
        )
    passphrase = value.encode("utf-8")
    if len(passphrase) < MIN_PASSPHRASE_BYTES:
        raise ConfigError(
            f"the passphrase in {variable} is too short: use at least {MIN_PASSPHRASE_BYTES} bytes"
        )
    return passphrase
