"""Feldman verifiable secret sharing of 32-byte secrets over the P-256 group (docs/protocol.md).

The secure-aggregation protocol deals its mask keys and self seeds with it by default
(:mod:`securefed.secagg.sharing`, ``ShareScheme.FELDMAN``); plain :mod:`securefed.crypto.shamir`
is kept as the semi-honest baseline.

A dealer splits a secret with a random polynomial ``f(X) = a_0 + a_1 X + ... + a_{t-1} X^{t-1}``
over the scalars of P-256 (the integers modulo the group order ``n``) and publishes the
commitment ``C_j = a_j * G`` for every coefficient. Holder ``i`` (roster index) receives
``y = f(i + 1)`` and checks ``y * G == sum_j (i + 1)^j * C_j``: a share that passes lies on the
committed polynomial, so any ``t`` passing shares reconstruct the same ``a_0``, whoever dealt or
returned them.

Secrets to scalars. A 32-byte secret ``s`` (big-endian) can exceed ``n`` (for a uniform ``s``
with probability below 2**-32), so the dealer shares ``a_0 = s mod n`` and publishes the
*carry* ``s // n`` (0 or 1) in the commitment; reconstruction returns ``a_0 + carry * n``. The
carry reveals only whether ``s >= n``. A secret with ``s mod n == 0`` (the all-zero secret, or
``n`` itself) cannot be committed (``0 * G`` is the point at infinity) and is refused. A P-256
private key ``k`` (``1 <= k < n``) is shared with carry 0 and ``C_0`` equals its public key.

Guarantees (under the discrete-logarithm assumption in P-256):

* **binding:** no dealer can make two different secrets, or shares off its polynomial, pass
  verification against one commitment;
* **privacy:** fewer than ``t`` shares and the commitment reveal nothing beyond ``s * G`` (and the
  carry); a 32-byte secret with 256 bits of entropy stays at the group's ~128-bit security level.
  Feldman commitments are not hiding: do not share low-entropy secrets with this module.

Side channels. The secret-dependent group operations (``a_j * G`` at dealing, ``y * G`` at
verification) run in OpenSSL's constant-time P-256 code through the ``cryptography`` package. The
pure-Python point arithmetic below only ever touches public data: the commitment points and the
holders' x-coordinates (and, in :func:`reconstruct`, shares that the reconstructing party is
about to learn the secret from anyway). Evaluating the polynomial and Lagrange interpolation are
plain integer arithmetic (variable time), as in :mod:`securefed.crypto.shamir`. :func:`reconstruct`
also opens the whole polynomial from ``t`` valid shares (which determine it anyway) and checks
its coefficients against the commitment in OpenSSL's base-point code.

A holder that received many shares at its one x-coordinate (one per dealer) checks them with
:func:`verify_held_shares`: the same verdict as :func:`verify_share` for each, exactly (no random
batching), reported as the indices that fail rather than raised, and faster for many dealers.

Failure modes: malformed commitments or shares raise :class:`InvalidCommitment` or
:class:`~securefed.errors.InvalidShare`; a share off the polynomial raises ``InvalidShare``;
:func:`reconstruct` discards such shares, names their holders and raises
:class:`NotEnoughValidShares` only when fewer than ``t`` good ones remain. No function searches
subsets of shares.
"""

from __future__ import annotations

import collections
import functools
import itertools
import operator
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeAlias

from cryptography.hazmat.primitives.asymmetric import ec

from securefed.crypto._p256 import CURVE, ORDER
from securefed.errors import ConfigError, InvalidShare

__all__ = [
    "MAX_PARTIES",
    "ORDER",
    "POINT_BYTES",
    "SECRET_BYTES",
    "SHARE_BYTES",
    "Commitment",
    "InvalidCommitment",
    "NotEnoughValidShares",
    "Reconstruction",
    "Share",
    "commitment_bytes",
    "deal",
    "reconstruct",
    "verify_held_shares",
    "verify_share",
]

# P-256 (FIPS 186-5 D.1.2.3, SEC 2 2.4.2): y^2 = x^3 - 3x + b over GF(p); cofactor 1.
_P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF
_B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B
_GX = 0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296
_GY = 0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5

SECRET_BYTES = 32
POINT_BYTES = 65  # uncompressed SEC1: 0x04 || x || y
_SCALAR_BYTES = 32
_X_BYTES = 4
SHARE_BYTES = _X_BYTES + _SCALAR_BYTES
MAX_PARTIES = 2**16  # as securefed.crypto.shamir: holders are roster indices 0..2**16 - 1
_VERSION = 1
_HEADER_BYTES = 1 + 1 + 4  # version, carry, threshold (big-endian)
# Random coefficients: 48 bytes reduced into [1, n - 1], a bias below 2**-128.
_COEFFICIENT_BYTES = 48
# Batch verification in reconstruct: random 128-bit weights (soundness error 2**-128).
_BATCH_WEIGHT_BYTES = 16
_WINDOW = 4
# Reconstruction opens the polynomial (a t x t interpolation matrix, cached per x-set: a round
# reuses one x-set per survivor set) up to this threshold; above it the matrix would cost too much
# memory and the batch check runs instead. At most _BASIS_CACHE matrices (each <= 2**16 ints).
_OPEN_MAX_THRESHOLD = 256
_BASIS_CACHE = 8

