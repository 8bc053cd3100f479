"""FixedPointCodec: round trip, sums, unbiasedness, range errors, clipping, dtypes, replay."""

from __future__ import annotations

import math
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from securefed.crypto import KdfContext, KeyPurpose, KeyStream, derive_stream_key
from securefed.crypto.suites import CipherSuite
from securefed.encoding import (
    CodecConfig,
    DitherStream,
    FixedPointCodec,
    RingBits,
    SumKind,
    max_sum_terms,
    max_weighted_sum_terms,
    ring_sum,
)
from securefed.encoding.codec import ENCODE_BLOCK
from securefed.errors import ConfigError, EncodingRangeError

MakeDither = Callable[..., DitherStream]

CODEC32 = FixedPointCodec(CodecConfig(RingBits.BITS32, 16, 256.0))
# Bigger bound and more fractional bits: encodings beyond 2**31, arithmetic a 32-bit ring can't do.
CODEC64 = FixedPointCodec(CodecConfig(RingBits.BITS64, 32, 65536.0))
CODECS = {RingBits.BITS32: CODEC32, RingBits.BITS64: CODEC64}
# Plain sums: a single term. Weighted sums (sum xi <= 1): 2**29 terms.
WEIGHTED_CODEC = FixedPointCodec(CodecConfig(RingBits.BITS32, 16, 16384.0))
SEEDS = st.integers(0, 2**64)


def float_arrays(bound: float, *, max_len: int = 64) -> st.SearchStrategy[npt.NDArray[Any]]:
    """Finite float16/32/64 arrays with |x| <= bound, negative values included."""

    def of_dtype(dtype: type[np.floating[Any]]) -> st.SearchStrategy[npt.NDArray[Any]]:
        limit = min(bound, float(np.finfo(dtype).max))
        width = np.dtype(dtype).itemsize * 8
        elements = st.floats(-limit, limit, width=width)  # type: ignore[arg-type]
        return arrays(dtype, st.integers(1, max_len), elements=elements)

    dtypes: list[type[np.floating[Any]]] = [np.float16, np.float32, np.float64]
    return st.sampled_from(dtypes).flatmap(of_dtype)


def exact_sum(column: npt.NDArray[np.float64]) -> Fraction:
    return sum((Fraction(float(v)) for v in column), Fraction(0))


# --- single values -------------------------------------------------------------------------------


@settings(deadline=None)
@given(ring=st.sampled_from(RingBits), data=st.data(), seed=SEEDS)
def test_round_trip_is_floor_or_ceil(
    ring: RingBits, data: st.DataObject, seed: int, make_dither: MakeDither
) -> None:
    codec = CODECS[ring]
    values = data.draw(float_arrays(codec.config.value_bound))
    encoded = codec.encode(values, dither=make_dither(seed))
    assert encoded.dtype == ring.dtype
    assert encoded.shape == (values.size,)
    decoded = codec.decode(encoded)
    x = values.astype(np.float64)
    scaled = x * 2.0**codec.config.fractional_bits  # exact
    q = decoded * 2.0**codec.config.fractional_bits  # exact integers
    low = np.floor(scaled)
    assert np.all((q == low) | (q == low + 1))  # so |decode(encode(x)) - x| < 2**-f
    exact = scaled == low
    np.testing.assert_array_equal(q[exact], scaled[exact])  # representable values are exact
    assert np.all(np.abs(decoded - x) <= codec.config.ulp)


@pytest.mark.parametrize("ring", list(RingBits))
def test_negative_values_use_twos_complement(ring: RingBits, make_dither: MakeDither) -> None:
    codec = CODECS[ring]
    ulp = codec.config.ulp
    values = np.array([-ulp, -2 * ulp, -codec.config.value_bound])
    encoded = codec.encode(values, dither=make_dither())
    modulus = 2**ring.bits
    expected = [modulus - 1, modulus - 2, modulus - codec.config.max_encoded_magnitude]
    assert [int(v) for v in encoded] == expected


@pytest.mark.parametrize("ring", list(RingBits))
def test_bound_itself_is_accepted_and_exact(ring: RingBits, make_dither: MakeDither) -> None:
    codec = CODECS[ring]
    bound = codec.config.value_bound
    decoded = codec.decode(codec.encode(np.array([bound, -bound, 0.0]), dither=make_dither()))
    np.testing.assert_array_equal(decoded, [bound, -bound, 0.0])


# --- sums ----------------------------------------------------------------------------------------


