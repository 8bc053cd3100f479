"""DitherStream: only DITHER keys, 32-bit uniforms, independent of every mask stream (R4, R7)."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from securefed.crypto import (
    KdfContext,
    KeyKind,
    KeyPurpose,
    KeyStream,
    derive_pairwise_key,
    derive_stream_key,
)
from securefed.crypto.suites import CipherSuite
from securefed.encoding import DitherStream, dither_stream
from securefed.errors import ConfigError

MakeDither = Callable[..., DitherStream]
SEED = bytes(range(100, 132))


@pytest.mark.parametrize("purpose", [p for p in KeyPurpose if p.kind is KeyKind.STREAM])
def test_only_dither_keys_make_a_dither_stream(
    purpose: KeyPurpose, suite: CipherSuite, context: KdfContext
) -> None:
    key = derive_stream_key(suite, SEED, purpose=purpose, context=context)
    if purpose is KeyPurpose.DITHER:
        DitherStream(key)
    else:
        with pytest.raises(ConfigError, match="DITHER"):
            DitherStream(key)


def test_aead_keys_and_non_keys_are_refused(suite: CipherSuite, context: KdfContext) -> None:
    secret_owner = suite.generate_agreement_key()
    peer = suite.generate_agreement_key()
    shared = secret_owner.exchange(peer.public_key())
    share_key = derive_pairwise_key(shared, purpose=KeyPurpose.SHARE, context=context, pair=(0, 1))
    for bad in (share_key, SEED, None):
        with pytest.raises(ConfigError):
            DitherStream(bad)  # type: ignore[arg-type]


def test_uniforms_are_the_32_bit_words_of_the_dither_keystream(
    suite: CipherSuite, context: KdfContext
) -> None:
    key = derive_stream_key(suite, SEED, purpose=KeyPurpose.DITHER, context=context, target=4)
    words = KeyStream(key).words(1000, np.uint32)
    expected = words.astype(np.float64) * 2.0**-32
    uniforms = dither_stream(suite, SEED, context=context, target=4).uniforms(1000)
    assert np.array_equal(uniforms, expected)
    assert uniforms.dtype == np.float64
    assert np.all((uniforms >= 0.0) & (uniforms < 1.0))
    assert np.all(uniforms * 2.0**32 == np.floor(uniforms * 2.0**32))  # on the 2**-32 grid
    raw = np.empty(1000, dtype=np.uint32)
    dither_stream(suite, SEED, context=context, target=4).fill_words(raw)
    assert np.array_equal(raw, words)


def test_dither_differs_from_masks_of_the_same_seed_and_context(
    suite: CipherSuite, context: KdfContext
) -> None:
    uniforms = dither_stream(suite, SEED, context=context).uniforms(64)
    for purpose in (KeyPurpose.MASK, KeyPurpose.SELF, KeyPurpose.TARGET, KeyPurpose.SKETCH):
        key = derive_stream_key(suite, SEED, purpose=purpose, context=context)
        mask_uniforms = KeyStream(key).words(64, np.uint32) * 2.0**-32
        assert np.count_nonzero(uniforms == mask_uniforms) == 0


def test_uniforms_advance_and_split_like_one_stream(make_dither: MakeDither) -> None:
    whole = make_dither().uniforms(300)
    pieces = make_dither()
    parts = [pieces.uniforms(n) for n in (0, 1, 99, 200)]
    assert pieces.position == 4 * 300
    assert np.array_equal(np.concatenate(parts), whole)


@pytest.mark.parametrize("count", [-1, 1.5, True, "3"])
def test_uniform_count_is_validated(count: object, make_dither: MakeDither) -> None:
    stream = make_dither()
    with pytest.raises(ConfigError):
        stream.uniforms(count)  # type: ignore[arg-type]
    assert stream.position == 0


def test_uniforms_look_uniform(make_dither: MakeDither) -> None:
    """A sanity check of the mapping, not of AES: mean and variance within 6 standard errors."""
    n = 100_000
    uniforms = make_dither(5).uniforms(n)
    assert abs(uniforms.mean() - 0.5) <= 6 * math.sqrt(1 / 12 / n)
    # Var of U^2 is 4/45, so the sample mean of U^2 has standard error sqrt(4/45/n).
    assert abs(np.mean(uniforms**2) - 1 / 3) <= 6 * math.sqrt(4 / 45 / n)


def test_dither_stream_needs_a_full_seed(suite: CipherSuite, context: KdfContext) -> None:
    with pytest.raises(ConfigError):
        dither_stream(suite, bytes(16), context=context)


def test_a_dither_stream_opened_at_a_position_continues_the_same_stream(
    suite: CipherSuite, context: KdfContext
) -> None:
    key = derive_stream_key(suite, SEED, purpose=KeyPurpose.DITHER, context=context)
    whole = DitherStream(key).uniforms(50)
    assert np.array_equal(DitherStream(key, start=20).uniforms(30), whole[20:])
