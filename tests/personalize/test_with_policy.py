"""The reference weights under the weight policy of ``securefed.secagg.policy`` (DESIGN §4b).

The policy module cannot import ``personalize`` (it is a lower layer), so the agreement between its
after-dropout check and :func:`renormalise_row` is tested here.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from securefed.errors import ConfigError, WeightPolicyViolation
from securefed.personalize import (
    fedamp_weights,
    group_weights,
    heurfedamp_weights,
    renormalise_row,
)
from securefed.personalize.modes import PersonalizationMode
from securefed.personalize.rounds import (
    RoundParams,
    client_policy,
    minimum_group_size,
    server_dropouts,
    server_policy,
    weights_from_sketches,
)
from securefed.secagg.exposure import group_exposure, uniform_exposure
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


# -- the exposure rule in the round maths (issue 21) ------------------------------------------


def clustered_models(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (3, 40))
    return centres[[i % 3 for i in range(n)]] + 0.3 * rng.normal(size=(n, 40))


@pytest.mark.parametrize("n", [7, 8, 12])
@pytest.mark.parametrize("mode", [PersonalizationMode.FEDAMP, PersonalizationMode.HEURFEDAMP])
def test_honest_server_weights_survive_every_allowed_dropout_set(
    n: int, mode: PersonalizationMode
) -> None:
    """The server's xi (weights_from_sketches: shape margins, exposure robust to D = N - t
    dropouts) passes every contributor's re-check for every survivor set the protocol allows."""
    params = RoundParams()
    policy = client_policy(n, params)
    dropouts = server_dropouts(n, params)
    for seed in range(3):
        xi = weights_from_sketches(clustered_models(n, seed), mode, params)
        for count in range(dropouts + 1):
            for dropped in itertools.combinations(range(n), count):
                alive = [u for u in range(n) if u not in dropped]
                check_weights(
                    xi, policy, contributors={i: [u for u in alive if u != i] for i in alive}
                )


def test_the_round_policies_carry_the_exposure_parameters() -> None:
    params = RoundParams(colluders=2, min_exposure=0.6)
    client = client_policy(20, params)
    assert (client.min_exposure, client.colluders) == (0.6, 2)
    server = server_policy(20, params)
    assert server.colluders == 2
    # two colluders: a heuristic margin for the D = 6 dropouts, below what uniform rows give
    assert 0.6 < server.min_exposure < uniform_exposure(20, 2)
    one = server_policy(20, RoundParams())
    assert one.min_exposure == 0.5  # one colluder: no margin, dropouts are handled exactly
    assert server_dropouts(20, RoundParams()) == 6


@pytest.mark.parametrize(
    ("colluders", "min_exposure", "size"),
    [(1, 0.5, 3), (2, 0.5, 4), (1, 0.0, 3), (1, 0.9, 7), (3, 0.8, 6)],
)
def test_minimum_group_size_keeps_the_group_exposure(
    colluders: int, min_exposure: float, size: int
) -> None:
    params = RoundParams(colluders=colluders, min_exposure=min_exposure)
    assert minimum_group_size(params) == size
    assert group_exposure([0] * size, collusion_bound=colluders)[0] >= min_exposure
    if size > max(3, 2 + colluders):  # the exposure bound, not k_min + n_C, set the size
        assert group_exposure([0] * (size - 1), collusion_bound=colluders)[0] < min_exposure


@pytest.mark.parametrize("bad", [1.0, -0.1, True])
def test_minimum_group_size_refuses_a_bad_min_exposure(bad: object) -> None:
    with pytest.raises(ConfigError, match="min_exposure"):
        minimum_group_size(RoundParams(min_exposure=bad))  # type: ignore[arg-type]
