"""Feldman verifiable secret sharing over P-256 (DESIGN R10, issue 20 item 2)."""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from securefed.crypto import get_suite, vss
from securefed.crypto.vss import (
    ORDER,
    SHARE_BYTES,
    Commitment,
    InvalidCommitment,
    NotEnoughValidShares,
    Share,
    commitment_bytes,
    deal,
    reconstruct,
    verify_share,
)
from securefed.errors import ConfigError, InvalidShare

_GENERATOR = (
    0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296,
    0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5,
)

# k * G on P-256: the NIST point-multiplication test vectors as published by
# point-at-infinity.org/ecc/nisttv (k = 1..20, two large k, and n - 1, which gives -G).
NIST_MULTIPLES = {
    1: (
        "6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296",
        "4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5",
    ),
    2: (
        "7CF27B188D034F7E8A52380304B51AC3C08969E277F21B35A60B48FC47669978",
        "07775510DB8ED040293D9AC69F7430DBBA7DADE63CE982299E04B79D227873D1",
    ),
    3: (
        "5ECBE4D1A6330A44C8F7EF951D4BF165E6C6B721EFADA985FB41661BC6E7FD6C",
        "8734640C4998FF7E374B06CE1A64A2ECD82AB036384FB83D9A79B127A27D5032",
    ),
    4: (
        "E2534A3532D08FBBA02DDE659EE62BD0031FE2DB785596EF509302446B030852",
        "E0F1575A4C633CC719DFEE5FDA862D764EFC96C3F30EE0055C42C23F184ED8C6",
    ),
    5: (
        "51590B7A515140D2D784C85608668FDFEF8C82FD1F5BE52421554A0DC3D033ED",
        "E0C17DA8904A727D8AE1BF36BF8A79260D012F00D4D80888D1D0BB44FDA16DA4",
    ),
    6: (
        "B01A172A76A4602C92D3242CB897DDE3024C740DEBB215B4C6B0AAE93C2291A9",
        "E85C10743237DAD56FEC0E2DFBA703791C00F7701C7E16BDFD7C48538FC77FE2",
    ),
    7: (
        "8E533B6FA0BF7B4625BB30667C01FB607EF9F8B8A80FEF5B300628703187B2A3",
        "73EB1DBDE03318366D069F83A6F5900053C73633CB041B21C55E1A86C1F400B4",
    ),
    8: (
        "62D9779DBEE9B0534042742D3AB54CADC1D238980FCE97DBB4DD9DC1DB6FB393",
        "AD5ACCBD91E9D8244FF15D771167CEE0A2ED51F6BBE76A78DA540A6A0F09957E",
    ),
    9: (
        "EA68D7B6FEDF0B71878938D51D71F8729E0ACB8C2C6DF8B3D79E8A4B90949EE0",
        "2A2744C972C9FCE787014A964A8EA0C84D714FEAA4DE823FE85A224A4DD048FA",
    ),
    10: (
        "CEF66D6B2A3A993E591214D1EA223FB545CA6C471C48306E4C36069404C5723F",
        "878662A229AAAE906E123CDD9D3B4C10590DED29FE751EEECA34BBAA44AF0773",
    ),
    11: (
        "3ED113B7883B4C590638379DB0C21CDA16742ED0255048BF433391D374BC21D1",
        "9099209ACCC4C8A224C843AFA4F4C68A090D04DA5E9889DAE2F8EEFCE82A3740",
    ),
    12: (
        "741DD5BDA817D95E4626537320E5D55179983028B2F82C99D500C5EE8624E3C4",
        "0770B46A9C385FDC567383554887B1548EEB912C35BA5CA71995FF22CD4481D3",
    ),
    13: (
        "177C837AE0AC495A61805DF2D85EE2FC792E284B65EAD58A98E15D9D46072C01",
        "63BB58CD4EBEA558A24091ADB40F4E7226EE14C3A1FB4DF39C43BBE2EFC7BFD8",
    ),
    14: (
        "54E77A001C3862B97A76647F4336DF3CF126ACBE7A069C5E5709277324D2920B",
        "F599F1BB29F4317542121F8C05A2E7C37171EA77735090081BA7C82F60D0B375",
    ),
    15: (
        "F0454DC6971ABAE7ADFB378999888265AE03AF92DE3A0EF163668C63E59B9D5F",
        "B5B93EE3592E2D1F4E6594E51F9643E62A3B21CE75B5FA3F47E59CDE0D034F36",
    ),
    16: (
        "76A94D138A6B41858B821C629836315FCD28392EFF6CA038A5EB4787E1277C6E",
        "A985FE61341F260E6CB0A1B5E11E87208599A0040FC78BAA0E9DDD724B8C5110",
    ),
    17: (
        "47776904C0F1CC3A9C0984B66F75301A5FA68678F0D64AF8BA1ABCE34738A73E",
        "AA005EE6B5B957286231856577648E8381B2804428D5733F32F787FF71F1FCDC",
    ),
    18: (
        "1057E0AB5780F470DEFC9378D1C7C87437BB4C6F9EA55C63D936266DBD781FDA",
        "F6F1645A15CBE5DC9FA9B7DFD96EE5A7DCC11B5C5EF4F1F78D83B3393C6A45A2",
    ),
    19: (
        "CB6D2861102C0C25CE39B7C17108C507782C452257884895C1FC7B74AB03ED83",
        "58D7614B24D9EF515C35E7100D6D6CE4A496716E30FA3E03E39150752BCECDAA",
    ),
    20: (
        "83A01A9378395BAB9BCD6A0AD03CC56D56E6B19250465A94A234DC4C6B28DA9A",
        "76E49B6DE2F73234AE6A5EB9D612B75C9F2202BB6923F54FF8240AAA86F640B8",
    ),
    112233445566778899: (
        "339150844EC15234807FE862A86BE77977DBFB3AE3D96F4C22795513AEAAB82F",
        "B1C14DDFDC8EC1B2583F51E85A5EB3A155840F2034730E9B5ADA38B674336A21",
    ),
    112233445566778899112233445566778899: (
        "1B7E046A076CC25E6D7FA5003F6729F665CC3241B5ADAB12B498CD32F2803264",
        "BFEA79BE2B666B073DB69A2A241ADAB0738FE9D2DD28B5604EB8C8CF097C457B",
    ),
    ORDER - 1: (
        "6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296",
        "B01CBD1C01E58065711814B583F061E9D431CCA994CEA1313449BF97C840AE0A",
    ),
}