Point: TypeAlias = tuple[int, int]  # affine, never the point at infinity
_Jacobian: TypeAlias = tuple[int, int, int]  # (X, Y, Z) for (X/Z^2, Y/Z^3); Z == 0: infinity

_INFINITY: _Jacobian = (1, 1, 0)


class InvalidCommitment(InvalidShare):
    """A dealer's commitment is malformed, has the wrong degree, or encodes no 32-byte secret.

    Always the dealer's fault: a holder that sees it should exclude the dealer.
    """


class NotEnoughValidShares(InvalidShare):
    """Fewer than ``t`` shares passed verification. ``rejected`` names the holders that failed."""

    def __init__(self, message: str, rejected: tuple[int, ...] = ()) -> None:
        super().__init__(message)
        self.rejected = rejected


# -- P-256 arithmetic on public data ---------------------------------------------------------


def _is_on_curve(x: int, y: int) -> bool:
    return 0 <= x < _P and 0 <= y < _P and (y * y - x * x * x + 3 * x - _B) % _P == 0


def _double(point: _Jacobian) -> _Jacobian:
    """2P, "dbl-2001-b" (a = -3; Z3 = 2 Y1 Z1: Python multiplies as fast as it squares)."""
    x1, y1, z1 = point
    if z1 == 0 or y1 == 0:
        return _INFINITY
    delta = z1 * z1 % _P
    gamma = y1 * y1 % _P
    beta = x1 * gamma % _P
    alpha = 3 * (x1 - delta) * (x1 + delta) % _P
    x3 = (alpha * alpha - 8 * beta) % _P
    z3 = 2 * y1 * z1 % _P
    y3 = (alpha * (4 * beta - x3) - 8 * gamma * gamma) % _P
    return x3, y3, z3


def _add(p1: _Jacobian, p2: _Jacobian) -> _Jacobian:
    """P + Q, "add-2007-bl" (Z3 = 2 Z1 Z2 H), with the cases infinity, P == Q and P == -Q."""
    x1, y1, z1 = p1
    x2, y2, z2 = p2
    if z1 == 0:
        return p2
    if z2 == 0:
        return p1
    z1z1 = z1 * z1 % _P
    z2z2 = z2 * z2 % _P
    u1 = x1 * z2z2 % _P
    u2 = x2 * z1z1 % _P
    s1 = y1 * z2 * z2z2 % _P
    s2 = y2 * z1 * z1z1 % _P
    h = (u2 - u1) % _P
    r = 2 * (s2 - s1) % _P
    if h == 0:
        return _double(p1) if r == 0 else _INFINITY
    i = 4 * h * h % _P
    j = h * i % _P
    v = u1 * i % _P
    x3 = (r * r - j - 2 * v) % _P
    y3 = (r * (v - x3) - 2 * s1 * j) % _P
    z3 = 2 * z1 * z2 * h % _P
    return x3, y3, z3


def _add_affine(p1: _Jacobian, p2: Point) -> _Jacobian:
    """P + Q for an affine Q, "madd-2007-bl" (Z3 = 2 Z1 H)."""
    x1, y1, z1 = p1
    x2, y2 = p2
    if z1 == 0:
        return x2, y2, 1
    z1z1 = z1 * z1 % _P
    u2 = x2 * z1z1 % _P
    s2 = y2 * z1 * z1z1 % _P
    h = (u2 - x1) % _P
    r = 2 * (s2 - y1) % _P
    if h == 0:
        return _double(p1) if r == 0 else _INFINITY
    hh = h * h % _P
    i = 4 * hh % _P
    j = h * i % _P
    v = x1 * i % _P
    x3 = (r * r - j - 2 * v) % _P
    y3 = (r * (v - x3) - 2 * y1 * j) % _P
    z3 = 2 * z1 * h % _P
    return x3, y3, z3


def _multiply(k: int, point: _Jacobian) -> _Jacobian:
    """k * P by left-to-right double-and-add: variable time, for public ``k`` only."""
    if k == 0 or point[2] == 0:
        return _INFINITY
    result = point
    for bit in bin(k)[3:]:
        result = _double(result)
        if bit == "1":
            result = _add(result, point)
    return result


def _equals_affine(point: _Jacobian, affine: Point | None) -> bool:
    """Whether the Jacobian ``point`` is ``affine`` (``None`` meaning infinity)."""
    x, y, z = point
    if affine is None or z == 0:
        return affine is None and z == 0
    z2 = z * z % _P
    return x == affine[0] * z2 % _P and y == affine[1] * z2 * z % _P


def _base_multiply(k: int) -> Point | None:
    """k * G in OpenSSL's constant-time code; ``None`` for k = 0 (mod n)."""
    k %= ORDER
    if k == 0:
        return None
    numbers = ec.derive_private_key(k, CURVE).public_key().public_numbers()
    return numbers.x, numbers.y


def _evaluate_in_exponent(points: Sequence[Point], x: int) -> _Jacobian:
    """sum_j x^j * C_j by Horner's rule: ``t - 1`` multiplications by the small public ``x``."""
    result: _Jacobian = (*points[-1], 1)
    for point in reversed(points[:-1]):
        result = _add_affine(_multiply(x, result), point)
    return result


