"""Fixed-point codec between real vectors and the ring Z_2^k, k in {32, 64} (DESIGN R7).

Encoding one value ``x`` with ``f`` fractional bits::

    scaled = x * 2**f                   float64, exact: |scaled| <= value_bound * 2**f < 2**52
    low    = floor(scaled)              exact integer in float64
    q      = low + [u < scaled - low]   u: 32-bit uniform from a DitherStream; q is an int64
    ring   = q.view(uint64)             two's complement; the 32-bit ring then truncates mod 2**32

All arithmetic is float64 -> int64 -> unsigned ring; a negative float is never cast to an unsigned
type, and there is no float32 path. Decoding views the ring word as signed (``uint32 -> int32``,
``uint64 -> int64``) and multiplies by ``2**-f``.

Guarantees:

* **Range.** ``encode`` refuses (``EncodingRangeError``) any NaN, infinity or ``|x| > value_bound``
  and encodes nothing; it never wraps silently. Clipping exists only as the separate, counted
  :meth:`FixedPointCodec.encode_clipping`.
* **Rounding.** ``q`` is ``floor(x * 2**f)`` or that plus one, so ``|q * 2**-f - x| < 2**-f``; and
  ``E[q] * 2**-f = x`` for both signs (unbiased stochastic rounding), up to the 32-bit resolution
  of the uniforms (bias below ``2**-32`` ulp).
* **Headroom.** With ``M = ceil(value_bound * 2**f)`` (the largest ``|q|`` of one term), a plain
  sum of ``n`` encodings has ``|sum q| <= n * M`` and decodes correctly iff that is at most
  ``2**(k-1) - 1`` (:func:`max_sum_terms`: about ``log2(n)`` bits of headroom). A weighted sum
  ``sum_j enc(xi_j * x_j)`` with ``xi_j >= 0`` and ``sum_j xi_j <= 1`` has
  ``|sum q| <= min(n * M, M + 2n - 1)`` (one ulp per term for stochastic rounding, one more
  reserved for the float64 rounding of the weights and products), so it needs almost no headroom
  (:func:`max_weighted_sum_terms`).
* **Error of a decoded sum.** ``|decode(sum_j enc(x_j)) - sum_j x_j| <= n * 2**-f`` per coordinate
  (:meth:`FixedPointCodec.decode_error_bound`), plus the float64 rounding of the result when the
  integer sum exceeds ``2**53`` (only possible in the 64-bit ring; included in the bound).
"""

from __future__ import annotations

import math
import numbers
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np
import numpy.typing as npt

from securefed.encoding.dither import UNIFORM_BITS, DitherStream
from securefed.errors import ConfigError, EncodingRangeError

__all__ = [
    "DEFAULT_FRACTIONAL_BITS",
    "DEFAULT_SUM_TERMS",
    "MAX_FRACTIONAL_BITS",
    "ClippedEncoding",
    "CodecConfig",
    "FixedPointCodec",
    "RingBits",
    "SumKind",
    "check_sum_headroom",
    "check_weighted_sum_headroom",
    "max_sum_terms",
    "max_weighted_sum_terms",
    "required_ring_bits",
    "ring_sum",
]

RingArray = npt.NDArray[np.unsignedinteger[Any]]

DEFAULT_FRACTIONAL_BITS = 16
# 62 tenants in the seed sample, rounded up to a power of two.
DEFAULT_SUM_TERMS = 64
# Keeps 2**f and 2**-f far inside float64's normal range; more is never useful.
MAX_FRACTIONAL_BITS = 128
# value_bound * 2**f must stay below this, so scaled values and their floors are exact in float64.
EXACT_SCALED_LIMIT = 2**52
# Values are rounded in blocks of this many (measured fastest here; the scratch arrays fit L2).
ENCODE_BLOCK = 1 << 15
_LOCAL = threading.local()
_WORD_SCALE = 2.0**32
# Which uint32 half of an int64 holds its low and its high 32 bits.
_LOW_HALF, _HIGH_HALF = (0, 1) if sys.byteorder == "little" else (1, 0)
# Integers up to this magnitude convert to float64 exactly.
_EXACT_FLOAT_INT = 2**53
_ENCODABLE_DTYPES = frozenset(np.dtype(t) for t in (np.float16, np.float32, np.float64))