def _point(k: int) -> tuple[int, int]:
    x, y = NIST_MULTIPLES[k]
    return int(x, 16), int(y, 16)


def _affine(point: tuple[int, int, int]) -> tuple[int, int] | None:
    x, y, z = point
    if z == 0:
        return None
    p = vss._P
    inverse = pow(z, -1, p)
    return x * inverse * inverse % p, y * inverse * inverse * inverse % p


def _counter_source(seed: int = 0) -> Callable[[int], bytes]:
    """A deterministic stand-in for os.urandom (tests only)."""
    counter = itertools.count(seed)
    return lambda n: next(counter).to_bytes(n, "big")


# -- the group, against published data ------------------------------------------------------


@pytest.mark.parametrize("k", sorted(NIST_MULTIPLES))
def test_nist_multiples_pure_python(k: int) -> None:
    assert vss._is_on_curve(*_point(k))
    assert _affine(vss._multiply(k, (*_GENERATOR, 1))) == _point(k)


@pytest.mark.parametrize("k", sorted(NIST_MULTIPLES))
def test_nist_multiples_openssl_base_point(k: int) -> None:
    assert vss._base_multiply(k) == _point(k)


def test_successive_additions_walk_the_nist_table() -> None:
    running = (*_GENERATOR, 1)
    for k in range(2, 21):
        running = vss._add_affine(running, _GENERATOR)
        assert _affine(running) == _point(k)
        assert _affine(vss._add(vss._multiply(k - 1, (*_GENERATOR, 1)), (*_GENERATOR, 1))) == (
            _point(k)
        )