# Lockstep Horner for many commitments at one x (verify_held_shares): every lane is kept in
# affine coordinates and each group operation is done for all lanes at once, with one modular
# inversion shared by all of them (Montgomery's simultaneous inversion: three multiplications
# per lane). Measured in CPython 3.11 per lane: an affine doubling costs about 0.9 of a Jacobian
# `_double` (both are bound by ~6-7 multiplications modulo p), an affine addition about 0.6 of
# `_add_affine` and 0.4 of `_add`; the shared `pow(z, -1, p)` costs about five doublings, so the
# lockstep pays only from a dozen or so lanes on. Doublings dominate Horner's rule at x >= 4.
_THREE_HALVES = 3 * pow(2, -1, _P) % _P  # lambda = 3 (x^2 - 1) / (2 y) for a = -3
# Fewer lanes than this at one x are checked one by one (crossover measured at 12 to 16).
_LOCKSTEP_MIN_LANES = 16


def _signed_digits(x: int) -> tuple[int, ...]:
    """Digits in {-1, 0, 1} of ``x >= 1``, most significant first, leading 1 dropped.

    Multiplying by ``x`` is then, per digit, a doubling followed by adding (1) or subtracting
    (-1) the multiplicand. The plain binary digits or the non-adjacent form, whichever needs
    fewer group operations (ties: binary).
    """
    binary = tuple(int(bit) for bit in bin(x)[3:])
    naf: list[int] = []
    k = x
    while k:
        digit = 2 - (k & 3) if k & 1 else 0
        naf.append(digit)
        k = (k - digit) >> 1
    naf.reverse()
    signed = tuple(naf[1:])
    if len(signed) + sum(map(abs, signed)) < len(binary) + sum(binary):
        return signed
    return binary


def _double_lanes(xs: list[int], ys: list[int]) -> tuple[list[int], list[int]] | None:
    """``2 P`` for every affine ``P = (xs[i], ys[i])``, one inversion in all; None if a ``y`` is 0.

    (No point of P-256 has ``y = 0``: the group has odd prime order.)
    """
    p = _P
    after: list[int] = []  # after[i]: product of the denominators of the lanes past i
    keep = after.append
    product = 1
    for y in reversed(ys):
        keep(product)
        product = product * y % p
    if product == 0:
        return None
    after.reverse()
    inverse = pow(product, -1, p) * _THREE_HALVES % p
    out_x: list[int] = []
    out_y: list[int] = []
    put_x = out_x.append
    put_y = out_y.append
    for x, y, rest in zip(xs, ys, after, strict=True):
        slope = (x * x - 1) * (inverse * rest % p) % p
        inverse = inverse * y % p
        x3 = (slope * slope - x - x) % p
        put_x(x3)
        put_y((slope * (x - x3) - y) % p)
    return out_x, out_y


def _add_lanes(
    xs: list[int], ys: list[int], qxs: list[int], qys: list[int]
) -> tuple[list[int], list[int]] | None:
    """``P + Q`` for every pair of affine lanes, one inversion in all; None if some ``P.x == Q.x``
    (``P == Q`` or ``P == -Q``: the caller handles those lanes). Coordinates are below ``p``."""
    p = _P
    after: list[int] = []
    keep = after.append
    product = 1
    for x, qx in zip(reversed(xs), reversed(qxs), strict=True):
        keep(product)
        product = product * (qx - x) % p
    if product == 0:
        return None
    after.reverse()
    inverse = pow(product, -1, p)
    out_x: list[int] = []
    out_y: list[int] = []
    put_x = out_x.append
    put_y = out_y.append
    for x, y, qx, qy, rest in zip(xs, ys, qxs, qys, after, strict=True):
        slope = (qy - y) * (inverse * rest % p) % p
        inverse = inverse * (qx - x) % p
        x3 = (slope * slope - x - qx) % p
        put_x(x3)
        put_y((slope * (x - x3) - y) % p)
    return out_x, out_y


def _to_affine(point: _Jacobian) -> Point | None:
    x, y, z = point
    if z == 0:
        return None
    inverse = pow(z, -1, _P)
    square = inverse * inverse % _P
    return x * square % _P, y * square * inverse % _P


def _add_coefficients(
    xs: list[int], ys: list[int], coefficients: Sequence[Point]
) -> list[Point | None]:
    """``P + C`` for every lane, exactly: a lane where ``P == C`` is doubled, where ``P == -C``
    becomes the point at infinity (None); the other lanes share one inversion."""
    cxs = [c[0] for c in coefficients]
    cys = [c[1] for c in coefficients]
    summed = _add_lanes(xs, ys, cxs, cys)
    if summed is not None:
        return list(zip(*summed, strict=True))
    regular = [i for i, (x, cx) in enumerate(zip(xs, cxs, strict=True)) if x != cx]
    results: list[Point | None] = [None] * len(xs)
    if regular:
        summed = _add_lanes(
            [xs[i] for i in regular],
            [ys[i] for i in regular],
            [cxs[i] for i in regular],
            [cys[i] for i in regular],
        )
        assert summed is not None  # noqa: S101 - every remaining lane has P.x != C.x
        for i, point in zip(regular, zip(*summed, strict=True), strict=True):
            results[i] = point
    for i, (x, y, cx, cy) in enumerate(zip(xs, ys, cxs, cys, strict=True)):
        if x == cx and y == cy:
            results[i] = _to_affine(_double((x, y, 1)))
    return results