@settings(deadline=None, max_examples=40)
@given(
    ring=st.sampled_from(RingBits),
    n_terms=st.integers(1, max_sum_terms(CODEC32.config)),
    data=st.data(),
    seed=SEEDS,
)
def test_sum_decodes_within_n_ulps(
    ring: RingBits, n_terms: int, data: st.DataObject, seed: int, make_dither: MakeDither
) -> None:
    codec = CODECS[ring]
    bound = codec.config.value_bound
    length = data.draw(st.integers(1, 6))
    values = data.draw(arrays(np.float64, (n_terms, length), elements=st.floats(-bound, bound)))
    dither = make_dither(seed)
    total = ring_sum([codec.encode(row, dither=dither) for row in values], ring=ring)
    decoded = codec.decode(total, n_terms=n_terms)
    # n ulps, plus (64-bit ring only, |sum| > 2**53) the float64 rounding of the decoded value.
    limit = Fraction(codec.decode_error_bound(n_terms))
    assert limit >= Fraction(n_terms, 2**codec.config.fractional_bits)
    if ring is RingBits.BITS32:
        assert limit == Fraction(n_terms, 2**codec.config.fractional_bits)
    for j in range(length):
        assert abs(Fraction(float(decoded[j])) - exact_sum(values[:, j])) <= limit


def test_sum_with_negative_terms_wraps_and_still_decodes(make_dither: MakeDither) -> None:
    values = np.array([[-1.25, 3.0], [-0.5, -255.0], [2.0, -1.0]])  # multiples of 2**-16: exact
    dither = make_dither()
    encoded = [CODEC32.encode(row, dither=dither) for row in values]
    column = [int(e[0]) for e in encoded]
    assert sum(v >= 2**31 for v in column) == 2  # negatives live at the top of the ring
    assert sum(column) >= 2**32  # so the ring sum really wraps around
    decoded = CODEC32.decode(ring_sum(encoded, ring=RingBits.BITS32), n_terms=3)
    np.testing.assert_array_equal(decoded, [0.25, -253.0])


@pytest.mark.parametrize(("ring", "bound"), [(RingBits.BITS32, 1024.0), (RingBits.BITS64, 2.0**35)])
def test_full_headroom_decodes_and_one_more_term_wraps(
    ring: RingBits, bound: float, make_dither: MakeDither
) -> None:
    codec = FixedPointCodec(CodecConfig(ring, 16, bound))
    n = max_sum_terms(codec.config)  # 31 and 4095 terms
    # +-bound * 2**16 is an integer, so these encodings are exact: the extreme case.
    rows = codec.encode(np.tile([bound, -bound], n + 1), dither=make_dither()).reshape(n + 1, 2)
    full = ring_sum(rows[:n], ring=ring)
    np.testing.assert_array_equal(codec.decode(full, n_terms=n), [n * bound, -n * bound])
    over = ring_sum(rows, ring=ring)
    with pytest.raises(ConfigError, match="wrap"):
        codec.decode(over, n_terms=n + 1)
    # Decoding anyway shows the wrap: (n + 1) * bound comes back negative.
    assert codec.decode(over)[0] < 0 < (n + 1) * bound


@settings(deadline=None, max_examples=40)
@given(
    n_terms=st.integers(1, 64),
    total_weight=st.floats(0.01, 1.0),
    data=st.data(),
    seed=SEEDS,
)
def test_weighted_sum_needs_no_headroom(
    n_terms: int, total_weight: float, data: st.DataObject, seed: int, make_dither: MakeDither
) -> None:
    codec = WEIGHTED_CODEC
    bound = codec.config.value_bound
    length = data.draw(st.integers(1, 4))
    raw = data.draw(arrays(np.float64, n_terms, elements=st.floats(0.0, 1.0))) + 1e-3
    weights = raw / raw.sum() * total_weight
    values = data.draw(arrays(np.float64, (n_terms, length), elements=st.floats(-bound, bound)))
    products = weights[:, None] * values
    dither = make_dither(seed)
    total = ring_sum([codec.encode(row, dither=dither) for row in products], ring=RingBits.BITS32)
    decoded = codec.decode(total, n_terms=n_terms, sum_kind=SumKind.WEIGHTED)
    limit = Fraction(n_terms, 2**16)
    assert codec.decode_error_bound(n_terms, sum_kind=SumKind.WEIGHTED) == float(limit)
    for j in range(length):
        assert abs(Fraction(float(decoded[j])) - exact_sum(products[:, j])) < limit