def test_group_order_and_exceptional_cases() -> None:
    generator = (*_GENERATOR, 1)
    assert vss._multiply(ORDER, generator)[2] == 0
    minus_g = (*_point(ORDER - 1), 1)
    assert vss._add(generator, minus_g)[2] == 0
    assert vss._add_affine(generator, _point(ORDER - 1))[2] == 0
    assert _affine(vss._add(generator, generator)) == _point(2)
    assert vss._add(vss._INFINITY, generator) == generator
    assert vss._add(generator, vss._INFINITY) == generator
    assert vss._base_multiply(ORDER) is None
    assert vss._equals_affine(vss._INFINITY, None)
    assert not vss._equals_affine(generator, None)


@settings(max_examples=20, deadline=None)
@given(
    st.lists(st.integers(1, ORDER - 1), min_size=1, max_size=4),
    st.lists(st.integers(0, ORDER - 1), min_size=1, max_size=4),
)
def test_multi_multiply_matches_openssl(ks: list[int], points: list[int]) -> None:
    bases = [vss._base_multiply(p) or _GENERATOR for p in points]
    terms = list(zip(ks, bases, strict=False))
    expected = sum(k * (p or 1) for k, p in zip(ks, points, strict=False)) % ORDER
    assert _affine(vss._multi_multiply(terms)) == vss._base_multiply(expected)


def test_known_answer_deal() -> None:
    """Hand-checkable: secret 1, coefficient 3 => C = (G, 3G), shares y(x) = 1 + 3x."""
    secret = (1).to_bytes(32, "big")
    commitment, shares = deal(
        secret, threshold=2, holders=[0, 1, 4], random_bytes=lambda n: (2).to_bytes(n, "big")
    )
    assert commitment.points == (_point(1), _point(3))
    assert commitment.carry == 0
    assert {h: s.y for h, s in shares.items()} == {0: 4, 1: 7, 4: 16}
    assert commitment.to_bytes() == (
        bytes.fromhex("01" + "00" + "00000002")
        + b"".join(
            b"\x04" + bytes.fromhex(x + y) for x, y in (NIST_MULTIPLES[1], NIST_MULTIPLES[3])
        )
    )
    assert commitment.constant_term() == b"\x04" + bytes.fromhex("".join(NIST_MULTIPLES[1]))
    assert shares[4].to_bytes() == (5).to_bytes(4, "big") + (16).to_bytes(32, "big")


# -- round trips -----------------------------------------------------------------------------


@pytest.mark.parametrize(("threshold", "n"), [(1, 1), (1, 3), (2, 3), (7, 10), (67, 100)])
def test_round_trip(threshold: int, n: int) -> None:
    secret = os.urandom(32)
    commitment, shares = deal(secret, threshold=threshold, holders=list(range(n)))
    assert commitment.threshold == threshold
    assert Commitment.from_bytes(commitment.to_bytes()) == commitment
    assert len(commitment.to_bytes()) == commitment_bytes(threshold)
    for holder, share in shares.items():
        verify_share(commitment, share, threshold=threshold, holder=holder)
        assert Share.from_bytes(share.to_bytes()) == share
    result = reconstruct(commitment, shares, threshold=threshold)
    assert result.secret == secret
    assert result.rejected == ()
    # Any threshold shares suffice: the highest ones, too.
    top = dict(sorted(shares.items())[-threshold:])
    assert reconstruct(commitment, top, threshold=threshold).secret == secret