def _step_lanes(
    points: Sequence[Point], coefficients: Sequence[Point], x: int, digits: Sequence[int]
) -> list[Point | None]:
    """One Horner step ``x P + C`` for every lane (``P`` never the point at infinity).

    With ``P`` of prime order and ``1 <= x < n`` the doublings and additions of ``P`` inside
    ``x P`` are never exceptional; should one be anyway (points off P-256), the step is redone
    lane by lane in the Jacobian code.
    """
    rx = [point[0] for point in points]
    ry = [point[1] for point in points]
    minus_ry = [_P - y for y in ry] if -1 in digits else ry  # -P = (x, p - y)
    xs, ys = rx, ry
    for digit in digits:
        step = _double_lanes(xs, ys)
        if step is not None and digit:
            step = _add_lanes(step[0], step[1], rx, ry if digit > 0 else minus_ry)
        if step is None:
            return [
                _to_affine(_add_affine(_multiply(x, (*point, 1)), coefficient))
                for point, coefficient in zip(points, coefficients, strict=True)
            ]
        xs, ys = step
    return _add_coefficients(xs, ys, coefficients)


def _evaluate_lanes(lanes: Sequence[Sequence[Point]], x: int) -> list[Point | None]:
    """``sum_j x^j lanes[i][j]`` for every ``i`` (None: the point at infinity), exactly.

    Horner's rule run in lockstep over all lanes from the highest degree down; a lane with
    fewer coefficients joins when its own top coefficient comes up, and a lane whose running
    sum hits the point at infinity sits out until the next coefficient. Public data only.
    """
    digits = _signed_digits(x)
    state: list[Point | None] = [None] * len(lanes)
    for degree in range(max(map(len, lanes)) - 1, -1, -1):
        live: list[int] = []
        points: list[Point] = []
        idle: list[int] = []
        for i, point in enumerate(state):
            if point is None:
                idle.append(i)
            else:
                live.append(i)
                points.append(point)
        if live:
            stepped = _step_lanes(points, [lanes[i][degree] for i in live], x, digits)
            for i, point in zip(live, stepped, strict=True):
                state[i] = point
        for i in idle:
            if degree < len(lanes[i]):
                state[i] = lanes[i][degree]
    return state


def _multi_multiply(terms: Sequence[tuple[int, Point]]) -> _Jacobian:
    """sum k_i * P_i for public scalars, Straus' interleaving with 4-bit fixed windows."""
    tables: list[list[_Jacobian]] = []
    for _, point in terms:
        table: list[_Jacobian] = [_INFINITY, (*point, 1)]
        for _ in range(2, 1 << _WINDOW):
            table.append(_add_affine(table[-1], point))
        tables.append(table)
    result = _INFINITY
    mask = (1 << _WINDOW) - 1
    for shift in range(8 * _SCALAR_BYTES - _WINDOW, -1, -_WINDOW):
        for _ in range(_WINDOW):
            result = _double(result)
        for (scalar, _), table in zip(terms, tables, strict=True):
            digit = (scalar >> shift) & mask
            if digit:
                result = _add(result, table[digit])
    return result


def _encode_point(point: Point) -> bytes:
    return b"\x04" + point[0].to_bytes(32, "big") + point[1].to_bytes(32, "big")


def _parse_point(data: bytes) -> Point:
    """The coordinates of an uncompressed SEC1 point; the caller checks that it is on the curve."""
    if len(data) != POINT_BYTES or data[0] != 0x04:
        raise InvalidCommitment("malformed commitment")
    return int.from_bytes(data[1:33], "big"), int.from_bytes(data[33:], "big")


# -- shares and commitments ------------------------------------------------------------------


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True)
class Share:
    """One point ``(x, y)`` of a dealer's polynomial: ``x`` = holder's roster index + 1, ``y < n``.

    Raises InvalidShare on construction when ``x`` or ``y`` is out of range.
    """

    x: int
    y: int = field(repr=False)

    def __post_init__(self) -> None:
        if not (_is_int(self.x) and 1 <= self.x <= MAX_PARTIES):
            raise InvalidShare("malformed share")
        if not (_is_int(self.y) and 0 <= self.y < ORDER):
            raise InvalidShare("malformed share")

    @property
    def holder(self) -> int:
        """Roster index of the participant this share belongs to."""
        return self.x - 1

    def to_bytes(self) -> bytes:
        """Fixed-length encoding: 4-byte big-endian x, 32-byte big-endian y."""
        return self.x.to_bytes(_X_BYTES, "big") + self.y.to_bytes(_SCALAR_BYTES, "big")

    @classmethod
    def from_bytes(cls, data: bytes) -> Share:
        """Decode :meth:`to_bytes`. Raises InvalidShare on any other input."""
        if not isinstance(data, bytes) or len(data) != SHARE_BYTES:
            raise InvalidShare("malformed share")
        return cls(int.from_bytes(data[:_X_BYTES], "big"), int.from_bytes(data[_X_BYTES:], "big"))


