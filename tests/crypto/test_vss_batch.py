"""verify_held_shares: many received Feldman shares at one x, verdicts equal to verify_share's."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
from collections.abc import Callable, Iterator, Sequence
from typing import cast
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from securefed.crypto import vss
from securefed.crypto.vss import (
    ORDER,
    Commitment,
    Share,
    deal,
    verify_held_shares,
    verify_share,
)
from securefed.errors import ConfigError, InvalidShare


def _source(seed: int) -> Callable[[int], bytes]:
    """A deterministic stand-in for os.urandom (tests only): SHA-256 in counter mode."""
    counter = itertools.count()

    def draw(n: int) -> bytes:
        out = b""
        while len(out) < n:
            out += hashlib.sha256(f"{seed}/{next(counter)}".encode()).digest()
        return out[:n]

    return draw


def _reference(
    items: Sequence[object], *, threshold: int | None, holder: int | None
) -> tuple[int, ...]:
    """The indices at which a loop over verify_share raises."""
    failing = []
    for index, item in enumerate(items):
        try:
            commitment, share = cast(tuple[Commitment, Share], item)
            verify_share(commitment, share, threshold=threshold, holder=holder)
        except (InvalidShare, TypeError, ValueError):  # not a pair, or rejected
            failing.append(index)
    return tuple(failing)


def _committed(coefficients: Sequence[int], x: int) -> tuple[Commitment, Share]:
    """A commitment built directly from chosen nonzero coefficients, and the share at x."""
    points = []
    for coefficient in coefficients:
        point = vss._base_multiply(coefficient)
        assert point is not None
        points.append(point)
    return Commitment(tuple(points)), Share(x, vss._evaluate(coefficients, x))


@contextlib.contextmanager
def _lanes_from(minimum: int | None) -> Iterator[None]:
    """With ``minimum = 1`` every group of shares at one x goes through the lockstep path."""
    if minimum is None:
        yield
        return
    with mock.patch.object(vss, "_LOCKSTEP_MIN_LANES", minimum):
        yield


_LOCKSTEP = pytest.mark.parametrize("minimum", [None, 1], ids=["default", "lockstep"])


# -- the group arithmetic --------------------------------------------------------------------


@pytest.mark.parametrize("x", [*range(1, 300), 2**15 - 1, 2**16 - 1, 2**16, 0xAAAA, 0x5555])
def test_signed_digits_spell_x_in_no_more_operations_than_binary(x: int) -> None:
    digits = vss._signed_digits(x)
    value = 1
    for digit in digits:
        assert digit in (-1, 0, 1)
        value = 2 * value + digit
    assert value == x
    binary = bin(x)[3:]
    assert len(digits) + sum(map(abs, digits)) <= len(binary) + binary.count("1")


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.integers(1, 6), min_size=1, max_size=12),
    st.sampled_from([1, 2, 3, 4, 5, 7, 8, 37, 200, 2**16 - 1, 2**16]),
    st.integers(0, 2**32),
)
def test_lockstep_horner_equals_jacobian_horner(lengths: list[int], x: int, seed: int) -> None:
    draw = _source(seed)
    lanes = [
        _committed([vss._random_coefficient(draw) for _ in range(t)], x)[0].points for t in lengths
    ]
    expected = [vss._to_affine(vss._evaluate_in_exponent(points, x)) for points in lanes]
    assert vss._evaluate_lanes(lanes, x) == expected


def test_lockstep_horner_through_the_point_at_infinity() -> None:
    """Running sums that hit O, that need a doubling (x R == C), and a total that is O."""
    x, k = 5, 0x1234567
    lanes_coefficients = [
        [11, (-x * k) % ORDER, k],  # x C_2 + C_1 = O, then C_0
        [11, x * k, k],  # x C_2 == C_1: the addition is a doubling
        [(-x * 11) % ORDER, 11],  # the whole sum is O (f(x) = 0)
        [(-x * 3) % ORDER, 3, (-x * k) % ORDER, k],  # O twice
        [7, 9, 13, 17],
        [19],  # threshold 1
    ]
    lanes = [_committed(c, x)[0].points for c in lanes_coefficients]
    expected = [vss._to_affine(vss._evaluate_in_exponent(points, x)) for points in lanes]
    assert expected[2] is None
    assert vss._evaluate_lanes(lanes, x) == expected
    assert vss._evaluate_lanes(lanes * 3, x) == expected * 3  # duplicates


def test_exceptional_doubling_off_the_curve_falls_back_to_jacobian() -> None:
    """A point with y = 0 (off P-256: on y^2 = x^3 - 3x + b' for another b') makes the shared
    inversion fail inside x * R; the step is then redone lane by lane, exactly as before."""
    x0 = 12345
    two_torsion = (x0, 0)
    good = _committed([3, 5, 7], 2)[0].points
    lanes = [(good[0], two_torsion), good, (good[1], good[2], two_torsion)]
    assert vss._double_lanes([x0], [0]) is None
    for x in (2, 3, 4):  # binary digits: the same chain as _multiply
        assert vss._signed_digits(x) == tuple(int(b) for b in bin(x)[3:])
        expected = [vss._to_affine(vss._evaluate_in_exponent(points, x)) for points in lanes]
        assert vss._evaluate_lanes(lanes, x) == expected


# -- verdicts against verify_share -----------------------------------------------------------

_KINDS = (
    "valid",
    "y+1",
    "y-1",
    "y=0",
    "other polynomial",
    "other holder",
    "other threshold",
    "not a share",
    "not a commitment",
    "not a pair",
)
# Items that fail whatever the threshold asked for (at their own holder).
_BAD_AT_ANY_THRESHOLD = frozenset(_KINDS) - {"valid", "other threshold"}


def _item(kind: str, t: int, holder: int, draw: Callable[[int], bytes]) -> object:
    """One received (commitment, share) of the given kind, dealt at threshold ``t``."""
    holders = sorted({holder, 0, 1, 2, 3, 4, 5})
    dealt_t = t % 5 + 1 if kind == "other threshold" else t
    commitment, shares = deal(draw(32), threshold=dealt_t, holders=holders, random_bytes=draw)
    share = shares[holder]
    changed = {
        "y+1": lambda: Share(share.x, (share.y + 1) % ORDER),
        "y-1": lambda: Share(share.x, (share.y - 1) % ORDER),
        "y=0": lambda: Share(share.x, 0),
        "other polynomial": lambda: deal(draw(32), threshold=t, holders=holders, random_bytes=draw)[
            1
        ][holder],
        "other holder": lambda: shares[next(h for h in holders if h != holder)],
    }
    if kind in changed:
        share = changed[kind]()
    if kind == "not a share":
        return (commitment, share.to_bytes())
    if kind == "not a commitment":
        return (commitment.to_bytes(), share)
    if kind == "not a pair":
        return (commitment, share, share)
    return (commitment, share)


@_LOCKSTEP
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_batch_verdicts_equal_verify_share(minimum: int | None, data: st.DataObject) -> None:
    """Valid shares, shares off by one or from another polynomial, another holder's share, a
    commitment of another degree, malformed items, duplicates; thresholds 1, 2, 3, 5 or mixed;
    x from 1 to 2**16."""
    draw = _source(data.draw(st.integers(0, 2**32), label="seed"))
    holder = data.draw(st.sampled_from([0, 1, 2, 6, 36, 199, 2**16 - 1]), label="holder")
    threshold = data.draw(st.sampled_from([1, 2, 3, 5]), label="threshold")
    mixed = data.draw(st.booleans(), label="mixed thresholds")
    kinds = data.draw(st.lists(st.sampled_from(_KINDS), max_size=24), label="kinds")
    items = [
        _item(kind, data.draw(st.integers(1, 5)) if mixed else threshold, holder, draw)
        for kind in kinds
    ]
    duplicates = data.draw(st.lists(st.integers(0, len(items) - 1), max_size=4)) if items else []
    items += [items[i] for i in duplicates]
    kinds += [kinds[i] for i in duplicates]
    bad = tuple(i for i, kind in enumerate(kinds) if kind in _BAD_AT_ANY_THRESHOLD)
    assert _reference(items, threshold=None, holder=holder) == bad
    for t, h in [(threshold, holder), (None, holder), (threshold, None), (None, None)]:
        with _lanes_from(minimum):
            batch = verify_held_shares(items, threshold=t, holder=h)  # type: ignore[arg-type]
        assert batch == _reference(items, threshold=t, holder=h)


@_LOCKSTEP
@pytest.mark.parametrize(("n", "t"), [(20, 14), (24, 2), (17, 1)])
def test_a_round_of_shares_at_the_last_holder(minimum: int | None, n: int, t: int) -> None:
    """The protocol's shape: two shares per dealer at one x; every kind of bad share named."""
    holder = n - 1
    draw = _source(n * 1000 + t)
    items: list[tuple[Commitment, Share]] = []
    for _ in range(2 * (n - 1)):
        commitment, shares = deal(draw(32), threshold=t, holders=range(n), random_bytes=draw)
        items.append((commitment, shares[holder]))
    with _lanes_from(minimum):
        assert verify_held_shares(items, threshold=t, holder=holder) == ()
    items[3] = (items[3][0], Share(n, (items[3][1].y + 1) % ORDER))
    items[7] = (items[7][0], items[8][1])  # another dealer's share
    items[11] = (items[11][0], Share(n - 1, items[11][1].y))  # x of holder n - 2
    items.append(items[0])  # a duplicate
    expected = _reference(items, threshold=t, holder=holder)
    assert expected == (3, 7, 11)
    with _lanes_from(minimum):
        assert verify_held_shares(items, threshold=t, holder=holder) == expected
        assert verify_held_shares(items, threshold=t + 1, holder=holder) == tuple(range(len(items)))


