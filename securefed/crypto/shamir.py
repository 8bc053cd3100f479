"""Shamir secret sharing of 32-byte secrets, t-of-n over GF(p), p = 2**256 + 297 (docs/protocol.md).

The field is larger than every 32-byte secret (raw seeds and private scalars exceed 2**255 half of
the time, so a 2**255-sized field would silently reduce them). ``p`` is the smallest prime above
2**256; ``tests/crypto/test_shamir.py`` checks its primality.

Participants are roster indices ``0..n-1``; a participant's share is the polynomial evaluated at
``x = index + 1`` (never at 0, which is the secret). Coefficients come from :mod:`secrets`.

Guarantees:

* any ``threshold`` distinct shares reconstruct the secret; fewer reveal nothing about it;
* :func:`combine` raises :class:`~securefed.errors.InvalidShare` for fewer than ``threshold``
  shares, duplicate x-coordinates, out-of-field values, or a result that is not a 32-byte value
  (which catches most tampering; protocols must still check the result against a commitment).
"""

from __future__ import annotations

import functools
import operator
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from securefed.errors import ConfigError, InvalidShare

__all__ = [
    "PRIME",
    "SECRET_BYTES",
    "SHARE_BYTES",
    "Share",
    "combine",
    "split",
    "split_with_coefficients",
]

PRIME = 2**256 + 297
SECRET_BYTES = 32
_X_BYTES = 4
_Y_BYTES = 33  # elements of GF(p) need 257 bits
SHARE_BYTES = _X_BYTES + _Y_BYTES
MAX_PARTIES = 2**16


@dataclass(frozen=True, slots=True)
class Share:
    """One point ``(x, y)`` of the sharing polynomial. ``x`` is the holder's roster index + 1."""

    x: int
    y: int = field(repr=False)

    def __post_init__(self) -> None:
        if (
            isinstance(self.x, bool)
            or not isinstance(self.x, int)
            or not 1 <= self.x <= MAX_PARTIES
        ):
            raise InvalidShare("malformed share")
        if isinstance(self.y, bool) or not isinstance(self.y, int) or not 0 <= self.y < PRIME:
            raise InvalidShare("malformed share")

    @property
    def holder(self) -> int:
        """Roster index of the participant this share belongs to."""
        return self.x - 1

    def to_bytes(self) -> bytes:
        """Fixed-length encoding: 4-byte big-endian x, 33-byte big-endian y."""
        return self.x.to_bytes(_X_BYTES, "big") + self.y.to_bytes(_Y_BYTES, "big")

    @classmethod
    def from_bytes(cls, data: bytes) -> Share:
        """Decode :meth:`to_bytes`. Raises InvalidShare on any malformed input."""
        if not isinstance(data, bytes) or len(data) != SHARE_BYTES:
            raise InvalidShare("malformed share")
        return cls(int.from_bytes(data[:_X_BYTES], "big"), int.from_bytes(data[_X_BYTES:], "big"))


def _check_split_arguments(secret: bytes, threshold: int, holders: Sequence[int]) -> None:
    if not isinstance(secret, bytes) or len(secret) != SECRET_BYTES:
        raise ConfigError(f"Shamir secrets are exactly {SECRET_BYTES} bytes")
    if len(set(holders)) != len(holders) or any(not 0 <= h < MAX_PARTIES for h in holders):
        raise ConfigError("holders must be distinct roster indices in [0, 2**16)")
    if not 1 <= threshold <= len(holders):
        raise ConfigError("threshold must be between 1 and the number of holders")


def _evaluate(coefficients: Sequence[int], x: int) -> int:
    result = 0
    for coefficient in reversed(coefficients):
        result = (result * x + coefficient) % PRIME
    return result


def split(secret: bytes, *, threshold: int, holders: Sequence[int]) -> list[Share]:
    """Split ``secret`` so that any ``threshold`` of ``holders`` (roster indices) recover it.

    Returns one share per holder, in the order of ``holders``.

    Raises:
        ConfigError: secret not 32 bytes, duplicate or out-of-range holders, or a threshold
            outside ``1..len(holders)``.
    """
    _check_split_arguments(secret, threshold, holders)
    coefficients = [int.from_bytes(secret, "big")]
    coefficients += [secrets.randbelow(PRIME) for _ in range(threshold - 1)]
    return [Share(h + 1, _evaluate(coefficients, h + 1)) for h in holders]


def split_with_coefficients(
    secret: bytes, *, coefficients: Sequence[int], holders: Sequence[int]
) -> list[Share]:
    """Deterministic :func:`split` with given higher coefficients. For known-answer tests only.

    Hazardous: predictable coefficients let anyone holding one share recover the secret.
    """
    _check_split_arguments(secret, len(coefficients) + 1, holders)
    polynomial = [int.from_bytes(secret, "big"), *(c % PRIME for c in coefficients)]
    return [Share(h + 1, _evaluate(polynomial, h + 1)) for h in holders]


@functools.lru_cache(maxsize=32)
def _lagrange_at_zero(xs: tuple[int, ...]) -> tuple[int, ...]:
    """The Lagrange weights ``l_i(0)`` of the distinct x-set ``xs`` (public data), computed once
    per x-set: every secret rebuilt from the same holders reuses them."""
    weights = []
    for i, x in enumerate(xs):
        numerator, denominator = 1, 1
        for j, other in enumerate(xs):
            if i != j:
                numerator = numerator * other % PRIME
                denominator = denominator * (other - x) % PRIME
        weights.append(numerator * pow(denominator, -1, PRIME) % PRIME)
    return tuple(weights)


def combine(shares: Iterable[Share], *, threshold: int) -> bytes:
    """Reconstruct the 32-byte secret from at least ``threshold`` shares (Lagrange at 0).

    Uses the first ``threshold`` shares given; extra shares are ignored.

    Raises:
        InvalidShare: fewer than ``threshold`` shares, duplicate x-coordinates, or a
            reconstructed value that is not a 32-byte secret.
        ConfigError: threshold < 1.
    """
    if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1:
        raise ConfigError("threshold must be a positive int")
    points = list(shares)
    if any(not isinstance(s, Share) for s in points):
        raise InvalidShare("malformed share")
    if len({s.x for s in points}) != len(points):
        raise InvalidShare("duplicate share x-coordinates")
    if len(points) < threshold:
        raise InvalidShare(f"need at least {threshold} shares, got {len(points)}")
    points = points[:threshold]
    weights = _lagrange_at_zero(tuple(s.x for s in points))
    secret: int = sum(map(operator.mul, weights, (s.y for s in points))) % PRIME
    if secret >= 2 ** (8 * SECRET_BYTES):
        raise InvalidShare("shares are inconsistent")
    return secret.to_bytes(SECRET_BYTES, "big")