@dataclass(frozen=True, slots=True)
class Commitment:
    """A dealer's public commitment: ``points[j] = a_j * G`` and the secret's carry bit.

    ``threshold`` is ``len(points)``, the degree plus one. The secret is ``a_0 + carry * n``.
    Every point is validated on construction (on the curve, coordinates below p; P-256 has
    cofactor 1, so that is group membership). Raises InvalidCommitment otherwise.
    """

    points: tuple[Point, ...]
    carry: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.points, tuple) or not 1 <= len(self.points) <= MAX_PARTIES:
            raise InvalidCommitment("malformed commitment")
        if not (_is_int(self.carry) and self.carry in (0, 1)):
            raise InvalidCommitment("malformed commitment")
        for point in self.points:
            if not (
                type(point) is tuple
                and len(point) == 2
                and type(point[0]) is int
                and type(point[1]) is int
                and _is_on_curve(*point)
            ):
                raise InvalidCommitment("malformed commitment")

    @property
    def threshold(self) -> int:
        """Shares needed to reconstruct: the number of committed coefficients."""
        return len(self.points)

    def constant_term(self) -> bytes:
        """``a_0 * G`` as a 65-byte SEC1 point (a shared P-256 private key's public key)."""
        return _encode_point(self.points[0])

    def to_bytes(self) -> bytes:
        """Version 1: ``0x01 || carry || threshold (4 bytes, big-endian) || 65-byte points``."""
        header = bytes((_VERSION, self.carry)) + self.threshold.to_bytes(4, "big")
        return header + b"".join(_encode_point(p) for p in self.points)

    @classmethod
    def from_bytes(cls, data: bytes) -> Commitment:
        """Decode :meth:`to_bytes` strictly (exact length, canonical points, at most 2**16).

        Raises:
            InvalidCommitment: any other input.
        """
        if not isinstance(data, bytes) or len(data) < _HEADER_BYTES + POINT_BYTES:
            raise InvalidCommitment("malformed commitment")
        threshold = int.from_bytes(data[2:_HEADER_BYTES], "big")
        if (
            data[0] != _VERSION
            or threshold > MAX_PARTIES
            or len(data) != commitment_bytes(threshold)
        ):
            raise InvalidCommitment("malformed commitment")
        points = tuple(
            _parse_point(data[offset : offset + POINT_BYTES])
            for offset in range(_HEADER_BYTES, len(data), POINT_BYTES)
        )
        return cls(points, data[1])


def commitment_bytes(threshold: int) -> int:
    """Length of an encoded commitment for ``threshold`` (for callers sizing messages)."""
    return _HEADER_BYTES + POINT_BYTES * threshold


@dataclass(frozen=True, slots=True)
class Reconstruction:
    """What :func:`reconstruct` recovered, and the holders whose shares it discarded."""

    secret: bytes = field(repr=False)
    rejected: tuple[int, ...]


# -- dealing, verifying, reconstructing ------------------------------------------------------


def _check_deal_arguments(secret: bytes, threshold: int, holders: Sequence[int]) -> None:
    if not isinstance(secret, bytes) or len(secret) != SECRET_BYTES:
        raise ConfigError(f"verifiable secrets are exactly {SECRET_BYTES} bytes")
    if not all(_is_int(h) and 0 <= h < MAX_PARTIES for h in holders):
        raise ConfigError("holders must be distinct roster indices in [0, 2**16)")
    if len(set(holders)) != len(holders):
        raise ConfigError("holders must be distinct roster indices in [0, 2**16)")
    if not (_is_int(threshold) and 1 <= threshold <= len(holders)):
        raise ConfigError("threshold must be between 1 and the number of holders")


def _draw(random_bytes: Callable[[int], bytes], n: int) -> int:
    data = random_bytes(n)
    if not isinstance(data, bytes) or len(data) != n:
        raise ConfigError("random_bytes(n) must return n bytes")
    return int.from_bytes(data, "big")


def _random_coefficient(random_bytes: Callable[[int], bytes]) -> int:
    return _draw(random_bytes, _COEFFICIENT_BYTES) % (ORDER - 1) + 1


def _evaluate(coefficients: Sequence[int], x: int) -> int:
    result = 0
    for coefficient in reversed(coefficients):
        result = (result * x + coefficient) % ORDER
    return result


def deal(
    secret: bytes,
    *,
    threshold: int,
    holders: Sequence[int],
    random_bytes: Callable[[int], bytes] = os.urandom,
) -> tuple[Commitment, dict[int, Share]]:
    """Share ``secret`` t-of-n among ``holders`` (roster indices) and commit to the polynomial.

    Returns the commitment (public: sign and broadcast it) and each holder's share (secret: send
    each one encrypted to its holder only), keyed by roster index. ``random_bytes`` supplies the
    coefficients (default :func:`os.urandom`; tests may pass a deterministic source).

    Raises:
        ConfigError: the secret is not 32 bytes or is 0 modulo the group order, duplicate or
            out-of-range holders, a threshold outside ``1..len(holders)``, or a ``random_bytes``
            that returns the wrong length.
    """
    _check_deal_arguments(secret, threshold, holders)
    carry, constant = divmod(int.from_bytes(secret, "big"), ORDER)
    if constant == 0:
        raise ConfigError("the secret is 0 modulo the P-256 group order and cannot be committed")
    coefficients = [constant] + [_random_coefficient(random_bytes) for _ in range(threshold - 1)]
    points = []
    for coefficient in coefficients:
        point = _base_multiply(coefficient)
        assert point is not None  # noqa: S101 - every coefficient lies in [1, n - 1]
        points.append(point)
    shares = {h: Share(h + 1, _evaluate(coefficients, h + 1)) for h in holders}
    return Commitment(tuple(points), carry), shares