class RingBits(Enum):
    """The ring Z_2^k of the encoded values."""

    BITS32 = 32
    BITS64 = 64

    @property
    def bits(self) -> int:
        """``k``."""
        return int(self.value)

    @property
    def dtype(self) -> np.dtype[np.unsignedinteger[Any]]:
        """The unsigned numpy dtype holding ring elements (``uint32`` or ``uint64``)."""
        return np.dtype(np.uint32) if self is RingBits.BITS32 else np.dtype(np.uint64)

    @property
    def signed_dtype(self) -> np.dtype[np.signedinteger[Any]]:
        """The signed twin used to decode (``int32`` or ``int64``)."""
        return np.dtype(np.int32) if self is RingBits.BITS32 else np.dtype(np.int64)

    @property
    def signed_max(self) -> int:
        """``2**(k-1) - 1``: the largest magnitude whose sign survives decoding."""
        return (1 << (self.bits - 1)) - 1


class SumKind(Enum):
    """What a ring vector holds, for headroom checks and error bounds."""

    PLAIN = "plain"  # sum of n encodings of values with |x| <= value_bound
    WEIGHTED = "weighted"  # sum of n encodings of xi_j * x_j, xi_j >= 0, sum xi_j <= 1


def _scaled_magnitude(value_bound: object, fractional_bits: object) -> tuple[float, int]:
    """Validate ``(value_bound, fractional_bits)``; return ``(float bound, M)``.

    ``M = ceil(value_bound * 2**fractional_bits)`` is the largest ``|q|`` one encoding can have.
    """
    if isinstance(fractional_bits, bool) or not isinstance(fractional_bits, int):
        raise ConfigError("fractional_bits must be an int")
    if not 0 <= fractional_bits <= MAX_FRACTIONAL_BITS:
        raise ConfigError(f"fractional_bits must be in [0, {MAX_FRACTIONAL_BITS}]")
    if isinstance(value_bound, bool) or not isinstance(value_bound, numbers.Real):
        raise ConfigError("value_bound must be a real number")
    bound = float(value_bound)
    if not (math.isfinite(bound) and bound > 0):
        raise ConfigError("value_bound must be finite and > 0")
    if bound >= EXACT_SCALED_LIMIT or math.ldexp(bound, fractional_bits) >= EXACT_SCALED_LIMIT:
        raise ConfigError(
            "value_bound * 2**fractional_bits must be < 2**52 so that scaled values are exact "
            "float64 integers; lower the bound or the fractional bits"
        )
    return bound, math.ceil(math.ldexp(bound, fractional_bits))


def _check_n_terms(n_terms: object) -> int:
    if isinstance(n_terms, bool) or not isinstance(n_terms, int) or n_terms < 1:
        raise ConfigError("n_terms must be an int >= 1")
    return n_terms


def _sum_magnitude(magnitude: int, n_terms: int, sum_kind: SumKind) -> int:
    """Largest ``|sum q|`` of ``n_terms`` encodings of one-term magnitude ``magnitude``."""
    if sum_kind is SumKind.PLAIN:
        return n_terms * magnitude
    if sum_kind is SumKind.WEIGHTED:
        # Every term is also a plain encoding (|xi_j * x_j| <= value_bound), so the plain bound
        # holds too; it is the smaller one only for tiny M.
        return min(n_terms * magnitude, magnitude + 2 * n_terms - 1)
    raise ConfigError("sum_kind must be a SumKind")