@settings(max_examples=25, deadline=None)
@given(st.data())
def test_round_trip_property(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 10))
    threshold = data.draw(st.integers(1, n))
    holders = data.draw(st.lists(st.integers(0, 2**16 - 1), min_size=n, max_size=n, unique=True))
    secret = data.draw(
        st.binary(min_size=32, max_size=32).filter(lambda s: int(s.hex(), 16) % ORDER)
    )
    commitment, shares = deal(secret, threshold=threshold, holders=holders)
    bad = data.draw(st.sets(st.sampled_from(holders), max_size=n - threshold))
    returned = {h: Share(s.x, (s.y + 1) % ORDER) if h in bad else s for h, s in shares.items()}
    result = reconstruct(commitment, returned, threshold=threshold)
    assert result.secret == secret
    assert result.rejected == tuple(sorted(bad))


def test_secrets_at_or_above_the_group_order_carry_one_bit() -> None:
    for secret in (b"\xff" * 32, ORDER.to_bytes(32, "big")[:-1] + b"\x52"):
        commitment, shares = deal(secret, threshold=2, holders=[0, 1, 2])
        assert commitment.carry == 1
        assert reconstruct(commitment, shares, threshold=2).secret == secret
    commitment, _ = deal((ORDER - 1).to_bytes(32, "big"), threshold=1, holders=[0])
    assert commitment.carry == 0


def test_shared_p256_private_key_commits_to_its_public_key() -> None:
    """With the fips-p256 suite a holder can check C_0 against the dealer's advertised key."""
    key = get_suite("fips-p256").generate_agreement_key()
    commitment, _ = deal(key.secret_bytes_for_sharing(), threshold=3, holders=range(5))
    assert commitment.carry == 0
    assert commitment.constant_term() == key.public_key().to_bytes()


# -- corrupted shares ------------------------------------------------------------------------


def _corruptions(share: Share) -> list[Share]:
    """Every kind of single-share tampering: value changes and another holder's x."""
    other_x = share.x % 10 + 1
    return [
        Share(share.x, (share.y + 1) % ORDER),
        Share(share.x, (share.y - 1) % ORDER),
        Share(share.x, share.y ^ 1),
        Share(share.x, 0),
        Share(other_x, share.y),
    ]


def test_every_single_share_corruption_is_detected_and_named() -> None:
    secret = os.urandom(32)
    commitment, shares = deal(secret, threshold=7, holders=range(10))
    for holder, share in shares.items():
        for bad in _corruptions(share):
            with pytest.raises(InvalidShare):
                verify_share(commitment, bad, holder=holder)
            result = reconstruct(commitment, {**shares, holder: bad}, threshold=7)
            assert result.secret == secret
            assert result.rejected == (holder,)


def test_a_returned_value_that_is_not_a_share_is_rejected_by_holder() -> None:
    commitment, shares = deal(os.urandom(32), threshold=2, holders=range(3))
    returned: dict[int, object] = {**shares, 1: b"junk"}
    result = reconstruct(commitment, returned, threshold=2)  # type: ignore[arg-type]
    assert result.rejected == (1,)


@pytest.mark.parametrize(
    "bad",
    [(0, 1, 2), (7, 8, 9), (0, 5, 9)],
    ids=["lowest", "highest", "spread"],
)
def test_up_to_n_minus_t_corrupted_shares(bad: tuple[int, ...]) -> None:
    secret = os.urandom(32)
    commitment, shares = deal(secret, threshold=7, holders=range(10))
    returned = {h: Share(s.x, (s.y + 7) % ORDER) if h in bad else s for h, s in shares.items()}
    result = reconstruct(commitment, returned, threshold=7)
    assert result.secret == secret
    assert result.rejected == bad
    one_more = {**returned, 3: Share(4, (shares[3].y + 1) % ORDER)}
    with pytest.raises(NotEnoughValidShares) as caught:
        reconstruct(commitment, one_more, threshold=7)
    assert caught.value.rejected == tuple(sorted({*bad, 3}))


