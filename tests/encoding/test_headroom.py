"""CodecConfig validation and the headroom arithmetic (DESIGN R7)."""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from securefed.encoding import (
    CodecConfig,
    RingBits,
    SumKind,
    check_sum_headroom,
    check_weighted_sum_headroom,
    max_sum_terms,
    max_weighted_sum_terms,
    required_ring_bits,
)
from securefed.errors import ConfigError


@st.composite
def configs(draw: st.DrawFn) -> CodecConfig:
    """Valid configs over both rings, from tiny to maximal bounds."""
    ring = draw(st.sampled_from(RingBits))
    fractional_bits = draw(st.integers(0, 40))
    exponent_limit = min(ring.bits - 1, 52) - fractional_bits
    exponent = draw(st.integers(-60, exponent_limit - 1))
    mantissa = draw(st.floats(1.0, 2.0, exclude_max=True))
    bound = math.ldexp(mantissa, exponent)
    if math.ceil(math.ldexp(bound, fractional_bits)) > ring.signed_max:
        bound = math.ldexp(1.0, exponent)
    return CodecConfig(ring, fractional_bits, bound)


def test_default_config() -> None:
    config = CodecConfig.default()
    assert config == CodecConfig(RingBits.BITS32, 16, 256.0)
    assert config.ulp == 2.0**-16
    assert max_sum_terms(config) == 127
    assert CodecConfig.default(sum_terms=62).value_bound == 512.0
    assert max_sum_terms(CodecConfig.default(sum_terms=1000)) >= 1000


@pytest.mark.parametrize("ring", list(RingBits))
@pytest.mark.parametrize("sum_terms", [1, 2, 3, 62, 64, 1000, 2**20])
def test_default_fits_the_requested_terms(ring: RingBits, sum_terms: int) -> None:
    config = CodecConfig.default(sum_terms=sum_terms, ring=ring, fractional_bits=8)
    assert max_sum_terms(config) >= sum_terms
    # The bound is the largest power of two that fits (unless capped by the 2**52 limit).
    bigger = 2 * config.max_encoded_magnitude
    assert bigger * sum_terms > ring.signed_max or bigger >= 2**52


@pytest.mark.parametrize(
    "kwargs", [{"sum_terms": 0}, {"sum_terms": 2**31}, {"fractional_bits": -1}, {"ring": 32}]
)
def test_default_rejects_impossible_requests(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        CodecConfig.default(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("ring", "fractional_bits", "value_bound"),
    [
        ("BITS32", 16, 1.0),
        (32, 16, 1.0),
        (RingBits.BITS32, -1, 1.0),
        (RingBits.BITS32, 1.5, 1.0),
        (RingBits.BITS32, True, 1.0),
        (RingBits.BITS32, 129, 1e-40),
        (RingBits.BITS32, 16, 0.0),
        (RingBits.BITS32, 16, -1.0),
        (RingBits.BITS32, 16, math.nan),
        (RingBits.BITS32, 16, math.inf),
        (RingBits.BITS32, 16, "1.0"),
        (RingBits.BITS32, 16, True),
        (RingBits.BITS32, 16, 2.0**15),  # one term would reach 2**31: no room for its sign
        (RingBits.BITS64, 32, 2.0**20),  # 2**52: scaled values no longer exact in float64
        (RingBits.BITS64, 0, 2.0**52),
        (RingBits.BITS64, 0, 1e300),
    ],
)
def test_invalid_configs_are_rejected(
    ring: object, fractional_bits: object, value_bound: object
) -> None:
    with pytest.raises(ConfigError):
        CodecConfig(ring, fractional_bits, value_bound)  # type: ignore[arg-type]


def test_config_edges_are_accepted() -> None:
    tight = CodecConfig(RingBits.BITS32, 16, 2.0**15 - 2.0**-16)
    assert tight.max_encoded_magnitude == 2**31 - 1
    assert max_sum_terms(tight) == 1
    assert max_weighted_sum_terms(tight) == 1  # the plain bound: one term of magnitude M
    wide = CodecConfig(RingBits.BITS64, 0, 2.0**52 - 1)
    assert max_sum_terms(wide) == 2**11
    assert CodecConfig(RingBits.BITS32, 128, 1e-40).fractional_bits == 128


def test_config_is_frozen_and_normalises_the_bound() -> None:
    config = CodecConfig(RingBits.BITS32, 8, 10)
    assert type(config.value_bound) is float
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.fractional_bits = 4  # type: ignore[misc]


@given(configs())
def test_max_sum_terms_is_exact(config: CodecConfig) -> None:
    n = max_sum_terms(config)
    magnitude = config.max_encoded_magnitude
    assert n >= 1
    assert n * magnitude <= config.ring.signed_max < (n + 1) * magnitude
    check_sum_headroom(config, n)
    with pytest.raises(ConfigError):
        check_sum_headroom(config, n + 1)


@given(configs())
def test_max_weighted_sum_terms_is_exact(config: CodecConfig) -> None:
    n = max_weighted_sum_terms(config)
    magnitude = config.max_encoded_magnitude

    def reach(terms: int) -> int:
        return min(terms * magnitude, magnitude + 2 * terms - 1)

    assert reach(n) <= config.ring.signed_max < reach(n + 1)
    assert n >= max_sum_terms(config)
    check_weighted_sum_headroom(config, n)
    with pytest.raises(ConfigError):
        check_weighted_sum_headroom(config, n + 1)


@given(configs(), st.sampled_from(SumKind))
def test_required_ring_bits_agrees_with_the_checks(config: CodecConfig, kind: SumKind) -> None:
    most = max_sum_terms(config) if kind is SumKind.PLAIN else max_weighted_sum_terms(config)
    bound, bits = config.value_bound, config.fractional_bits
    assert required_ring_bits(bound, bits, n_terms=most, sum_kind=kind) <= config.ring.bits
    assert required_ring_bits(bound, bits, n_terms=most + 1, sum_kind=kind) > config.ring.bits


def test_required_ring_bits_examples() -> None:
    # 62 tenants, |x| <= 1, 20 fractional bits: 62 * 2**20 < 2**26, plus a sign bit.
    assert required_ring_bits(1.0, 20, n_terms=62) == 27
    assert required_ring_bits(256.0, 16, n_terms=127) == 32
    assert required_ring_bits(256.0, 16, n_terms=128) == 33
    # A weighted sum needs (almost) nothing beyond one term.
    assert required_ring_bits(1.0, 20, n_terms=62, sum_kind=SumKind.WEIGHTED) == 22


@pytest.mark.parametrize("n_terms", [0, -3, True, 2.0, None])
def test_term_counts_are_validated(n_terms: object) -> None:
    config = CodecConfig.default()
    with pytest.raises(ConfigError):
        check_sum_headroom(config, n_terms)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        check_weighted_sum_headroom(config, n_terms)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        required_ring_bits(1.0, 16, n_terms=n_terms)  # type: ignore[arg-type]


def test_headroom_error_names_the_ring_and_bits() -> None:
    with pytest.raises(ConfigError, match=r"32-bit ring \(needs 33 bits\)"):
        check_sum_headroom(CodecConfig.default(), 128)


@pytest.mark.parametrize("ring", list(RingBits))
def test_ring_dtypes(ring: RingBits) -> None:
    assert ring.dtype.kind == "u"
    assert ring.signed_dtype.kind == "i"
    assert ring.dtype.itemsize * 8 == ring.signed_dtype.itemsize * 8 == ring.bits
    assert ring.signed_max == 2 ** (ring.bits - 1) - 1
