"""Reconstruction by opening the committed polynomial (securefed.crypto.vss, docs/protocol.md
"Verifiable shares"): the interpolation matrix, the exact check of every other share, and the
fallback when one of the first t shares is bad."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from securefed.crypto import shamir, vss
from securefed.crypto.vss import ORDER, Commitment, Share, deal, reconstruct


@settings(max_examples=25, deadline=None)
@given(
    xs=st.lists(st.integers(1, 2**16), min_size=1, max_size=8, unique=True),
    coefficients=st.lists(st.integers(0, ORDER - 1), min_size=8, max_size=8),
)
def test_interpolation_matrix_recovers_the_coefficients(
    xs: list[int], coefficients: list[int]
) -> None:
    polynomial = coefficients[: len(xs)]
    ys = [vss._evaluate(polynomial, x) for x in xs]
    matrix = vss._interpolation_matrix(tuple(xs))
    recovered = [sum(w * y for w, y in zip(row, ys, strict=True)) % ORDER for row in matrix]
    assert recovered == polynomial


@settings(max_examples=50, deadline=None)
@given(
    xs=st.lists(st.integers(1, 2**16), min_size=1, max_size=12, unique=True),
    coefficients=st.lists(st.integers(0, ORDER - 1), min_size=12, max_size=12),
)
def test_newton_interpolation_recovers_the_coefficients(
    xs: list[int], coefficients: list[int]
) -> None:
    """The path for an x-set seen for the first time (every owner's own holders on the SecAgg+
    graph) gives the same coefficients as the cached weight matrix."""
    polynomial = coefficients[: len(xs)]
    ys = [vss._evaluate(polynomial, x) for x in xs]
    assert vss._newton_interpolation(xs, ys) == polynomial


def test_a_new_x_set_is_interpolated_directly_and_a_repeated_one_from_its_matrix() -> None:
    commitment, shares = deal(os.urandom(31).rjust(32, b"\x00"), threshold=6, holders=range(40))
    ordered = [shares[h] for h in (3, 5, 8, 13, 21, 34, 1, 2)]
    xs = tuple(s.x for s in ordered[:6])
    vss._SEEN_X_SETS.pop(xs, None)
    vss._interpolation_matrix.cache_clear()
    first = vss._open_polynomial(commitment, ordered)
    assert xs in vss._SEEN_X_SETS
    assert vss._interpolation_matrix.cache_info().currsize == 0  # no matrix the first time
    again = vss._open_polynomial(commitment, ordered)
    assert vss._interpolation_matrix.cache_info().currsize == 1
    assert first == again
    assert first is not None
    assert [vss._base_multiply(a) for a in first] == list(commitment.points)


def test_opened_polynomial_is_the_dealt_one_and_a_foreign_one_is_refused() -> None:
    commitment, shares = deal(os.urandom(31).rjust(32, b"\x00"), threshold=5, holders=range(9))
    ordered = [shares[h] for h in sorted(shares)]
    opened = vss._open_polynomial(commitment, ordered)
    assert opened is not None
    assert [vss._base_multiply(a) for a in opened] == list(commitment.points)
    other, _ = deal(os.urandom(31).rjust(32, b"\x00"), threshold=5, holders=range(9))
    assert vss._open_polynomial(other, ordered) is None
    assert vss._open_polynomial(commitment, ordered[:4]) is None  # fewer than t


@pytest.mark.parametrize("bad", [(7,), (8,), (5, 6, 7, 8), (0,), (2, 8)])
def test_bad_shares_after_or_among_the_first_t_are_named(bad: tuple[int, ...]) -> None:
    secret = os.urandom(31).rjust(32, b"\x00")
    commitment, shares = deal(secret, threshold=5, holders=range(9))
    returned = {h: Share(s.x, (s.y + 1) % ORDER) if h in bad else s for h, s in shares.items()}
    result = reconstruct(commitment, returned, threshold=5)
    assert result.secret == secret
    assert result.rejected == bad


def test_a_lying_carry_is_still_caught_on_the_opened_path() -> None:
    secret = os.urandom(31).rjust(32, b"\xf0")
    commitment, shares = deal(secret, threshold=2, holders=range(3))
    with pytest.raises(vss.InvalidCommitment):
        reconstruct(Commitment(commitment.points, carry=1), shares, threshold=2)


def test_shamir_weights_are_reused_and_still_exact() -> None:
    secret = os.urandom(32)
    shares = shamir.split(secret, threshold=4, holders=range(6))
    assert shamir.combine(shares[2:], threshold=4) == secret
    assert shamir.combine(shares, threshold=4) == secret
    assert shamir.combine(shares[2:], threshold=4) == secret  # cached weights
    other = shamir.split(os.urandom(32), threshold=4, holders=range(6))
    assert shamir.combine(other[2:], threshold=4) != secret