def test_batch_path_at_n_100_names_all_33_bad_holders() -> None:
    secret = os.urandom(32)
    commitment, shares = deal(secret, threshold=67, holders=range(100))
    assert vss._batch_pays(67, list(shares.values()))
    bad = tuple(range(0, 99, 3))  # 33 holders
    returned = {h: Share(s.x, (s.y + 1) % ORDER) if h in bad else s for h, s in shares.items()}
    assert not vss._batch_is_valid(commitment, list(returned.values()), os.urandom)
    result = reconstruct(commitment, returned, threshold=67)
    assert result.secret == secret
    assert result.rejected == bad


def test_fewer_than_t_shares() -> None:
    commitment, shares = deal(os.urandom(32), threshold=3, holders=range(5))
    with pytest.raises(NotEnoughValidShares) as caught:
        reconstruct(commitment, {0: shares[0], 1: shares[1]}, threshold=3)
    assert caught.value.rejected == ()


# -- inconsistent dealers --------------------------------------------------------------------


def test_shares_off_the_committed_polynomial_are_detected_by_their_holders() -> None:
    secret = os.urandom(32)
    commitment, shares = deal(secret, threshold=3, holders=range(5))
    _, other_shares = deal(secret, threshold=3, holders=range(5))  # same secret, new polynomial
    for holder in range(5):
        verify_share(commitment, shares[holder], threshold=3, holder=holder)
        with pytest.raises(InvalidShare):
            verify_share(commitment, other_shares[holder], threshold=3, holder=holder)


def test_a_commitment_to_another_secret_is_detected_by_every_holder() -> None:
    _, shares = deal(os.urandom(32), threshold=3, holders=range(5))
    other, _ = deal(os.urandom(32), threshold=3, holders=range(5))
    for holder, share in shares.items():
        with pytest.raises(InvalidShare):
            verify_share(other, share, threshold=3, holder=holder)


def test_a_commitment_of_the_wrong_degree_is_the_dealers_fault() -> None:
    commitment, shares = deal(os.urandom(32), threshold=4, holders=range(5))
    with pytest.raises(InvalidCommitment):
        verify_share(commitment, shares[0], threshold=3, holder=0)
    with pytest.raises(InvalidCommitment):
        reconstruct(commitment, shares, threshold=3)


def test_another_holders_point_is_refused_on_receipt() -> None:
    commitment, shares = deal(os.urandom(32), threshold=2, holders=range(3))
    verify_share(commitment, shares[1])  # a valid point of the polynomial ...
    with pytest.raises(InvalidShare):
        verify_share(commitment, shares[1], holder=0)  # ... but not holder 0's


def test_a_lying_carry_is_caught_at_reconstruction() -> None:
    secret = os.urandom(31).rjust(32, b"\xf0")  # a_0 >= 2**256 - n, so a_0 + n has 257 bits
    commitment, shares = deal(secret, threshold=2, holders=range(3))
    lying = Commitment(commitment.points, carry=1)
    for holder, share in shares.items():
        verify_share(lying, share, holder=holder)  # the polynomial itself is consistent
    with pytest.raises(InvalidCommitment):
        reconstruct(lying, shares, threshold=2)


# -- bad arguments and decoders --------------------------------------------------------------


@pytest.mark.parametrize(
    ("secret", "threshold", "holders"),
    [
        (b"\x01" * 31, 1, [0]),
        (b"\x00" * 32, 1, [0]),
        (ORDER.to_bytes(32, "big"), 1, [0]),
        (b"\x01" * 32, 0, [0]),
        (b"\x01" * 32, 2, [0]),
        (b"\x01" * 32, 1, [0, 0]),
        (b"\x01" * 32, 1, [-1]),
        (b"\x01" * 32, 1, [2**16]),
        (b"\x01" * 32, True, [0]),
    ],
)
def test_deal_refuses_bad_arguments(secret: bytes, threshold: int, holders: list[int]) -> None:
    with pytest.raises(ConfigError):
        deal(secret, threshold=threshold, holders=holders)


def test_deal_refuses_a_short_random_source() -> None:
    with pytest.raises(ConfigError):
        deal(b"\x01" * 32, threshold=2, holders=[0, 1], random_bytes=lambda n: b"\x00")