@dataclass(frozen=True, slots=True)
class CodecConfig:
    """Parameters of the fixed-point codec. Validated on construction; immutable.

    Attributes:
        ring: the ring Z_2^k.
        fractional_bits: ``f``; the resolution (ulp) is ``2**-f``.
        value_bound: the largest ``|x|`` ``encode`` accepts (stored as a float).

    Raises:
        ConfigError: ``ring`` not a RingBits; ``fractional_bits`` not an int in
            ``[0, MAX_FRACTIONAL_BITS]``; ``value_bound`` not finite and positive;
            ``value_bound * 2**f >= 2**52``; or a single encoding would not fit the signed range
            of the ring (``ceil(value_bound * 2**f) > 2**(k-1) - 1``).
    """

    ring: RingBits
    fractional_bits: int
    value_bound: float

    def __post_init__(self) -> None:
        if not isinstance(self.ring, RingBits):
            raise ConfigError("ring must be a RingBits member")
        bound, magnitude = _scaled_magnitude(self.value_bound, self.fractional_bits)
        object.__setattr__(self, "value_bound", bound)
        if magnitude > self.ring.signed_max:
            raise ConfigError(
                f"value_bound * 2**fractional_bits does not fit the signed range of a "
                f"{self.ring.bits}-bit ring"
            )

    @classmethod
    def default(
        cls,
        *,
        sum_terms: int = DEFAULT_SUM_TERMS,
        ring: RingBits = RingBits.BITS32,
        fractional_bits: int = DEFAULT_FRACTIONAL_BITS,
    ) -> CodecConfig:
        """The config whose ``value_bound`` is the largest power of two such that plain sums of
        ``sum_terms`` encodings fit the ring.

        ``CodecConfig.default()`` is the 32-bit ring with 16 fractional bits (ulp ``2**-16``) and
        ``value_bound = 256.0``, which leaves headroom for sums of up to 127 terms (at least the 64
        asked for; the 62 tenants of the seed sample fit).

        Raises:
            ConfigError: no positive bound lets ``sum_terms`` terms fit, or invalid arguments.
        """
        n_terms = _check_n_terms(sum_terms)
        if not isinstance(ring, RingBits):
            raise ConfigError("ring must be a RingBits member")
        largest = min(ring.signed_max // n_terms, EXACT_SCALED_LIMIT - 1)
        if largest < 1:
            raise ConfigError(f"{n_terms} terms cannot fit a {ring.bits}-bit ring")
        power = 1 << (largest.bit_length() - 1)
        if isinstance(fractional_bits, bool) or not isinstance(fractional_bits, int):
            raise ConfigError("fractional_bits must be an int")
        return cls(ring, fractional_bits, math.ldexp(float(power), -fractional_bits))

    @property
    def ulp(self) -> float:
        """``2**-fractional_bits``: the resolution of the encoding."""
        return math.ldexp(1.0, -self.fractional_bits)

    @property
    def max_encoded_magnitude(self) -> int:
        """``M = ceil(value_bound * 2**f)``: the largest ``|q|`` a single encoding can have."""
        return math.ceil(math.ldexp(self.value_bound, self.fractional_bits))


def max_sum_terms(config: CodecConfig) -> int:
    """How many encodings of values with ``|x| <= value_bound`` can be summed without wrap-around.

    ``floor((2**(k-1) - 1) / M)`` with ``M = ceil(value_bound * 2**f)``: stochastic rounding moves
    each term by less than one ulp, so no term exceeds ``M`` in magnitude. Always >= 1.
    """
    return config.ring.signed_max // config.max_encoded_magnitude


def max_weighted_sum_terms(config: CodecConfig) -> int:
    """How many terms a weighted sum ``sum_j enc(xi_j * x_j)`` (``xi >= 0``, ``sum xi <= 1``) may
    have without wrap-around: the largest ``n`` with ``min(n * M, M + 2n - 1) <= 2**(k-1) - 1``.

    Never less than :func:`max_sum_terms` (each weighted term is also a plain encoding); far more
    whenever ``M > 2``, e.g. ``2**29`` terms where a plain sum fits only one.
    """
    weighted = (config.ring.signed_max + 1 - config.max_encoded_magnitude) // 2
    return max(weighted, max_sum_terms(config))


def _check_headroom(config: CodecConfig, n_terms: object, sum_kind: SumKind) -> int:
    terms = _check_n_terms(n_terms)
    magnitude = _sum_magnitude(config.max_encoded_magnitude, terms, sum_kind)
    if magnitude > config.ring.signed_max:
        raise ConfigError(
            f"a {sum_kind.value} sum of {terms} terms can reach |sum| = {magnitude} and would wrap "
            f"around the {config.ring.bits}-bit ring (needs {magnitude.bit_length() + 1} bits); "
            "use a larger ring, a smaller value_bound or fewer fractional bits"
        )
    return terms


def check_sum_headroom(config: CodecConfig, n_terms: int) -> None:
    """Raise unless a plain sum of ``n_terms`` encodings fits (``n_terms <= max_sum_terms``).

    Raises:
        ConfigError: ``n_terms`` is not an int >= 1, or the sum could wrap around the ring.
    """
    _check_headroom(config, n_terms, SumKind.PLAIN)


def check_weighted_sum_headroom(config: CodecConfig, n_terms: int) -> None:
    """Raise unless a weighted sum (``xi_j >= 0``, ``sum xi_j <= 1``) of ``n_terms`` encodings of
    ``xi_j * x_j`` fits (``n_terms <= max_weighted_sum_terms``).

    Raises:
        ConfigError: ``n_terms`` is not an int >= 1, or the sum could wrap around the ring.
    """
    _check_headroom(config, n_terms, SumKind.WEIGHTED)


def required_ring_bits(
    value_bound: float,
    fractional_bits: int,
    *,
    n_terms: int,
    sum_kind: SumKind = SumKind.PLAIN,
) -> int:
    """The smallest ``k`` such that a ``sum_kind`` sum of ``n_terms`` encodings fits Z_2^k.

    The answer may exceed 64, in which case no supported ring fits. For a plain sum this is
    ``bits(M) + ceil(log2(n_terms)) + 1`` or one bit less, with ``M = ceil(value_bound * 2**f)``.

    Raises:
        ConfigError: invalid bound, fractional bits or ``n_terms`` (same rules as CodecConfig).
    """
    _, magnitude = _scaled_magnitude(value_bound, fractional_bits)
    terms = _check_n_terms(n_terms)
    return _sum_magnitude(magnitude, terms, sum_kind).bit_length() + 1


@dataclass(frozen=True, slots=True, eq=False)
class ClippedEncoding:
    """Result of :meth:`FixedPointCodec.encode_clipping`.

    Attributes:
        values: the ring vector (as ``encode`` returns it) of the clipped input.
        clipped_count: how many inputs had ``|x| > value_bound`` and were clipped to the bound.
            Callers must record it (the audit ledger does); a clip is never silent.
    """

    values: RingArray
    clipped_count: int


class FixedPointCodec:
    """Stochastic-rounding fixed-point codec for one :class:`CodecConfig`. Stateless."""

    __slots__ = ("_config", "_inv_scale", "_scale", "_word_scale")

    def __init__(self, config: CodecConfig) -> None:
        """Raises ConfigError if ``config`` is not a CodecConfig."""
        if not isinstance(config, CodecConfig):
            raise ConfigError("FixedPointCodec needs a CodecConfig")
        self._config = config
        self._scale = math.ldexp(1.0, config.fractional_bits)
        self._word_scale = math.ldexp(1.0, config.fractional_bits + UNIFORM_BITS)
        self._inv_scale = config.ulp

    @property
    def config(self) -> CodecConfig:
        return self._config

    def __repr__(self) -> str:
        return f"FixedPointCodec({self._config!r})"

    def encode(self, values: npt.ArrayLike, *, dither: DitherStream) -> RingArray:
        """Encode ``values`` (any shape, flattened in C order) to a new 1-D ring vector.

        Accepts float16/32/64 and integer arrays (converted to float64; no float32 arithmetic).
        Each value becomes ``floor(x * 2**f)`` or that plus one, rounded up with probability equal
        to the fractional part, using uniforms from ``dither`` (which advances by 4 bytes per
        value). A :class:`DitherStream` is required, rather than a ``KeyStream`` or a key, because
        it can only exist under a DITHER key and always advances: mask bytes can never be used as
        rounding randomness, and two encodings never reuse the same uniforms.

        Raises:
            ConfigError: unsupported dtype (bool, complex, string, object, ...) or ``dither`` not a
                DitherStream.
            EncodingRangeError: some value is NaN, infinite or has ``|x| > value_bound``. The
                message gives counts and the largest magnitude, never the values. Nothing is
                encoded and ``dither`` is not advanced.
        """
        _check_dither(dither)
        x = _as_float64(values)
        _check_range(x, self._config.value_bound)
        return self._round(x, dither)

    def encode_clipping(self, values: npt.ArrayLike, *, dither: DitherStream) -> ClippedEncoding:
        """Like :meth:`encode`, but clip ``|x| > value_bound`` to ``+-value_bound`` and count them.

        WARNING: clipping changes the data. It is a separate API so that every use is explicit and
        greppable; callers must record ``clipped_count`` (e.g. in the audit ledger).

        Raises:
            ConfigError: as :meth:`encode`.
            EncodingRangeError: some value is NaN or infinite (these are never clipped). Nothing is
                encoded and ``dither`` is not advanced.
        """
        _check_dither(dither)
        x = _as_float64(values)
        _check_range(x, math.inf)
        bound = self._config.value_bound
        clipped_count = int(np.count_nonzero(np.abs(x) > bound))
        return ClippedEncoding(self._round(np.clip(x, -bound, bound), dither), clipped_count)

    def decode(
        self,
        ring_values: RingArray,
        *,
        n_terms: int = 1,
        sum_kind: SumKind = SumKind.PLAIN,
    ) -> npt.NDArray[np.float64]:
        """Decode a ring array (an encoding, or a sum of ``n_terms`` of them) to float64.

        The result has the shape of ``ring_values``. For a sum of ``n_terms`` encodings of
        ``x_j``, each coordinate is within :meth:`decode_error_bound` of ``sum_j x_j``.

        Raises:
            ConfigError: ``ring_values`` is not a numpy array of the ring's dtype, or a
                ``sum_kind`` sum of ``n_terms`` terms does not fit the ring's headroom (the
                decoded value could have wrapped around).
        """
        _check_headroom(self._config, n_terms, sum_kind)
        ring = self._config.ring
        if not isinstance(ring_values, np.ndarray) or ring_values.dtype != ring.dtype:
            raise ConfigError(f"decode expects a numpy array of dtype {ring.dtype}")
        signed = ring_values.view(ring.signed_dtype)
        return signed.astype(np.float64) * self._inv_scale

    def decode_error_bound(self, n_terms: int, *, sum_kind: SumKind = SumKind.PLAIN) -> float:
        """Bound on ``|decode(sum_j enc(x_j)) - sum_j x_j|`` per coordinate, in exact arithmetic.

        ``n_terms * 2**-f``: each term's stochastic rounding error is below one ulp. If the
        integer sum can exceed ``2**53`` (64-bit ring only), half a float64 ulp of the largest
        possible result is added for the conversion of the decoded value to float64. For a
        weighted sum the ``x_j`` are the encoded products ``xi_j * x_j`` as float64.

        Raises:
            ConfigError: as the headroom check of :meth:`decode`.
        """
        terms = _check_headroom(self._config, n_terms, sum_kind)
        magnitude = _sum_magnitude(self._config.max_encoded_magnitude, terms, sum_kind)
        conversion = 0.0
        if magnitude > _EXACT_FLOAT_INT:
            conversion = math.ldexp(1.0, magnitude.bit_length() - 54 - self._config.fractional_bits)
        return terms * self._inv_scale + conversion

    def check_range(self, values: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Validate ``values`` for :meth:`encode` without encoding; return them as flat float64.

        Raises:
            ConfigError: unsupported dtype.
            EncodingRangeError: a value is NaN, infinite or beyond ``value_bound``.
        """
        x = _as_float64(values)
        _check_range(x, self._config.value_bound)
        return x

    def encode_into(
        self, values: npt.NDArray[np.float64], out: RingArray, *, dither: DitherStream
    ) -> None:
        """:meth:`encode` into a caller's ring array (same size), without allocating a result.

        Used by the masking code to encode and mask a vector block by block in cache.

        Raises:
            ConfigError: as :meth:`encode`, or ``out`` is not a contiguous, writeable array of
                the ring's dtype and the size of ``values``.
            EncodingRangeError: as :meth:`encode`; ``out`` is then left untouched.
        """
        _check_dither(dither)
        x = _as_float64(values)
        ring = self._config.ring
        if not isinstance(out, np.ndarray) or out.dtype != ring.dtype or out.size != x.size:
            raise ConfigError(f"out must be a {ring.dtype} array of {x.size} elements")
        if not (out.flags.c_contiguous and out.flags.writeable):
            raise ConfigError("out must be C-contiguous and writeable")
        _check_range(x, self._config.value_bound)
        self._round_into(x, out.reshape(-1), dither)

    def _round(self, x: npt.NDArray[np.float64], dither: DitherStream) -> RingArray:
        """Stochastic rounding of validated ``x`` to a new ring vector."""
        out: RingArray = np.empty(x.size, dtype=self._config.ring.dtype)
        self._round_into(x, out, dither)
        return out

    def _round_into(self, x: npt.NDArray[np.float64], out: RingArray, dither: DitherStream) -> None:
        """Stochastic rounding of validated ``x`` into ``out``, in cache-sized blocks.

        Per block (see the module docstring): ``scaled = x * 2**f``, ``low = floor(scaled)``,
        ``q = low + [u < scaled - low]`` as int64, then two's complement into the ring (uint64
        view; for the 32-bit ring an unsigned truncation modulo 2**32). ``low + 1`` is exact in
        float64 because ``|scaled| < 2**52``. Never a negative float cast to an unsigned type.
        The 32-bit ring computes the same ``q`` with fewer passes (:meth:`_round_block_32`).
        """
        workspace = _Workspace.for_this_thread()
        bits32 = self._config.ring is RingBits.BITS32
        round_block = self._round_block_32 if bits32 else self._round_block
        for start in range(0, x.size, ENCODE_BLOCK):
            block = slice(start, start + ENCODE_BLOCK)
            round_block(x[block], out[block], dither, workspace)

    def _round_block(
        self, x: npt.NDArray[np.float64], out: RingArray, dither: DitherStream, ws: _Workspace
    ) -> None:
        n = x.size
        scaled, low, words, up = ws.scaled[:n], ws.low[:n], ws.words[:n], ws.round_up[:n]
        np.multiply(x, self._scale, out=scaled)
        np.floor(scaled, out=low)
        np.subtract(scaled, low, out=scaled)  # the fractional part, in [0, 1)
        np.multiply(scaled, _WORD_SCALE, out=scaled)  # exact: a power of two
        dither.fill_words(words)
        np.less(words, scaled, out=up)  # u < frac  <=>  word < frac * 2**32
        np.add(low, up, out=low)
        q = ws.q[:n]
        np.copyto(q, low, casting="unsafe")  # exact: integral float64 below 2**52
        np.copyto(out, q.view(np.uint64), casting="unsafe")  # two's complement, then mod 2**k

    def _round_block_32(
        self, x: npt.NDArray[np.float64], out: RingArray, dither: DitherStream, ws: _Workspace
    ) -> None:
        """:meth:`_round_block` for the 32-bit ring: the same ``q mod 2**32``, bit for bit.

        With ``t = x * 2**(f+32)`` (exact: a power of two) and ``T = ceil(t)`` as int64 (exact:
        ``|t| < 2**63`` because a 32-bit ring's config has ``value_bound * 2**f < 2**31``)::

            q mod 2**32 = (high word of T) + [u < low word of T]    (mod 2**32)

        Proof: ``t = low * 2**32 + F`` with ``F = frac * 2**32`` in ``[0, 2**32)``, so
        ``T = low * 2**32 + ceil(F)``. If ``ceil(F) < 2**32`` the words of ``T`` are ``low`` and
        ``ceil(F)``, and ``u < F <=> u < ceil(F)`` for an integer ``u``. If ``ceil(F) = 2**32``,
        then ``F > 2**32 - 1 >= u`` (always round up: ``q = low + 1``) while ``T``'s words are
        ``low + 1`` and ``0`` (never add one). Two float passes and two integer passes instead
        of eight passes.
        """
        n = x.size
        scaled, whole, words, up = ws.scaled[:n], ws.q[:n], ws.words[:n], ws.round_up[:n]
        np.multiply(x, self._word_scale, out=scaled)
        np.ceil(scaled, out=whole, casting="unsafe")  # exact: an integral float64 below 2**63
        halves = whole.view(np.uint32)
        dither.fill_words(words)
        np.less(words, halves[_LOW_HALF::2], out=up)
        np.add(halves[_HIGH_HALF::2], up, out=out)  # wraps modulo 2**32


@dataclass(frozen=True, slots=True, eq=False)
class _Workspace:
    """Scratch buffers for one block of :meth:`FixedPointCodec._round_into`."""

    scaled: npt.NDArray[np.float64]
    low: npt.NDArray[np.float64]
    round_up: npt.NDArray[np.bool_]
    words: npt.NDArray[np.uint32]
    q: npt.NDArray[np.int64]

    @staticmethod
    def for_this_thread() -> _Workspace:
        """One workspace per thread, allocated once (no page faults per call)."""
        workspace: _Workspace | None = getattr(_LOCAL, "workspace", None)
        if workspace is None:
            workspace = _LOCAL.workspace = _Workspace(ENCODE_BLOCK)
        return workspace

    def __init__(self, size: int) -> None:
        for name, dtype in (
            ("scaled", np.float64),
            ("low", np.float64),
            ("round_up", np.bool_),
            ("words", np.uint32),
            ("q", np.int64),
        ):
            object.__setattr__(self, name, np.empty(size, dtype=dtype))


def ring_sum(terms: Iterable[RingArray], *, ring: RingBits) -> RingArray:
    """``sum(terms)`` modulo ``2**k`` in the ring dtype, as a new array.

    Prefer this to ``np.sum``, which widens ``uint32`` to the platform integer.

    Raises:
        ConfigError: no terms, a term that is not an array of ``ring.dtype``, or differing shapes.
    """
    total: RingArray | None = None
    for term in terms:
        if not isinstance(term, np.ndarray) or term.dtype != ring.dtype:
            raise ConfigError(f"ring_sum expects numpy arrays of dtype {ring.dtype}")
        if total is None:
            total = term.copy()
        elif term.shape != total.shape:
            raise ConfigError("ring_sum terms must all have the same shape")
        else:
            np.add(total, term, out=total)
    if total is None:
        raise ConfigError("ring_sum needs at least one term")
    return total


def _check_dither(dither: object) -> None:
    if not isinstance(dither, DitherStream):
        raise ConfigError(
            "dither must be a DitherStream (see securefed.encoding.dither_stream); a KeyStream "
            "or key is refused because it does not prove it is dither randomness"
        )


def _as_float64(values: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """``values`` as a flat float64 array; only float16/32/64 and integer dtypes are accepted."""
    try:
        array = np.asarray(values)
    except (TypeError, ValueError) as exc:
        raise ConfigError("values must form a rectangular numeric array") from exc
    if array.dtype not in _ENCODABLE_DTYPES and array.dtype.kind not in "iu":
        raise ConfigError(
            f"cannot encode dtype {array.dtype}: only float16, float32, float64 and integer "
            "arrays are accepted"
        )
    return array.astype(np.float64, copy=False).reshape(-1)


def _check_range(x: npt.NDArray[np.float64], bound: float) -> None:
    """Raise EncodingRangeError if any value is not finite or exceeds ``bound`` in magnitude."""
    if x.size == 0:
        return
    low, high = float(x.min()), float(x.max())  # two passes, no temporaries; NaN propagates
    if math.isfinite(low) and math.isfinite(high) and -bound <= low and high <= bound:
        return
    finite = np.isfinite(x)
    n_not_finite = x.size - int(np.count_nonzero(finite))
    magnitude = np.abs(np.where(finite, x, 0.0))
    n_over = int(np.count_nonzero(magnitude > bound))
    if n_not_finite == 0 and n_over == 0:
        return
    problems = []
    if n_over:
        largest = float(magnitude.max())
        problems.append(f"{n_over} value(s) exceed the bound {bound!r} (largest |x| = {largest!r})")
    if n_not_finite:
        problems.append(f"{n_not_finite} value(s) are NaN or infinite")
    raise EncodingRangeError(
        "cannot encode: " + "; ".join(problems) + ". Nothing was encoded; use encode_clipping "
        "for an explicit, counted clip of finite values"
    )
