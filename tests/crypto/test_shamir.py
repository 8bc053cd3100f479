"""Shamir t-of-n sharing over GF(2**256 + 297) (DESIGN R6)."""

from __future__ import annotations

import contextlib
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from securefed.crypto import shamir
from securefed.crypto.shamir import PRIME, Share, combine, split, split_with_coefficients
from securefed.errors import ConfigError, InvalidShare

# The first 64 primes, used as Miller-Rabin bases.
SMALL_PRIMES = [n for n in range(2, 320) if all(n % d for d in range(2, int(n**0.5) + 1))][:64]


def is_probable_prime(n: int) -> bool:
    """Miller-Rabin with the first 64 prime bases (error < 4**-64 for a composite n)."""
    if n < 2:
        return False
    for p in SMALL_PRIMES:
        if n % p == 0:
            return n == p
    d, r = n - 1, 0
    while d % 2 == 0:
        d, r = d // 2, r + 1
    for base in SMALL_PRIMES:
        x = pow(base, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def test_field_is_the_smallest_prime_above_2_256() -> None:
    assert PRIME == 2**256 + 297
    assert is_probable_prime(PRIME)
    assert not any(is_probable_prime(2**256 + k) for k in range(1, 297))
    # The test itself can fail: it rejects the neighbours of the prime.
    assert not is_probable_prime(PRIME + 2)


def test_secrets_above_2_255_survive() -> None:
    secret = b"\xff" * 32
    assert combine(split(secret, threshold=2, holders=[0, 1, 2]), threshold=2) == secret


def test_known_answer() -> None:
    """Own vector (hand-checkable: y(1) = secret + c1 + c2 mod p): catches encoding changes."""
    shares = split_with_coefficients(
        bytes(range(32)), coefficients=[2**256 + 1, 12345678901234567890], holders=[0, 1, 2, 4]
    )
    assert [s.to_bytes().hex() for s in shares] == [
        "0000000100000102030405060708090a0b0c0d0e0f1011121314151617c36dc3a8073c27c9",
        "0000000200000102030405060708090a0b0c0d0e0f1011121314151619c56bc04ec8994717",
        "0000000300000102030405060708090a0b0c0d0e0f101112131415161d1e13100f60347c09",
        "0000000500000102030405060708090a0b0c0d0e0f1011121314151627d35da8de122526d9",
    ]
    secret = int.from_bytes(bytes(range(32)), "big")
    assert shares[0].y == (secret + 2**256 + 1 + 12345678901234567890) % PRIME
    assert combine(shares[1:], threshold=3) == bytes(range(32))


@settings(max_examples=25, deadline=None)
@given(
    secret=st.binary(min_size=32, max_size=32),
    n=st.integers(min_value=1, max_value=7),
    data=st.data(),
)
def test_every_t_subset_reconstructs_and_fewer_raise(
    secret: bytes, n: int, data: st.DataObject
) -> None:
    t = data.draw(st.integers(min_value=1, max_value=n))
    holders = data.draw(st.permutations(range(20)))[:n]
    shares = split(secret, threshold=t, holders=holders)
    assert [s.holder for s in shares] == holders
    for subset in itertools.combinations(shares, t):
        assert combine(subset, threshold=t) == secret
    for subset in itertools.combinations(shares, t - 1):
        with pytest.raises(InvalidShare):
            combine(subset, threshold=t)


def test_duplicate_x_coordinates_raise() -> None:
    shares = split(bytes(32), threshold=2, holders=[0, 1, 2])
    with pytest.raises(InvalidShare, match="duplicate"):
        combine([shares[0], shares[0]], threshold=2)
    forged = Share(shares[0].x, (shares[0].y + 1) % PRIME)
    with pytest.raises(InvalidShare, match="duplicate"):
        combine([shares[0], forged, shares[1]], threshold=2)


def test_tampered_share_is_detected_or_changes_the_secret() -> None:
    secret = bytes(range(32))
    shares = split(secret, threshold=3, holders=range(5))
    tampered = [Share(shares[0].x, (shares[0].y + 1) % PRIME), *shares[1:3]]
    with contextlib.suppress(InvalidShare):  # the reconstructed value fell outside 32 bytes
        assert combine(tampered, threshold=3) != secret


@pytest.mark.parametrize(
    "data",
    [
        b"",
        bytes(36),
        bytes(38),
        bytes(4) + bytes(33),
        (1).to_bytes(4, "big") + PRIME.to_bytes(33, "big"),
    ],
    ids=["empty", "short", "long", "x=0", "y=p"],
)
def test_malformed_share_bytes_raise(data: bytes) -> None:
    with pytest.raises(InvalidShare):
        Share.from_bytes(data)


def test_share_round_trip_and_repr() -> None:
    share = split(b"\x01" * 32, threshold=1, holders=[9])[0]
    assert Share.from_bytes(share.to_bytes()) == share
    assert str(share.y) not in repr(share)
    assert share.holder == 9


@pytest.mark.parametrize(
    ("secret", "threshold", "holders"),
    [
        (bytes(31), 1, [0]),
        (bytes(32), 0, [0]),
        (bytes(32), 3, [0, 1]),
        (bytes(32), 1, [0, 0]),
        (bytes(32), 1, [-1]),
    ],
)
def test_split_argument_errors(secret: bytes, threshold: int, holders: list[int]) -> None:
    with pytest.raises(ConfigError):
        split(secret, threshold=threshold, holders=holders)


def test_combine_rejects_non_shares_and_bad_threshold() -> None:
    with pytest.raises(InvalidShare):
        combine([b"not a share"], threshold=1)  # type: ignore[list-item]
    with pytest.raises(ConfigError):
        combine([], threshold=0)
    assert shamir.SHARE_BYTES == 37