def test_weighted_headroom_differs_from_plain() -> None:
    config = WEIGHTED_CODEC.config
    assert max_sum_terms(config) == 1
    assert max_weighted_sum_terms(config) == 2**29
    total = np.zeros(3, dtype=np.uint32)
    with pytest.raises(ConfigError):
        WEIGHTED_CODEC.decode(total, n_terms=2)
    WEIGHTED_CODEC.decode(total, n_terms=2**29, sum_kind=SumKind.WEIGHTED)
    with pytest.raises(ConfigError):
        WEIGHTED_CODEC.decode(total, n_terms=2**29 + 1, sum_kind=SumKind.WEIGHTED)


def test_decode_error_bound_counts_float64_conversion() -> None:
    codec = FixedPointCodec(CodecConfig(RingBits.BITS64, 16, 2.0**35))  # M = 2**51
    assert codec.decode_error_bound(4) == 4 * 2.0**-16  # |sum| <= 2**53: exact conversion
    # 4095 * 2**51 < 2**63: half a float64 ulp at 2**62..2**63 is 2**9 integer units.
    assert codec.decode_error_bound(4095) == 4095 * 2.0**-16 + 2.0 ** (9 - 16)


# --- unbiasedness --------------------------------------------------------------------------------

N_DRAWS = 200_000


@pytest.mark.parametrize("ring", list(RingBits))
@pytest.mark.parametrize("ulps", [0.3, -0.3, -0.5, 1234.7, -1234.7, -7.9])
def test_stochastic_rounding_is_unbiased(
    ring: RingBits, ulps: float, make_dither: MakeDither
) -> None:
    """The mean of many encodings is within 6 standard errors of x; biased rounding is not.

    q - floor(x * 2**f) is Bernoulli(p) with p the fractional part, so the mean of N_DRAWS
    encodings (in ulps) has standard error sqrt(p (1 - p) / N_DRAWS), about 0.001 here; a deviation
    of 6 standard errors has probability below 2e-9. Truncation toward zero or flooring is off by
    p or 1 - p (>= 0.3 ulp here), hundreds of standard errors: the same check rejects it.
    """
    codec = CODECS[ring]
    scale = 2.0**codec.config.fractional_bits
    x = ulps / scale
    scaled = x * scale
    p = scaled - math.floor(scaled)
    tolerance = 6 * math.sqrt(p * (1 - p) / N_DRAWS)

    encoded = codec.encode(np.full(N_DRAWS, x), dither=make_dither(ring.bits))
    q = codec.decode(encoded) * scale  # exact integers
    assert abs(math.fsum(q) / N_DRAWS - scaled) <= tolerance

    for biased in (math.trunc(scaled), math.floor(scaled)):
        assert abs(biased - scaled) > tolerance  # the check above would catch this rounding


# --- range errors and clipping -------------------------------------------------------------------

ABOVE = float(np.nextafter(256.0, np.inf))


@pytest.mark.parametrize("bad", [ABOVE, -ABOVE, math.nan, math.inf, -math.inf, 1e300])
def test_out_of_range_raises_and_changes_nothing(bad: float, make_dither: MakeDither) -> None:
    dither = make_dither()
    values = np.array([0.5, bad, -3.0])
    before = values.copy()
    with pytest.raises(EncodingRangeError, match=r"1 value\(s\)"):
        CODEC32.encode(values, dither=dither)
    assert dither.position == 0  # no randomness consumed
    np.testing.assert_array_equal(values, before)
    good = np.array([0.3, -0.7])
    fresh = make_dither()
    assert np.array_equal(CODEC32.encode(good, dither=dither), CODEC32.encode(good, dither=fresh))


def test_range_error_gives_counts_and_largest_magnitude_only(make_dither: MakeDither) -> None:
    values = np.array([300.25, -1000.5, 1.0, math.nan, math.inf, 257.125])
    with pytest.raises(EncodingRangeError) as info:
        CODEC32.encode(values, dither=make_dither())
    message = str(info.value)
    assert "3 value(s) exceed" in message
    assert "2 value(s) are NaN or infinite" in message
    assert "1000.5" in message
    assert "300.25" not in message
    assert "257.125" not in message


def test_integer_input_out_of_range_raises(make_dither: MakeDither) -> None:
    with pytest.raises(EncodingRangeError):
        CODEC32.encode(np.array([2**62], dtype=np.int64), dither=make_dither())


