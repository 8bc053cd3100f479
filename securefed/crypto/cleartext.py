"""UNSAFE: identity keys written to disk WITHOUT encryption.

WARNING: anyone who can read a file written by these functions can impersonate its institution in
every session, sign forged consistency checks and audit-ledger entries. Use
:mod:`securefed.crypto.keyfile` (passphrase-encrypted) for anything but throwaway test fixtures or
keys held in a hardware-protected store that encrypts at rest by itself.

These functions are separate and loudly named on purpose (Tink's ``cleartext_keyset_handle``
pattern), so that every use is easy to find with ``grep unsafe``.
"""

from __future__ import annotations

from securefed.crypto.keyfile import CLEARTEXT_LABEL, armor, suite_from_header, unarmor
from securefed.crypto.keys import SigningKey
from securefed.errors import InvalidKey

__all__ = ["export_unencrypted_signing_key_unsafe", "load_unencrypted_signing_key_unsafe"]

_MAGIC = b"SFK0"


def export_unencrypted_signing_key_unsafe(key: SigningKey) -> bytes:
    """The armoured cleartext key file for ``key``. See the module WARNING."""
    name = key.suite.suite_id.value.encode("ascii")
    return armor(
        CLEARTEXT_LABEL, _MAGIC + bytes([len(name)]) + name + key.secret_bytes_for_storage()
    )


def load_unencrypted_signing_key_unsafe(data: bytes) -> SigningKey:
    """Load a file written by :func:`export_unencrypted_signing_key_unsafe`.

    Raises:
        InvalidKey: not such a file, or a malformed key.
    """
    label, blob = unarmor(data)
    if label != CLEARTEXT_LABEL or blob[:4] != _MAGIC or len(blob) < 5:
        raise InvalidKey("not a securefed cleartext key file")
    name_end = 5 + blob[4]
    suite = suite_from_header(blob[5:name_end])
    return suite.signing_key(blob[name_end:])
