"""Authenticated encryption for protocol messages (IND-CCA2 under RFC 5116, via AES-256-GCM).

Callers never see a nonce: :meth:`Aead.seal` draws a fresh 96-bit nonce from the operating
system's CSPRNG for every message and prepends it. Associated data is mandatory, so every
ciphertext is bound to its context (sender, recipient, session, round, purpose). Keys are
per-direction and per-round (see :func:`~securefed.crypto.kdf.derive_directional_key`), and carry
only a handful of messages, far below the 2**32 messages per key that random 96-bit nonces allow
(NIST SP 800-38D §8.3).

Every failure to open a ciphertext raises the same :class:`~securefed.errors.DecryptionError`.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag

from securefed.crypto.kdf import DerivedKey, KeyKind
from securefed.errors import ConfigError, DecryptionError

__all__ = ["NONCE_BYTES", "OVERHEAD_BYTES", "TAG_BYTES", "Aead"]

NONCE_BYTES = 12
TAG_BYTES = 16
OVERHEAD_BYTES = NONCE_BYTES + TAG_BYTES
_DECRYPTION_FAILED = "decryption failed"


def _check_associated_data(associated_data: bytes) -> None:
    if not isinstance(associated_data, bytes) or not associated_data:
        raise ConfigError("associated data is required: bind the ciphertext to its context")


class Aead:
    """Seal and open messages under one AEAD key."""

    __slots__ = ("_primitive",)

    def __init__(self, key: DerivedKey) -> None:
        """Raises ConfigError if ``key`` is not an AEAD key (e.g. a mask-stream key)."""
        if not isinstance(key, DerivedKey):
            raise ConfigError("Aead needs a DerivedKey")
        self._primitive = key.suite.aead(key.require(KeyKind.AEAD))

    def seal(self, plaintext: bytes, *, associated_data: bytes) -> bytes:
        """``nonce || ciphertext || tag`` (plaintext length + 28 bytes)."""
        if not isinstance(plaintext, bytes):
            raise ConfigError("plaintext must be bytes")
        _check_associated_data(associated_data)
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._primitive.encrypt(nonce, plaintext, associated_data)

    def open(self, sealed: bytes, *, associated_data: bytes) -> bytes:
        """The plaintext of ``sealed``.

        Raises:
            DecryptionError: for every failure (truncated, tampered, wrong key or wrong
                associated data), with one message.
            ConfigError: ``associated_data`` is empty (a caller bug, not a decryption failure).
        """
        _check_associated_data(associated_data)
        if not isinstance(sealed, bytes) or len(sealed) < OVERHEAD_BYTES:
            raise DecryptionError(_DECRYPTION_FAILED)
        nonce, body = sealed[:NONCE_BYTES], sealed[NONCE_BYTES:]
        try:
            return self._primitive.decrypt(nonce, body, associated_data)
        except InvalidTag:
            raise DecryptionError(_DECRYPTION_FAILED) from None
