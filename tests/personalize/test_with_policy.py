"""The reference weights under the weight policy of ``securefed.secagg.policy`` (DESIGN §4b).

The policy module cannot import ``personalize`` (it is a lower layer), so the agreement between its
after-dropout check and :func:`renormalise_row` is tested here.
"""

from __future__ import annotations

import numpy as np
import pytest

from securefed.errors import ConfigError, WeightPolicyViolation
from securefed.personalize import (
    fedamp_weights,
    group_weights,
    heurfedamp_weights,
    renormalise_row,
)
from securefed.secagg.policy import PolicyRule, WeightPolicy, check_weights, enforce_policy


def refused(weights: np.ndarray, policy: WeightPolicy, **kwargs: object) -> PolicyRule | None:
    try:
        check_weights(weights, policy, **kwargs)  # type: ignore[arg-type]
    except WeightPolicyViolation as exc:
        return PolicyRule(exc.violations[0][1])
    return None


def test_the_after_dropout_check_is_the_check_of_the_renormalised_row() -> None:
    rng = np.random.default_rng(11)
    decided = {True: 0, False: 0}
    for _ in range(400):
        n = int(rng.integers(3, 9))
        models = rng.standard_normal((n, 6)) * rng.uniform(0.1, 3.0)
        weights = heurfedamp_weights(models, self_weight=0.3, sigma=float(rng.uniform(0, 8)))
        policy = WeightPolicy(k_min=float(rng.uniform(1, 3)), cap=float(rng.uniform(0.3, 1)))
        target = int(rng.integers(n))
        others = [u for u in range(n) if u != target]
        survivors = sorted(rng.choice(others, size=int(rng.integers(1, n)), replace=False))
        survivors = [int(u) for u in survivors]
        renormalised = weights.copy()
        renormalised[target] = renormalise_row(
            weights[target], target=target, contributors=survivors
        )
        after = refused(weights, policy, contributors={target: survivors})
        direct = refused(renormalised, policy, targets=[target])
        assert after == direct
        decided[after is None] += 1
    assert min(decided.values()) > 50  # both outcomes were exercised


def test_no_surviving_weight_matches_the_renormalisation_error() -> None:
    weights = group_weights([0, 0, 0, 1, 1, 1], self_weight=0.4)
    with pytest.raises(ConfigError, match="no surviving contributor"):
        renormalise_row(weights[0], target=0, contributors=[3, 4, 5])
    assert (
        refused(weights, WeightPolicy(k_min=1.0), contributors={0: [3, 4, 5]})
        is PolicyRule.NO_SURVIVING_WEIGHT
    )


@pytest.mark.parametrize("seed", range(5))
def test_enforced_reference_weights_pass_and_keep_the_self_weights(seed: int) -> None:
    rng = np.random.default_rng(seed)
    models = rng.standard_normal((8, 50))
    models[:4] += 3.0  # two latent groups: attention concentrates within them
    policy = WeightPolicy(k_min=4.0, cap=0.3)
    for weights in (
        fedamp_weights(models, alpha=1.0, sigma_scale=0.1),
        heurfedamp_weights(models, self_weight=0.2, sigma=20.0),
    ):
        assert refused(weights, policy) is not None  # concentrated enough to need enforcement
        enforced = enforce_policy(weights, policy)
        check_weights(enforced, policy)
        np.testing.assert_array_equal(np.diag(enforced), np.diag(weights))


def test_group_weights_with_large_enough_groups_already_comply() -> None:
    policy = WeightPolicy()  # needs 3 contributors: groups of >= 4
    weights = group_weights([0, 0, 0, 0, 1, 1, 1, 1, 1], self_weight=0.25)
    check_weights(weights, policy)
    np.testing.assert_array_equal(enforce_policy(weights, policy), weights)