def _is_valid(commitment: Commitment, share: Share) -> bool:
    expected = _evaluate_in_exponent(commitment.points, share.x)
    return _equals_affine(expected, _base_multiply(share.y))


def verify_share(
    commitment: Commitment,
    share: Share,
    *,
    threshold: int | None = None,
    holder: int | None = None,
) -> None:
    """Check that ``share`` lies on the polynomial that ``commitment`` commits to.

    A holder checks its share on receipt with ``threshold`` (the protocol's t: a dealer that
    committed to a polynomial of another degree is caught) and ``holder`` (its own roster index:
    a dealer that handed it another holder's point is caught). Returns None; raises on failure.

    Raises:
        InvalidCommitment: ``commitment`` has ``commitment.threshold != threshold``.
        InvalidShare: the share is malformed, belongs to another holder, or is not on the
            committed polynomial.
    """
    error = _receipt_error(commitment, share, threshold, holder)
    if error is not None:
        raise error
    if not _is_valid(commitment, share):
        raise InvalidShare("the share is not on the committed polynomial")


def _receipt_error(
    commitment: object, share: object, threshold: int | None, holder: int | None
) -> InvalidShare | None:
    """What :func:`verify_share` raises before it looks at the polynomial, or None."""
    if not isinstance(commitment, Commitment):
        return InvalidCommitment("malformed commitment")
    if threshold is not None and commitment.threshold != threshold:
        return InvalidCommitment("the commitment has the wrong threshold")
    if not isinstance(share, Share) or (holder is not None and share.holder != holder):
        return InvalidShare("malformed share")
    return None


def verify_held_shares(
    items: Sequence[tuple[Commitment, Share]],
    *,
    threshold: int | None = None,
    holder: int | None = None,
) -> tuple[int, ...]:
    """Check many received shares at once; return the indices of those that fail, ascending.

    ``items`` pairs each dealer's commitment with the share it sent (a holder's shares of one
    round: one x-coordinate, many dealers). Item ``i`` is reported exactly when
    ``verify_share(*items[i], threshold=threshold, holder=holder)`` would raise: the verdicts
    are exact, deterministic and independent of one another (no random weights, no
    probabilistic batching; one bad item never hides or causes another's failure). A malformed
    item (not a pair, not a :class:`Commitment` and a :class:`Share`), a commitment of another
    threshold and a share of another holder are reported as failing, not raised: the caller
    learns which dealer to blame. An empty ``items`` gives ``()``.

    Cost: fewer than ``_LOCKSTEP_MIN_LANES`` (16) items at one x-coordinate are checked one by
    one, as :func:`verify_share` does. From 16 on, Horner's rule runs over all their
    commitments in lockstep in affine coordinates, one modular inversion per group operation
    shared by all of them: about 1.1x to 1.6x faster than the loop for 20 to 200 items (the
    doublings of ``x * R``, which cost about as much in affine as in Jacobian coordinates,
    bound the gain). ``y * G`` is still computed per item in OpenSSL's constant-time code;
    only public data (commitments, x-coordinates) is handled in Python.

    Raises:
        ConfigError: ``items`` is not a sequence.
    """
    if not isinstance(items, Sequence):
        raise ConfigError("items must be a sequence of (commitment, share) pairs")
    failing: list[int] = []
    by_x: dict[int, list[tuple[int, Commitment, Share]]] = {}
    for index, item in enumerate(items):
        try:
            commitment, share = item
        except (TypeError, ValueError):
            failing.append(index)
            continue
        if _receipt_error(commitment, share, threshold, holder) is not None:
            failing.append(index)
        else:
            by_x.setdefault(share.x, []).append((index, commitment, share))
    for x, group in by_x.items():
        if len(group) < _LOCKSTEP_MIN_LANES:
            failing.extend(index for index, c, s in group if not _is_valid(c, s))
            continue
        expected = _evaluate_lanes([c.points for _, c, _ in group], x)
        for (index, _, share), point in zip(group, expected, strict=True):
            if point != _base_multiply(share.y):
                failing.append(index)
    return tuple(sorted(failing))


def _batch_is_valid(
    commitment: Commitment, shares: Sequence[Share], random_bytes: Callable[[int], bytes]
) -> bool:
    """All shares valid, checked at once: sum_i r_i y_i * G == sum_j (sum_i r_i x_i^j) * C_j."""
    weights = [_draw(random_bytes, _BATCH_WEIGHT_BYTES) for _ in shares]
    total = sum(r * s.y for r, s in zip(weights, shares, strict=True)) % ORDER
    scalars = [0] * commitment.threshold
    for r, share in zip(weights, shares, strict=True):
        power = r
        for j in range(commitment.threshold):
            scalars[j] = (scalars[j] + power) % ORDER
            power = power * share.x % ORDER
    terms = [(k, p) for k, p in zip(scalars, commitment.points, strict=True) if k]
    expected = _multi_multiply(terms) if terms else _INFINITY
    return _equals_affine(expected, _base_multiply(total))


