"""The masking plan: the single implementation of which masks apply, with which sign, to what.

Client and server both import this module; nothing else derives a mask key or decides a sign.

A round produces a list of *outputs*. Each output has an optional target and a contributor set that
is always derived from the one signed survivor set U3 (R2): ``contributors = U3 - {target}``.
Never is a contributor set sent or chosen separately, so the server cannot call a client "dropped"
for one output and "alive" for another. In ``sum`` mode there is one output with no target; the
personalized modes (a later issue) add one output per target on this same plan.

For output ``o``, client ``u`` adds to its encoded input::

    PRG(K_self(b_u, o)) + sum over peers v in U2 of sign(u, v) * PRG(K_mask(s_uv, o))

with ``sign(u, v) = +1 if u < v else -1``, keys from :mod:`securefed.crypto.kdf` (purposes
``SELF`` and ``MASK``, bound to session, round and the output's target). The pairwise terms cancel
in the sum over contributors; the server removes self masks of survivors and the pairwise masks
that dropped clients left behind.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from securefed.crypto import (
    KeyPurpose,
    KeyStream,
    SharedSecret,
    derive_pairwise_key,
    derive_stream_key,
)
from securefed.secagg.config import AggregationMode, RoundConfig
from securefed.secagg.wire import Writer

__all__ = [
    "Output",
    "add_masks",
    "pairwise_sign",
    "remove_dropped_pairwise_mask",
    "remove_self_mask",
    "round_outputs",
    "self_seed_commitment",
]

RingArray = npt.NDArray[np.unsignedinteger[Any]]


@dataclass(frozen=True, slots=True)
class Output:
    """One aggregate of the round. ``target`` is None for the plain sum."""

    target: int | None = None

    def contributors(self, survivors: Sequence[int]) -> tuple[int, ...]:
        """Contributors of this output: the survivor set minus the target (R2)."""
        return tuple(sorted(u for u in survivors if u != self.target))


def round_outputs(config: RoundConfig) -> tuple[Output, ...]:
    """The outputs a round in ``config.mode`` produces."""
    if config.mode is AggregationMode.SUM:
        return (Output(),)
    raise NotImplementedError(config.mode)  # pragma: no cover - new modes add a branch here


def pairwise_sign(owner: int, peer: int) -> int:
    """+1 if ``owner`` adds the pairwise mask it shares with ``peer``, -1 if it subtracts it."""
    return 1 if owner < peer else -1


def self_seed_commitment(config: RoundConfig, owner: int, seed: bytes) -> bytes:
    """SHA-256 commitment to a self-mask seed, bound to session, round and owner."""
    w = Writer().blob(b"securefed/v1/self-seed-commitment").fixed(config.session_id, 32)
    w.u64(config.round).u32(owner).fixed(seed, 32)
    return hashlib.sha256(w.getvalue()).digest()


def _apply(stream: KeyStream, acc: RingArray, sign: int) -> None:
    if sign > 0:
        stream.add_into(acc)
    else:
        stream.subtract_from(acc)


def _self_stream(config: RoundConfig, seed: bytes, output: Output) -> KeyStream:
    key = derive_stream_key(
        config.suite,
        seed,
        purpose=KeyPurpose.SELF,
        context=config.kdf_context,
        target=output.target,
    )
    return KeyStream(key)


def _pair_stream(
    config: RoundConfig, secret: SharedSecret, pair: tuple[int, int], output: Output
) -> KeyStream:
    key = derive_pairwise_key(
        secret, purpose=KeyPurpose.MASK, context=config.kdf_context, pair=pair, target=output.target
    )
    return KeyStream(key)


def add_masks(
    acc: RingArray,
    *,
    config: RoundConfig,
    owner: int,
    output: Output,
    self_seed: bytes,
    pair_secrets: Mapping[int, SharedSecret],
) -> None:
    """Client side: add the self mask and every pairwise mask of ``owner`` for ``output``."""
    _self_stream(config, self_seed, output).add_into(acc)
    for peer in sorted(pair_secrets):
        stream = _pair_stream(config, pair_secrets[peer], (owner, peer), output)
        _apply(stream, acc, pairwise_sign(owner, peer))


def remove_self_mask(
    acc: RingArray, *, config: RoundConfig, output: Output, self_seed: bytes
) -> None:
    """Server side: subtract a survivor's self mask (its seed was reconstructed)."""
    _self_stream(config, self_seed, output).subtract_from(acc)


def remove_dropped_pairwise_mask(
    acc: RingArray,
    *,
    config: RoundConfig,
    output: Output,
    survivor: int,
    dropped: int,
    secret: SharedSecret,
) -> None:
    """Server side: undo the mask ``survivor`` applied for its dropped peer ``dropped``."""
    stream = _pair_stream(config, secret, (survivor, dropped), output)
    _apply(stream, acc, -pairwise_sign(survivor, dropped))