@_LOCKSTEP
def test_held_shares_through_the_point_at_infinity(minimum: int | None) -> None:
    x, k = 40, 987654321
    coefficient_lists = [
        [11, (-x * k) % ORDER, k],
        [11, x * k, k],
        [(-x * 11) % ORDER, 11],  # f(x) = 0: the valid share is y = 0
        [(-x * 3) % ORDER, 3, (-x * k) % ORDER, k],
    ]
    items = [_committed(c, x) for c in coefficient_lists] * 5  # 20 items, duplicates
    assert items[2][1].y == 0
    items.append((items[2][0], Share(x, 1)))
    items.append((items[0][0], Share(x, (items[0][1].y + 1) % ORDER)))
    items.append((items[1][0], Share(x, 0)))
    expected = _reference(items, threshold=None, holder=x - 1)
    assert expected == (20, 21, 22)
    with _lanes_from(minimum):
        assert verify_held_shares(items, holder=x - 1) == expected


def test_empty_and_malformed_arguments() -> None:
    assert verify_held_shares([]) == ()
    assert verify_held_shares((), threshold=3, holder=0) == ()
    commitment, shares = deal(b"\x01" * 32, threshold=2, holders=range(3), random_bytes=_source(1))
    items: list[object] = [
        (commitment, shares[0]),
        None,
        (commitment,),
        b"ab",
        (shares[0], commitment),
        [commitment, shares[0]],
    ]
    expected = _reference(items, threshold=None, holder=0)
    assert expected == (1, 2, 3, 4)
    assert verify_held_shares(items, holder=0) == expected  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        verify_held_shares(iter([(commitment, shares[0])]))  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        verify_held_shares({0: (commitment, shares[0])})  # type: ignore[arg-type]


def test_verify_share_is_unchanged_for_one_item() -> None:
    commitment, shares = deal(b"\x02" * 32, threshold=3, holders=range(4), random_bytes=_source(2))
    verify_share(commitment, shares[2], threshold=3, holder=2)
    with pytest.raises(vss.InvalidCommitment):
        verify_share(commitment, shares[2], threshold=2, holder=2)
    with pytest.raises(InvalidShare, match="malformed share"):
        verify_share(commitment, shares[2], threshold=3, holder=1)
    with pytest.raises(InvalidShare, match="not on the committed polynomial"):
        verify_share(commitment, Share(3, (shares[2].y + 1) % ORDER), threshold=3, holder=2)