def test_encode_clipping_counts_exactly(make_dither: MakeDither) -> None:
    values = np.array([-1e9, -256.0, 256.0, ABOVE, 5.0, 1e300, -256.5])
    result = CODEC32.encode_clipping(values, dither=make_dither())
    assert result.clipped_count == 4
    assert result.values.dtype == np.uint32
    decoded = CODEC32.decode(result.values)
    np.testing.assert_array_equal(decoded, [-256.0, -256.0, 256.0, 256.0, 5.0, 256.0, -256.0])


def test_encode_clipping_without_clips_matches_encode(make_dither: MakeDither) -> None:
    values = np.linspace(-256.0, 256.0, 101)
    result = CODEC32.encode_clipping(values, dither=make_dither(3))
    assert result.clipped_count == 0
    assert np.array_equal(result.values, CODEC32.encode(values, dither=make_dither(3)))


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_encode_clipping_never_clips_non_finite(bad: float, make_dither: MakeDither) -> None:
    dither = make_dither()
    with pytest.raises(EncodingRangeError, match="NaN or infinite"):
        CODEC32.encode_clipping(np.array([1e9, bad]), dither=dither)
    assert dither.position == 0


# --- input types ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(np.array(["1.0"]), id="str-array"),
        pytest.param(["a", "b"], id="str-list"),
        pytest.param(np.array([1.0 + 2.0j]), id="complex"),
        pytest.param(np.array([1.0, None], dtype=object), id="object"),
        pytest.param(np.array([True, False]), id="bool"),
        pytest.param([[1.0], [1.0, 2.0]], id="ragged"),
        pytest.param(np.array(["2024-01-01"], dtype="datetime64[D]"), id="datetime"),
        pytest.param(np.array([b"\x00"]), id="bytes"),
    ],
)
def test_non_numeric_dtypes_are_rejected(bad: object, make_dither: MakeDither) -> None:
    dither = make_dither()
    with pytest.raises(ConfigError):
        CODEC32.encode(bad, dither=dither)  # type: ignore[arg-type]
    assert dither.position == 0


@pytest.mark.skipif(np.dtype(np.longdouble) == np.dtype(np.float64), reason="no extended type")
def test_extended_precision_is_rejected(make_dither: MakeDither) -> None:
    with pytest.raises(ConfigError):
        CODEC32.encode(np.array([1.0], dtype=np.longdouble), dither=make_dither())


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.int8, np.int64, np.uint8])
def test_accepted_dtypes_match_the_float64_path(
    dtype: type[np.generic], make_dither: MakeDither
) -> None:
    values = np.array([[1, 2, 3], [4, 5, 100]], dtype=dtype)
    if np.dtype(dtype).kind == "f":
        values = values / np.array(3, dtype=dtype)
    encoded = CODEC32.encode(values, dither=make_dither(9))
    expected = CODEC32.encode(values.astype(np.float64).reshape(-1), dither=make_dither(9))
    assert np.array_equal(encoded, expected)
    assert encoded.shape == (6,)


def test_lists_scalars_and_empty_inputs(make_dither: MakeDither) -> None:
    dither = make_dither()
    assert CODEC32.encode([1.0, -2.0], dither=dither).tolist() == [65536, 2**32 - 2 * 65536]
    assert CODEC32.encode(3.0, dither=dither).tolist() == [3 * 65536]
    assert CODEC32.encode(np.array([]), dither=dither).shape == (0,)