def test_deal_is_deterministic_given_its_random_source() -> None:
    first = deal(b"\x07" * 32, threshold=3, holders=range(4), random_bytes=_counter_source())
    second = deal(b"\x07" * 32, threshold=3, holders=range(4), random_bytes=_counter_source())
    assert first == second


def test_reconstruct_refuses_bad_arguments() -> None:
    commitment, shares = deal(os.urandom(32), threshold=2, holders=range(3))
    with pytest.raises(ConfigError):
        reconstruct(commitment, shares, threshold=0)
    with pytest.raises(ConfigError):
        reconstruct(commitment, {"0": shares[0], 1: shares[1]}, threshold=2)  # type: ignore[dict-item]
    with pytest.raises(InvalidCommitment):
        reconstruct(b"commitment", shares, threshold=2)  # type: ignore[arg-type]
    with pytest.raises(InvalidCommitment):
        verify_share(b"commitment", shares[0])  # type: ignore[arg-type]
    with pytest.raises(InvalidShare):
        verify_share(commitment, shares[0].to_bytes())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "points",
    [
        (),
        ((_GENERATOR[0], _GENERATOR[1] + 1),),
        ((_GENERATOR[0] + vss._P, _GENERATOR[1]),),
        ((True, 1),),
        ((1,),),
    ],
)
def test_commitment_construction_validates_points(points: tuple[tuple[int, ...], ...]) -> None:
    with pytest.raises(InvalidCommitment):
        Commitment(points)  # type: ignore[arg-type]


def test_commitment_construction_validates_the_carry() -> None:
    with pytest.raises(InvalidCommitment):
        Commitment((_GENERATOR,), carry=2)


@pytest.mark.parametrize(("x", "y"), [(0, 1), (2**16 + 1, 1), (1, ORDER), (1, -1), (True, 1)])
def test_share_construction_validates(x: int, y: int) -> None:
    with pytest.raises(InvalidShare):
        Share(x, y)


def _valid_encoding() -> bytes:
    commitment, _ = deal(
        b"\x42" * 32, threshold=3, holders=range(3), random_bytes=_counter_source()
    )
    return commitment.to_bytes()


def test_commitment_decoder_rejects_each_kind_of_bad_input() -> None:
    good = _valid_encoding()
    bad_inputs = [
        b"",
        good[:-1],
        good + b"\x00",
        b"\x02" + good[1:],  # version
        good[:1] + b"\x02" + good[2:],  # carry
        good[:2] + (4).to_bytes(4, "big") + good[6:],  # count disagrees with length
        good[:6] + b"\x02" + good[7:],  # compressed-point prefix
        good[:6] + b"\x04" + vss._P.to_bytes(32, "big") + good[39:],  # x >= p
        good[:6] + b"\x04" + bytes(64) + good[71:],  # (0, 0) is not on the curve
        good[:-1] + bytes([good[-1] ^ 1]),  # off the curve
        bytearray(good),
    ]
    for data in bad_inputs:
        with pytest.raises(InvalidCommitment):
            Commitment.from_bytes(data)  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_commitment_decoder_fuzz_only_typed_errors(data: bytes) -> None:
    with contextlib.suppress(InvalidCommitment):
        Commitment.from_bytes(data)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 3 * 65 + 5), st.integers(1, 255))
def test_commitment_decoder_fuzz_single_byte_flips(position: int, flip: int) -> None:
    data = bytearray(_valid_encoding())
    data[position] ^= flip
    try:
        decoded = Commitment.from_bytes(bytes(data))
    except InvalidCommitment:
        return
    assert decoded.to_bytes() == bytes(data)  # whatever decodes is canonical


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2 * SHARE_BYTES))
def test_share_decoder_fuzz_only_typed_errors(data: bytes) -> None:
    try:
        share = Share.from_bytes(data)
    except InvalidShare:
        return
    assert share.to_bytes() == data
