"""Load a party's identity key for a deployment process (agent or ServerApp).

The key file is the one ``securefed keys generate`` wrote. An encrypted key (the normal case)
needs its passphrase in an environment variable (``passphrase_env``, never on a command line);
an unencrypted one is accepted only when the caller says ``unsafe_plaintext=True`` (throwaway
test keys: the integration test, the benchmark), and the caller ledgers that as a hazard.
"""

from __future__ import annotations

from pathlib import Path

from securefed.crypto import SigningKey
from securefed.crypto.cleartext import load_unencrypted_signing_key_unsafe
from securefed.crypto.keyfile import load_signing_key, passphrase_from_env
from securefed.errors import ConfigError

__all__ = ["load_identity_key"]


def load_identity_key(
    path: Path, *, passphrase_env: str | None, unsafe_plaintext: bool = False
) -> SigningKey:
    """The signing key in ``path``.

    Raises:
        ConfigError: the file cannot be read; neither or both of ``passphrase_env`` and
            ``unsafe_plaintext`` given; the passphrase variable is unset or too short.
        DecryptionError: wrong passphrase or a tampered file.
        InvalidKey: not a securefed key file of the kind asked for.
    """
    if (passphrase_env is None) == (not unsafe_plaintext):
        raise ConfigError(
            "give the passphrase's environment variable, or (test keys only) unsafe_plaintext"
        )
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the identity key {path}: {exc.strerror}") from None
    if unsafe_plaintext:
        return load_unencrypted_signing_key_unsafe(data)
    if passphrase_env is None:  # unreachable: checked above
        raise ConfigError("no passphrase variable given")
    return load_signing_key(data, passphrase_from_env(passphrase_env))