def test_dither_must_be_a_dither_stream(suite: CipherSuite, context: KdfContext) -> None:
    key = derive_stream_key(suite, bytes(32), purpose=KeyPurpose.DITHER, context=context)
    with pytest.raises(ConfigError, match="DitherStream"):
        CODEC32.encode([1.0], dither=KeyStream(key))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="DitherStream"):
        CODEC32.encode_clipping([1.0], dither=None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros(2, dtype=np.uint64),
        np.zeros(2, dtype=np.int32),
        np.zeros(2, dtype=np.float64),
        np.zeros(2, dtype=np.dtype(">u4")),
        [1, 2],
    ],
)
def test_decode_rejects_other_dtypes(bad: object) -> None:
    with pytest.raises(ConfigError):
        CODEC32.decode(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("n_terms", [0, -1, True, 1.5])
def test_decode_rejects_bad_term_counts(n_terms: object) -> None:
    with pytest.raises(ConfigError):
        CODEC32.decode(np.zeros(2, dtype=np.uint32), n_terms=n_terms)  # type: ignore[arg-type]


def test_decode_keeps_the_shape() -> None:
    ring_values = np.array([[1, 2**32 - 1], [0, 2**31]], dtype=np.uint32)
    decoded = CODEC32.decode(ring_values)
    assert decoded.dtype == np.float64
    np.testing.assert_array_equal(decoded, [[2.0**-16, -(2.0**-16)], [0.0, -(2.0**15)]])


def test_codec_needs_a_config() -> None:
    with pytest.raises(ConfigError):
        FixedPointCodec("default")  # type: ignore[arg-type]


# --- ring_sum ------------------------------------------------------------------------------------


def test_ring_sum_wraps_in_the_ring_dtype() -> None:
    terms = [np.array([2**32 - 1, 5], dtype=np.uint32), np.array([2, 2**32 - 5], dtype=np.uint32)]
    before = [t.copy() for t in terms]
    total = ring_sum(terms, ring=RingBits.BITS32)
    assert total.dtype == np.uint32
    assert total.tolist() == [1, 0]
    assert all(np.array_equal(t, b) for t, b in zip(terms, before, strict=True))


@pytest.mark.parametrize(
    "terms",
    [
        [],
        [np.zeros(2, dtype=np.uint64)],
        [np.zeros(2, dtype=np.uint32), np.zeros(3, dtype=np.uint32)],
        [[0, 1]],
    ],
)
def test_ring_sum_rejects_bad_terms(terms: list[Any]) -> None:
    with pytest.raises(ConfigError):
        ring_sum(terms, ring=RingBits.BITS32)


# --- reproducibility -----------------------------------------------------------------------------

# 256 values exactly half-way between two grid points: each rounds up with probability 1/2, so two
# independent encodings agree with probability 2**-256.
HALVES = (np.arange(-128, 128) + 0.5) * 2.0**-16


def test_same_seed_and_context_reproduce(make_dither: MakeDither) -> None:
    first = CODEC32.encode(HALVES, dither=make_dither(7, round_number=2, target=1))
    again = CODEC32.encode(HALVES, dither=make_dither(7, round_number=2, target=1))
    assert np.array_equal(first, again)


@pytest.mark.parametrize(
    "other", [{"seed": 8}, {"round_number": 3}, {"target": 2}, {"target": None}]
)
def test_other_seed_or_context_rounds_differently(
    other: dict[str, Any], make_dither: MakeDither
) -> None:
    base: dict[str, Any] = {"seed": 7, "round_number": 2, "target": 1}
    first = CODEC32.encode(HALVES, dither=make_dither(**base))
    second = CODEC32.encode(HALVES, dither=make_dither(**(base | other)))
    assert not np.array_equal(first, second)


def test_one_stream_never_reuses_randomness(make_dither: MakeDither) -> None:
    dither = make_dither()
    first = CODEC32.encode(HALVES, dither=dither)
    assert dither.position == 4 * HALVES.size
    assert not np.array_equal(first, CODEC32.encode(HALVES, dither=dither))


KAT_VALUES = [-2.75, -1.5, -0.5, 0.25, 0.5, 1.5]
KAT_OFFSETS = [0, -1, 0, 0, 3, 100]
KAT_EXPECTED = {
    RingBits.BITS32: [4294967294, 4294901758, 0, 0, 196608, 6553601],
    RingBits.BITS64: [
        18446744073709551614,
        18446744069414584318,
        0,
        0,
        12884901888,
        429496729601,
    ],
}


@pytest.mark.parametrize("ring", list(RingBits))
def test_known_answer(ring: RingBits, make_dither: MakeDither) -> None:
    """Pins HKDF label, AES-CTR stream, 32-bit uniforms and the rounding rule together.

    Hand check of the first value (-2.75 ulp): floor = -3, fraction 0.25; the first dither word
    is 527690603 < 0.25 * 2**32, so it rounds up to -2, i.e. 2**32 - 2 in the 32-bit ring.
    """
    codec = CODECS[ring]
    values = np.array(KAT_VALUES) * codec.config.ulp + np.array(KAT_OFFSETS)
    assert codec.encode(values, dither=make_dither(0)).tolist() == KAT_EXPECTED[ring]


# --- the 32-bit ring's fewer-pass rounding equals the generic rounding -------------------------


def _edge_values(fractional_bits: int, bound: float) -> npt.NDArray[np.float64]:
    """Values whose fraction times 2**32 is an integer, just below or above one, or just below
    2**32 (the carry case), for both signs; plus zeros, subnormals and the bounds."""
    ulp = math.ldexp(1.0, -fractional_bits)
    word = math.ldexp(ulp, -32)  # one dither step
    steps = np.array([0, 1, 2**31, 2**32 - 1], dtype=np.float64) * word
    whole = np.array([0.0, ulp, 3 * ulp, 1.0, bound / 2, bound - ulp])
    nudges = np.array([0.0, np.nextafter(0.0, 1.0), word / 2**10])
    values = (whole[:, None, None] + steps[None, :, None]).reshape(-1, 1) + np.concatenate(
        [nudges, -nudges]
    )
    values = np.concatenate([values.reshape(-1), [0.0, -0.0, 5e-324, -5e-324, bound, -bound]])
    return np.clip(np.concatenate([values, -values]), -bound, bound)


@pytest.mark.parametrize(
    ("fractional_bits", "bound"),
    [(16, 256.0), (0, 2.0**31 - 1.0), (30, 1.5), (20, 2047.0)],
)
def test_32_bit_ring_matches_the_64_bit_rounding_mod_2_32(
    fractional_bits: int, bound: float, make_dither: MakeDither
) -> None:
    """The 32-bit ring rounds with its own fewer-pass rule; it must give ``q mod 2**32`` of the
    generic rule (which the 64-bit ring uses) for the same uniforms, bit for bit."""
    narrow = FixedPointCodec(CodecConfig(RingBits.BITS32, fractional_bits, bound))
    wide = FixedPointCodec(CodecConfig(RingBits.BITS64, fractional_bits, bound))
    values = _edge_values(fractional_bits, bound)
    for seed in range(3):
        expected = wide.encode(values, dither=make_dither(seed)).astype(np.uint32)
        assert np.array_equal(narrow.encode(values, dither=make_dither(seed)), expected)


@settings(max_examples=60, deadline=None)
@given(
    values=arrays(
        np.float64,
        st.integers(1, 300),
        elements=st.floats(-256.0, 256.0) | st.sampled_from([0.5, -0.5, 2.0**-48, -(2.0**-48)]),
    ),
    seed=SEEDS,
)
def test_32_bit_rounding_equals_generic_rounding(
    values: npt.NDArray[np.float64], seed: int, make_dither: MakeDither
) -> None:
    wide = FixedPointCodec(CodecConfig(RingBits.BITS64, 16, 256.0))
    expected = wide.encode(values, dither=make_dither(seed)).astype(np.uint32)
    assert np.array_equal(CODEC32.encode(values, dither=make_dither(seed)), expected)


def test_32_bit_rounding_across_encode_blocks(make_dither: MakeDither) -> None:
    """Several workspace blocks, the last one short: the dither stream stays in step."""
    values = np.linspace(-255.9, 255.9, 2 * ENCODE_BLOCK + 17)
    wide = FixedPointCodec(CodecConfig(RingBits.BITS64, 16, 256.0))
    expected = wide.encode(values, dither=make_dither(5)).astype(np.uint32)
    out = np.empty(values.size, dtype=np.uint32)
    dither = make_dither(5)
    CODEC32.encode_into(values, out, dither=dither)
    assert np.array_equal(out, expected)
    assert dither.position == 4 * values.size


@pytest.mark.parametrize("ring", list(RingBits))
def test_rounding_is_exact_at_the_dither_words(ring: RingBits, make_dither: MakeDither) -> None:
    """Values built from the very uniforms ``u`` the dither stream will draw, with fraction
    ``u``, ``u + 2**-40`` or ``u - 2**-40`` (in units of 2**-32): they round up exactly when the
    fraction exceeds ``u``. This pins the comparison ``u < frac`` at its boundary, which random
    values almost never reach."""
    codec = FixedPointCodec(CodecConfig(ring, 16, 256.0))
    n = 3000
    words = make_dither(9).uniforms(n) * 2.0**32  # exact integers
    whole = (np.arange(n) % 1024 - 512).astype(np.float64)
    nudge = np.array([0.0, 2.0**-8, -(2.0**-8)])[np.arange(n) % 3]
    values = (whole + (words + nudge) * 2.0**-32) * 2.0**-16  # exact: < 53 significant bits
    expected = (whole + (nudge > 0)).astype(np.int64).view(np.uint64).astype(ring.dtype)
    assert np.array_equal(codec.encode(values, dither=make_dither(9)), expected)