def _batch_pays(threshold: int, shares: Sequence[Share]) -> bool:
    """Whether one batch check costs less than checking each share (a cost model in units of
    about half a point addition, fitted on this module's timings: N = 20, t = 14 is the turn)."""
    one_by_one = sum((threshold - 1) * (s.x.bit_length() + s.x.bit_count()) + 8 for s in shares)
    batched = 150 + 80 * threshold
    return len(shares) > 1 and batched < one_by_one


def _partition(
    commitment: Commitment,
    shares: Mapping[int, Share],
    random_bytes: Callable[[int], bytes],
) -> tuple[list[Share], list[int], int | None]:
    """(valid shares, rejected holders), both in roster order, and ``a_0`` when it is known."""
    if not all(_is_int(h) for h in shares):
        raise ConfigError("shares must be keyed by the holders' roster indices")
    candidates: list[Share] = []
    rejected: list[int] = []
    for holder in sorted(shares):
        share = shares[holder]
        if isinstance(share, Share) and share.holder == holder:
            candidates.append(share)
        else:
            rejected.append(holder)
    opened = _open_polynomial(commitment, candidates)
    if opened is not None:
        threshold = commitment.threshold
        good = candidates[:threshold]
        for share in candidates[threshold:]:
            if _evaluate(opened, share.x) == share.y:
                good.append(share)
            else:
                rejected.append(share.holder)
        return good, sorted(rejected), opened[0]
    if _batch_pays(commitment.threshold, candidates) and _batch_is_valid(
        commitment, candidates, random_bytes
    ):
        return candidates, rejected, None
    good = []
    for share in candidates:
        if _is_valid(commitment, share):
            good.append(share)
        else:
            rejected.append(share.holder)
    return good, sorted(rejected), None


