"""Key derivation: documented layout, domain separation, purpose enforcement (DESIGN R3, R4)."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import os

import pytest

from securefed.crypto import (
    Aead,
    KdfContext,
    KeyPurpose,
    KeyStream,
    derive_channel_key,
    derive_directional_key,
    derive_pairwise_key,
    derive_stream_key,
    get_suite,
)
from securefed.errors import ConfigError

SUITE = get_suite("default")
SEED = bytes(range(100, 132))
CONTEXT = KdfContext(bytes(range(32)), 7)


def _hkdf_sha256(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    """RFC 5869 written out from hmac, independent of the code under test (one output block)."""
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()


def test_stream_key_matches_documented_layout() -> None:
    salt = CONTEXT.session_id + (7).to_bytes(8, "big")
    info = (
        b"securefed/v1/mask\x00"
        + b"\x07default"
        + salt
        + b"\x00\x04seed"
        + b"\x00\x04"
        + (3).to_bytes(4, "big")
    )
    key = derive_stream_key(SUITE, SEED, purpose=KeyPurpose.MASK, context=CONTEXT, target=3)
    assert key.material == _hkdf_sha256(SEED, salt, info)


def test_stream_key_known_answer() -> None:
    """Own vector: catches any change of the derivation layout or the PRG."""
    key = derive_stream_key(SUITE, SEED, purpose=KeyPurpose.MASK, context=CONTEXT, target=3)
    assert key.material.hex() == "545caa7029429d516fb0b749bc2dc0ac698dc284f2acb155339db73f7417938c"
    words = KeyStream(key).words(6)
    assert words.tolist() == [524600149, 2639848101, 1158899956, 895323406, 772827808, 116522274]


def test_suite_is_bound_into_every_key() -> None:
    fips = get_suite("fips-p256")
    a = derive_stream_key(SUITE, SEED, purpose=KeyPurpose.MASK, context=CONTEXT, target=3)
    b = derive_stream_key(fips, SEED, purpose=KeyPurpose.MASK, context=CONTEXT, target=3)
    assert a.material != b.material


def test_distinct_keys_across_purposes_targets_rounds_sessions() -> None:
    stream_purposes = [p for p in KeyPurpose if p.kind.value == "stream"]
    contexts = [CONTEXT, KdfContext(CONTEXT.session_id, 8), KdfContext(bytes(32), 7)]
    keys = {
        derive_stream_key(SUITE, SEED, purpose=p, context=c, target=t).material
        for p, c, t in itertools.product(stream_purposes, contexts, [None, 0, 1, 2**32 - 1])
    }
    assert len(keys) == len(stream_purposes) * len(contexts) * 4


def test_pairwise_key_is_symmetric_and_directional_key_is_not() -> None:
    alice, bob = SUITE.generate_agreement_key(), SUITE.generate_agreement_key()
    ab, ba = alice.exchange(bob.public_key()), bob.exchange(alice.public_key())
    common = {"purpose": KeyPurpose.MASK, "context": CONTEXT, "target": 5}
    assert derive_pairwise_key(ab, pair=(1, 2), **common) == derive_pairwise_key(
        ba, pair=(2, 1), **common
    )
    assert derive_pairwise_key(ab, pair=(1, 2), **common) != derive_pairwise_key(
        ab, pair=(1, 3), **common
    )

    def direction(secret, sender, recipient, s_pub, r_pub):  # type: ignore[no-untyped-def]
        return derive_directional_key(
            secret,
            purpose=KeyPurpose.SHARE,
            context=CONTEXT,
            sender=sender,
            recipient=recipient,
            sender_public=s_pub,
            recipient_public=r_pub,
        )

    a_to_b = direction(ab, 1, 2, alice.public_key(), bob.public_key())
    assert a_to_b == direction(ba, 1, 2, alice.public_key(), bob.public_key())
    assert a_to_b != direction(ba, 2, 1, bob.public_key(), alice.public_key())
    # Bound to the public keys: a key substitution changes the key.
    mallory = SUITE.generate_agreement_key().public_key()
    assert a_to_b != direction(ab, 1, 2, mallory, bob.public_key())


def test_a_key_serves_one_kind_only() -> None:
    stream_key = derive_stream_key(SUITE, SEED, purpose=KeyPurpose.SELF, context=CONTEXT)
    with pytest.raises(ConfigError, match="cannot be used as a aead key"):
        Aead(stream_key)
    alice, bob = SUITE.generate_agreement_key(), SUITE.generate_agreement_key()
    share_key = derive_directional_key(
        alice.exchange(bob.public_key()),
        purpose=KeyPurpose.SHARE,
        context=CONTEXT,
        sender=0,
        recipient=1,
        sender_public=alice.public_key(),
        recipient_public=bob.public_key(),
    )
    with pytest.raises(ConfigError, match="cannot be used as a stream key"):
        KeyStream(share_key)
    with pytest.raises(ConfigError, match="not a stream purpose"):
        derive_stream_key(SUITE, SEED, purpose=KeyPurpose.SHARE, context=CONTEXT)


@pytest.mark.parametrize(
    ("session_id", "round_"),
    [
        (bytes(31), 0),
        (bytes(33), 0),
        ("x" * 32, 0),
        (bytes(32), -1),
        (bytes(32), 2**63),
        (bytes(32), True),
    ],
)
def test_context_validation(session_id: bytes, round_: int) -> None:
    with pytest.raises(ConfigError):
        KdfContext(session_id, round_)


def test_derivation_argument_validation() -> None:
    with pytest.raises(ConfigError):
        derive_stream_key(SUITE, bytes(16), purpose=KeyPurpose.MASK, context=CONTEXT)
    with pytest.raises(ConfigError):
        derive_stream_key(SUITE, SEED, purpose="mask", context=CONTEXT)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        derive_stream_key(SUITE, SEED, purpose=KeyPurpose.MASK, context=CONTEXT, target=-1)
    secret = SUITE.generate_agreement_key().exchange(SUITE.generate_agreement_key().public_key())
    with pytest.raises(ConfigError):
        derive_pairwise_key(secret, purpose=KeyPurpose.MASK, context=CONTEXT, pair=(4, 4))


def test_derived_key_repr_hides_material() -> None:
    key = derive_stream_key(SUITE, os.urandom(32), purpose=KeyPurpose.DITHER, context=CONTEXT)
    assert key.material.hex() not in repr(key)
    assert "material" not in repr(key)


def test_channel_keys_agree_per_direction_from_both_ends() -> None:
    alice, bob = SUITE.generate_agreement_key(), SUITE.generate_agreement_key()
    a, b = (0, alice.public_key()), (1, bob.public_key())
    common = {"purpose": KeyPurpose.SHARE, "context": CONTEXT}
    a_out = derive_channel_key(
        alice.exchange(bob.public_key()), own=a, peer=b, outgoing=True, **common
    )
    b_in = derive_channel_key(
        bob.exchange(alice.public_key()), own=b, peer=a, outgoing=False, **common
    )
    b_out = derive_channel_key(
        bob.exchange(alice.public_key()), own=b, peer=a, outgoing=True, **common
    )
    assert a_out == b_in
    assert a_out != b_out
