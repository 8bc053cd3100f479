"""Fixed-point encoding of model updates into the ring Z_2^32 or Z_2^64 (DESIGN R7).

* :mod:`~securefed.encoding.codec` -- :class:`FixedPointCodec`: float64 -> int64 -> unsigned ring
  with unbiased stochastic rounding, range checks and headroom arithmetic.
* :mod:`~securefed.encoding.dither` -- :class:`DitherStream`: the rounding randomness, from its own
  ``securefed/v1/dither`` key, never from mask bytes.
* :mod:`~securefed.encoding.flatten` -- :class:`ModelLayout`, :func:`flatten`, :func:`unflatten`:
  state dicts (as numpy arrays) <-> one float64 vector in a canonical, digestible layout.

Guarantees:

* Values outside ``[-value_bound, value_bound]``, NaN and infinities raise
  :class:`~securefed.errors.EncodingRangeError` and nothing is encoded; clipping is only the
  explicit, counted :meth:`FixedPointCodec.encode_clipping`. Nothing ever wraps silently.
* ``E[decode(encode(x))] = x`` for both signs, and ``|decode(encode(x)) - x| < 2**-f``; a sum of
  ``n`` encodings decodes within ``n * 2**-f`` of the true sum as long as the headroom check
  (:func:`check_sum_headroom`, :func:`check_weighted_sum_headroom`) passes, which
  :meth:`FixedPointCodec.decode` enforces.
* Layouts are ordered by tensor name, independent of dict insertion order; integer tensors
  round-trip exactly or raise :class:`~securefed.errors.ConfigError`.

This package never imports torch, pickle, ``random`` or ``numpy.random``.
"""

from securefed.encoding.codec import (
    DEFAULT_FRACTIONAL_BITS,
    DEFAULT_SUM_TERMS,
    MAX_FRACTIONAL_BITS,
    ClippedEncoding,
    CodecConfig,
    FixedPointCodec,
    RingBits,
    SumKind,
    check_sum_headroom,
    check_weighted_sum_headroom,
    max_sum_terms,
    max_weighted_sum_terms,
    required_ring_bits,
    ring_sum,
)
from securefed.encoding.dither import DitherStream, dither_stream
from securefed.encoding.flatten import (
    LAYOUT_FORMAT,
    SUPPORTED_DTYPES,
    ModelLayout,
    TensorSpec,
    flatten,
    unflatten,
)

__all__ = [
    "DEFAULT_FRACTIONAL_BITS",
    "DEFAULT_SUM_TERMS",
    "LAYOUT_FORMAT",
    "MAX_FRACTIONAL_BITS",
    "SUPPORTED_DTYPES",
    "ClippedEncoding",
    "CodecConfig",
    "DitherStream",
    "FixedPointCodec",
    "ModelLayout",
    "RingBits",
    "SumKind",
    "TensorSpec",
    "check_sum_headroom",
    "check_weighted_sum_headroom",
    "dither_stream",
    "flatten",
    "max_sum_terms",
    "max_weighted_sum_terms",
    "required_ring_bits",
    "ring_sum",
    "unflatten",
]
