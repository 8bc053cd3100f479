"""Attention mode (docs/fedamp.md): personalized outputs the server never sees in the clear.

For each target i, each contributor u in C_i = U3 - {i} sends

    enc(xi_iu * w_u) + PRG(b_u, i) + sum_{v in U2 - {u, i}} +-PRG(s_uv, i) + PRG(tau_{u->i})

Unmasking (one survivor set U3, as in sum mode) removes self and pairwise masks, so the server
obtains only ``sum_{u in C_i} enc(xi_iu w_u) + sum_u PRG(tau_{u->i})``: still blinded. It forwards
that to i alone; i removes its pads (it can derive every tau_{u->i} from its own target key),
decodes, renormalises over the surviving contributors and adds xi_ii * w_i itself -- its own model
never leaves it, not even masked.

This module holds the pure pieces both roles need: the weight check every contributor applies, the
transcript item that binds xi, and the target's unblinding.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from securefed.crypto import AgreementPrivateKey, AgreementPublicKey, KeyStream
from securefed.encoding import FixedPointCodec, SumKind
from securefed.errors import WeightPolicyViolation
from securefed.secagg.config import RoundConfig
from securefed.secagg.masking import target_pad
from securefed.secagg.policy import check_weights, decode_weights
from securefed.secagg.transcript import ContextItem

__all__ = [
    "WEIGHTS_LABEL",
    "check_broadcast_weights",
    "check_survivor_weights",
    "unblind",
    "weights_context",
]

WEIGHTS_LABEL = "securefed/weights"
RingArray = npt.NDArray[np.unsignedinteger[Any]]


def weights_context(encoded: bytes) -> ContextItem:
    """The transcript item that binds the broadcast weight matrix (all clients saw the same xi)."""
    return ContextItem(WEIGHTS_LABEL, encoded)


def check_broadcast_weights(config: RoundConfig, encoded: bytes) -> npt.NDArray[np.float64]:
    """Decode the broadcast xi and check every row against the round's policy (docs/fedamp.md).

    Raises:
        RemoteProtocolError: malformed encoding.
        WeightPolicyViolation: a row breaks the policy (e.g. weight concentrated on a victim,
            or a row that leaves some party's exposure below ``min_exposure`` against the
            policy's ``colluders``: ``PolicyRule.EXPOSURE``).
    """
    weights = decode_weights(encoded, config.n_clients)
    check_weights(weights, config.policy)
    return weights


def check_survivor_weights(
    config: RoundConfig,
    weights: npt.NDArray[np.float64],
    *,
    owner: int,
    survivors: Sequence[int],
    withheld: Sequence[int] = (),
) -> None:
    """Contributor ``owner``'s check after dropouts, before it signs the transcript: for every
    target it contributes to, the weights renormalised over that target's surviving contributors
    obey the policy, and there are at least ``min_contributors`` of them. The exposure rule is
    judged on exactly what the round will release: those targets' rows restricted to the
    survivors (``owner``'s own output goes to ``owner`` alone, so it counts as nothing), less
    the ``withheld`` targets, which get no output this round.

    Raises:
        WeightPolicyViolation: some target's renormalised row breaks the policy or has too few
            contributors (the contributor refuses; nothing is revealed).
    """
    skipped = {owner, *withheld}
    targets = [i for i in survivors if i not in skipped]
    contributors = {i: [u for u in survivors if u != i] for i in targets}
    for target, members in contributors.items():
        if len(members) < config.min_contributors:
            raise WeightPolicyViolation(
                f"target {target} would aggregate only {len(members)} contributors "
                f"(minimum {config.min_contributors})"
            )
    check_weights(weights, config.policy, targets=targets, contributors=contributors)


def unblind(
    blinded: RingArray,
    *,
    config: RoundConfig,
    target: int,
    target_key: AgreementPrivateKey,
    contributors: Sequence[int],
    contributor_keys: Mapping[int, AgreementPublicKey],
    weights: npt.NDArray[np.float64],
    own_values: npt.NDArray[np.float64],
) -> npt.NDArray[np.float64]:
    """Target side: remove the pads, decode, renormalise, add xi_ii * w_i (docs/fedamp.md).

    Returns u_i = xi_ii w_i + (1 - xi_ii) / (sum_{u in C} xi_iu) * sum_{u in C} xi_iu w_u, or w_i
    itself when the contributors carry no weight.
    """
    total = blinded.copy()
    own_public = target_key.public_key()
    for u in contributors:
        pad = target_pad(
            config,
            target_key.exchange(contributor_keys[u]),
            sender=u,
            recipient=target,
            sender_public=contributor_keys[u],
            recipient_public=own_public,
            sign=-1,
        )
        KeyStream(pad.key).subtract_from(total)
    codec = FixedPointCodec(config.codec)
    weighted = codec.decode(total, n_terms=len(contributors), sum_kind=SumKind.WEIGHTED)
    row = weights[target]
    mass = float(sum(row[u] for u in contributors))
    self_weight = float(row[target])
    if mass <= 0.0:
        return own_values.copy()
    result: npt.NDArray[np.float64] = (
        self_weight * own_values + ((1.0 - self_weight) / mass) * weighted
    )
    return result
