"""The masking plan: the single implementation of which masks apply, with which sign, to what.

Client and server both import this module; nothing else derives a mask key or decides a sign.

A round produces a list of *outputs*. Each output has an optional target and a contributor set that
is always derived from the one signed survivor set U3 (R2): ``contributors = U3 - {target}``.
Never is a contributor set sent or chosen separately, so the server cannot call a client "dropped"
for one output and "alive" for another. In ``sum`` mode there is one output with no target; the
personalized modes (a later issue) add one output per target on this same plan.

For output ``o``, client ``u`` sends::

    enc(x_u) + PRG(K_self(b_u, o)) + sum over peers v in U2 of sign(u, v) * PRG(K_mask(s_uv, o))

with ``sign(u, v) = +1 if u < v else -1`` and keys from :mod:`securefed.crypto.kdf` (purposes
``SELF`` and ``MASK``, bound to session, round and the output's target). The pairwise terms cancel
in the sum over contributors; the server removes the self masks of survivors and the pairwise
masks that dropped clients left behind.

Both roles compute in one fused pass over cache-sized blocks (encode or sum a block, then add or
subtract every keystream's block while it is in cache), split into contiguous ranges that run on
all cores; each range opens its streams at its own position, so the result is bit-identical to a
sequential computation.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from securefed.crypto import (
    AgreementPublicKey,
    DerivedKey,
    KeyPurpose,
    KeyStream,
    SharedSecret,
    derive_directional_key,
    derive_pairwise_key,
    derive_stream_key,
)
from securefed.crypto.prg import add_streams
from securefed.encoding import DitherStream, FixedPointCodec
from securefed.parallel import run_all, split_range
from securefed.secagg.config import AggregationMode, RoundConfig
from securefed.secagg.wire import Writer

__all__ = [
    "MaskTerm",
    "Output",
    "encode_and_mask",
    "pairwise_sign",
    "round_outputs",
    "self_seed_commitment",
    "target_pad",
    "unmask_sum",
]

RingArray = npt.NDArray[np.unsignedinteger[Any]]
# Words per block: a block and the keystream added to it stay in L2 cache.
BLOCK_WORDS = 1 << 17
# Below this many words per range, another thread costs more than it saves.
MIN_RANGE_WORDS = 1 << 18


@dataclass(frozen=True, slots=True)
class Output:
    """One aggregate of the round. ``target`` is None for the plain sum."""

    target: int | None = None

    def contributors(self, survivors: Sequence[int]) -> tuple[int, ...]:
        """Contributors of this output: the survivor set minus the target (R2)."""
        return tuple(sorted(u for u in survivors if u != self.target))


def round_outputs(config: RoundConfig, members: Sequence[int]) -> tuple[Output, ...]:
    """The outputs a round in ``config.mode`` produces over ``members`` (U2 on the client side,
    U3 on the server side): one plain sum, or one output per target in attention mode."""
    if config.mode is AggregationMode.SUM:
        return (Output(),)
    return tuple(Output(target) for target in sorted(members))


def target_pad(
    config: RoundConfig,
    secret: SharedSecret,
    *,
    sender: int,
    recipient: int,
    sender_public: AgreementPublicKey,
    recipient_public: AgreementPublicKey,
    sign: int,
) -> MaskTerm:
    """PRG(tau_{sender -> recipient}): the pad contributor ``sender`` adds to its input for target
    ``recipient`` (DESIGN §4c). Directional, fresh every round, never Shamir-shared: unmasking
    leaves it in place, and only the target can compute it to remove it (``sign=-1``)."""
    key = derive_directional_key(
        secret,
        purpose=KeyPurpose.TARGET,
        context=config.kdf_context,
        sender=sender,
        recipient=recipient,
        sender_public=sender_public,
        recipient_public=recipient_public,
    )
    return MaskTerm(key, sign)


def pairwise_sign(owner: int, peer: int) -> int:
    """+1 if ``owner`` adds the pairwise mask it shares with ``peer``, -1 if it subtracts it."""
    return 1 if owner < peer else -1


def self_seed_commitment(config: RoundConfig, owner: int, seed: bytes) -> bytes:
    """SHA-256 commitment to a self-mask seed, bound to session, round and owner."""
    w = Writer().blob(b"securefed/v1/self-seed-commitment").fixed(config.session_id, 32)
    w.u64(config.round).u32(owner).fixed(seed, 32)
    return hashlib.sha256(w.getvalue()).digest()


@dataclass(frozen=True, slots=True)
class MaskTerm:
    """One keystream and the sign with which it enters a vector."""

    key: DerivedKey
    sign: int


def self_mask(config: RoundConfig, seed: bytes, output: Output, *, sign: int) -> MaskTerm:
    """The self mask PRG(K_self(seed, output)) with ``sign``."""
    key = derive_stream_key(
        config.suite,
        seed,
        purpose=KeyPurpose.SELF,
        context=config.kdf_context,
        target=output.target,
    )
    return MaskTerm(key, sign)


def pairwise_mask(
    config: RoundConfig, secret: SharedSecret, *, owner: int, peer: int, output: Output, undo: bool
) -> MaskTerm:
    """The mask ``owner`` applies for ``peer`` (``undo``: the term that cancels it)."""
    key = derive_pairwise_key(
        secret,
        purpose=KeyPurpose.MASK,
        context=config.kdf_context,
        pair=(owner, peer),
        target=output.target,
    )
    sign = pairwise_sign(owner, peer)
    return MaskTerm(key, -sign if undo else sign)


def dither_key(config: RoundConfig, seed: bytes, output: Output) -> DerivedKey:
    """The key of the stochastic-rounding stream of one output (never a mask key: R7)."""
    return derive_stream_key(
        config.suite,
        seed,
        purpose=KeyPurpose.DITHER,
        context=config.kdf_context,
        target=output.target,
    )


BlockFill = Callable[[int, int], None]


def _masked_pass(
    out: RingArray, terms: Sequence[MaskTerm], fill_factory: Callable[[int], BlockFill]
) -> None:
    """``out[block] = fill(block) +- every term's keystream`` over all blocks, in parallel ranges.

    ``fill_factory(start)`` returns the block filler of the range beginning at ``start`` (so that
    range-local state, like a dither stream position, is opened once per range).
    """

    def run(start: int, stop: int) -> None:
        offset = start * out.itemsize
        streams = [(term.sign, KeyStream(term.key, parallel=False, start=offset)) for term in terms]
        fill = fill_factory(start)
        for block_start in range(start, stop, BLOCK_WORDS):
            block_stop = min(block_start + BLOCK_WORDS, stop)
            fill(block_start, block_stop)
            add_streams(out[block_start:block_stop], streams)

    ranges = split_range(out.size, min_part=MIN_RANGE_WORDS)
    run_all([functools.partial(run, start, stop) for start, stop in ranges])


def encode_and_mask(
    values: npt.NDArray[np.float64],
    *,
    config: RoundConfig,
    owner: int,
    output: Output,
    dither_seed: bytes,
    self_seed: bytes,
    pair_secrets: Mapping[int, SharedSecret],
    scale: float = 1.0,
    extra_terms: Sequence[MaskTerm] = (),
) -> RingArray:
    """Client side: ``enc(scale * values) + self mask + pairwise masks (+ extra_terms)`` of
    ``owner`` for ``output`` (attention mode: ``scale`` = xi_iu, ``extra_terms`` = the target pad).

    ``values`` should have been validated with ``FixedPointCodec.check_range`` (the client does
    so when the round starts); each block is checked again while it is in cache.

    Raises:
        EncodingRangeError: a value is outside the codec's range; nothing is returned.
    """
    codec = FixedPointCodec(config.codec)
    out: RingArray = np.empty(values.size, dtype=config.codec.ring.dtype)
    terms = [self_mask(config, self_seed, output, sign=1)]
    terms += [
        pairwise_mask(config, pair_secrets[peer], owner=owner, peer=peer, output=output, undo=False)
        for peer in sorted(pair_secrets)
    ]
    terms += extra_terms
    key = dither_key(config, dither_seed, output)

    def fill_factory(start: int) -> BlockFill:
        dither = DitherStream(key, start=start)
        if scale == 1.0:
            return lambda a, b: codec.encode_into(values[a:b], out[a:b], dither=dither)
        return lambda a, b: codec.encode_into(values[a:b] * scale, out[a:b], dither=dither)

    _masked_pass(out, terms, fill_factory)
    return out


def unmask_sum(
    inputs: Sequence[RingArray],
    *,
    config: RoundConfig,
    output: Output,
    self_seeds: Mapping[int, bytes],
    dropped_secrets: Mapping[tuple[int, int], SharedSecret],
) -> RingArray:
    """Server side: ``sum(inputs) - self masks - masks left by dropped peers``.

    ``self_seeds[u]`` for every contributor u; ``dropped_secrets[(u, v)]`` the secret s_uv of a
    contributor u and a dropped peer v (recomputed from v's reconstructed mask key).
    """
    out: RingArray = np.empty(config.vector_length, dtype=config.codec.ring.dtype)
    terms = [self_mask(config, seed, output, sign=-1) for _, seed in sorted(self_seeds.items())]
    terms += [
        pairwise_mask(config, secret, owner=u, peer=v, output=output, undo=True)
        for (u, v), secret in sorted(dropped_secrets.items())
    ]

    def fill_factory(start: int) -> BlockFill:
        def fill(a: int, b: int) -> None:
            block = out[a:b]
            np.copyto(block, inputs[0][a:b])
            for vector in inputs[1:]:
                np.add(block, vector[a:b], out=block)

        return fill

    _masked_pass(out, terms, fill_factory)
    return out
