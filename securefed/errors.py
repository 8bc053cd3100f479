"""The one exception hierarchy of securefed.

Every error securefed raises on purpose derives from :class:`SecureFedError`, so a caller can catch
the whole family with one ``except``. The tree::

    SecureFedError
    ├── ConfigError                  a configuration or argument is invalid (caught before any work)
    │   └── CipherSuiteUnavailable   the requested cipher suite has no implementation installed
    ├── CryptoError                  a cryptographic check failed
    │   ├── DecryptionError          AEAD open failed (wrong key, tampered ciphertext, AD, or nonce)
    │   ├── InvalidSignature         a signature does not verify
    │   ├── InvalidShare             a secret share is malformed or shares are inconsistent
    │   └── InvalidKey               a key is malformed or unsafe (e.g. all-zero shared secret)
    ├── ProtocolError                a protocol rule was broken
    │   ├── LocalProtocolError       we were asked to do something illegal in our current state
    │   └── RemoteProtocolError      a peer sent something illegal, forged or inconsistent
    ├── EncodingRangeError           a value cannot be encoded without loss (out of range, NaN, inf)
    ├── PrivacyBudgetExceeded        training would exceed the configured (epsilon, delta) budget
    └── LedgerIntegrityError         an audit ledger failed verification

Messages of :class:`CryptoError` subclasses deliberately do not say which internal check failed
(one error for every decryption failure, as in RFC 5116 and pyca/cryptography's ``InvalidTag``).
"""

from __future__ import annotations

__all__ = [
    "CipherSuiteUnavailable",
    "ConfigError",
    "CryptoError",
    "DecryptionError",
    "EncodingRangeError",
    "InvalidKey",
    "InvalidShare",
    "InvalidSignature",
    "LedgerIntegrityError",
    "LocalProtocolError",
    "PrivacyBudgetExceeded",
    "ProtocolError",
    "RemoteProtocolError",
    "SecureFedError",
    "WeightPolicyViolation",
]


class SecureFedError(Exception):
    """Base class of every error securefed raises on purpose."""


class ConfigError(SecureFedError, ValueError):
    """A configuration value or argument is invalid. Raised before any state changes."""


class CipherSuiteUnavailable(ConfigError):
    """The requested cipher suite is known but no implementation of it is installed."""


class CryptoError(SecureFedError):
    """A cryptographic operation or check failed."""


class DecryptionError(CryptoError):
    """Authenticated decryption failed.

    Raised for every failure (truncated input, wrong key, tampered ciphertext, tag or associated
    data) with the same message, so that the error itself is not an oracle.
    """


class InvalidSignature(CryptoError):
    """A signature did not verify under the given public key and message."""


class InvalidShare(CryptoError):
    """A secret share is malformed, duplicated, too few, or the shares are inconsistent."""


class InvalidKey(CryptoError):
    """A key is malformed, has the wrong length or type, or yields an unsafe shared secret."""


class ProtocolError(SecureFedError):
    """A protocol rule was broken. The protocol object that raised it is no longer usable."""


class LocalProtocolError(ProtocolError):
    """We were asked to do something the protocol does not allow in our current state."""


class RemoteProtocolError(ProtocolError):
    """A peer sent a message that is malformed, forged, replayed or inconsistent."""


class EncodingRangeError(SecureFedError, ValueError):
    """A value is outside the codec's range, or not finite, and cannot be encoded without loss."""


class PrivacyBudgetExceeded(SecureFedError):
    """Training was refused because it would exceed the party's (epsilon, delta) budget."""


class LedgerIntegrityError(SecureFedError):
    """An audit ledger failed verification (edited, reordered, truncated or badly signed)."""


class WeightPolicyViolation(ProtocolError):
    """A contributor refuses a weight matrix: some target's row breaks the weight policy.

    Raised by :func:`securefed.secagg.policy.check_weights` on the broadcast weights, or on the
    weights renormalised after dropouts. ``violations`` lists one ``(target, rule)`` pair per
    refused row, ``rule`` being a :class:`securefed.secagg.policy.PolicyRule` (a ``str`` enum),
    so a runtime can emit one refusal event per target. The message names targets and rules and
    the policy's public thresholds, never weight values.
    """

    def __init__(self, message: str, violations: tuple[tuple[int, str], ...] = ()) -> None:
        super().__init__(message)
        self.violations = violations