@functools.lru_cache(maxsize=_BASIS_CACHE)
def _interpolation_matrix(xs: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
    """Row ``j``: the weights ``w_ij`` with ``a_j = sum_i w_ij y_i mod n`` for the polynomial of
    degree ``len(xs) - 1`` through ``(x_i, y_i)`` (the inverse Vandermonde matrix, transposed).

    Public data only (the holders' x-coordinates), computed once per x-set: every secret shared
    among the same holders and rebuilt from the same survivors reuses it. ``xs`` are distinct
    and nonzero modulo ``n`` (roster indices + 1 < 2**17).
    """
    size = len(xs)
    master = [1]  # prod_i (X - x_i), lowest coefficient first
    for x in xs:
        shifted = [0, *master]
        for k, coefficient in enumerate(master):
            shifted[k] = (shifted[k] - x * coefficient) % ORDER
        master = shifted
    rows: list[list[int]] = []
    for x in xs:
        quotient = [0] * size  # master / (X - x), by synthetic division from the top
        quotient[size - 1] = master[size]
        for k in range(size - 1, 0, -1):
            quotient[k - 1] = (master[k] + x * quotient[k]) % ORDER
        inverse = pow(_evaluate(quotient, x), -1, ORDER)  # prod_{j != i} (x_i - x_j)
        rows.append([coefficient * inverse % ORDER for coefficient in quotient])
    return tuple(zip(*rows, strict=True))


def _open_polynomial(commitment: Commitment, candidates: Sequence[Share]) -> list[int] | None:
    """The committed polynomial's coefficients if the first ``t`` candidates lie on it, else None.

    Interpolates ``f`` through the first ``t`` candidates and checks ``a_j * G == C_j`` for every
    ``j`` (``t`` base-point multiplications in OpenSSL, instead of a multi-scalar multiplication
    over the commitment in Python); None as well when ``t > _OPEN_MAX_THRESHOLD``. Exact, no
    randomness: if every coefficient matches, ``f`` is the committed polynomial, and any share
    ``(x, y)`` is valid exactly when ``y == f(x)`` (``G`` has prime order ``n``, ``y < n``). The
    caller learns ``f`` from ``t`` valid shares anyway, so computing its coefficients reveals
    nothing more; they stay in this call.

    The interpolation: an x-set seen before in this process (a round rebuilds every secret of
    its survivors from one x-set on the complete graph) uses its cached weight matrix (``t^2``
    multiply-adds per secret); a new x-set (every owner has its own holders on the SecAgg+
    graph) is interpolated directly by Newton's divided differences (about ``t^2`` modular
    multiplications, no matrix).
    """
    threshold = commitment.threshold
    if len(candidates) < threshold or threshold > _OPEN_MAX_THRESHOLD:
        return None
    first = candidates[:threshold]
    ys = [share.y for share in first]
    xs = tuple(share.x for share in first)
    if xs in _SEEN_X_SETS:
        matrix = _interpolation_matrix(xs)
        coefficients = [_dot(weights, ys) % ORDER for weights in matrix]
    else:
        _SEEN_X_SETS[xs] = None
        if len(_SEEN_X_SETS) > _SEEN_X_SETS_LIMIT:
            _SEEN_X_SETS.popitem(last=False)  # one C call: safe next to other threads
        coefficients = _newton_interpolation(xs, ys)
    for coefficient, point in zip(coefficients, commitment.points, strict=True):
        if _base_multiply(coefficient) != point:
            return None
    return coefficients


# x-sets interpolated once already (insertion order: the oldest is forgotten first); a second
# secret over the same x-set builds and caches its weight matrix.
_SEEN_X_SETS: collections.OrderedDict[tuple[int, ...], None] = collections.OrderedDict()
_SEEN_X_SETS_LIMIT = 1024


@functools.lru_cache(maxsize=1 << 17)
def _inverse_of_difference(difference: int) -> int:
    """``1 / difference mod n`` for the small nonzero differences of holders' x-coordinates."""
    return pow(difference, -1, ORDER)


def _newton_interpolation(xs: Sequence[int], ys: Sequence[int]) -> list[int]:
    """Coefficients, lowest first, of the polynomial of degree ``< len(xs)`` through the points
    ``(xs[i], ys[i])`` modulo ``n``: divided differences, then the Newton form expanded by
    Horner's rule. ``xs`` are distinct positive integers below ``2**17`` (public)."""
    size = len(xs)
    table = list(ys)  # table[i] becomes the divided difference f[x_0, ..., x_i]
    for k in range(1, size):
        for i in range(size - 1, k - 1, -1):
            table[i] = (table[i] - table[i - 1]) * _inverse_of_difference(xs[i] - xs[i - k]) % ORDER
    coefficients = [table[size - 1]]
    for k in range(size - 2, -1, -1):  # coefficients * (X - x_k) + table[k]
        x = xs[k]
        expanded = [(table[k] - x * coefficients[0]) % ORDER]
        expanded += [(low - x * high) % ORDER for low, high in itertools.pairwise(coefficients)]
        expanded.append(coefficients[-1])
        coefficients = expanded
    return coefficients


def _dot(weights: Sequence[int], values: Sequence[int]) -> int:
    total: int = sum(map(operator.mul, weights, values))
    return total


def _interpolate_at_zero(points: Sequence[Share]) -> int:
    secret = 0
    for i, share in enumerate(points):
        numerator, denominator = 1, 1
        for j, other in enumerate(points):
            if i != j:
                numerator = numerator * other.x % ORDER
                denominator = denominator * (other.x - share.x) % ORDER
        secret = (secret + share.y * numerator * pow(denominator, -1, ORDER)) % ORDER
    return secret


def reconstruct(
    commitment: Commitment,
    shares: Mapping[int, Share],
    *,
    threshold: int,
    random_bytes: Callable[[int], bytes] = os.urandom,
) -> Reconstruction:
    """Verify every share, discard the bad ones, and rebuild the secret from ``threshold`` good.

    ``shares`` maps the roster index of the holder that returned each share to the share. A share
    is rejected, and its holder named in ``Reconstruction.rejected``, when it is malformed, is
    keyed under another holder than its own x-coordinate, or is not on the committed polynomial.
    The secret is interpolated from the ``threshold`` valid shares of the lowest roster indices
    (no subset search: every valid share lies on the one committed polynomial) and checked
    against ``C_0``. First the polynomial through the ``threshold`` lowest-indexed shares is
    opened and its coefficients checked against the commitment (``t`` base-point
    multiplications; the interpolation weights are cached per x-set); if they all match, every
    other share is checked exactly by evaluating that polynomial. Otherwise many shares are
    verified together with random 128-bit weights from ``random_bytes`` (soundness error
    2**-128), and if that batch check fails, each share is checked alone to name the bad ones.

    Raises:
        ConfigError: ``threshold`` is not a positive int, a key of ``shares`` is not an int, or
            ``random_bytes`` returns the wrong length.
        InvalidCommitment: the commitment's degree does not match ``threshold``, or it encodes a
            value of more than 32 bytes (both the dealer's fault).
        NotEnoughValidShares: fewer than ``threshold`` valid shares; ``rejected`` names holders.
    """
    if not (_is_int(threshold) and threshold >= 1):
        raise ConfigError("threshold must be a positive int")
    if not isinstance(commitment, Commitment):
        raise InvalidCommitment("malformed commitment")
    if commitment.threshold != threshold:
        raise InvalidCommitment("the commitment has the wrong threshold")
    good, rejected, constant = _partition(commitment, shares, random_bytes)
    if len(good) < threshold:
        raise NotEnoughValidShares(
            f"need {threshold} valid shares, got {len(good)}; rejected holders {rejected}",
            tuple(rejected),
        )
    if constant is None:
        constant = _interpolate_at_zero(good[:threshold])
    if _base_multiply(constant) != commitment.points[0]:  # pragma: no cover - implied by checks
        raise InvalidShare("the reconstruction does not match the commitment")
    value = constant + commitment.carry * ORDER
    if value >= 2 ** (8 * SECRET_BYTES):
        raise InvalidCommitment("the commitment does not encode a 32-byte secret")
    return Reconstruction(value.to_bytes(SECRET_BYTES, "big"), tuple(rejected))
