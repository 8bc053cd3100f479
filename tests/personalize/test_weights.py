"""The plaintext weight reference against hand-computed 3-client cases (DESIGN §4).

Expected numbers are written from the formulas, not from the code: e.g. FedAMP with
alpha = sigma = 1 gives xi_ij = e^(-d_ij) off the diagonal and xi_ii = 1 - (row's off-diagonal sum).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest

from securefed.errors import ConfigError
from securefed.personalize import (
    PersonalizationMode,
    cosine_similarities,
    fedamp_weights,
    fedamp_weights_from_distances,
    fedavg_weights,
    group_weights,
    heurfedamp_weights,
    heurfedamp_weights_from_cosines,
    local_weights,
    personalized_models,
    renormalise_row,
    squared_distances,
)

E = math.exp
DIST = np.array([[0.0, 1.0, 4.0], [1.0, 0.0, 1.0], [4.0, 1.0, 0.0]])
COS = np.array([[1.0, 0.5, 0.0], [0.5, 1.0, -0.5], [0.0, -0.5, 1.0]])
# Three 2-D models: w0 = (1, 0), w1 = (1, 1), w2 = (0, 1).
MODELS = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])


def assert_stochastic(weights: npt.NDArray[np.float64]) -> None:
    assert (weights >= 0).all()
    assert (weights <= 1).all()
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=0, atol=1e-12)


# -- FedAMP -----------------------------------------------------------------------------------


def test_fedamp_hand_computed_alpha_sigma_one() -> None:
    xi = fedamp_weights_from_distances(DIST, alpha=1.0, sigma=1.0)
    expected = np.array(
        [
            [1 - E(-1) - E(-4), E(-1), E(-4)],
            [E(-1), 1 - 2 * E(-1), E(-1)],
            [E(-4), E(-1), 1 - E(-1) - E(-4)],
        ]
    )
    np.testing.assert_allclose(xi, expected, rtol=1e-14)
    # the same numbers as decimals: e^-1 = 0.3678794412, e^-4 = 0.0183156389
    np.testing.assert_allclose(xi[0], [0.6138049199, 0.3678794412, 0.0183156389], atol=1e-10)
    assert xi[1, 1] == pytest.approx(0.2642411177, abs=1e-10)
    assert_stochastic(xi)


def test_fedamp_alpha_and_sigma_scale_the_attention() -> None:
    # alpha = 0.5, sigma = 2: xi_ij = 0.5 * e^(-d/2) / 2
    xi = fedamp_weights_from_distances(DIST, alpha=0.5, sigma=2.0)
    assert xi[0, 1] == pytest.approx(0.25 * E(-0.5), rel=1e-14)
    assert xi[0, 2] == pytest.approx(0.25 * E(-2.0), rel=1e-14)
    assert xi[0, 0] == pytest.approx(1 - 0.25 * E(-0.5) - 0.25 * E(-2.0), rel=1e-14)
    assert_stochastic(xi)


def test_fedamp_clamps_a_row_whose_attention_exceeds_one() -> None:
    # alpha = 2, sigma = 1: row 1 has 2e^-1 + 2e^-1 = 1.4715 > 1 -> scaled to (0.5, 0.5), xi_11 = 0
    xi = fedamp_weights_from_distances(DIST, alpha=2.0, sigma=1.0)
    np.testing.assert_allclose(xi[1], [0.5, 0.0, 0.5], rtol=1e-15)
    # row 0: 2e^-1 + 2e^-4 = 0.7724 <= 1 -> not clamped
    np.testing.assert_allclose(xi[0], [1 - 2 * E(-1) - 2 * E(-4), 2 * E(-1), 2 * E(-4)], rtol=1e-14)
    assert_stochastic(xi)


def test_fedamp_clamp_keeps_the_relative_attention() -> None:
    xi = fedamp_weights_from_distances(DIST, alpha=100.0, sigma=1.0)
    assert np.diag(xi).tolist() == [0.0, 0.0, 0.0]
    # row 0: e^-1 : e^-4, normalised
    assert xi[0, 1] == pytest.approx(E(-1) / (E(-1) + E(-4)), rel=1e-14)
    assert_stochastic(xi)


def test_sigma_scale_uses_the_median_of_off_diagonal_distances() -> None:
    # off-diagonal entries 1, 9, 1, 4, 9, 4 -> median 4 (the mean would be 14/3);
    # sigma_scale = 0.5 -> sigma = 2
    dist = np.array([[0.0, 1.0, 9.0], [1.0, 0.0, 4.0], [9.0, 4.0, 0.0]])
    xi = fedamp_weights_from_distances(dist, alpha=1.0, sigma_scale=0.5)
    assert xi[0, 1] == pytest.approx(E(-0.5) / 2, rel=1e-14)  # 0.3032653299
    assert xi[0, 2] == pytest.approx(E(-4.5) / 2, rel=1e-14)  # 0.0055544450
    assert xi[1, 2] == pytest.approx(E(-2.0) / 2, rel=1e-14)  # 0.0676676416
    np.testing.assert_allclose(xi, fedamp_weights_from_distances(dist, alpha=1.0, sigma=2.0))


def test_sigma_scale_makes_weights_invariant_to_distance_growth() -> None:
    grown = fedamp_weights_from_distances(DIST * 1000, alpha=1.0, sigma_scale=1.0)
    base = fedamp_weights_from_distances(DIST, alpha=1.0, sigma_scale=1.0)
    np.testing.assert_allclose(grown[~np.eye(3, dtype=bool)] * 1000, base[~np.eye(3, dtype=bool)])


def test_fedamp_from_models_uses_exact_squared_distances() -> None:
    # ||w0 - w1||² = 1, ||w0 - w2||² = 2, ||w1 - w2||² = 1
    expected_dist = np.array([[0.0, 1.0, 2.0], [1.0, 0.0, 1.0], [2.0, 1.0, 0.0]])
    np.testing.assert_array_equal(squared_distances(MODELS), expected_dist)
    xi = fedamp_weights(MODELS, alpha=1.0, sigma=1.0)
    np.testing.assert_allclose(xi[0], [1 - E(-1) - E(-2), E(-1), E(-2)], rtol=1e-14)


def test_squared_distances_do_not_cancel_for_close_large_models() -> None:
    base = np.full(1000, 1e6)
    models = np.stack([base, base + 1e-3, base - 1e-3])
    dist = squared_distances(models)
    assert dist[0, 1] == pytest.approx(1000 * 1e-6, rel=1e-6)
    assert dist[1, 2] == pytest.approx(1000 * 4e-6, rel=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"alpha": 1.0}, "exactly one"),
        ({"alpha": 1.0, "sigma": 1.0, "sigma_scale": 1.0}, "exactly one"),
        ({"alpha": 0.0, "sigma": 1.0}, "alpha"),
        ({"alpha": math.nan, "sigma": 1.0}, "alpha"),
        ({"alpha": 1.0, "sigma": -1.0}, "sigma"),
        ({"alpha": 1.0, "sigma": math.inf}, "sigma"),
        ({"alpha": 1.0, "sigma_scale": 0.0}, "sigma_scale"),
    ],
)
def test_fedamp_refuses_bad_parameters(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        fedamp_weights_from_distances(DIST, **kwargs)


def test_fedamp_refuses_overflowing_attention() -> None:
    # two identical models (d = 0): alpha·e^0/sigma = 1e308/1e-10 overflows
    dist = np.array([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    with pytest.raises(ConfigError, match="overflow"):
        fedamp_weights_from_distances(dist, alpha=1e308, sigma=1e-10)


def test_sigma_scale_refuses_a_zero_median() -> None:
    with pytest.raises(ConfigError, match="median"):
        fedamp_weights(np.ones((3, 4)), alpha=1.0, sigma_scale=1.0)


@pytest.mark.parametrize(
    ("dist", "message"),
    [
        (np.zeros((1, 1)), "N >= 2"),
        (np.zeros((2, 3)), "N x N"),
        (np.zeros(4), "2-D"),
        (np.array([[0.0, -1.0], [-1.0, 0.0]]), "non-negative"),
        (np.array([[0.0, math.nan], [1.0, 0.0]]), "finite"),
        ([["a", "b"], ["c", "d"]], "numbers"),
    ],
)
def test_fedamp_refuses_bad_distance_matrices(dist: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        fedamp_weights_from_distances(dist, alpha=1.0, sigma=1.0)  # type: ignore[arg-type]


# -- HeurFedAMP -------------------------------------------------------------------------------


def test_heurfedamp_hand_computed() -> None:
    # self_weight = 0.4, sigma = 2: row 0 softmax over (2*0.5, 2*0) = (1, 0)
    xi = heurfedamp_weights_from_cosines(COS, self_weight=0.4, sigma=2.0)
    s1 = E(1) / (E(1) + 1)  # 0.7310585786
    s2 = E(1) / (E(1) + E(-1))  # 0.8807970780
    expected = np.array(
        [
            [0.4, 0.6 * s1, 0.6 * (1 - s1)],
            [0.6 * s2, 0.4, 0.6 * (1 - s2)],  # logits (1, -1)
            [0.6 * s1, 0.6 * (1 - s1), 0.4],  # logits (0, -1)
        ]
    )
    np.testing.assert_allclose(xi, expected, rtol=1e-14)
    np.testing.assert_allclose(xi[0], [0.4, 0.4386351472, 0.1613648528], atol=1e-10)
    assert_stochastic(xi)


def test_heurfedamp_sigma_zero_is_uniform_and_self_weight_one_is_local() -> None:
    np.testing.assert_allclose(
        heurfedamp_weights_from_cosines(COS, self_weight=0.2, sigma=0.0),
        [[0.2, 0.4, 0.4], [0.4, 0.2, 0.4], [0.4, 0.4, 0.2]],
    )
    np.testing.assert_array_equal(
        heurfedamp_weights_from_cosines(COS, self_weight=1.0, sigma=5.0), np.eye(3)
    )


def test_heurfedamp_is_stable_for_large_sigma() -> None:
    xi = heurfedamp_weights_from_cosines(COS, self_weight=0.5, sigma=1e4)
    np.testing.assert_allclose(xi[1], [0.5, 0.5, 0.0], atol=1e-300)
    assert_stochastic(xi)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"self_weight": -0.1, "sigma": 1.0}, "self_weight"),
        ({"self_weight": 1.1, "sigma": 1.0}, "self_weight"),
        ({"self_weight": True, "sigma": 1.0}, "self_weight"),
        ({"self_weight": 0.5, "sigma": -1.0}, "sigma"),
        ({"self_weight": 0.5, "sigma": math.inf}, "sigma"),
        ({"self_weight": 0.5, "sigma": 1e308 * 10}, "sigma"),
    ],
)
def test_heurfedamp_refuses_bad_parameters(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        heurfedamp_weights_from_cosines(COS * 10, **kwargs)


def test_raw_and_centred_cosines_hand_computed() -> None:
    raw = cosine_similarities(MODELS, centred=False)
    r = 1 / math.sqrt(2)
    np.testing.assert_allclose(raw, [[1, r, 0], [r, 1, r], [0, r, 1]], atol=1e-15)
    # mean (2/3, 2/3): c0 = (1/3, -2/3), c1 = (1/3, 1/3), c2 = (-2/3, 1/3)
    centred = cosine_similarities(MODELS)
    c = -1 / math.sqrt(10)
    np.testing.assert_allclose(centred, [[1, c, -0.8], [c, 1, c], [-0.8, c, 1]], atol=1e-15)
    xi = heurfedamp_weights(MODELS, self_weight=0.5, sigma=1.0)
    np.testing.assert_allclose(
        xi, heurfedamp_weights_from_cosines(centred, self_weight=0.5, sigma=1.0)
    )
    raw_xi = heurfedamp_weights(MODELS, self_weight=0.5, sigma=1.0, centred=False)
    assert raw_xi[0, 1] == pytest.approx(0.5 * E(r) / (E(r) + 1), rel=1e-14)


def test_a_model_equal_to_the_mean_has_cosine_zero() -> None:
    models = np.array([[1.0, 0.0], [0.0, 0.0], [-1.0, 0.0]])
    cos = cosine_similarities(models)
    np.testing.assert_array_equal(cos, [[1, 0, -1], [0, 1, 0], [-1, 0, 1]])


def latent_groups(seed: int) -> npt.NDArray[np.float64]:
    """8 clients in two latent groups: a large common component (the shared initialisation)
    plus a group direction plus client noise."""
    rng = np.random.default_rng(seed)
    d = 2000
    common = 10.0 * rng.standard_normal(d)
    groups = rng.standard_normal((2, d))
    labels = [0, 0, 0, 0, 1, 1, 1, 1]
    return np.stack([common + groups[g] + 0.3 * rng.standard_normal(d) for g in labels])


def test_raw_cosines_are_all_near_one_centred_cosines_separate_the_groups() -> None:
    models = latent_groups(seed=5)
    same = np.zeros((8, 8), dtype=bool)
    same[:4, :4] = same[4:, 4:] = True
    off = ~np.eye(8, dtype=bool)
    raw = cosine_similarities(models, centred=False)
    assert raw[off].min() > 0.98  # useless: every pair looks the same
    centred = cosine_similarities(models)
    assert centred[same & off].min() > 0.5
    assert centred[~same].max() < -0.5
    xi = heurfedamp_weights(models, self_weight=0.2, sigma=10.0)
    within = np.where(same & off, xi, 0.0).sum(axis=1)
    assert within.min() > 0.79  # almost all of the 0.8 off-diagonal weight stays in the group
    raw_xi = heurfedamp_weights(models, self_weight=0.2, sigma=10.0, centred=False)
    assert np.where(same & off, raw_xi, 0.0).sum(axis=1).max() < 0.5  # ~ uniform: 3/7 of 0.8


# -- FedAvg, local, group ---------------------------------------------------------------------


def test_fedavg_and_local() -> None:
    np.testing.assert_array_equal(fedavg_weights(4), np.full((4, 4), 0.25))
    np.testing.assert_array_equal(local_weights(3), np.eye(3))
    avg = personalized_models(fedavg_weights(3), MODELS)
    np.testing.assert_allclose(avg, np.tile(MODELS.mean(axis=0), (3, 1)))
    np.testing.assert_array_equal(personalized_models(local_weights(3), MODELS), MODELS)


@pytest.mark.parametrize("n", [1, 0, -3, 2.0, True, "3"])
def test_fedavg_and_local_refuse_bad_n(n: object) -> None:
    with pytest.raises(ConfigError, match="int >= 2"):
        fedavg_weights(n)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="int >= 2"):
        local_weights(n)  # type: ignore[arg-type]


def test_group_weights_hand_computed() -> None:
    # groups: {0, 1, 3}, {2}, {4}; self_weight 0.4 -> others (1 - 0.4)/2 = 0.3
    xi = group_weights([0, 0, 1, 0, 2], self_weight=0.4)
    expected = np.array(
        [
            [0.4, 0.3, 0.0, 0.3, 0.0],
            [0.3, 0.4, 0.0, 0.3, 0.0],
            [0.0, 0.0, 1.0, 0.0, 0.0],
            [0.3, 0.3, 0.0, 0.4, 0.0],
            [0.0, 0.0, 0.0, 0.0, 1.0],
        ]
    )
    np.testing.assert_allclose(xi, expected, rtol=1e-15)
    assert_stochastic(xi)


def test_group_weights_are_target_independent_within_a_group() -> None:
    xi = group_weights(np.array([7, 7, 7, 7, -1, -1]), self_weight=0.1)  # type: ignore[arg-type]
    np.testing.assert_allclose(xi[0, 1:4], 0.3)
    np.testing.assert_allclose(xi[4], [0, 0, 0, 0, 0.1, 0.9])
    # every member's output is self_weight·w_i plus a multiple of the group sum
    rng = np.random.default_rng(1)
    models = rng.standard_normal((6, 5))
    group_sum = models[:4].sum(axis=0)
    u = personalized_models(xi, models)
    for i in range(4):
        np.testing.assert_allclose(u[i], 0.1 * models[i] + 0.3 * (group_sum - models[i]))


@pytest.mark.parametrize(
    ("partition", "self_weight", "message"),
    [
        ([0], 0.5, "int >= 2"),
        ([0, 1.5], 0.5, "integers"),
        ([0, True], 0.5, "integers"),
        ([0, 0], 1.5, "self_weight"),
    ],
)
def test_group_weights_refuse_bad_input(
    partition: list[object], self_weight: float, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        group_weights(partition, self_weight=self_weight)  # type: ignore[arg-type]


# -- personalized models and renormalisation --------------------------------------------------


def test_personalized_models_match_a_loop() -> None:
    rng = np.random.default_rng(3)
    models = rng.standard_normal((5, 17))
    xi = fedamp_weights(models, alpha=1.0, sigma_scale=1.0)
    u = personalized_models(xi, models)
    for i in range(5):
        expected = np.zeros(17)
        for j in range(5):
            expected += xi[i, j] * models[j]
        np.testing.assert_allclose(u[i], expected, rtol=1e-12, atol=1e-15)


def test_personalized_models_refuse_mismatched_shapes() -> None:
    with pytest.raises(ConfigError, match="for 3 clients, models for 2"):
        personalized_models(fedavg_weights(3), MODELS[:2])
    with pytest.raises(ConfigError, match="models"):
        personalized_models(fedavg_weights(3), MODELS[0])


def test_renormalise_row_after_dropouts_hand_computed() -> None:
    row = np.array([0.4, 0.3, 0.2, 0.1])
    # contributor 2 dropped: (0.3, 0.1) rescaled by (1 - 0.4)/0.4 = 1.5 -> (0.45, 0.15)
    out = renormalise_row(row, target=0, contributors=[1, 3])
    np.testing.assert_allclose(out, [0.4, 0.45, 0.0, 0.15], rtol=1e-15)
    assert math.fsum(out) == pytest.approx(1.0, abs=1e-15)
    np.testing.assert_allclose(renormalise_row(row, target=0, contributors=[3, 2, 1]), row)
    # target 2 (xi_22 = 0.2) keeps its own weight, contributor 0 alone carries 0.8
    np.testing.assert_allclose(
        renormalise_row(row, target=2, contributors=[0]), [0.8, 0.0, 0.2, 0.0]
    )


def test_renormalise_matches_personalized_models_over_survivors() -> None:
    rng = np.random.default_rng(4)
    models = rng.standard_normal((5, 9))
    xi = heurfedamp_weights(models, self_weight=0.3, sigma=3.0)
    survivors = [0, 2, 3]
    used = renormalise_row(xi[0], target=0, contributors=survivors[1:])
    expected = 0.3 * models[0] + 0.7 * (xi[0, 2] * models[2] + xi[0, 3] * models[3]) / (
        xi[0, 2] + xi[0, 3]
    )
    np.testing.assert_allclose(used @ models, expected, rtol=1e-12)


def test_renormalise_a_local_row_is_unchanged() -> None:
    np.testing.assert_array_equal(
        renormalise_row(np.array([0.0, 1.0, 0.0]), target=1, contributors=[]), [0.0, 1.0, 0.0]
    )


def test_renormalise_refuses_when_survivors_carry_no_weight() -> None:
    row = np.array([0.5, 0.5, 0.0])
    with pytest.raises(ConfigError, match="no surviving contributor carries weight"):
        renormalise_row(row, target=0, contributors=[2])
    with pytest.raises(ConfigError, match="no surviving contributor carries weight"):
        renormalise_row(row, target=0, contributors=[])


@pytest.mark.parametrize(
    ("row", "target", "contributors", "message"),
    [
        ([0.5, 0.4, 0.0], 0, [1], "sum to 1"),
        ([0.5, 0.6, -0.1], 0, [1], r"\[0, 1\]"),
        ([1.0], 0, [], "N >= 2"),
        ([0.5, 0.5], 2, [1], "target"),
        ([0.5, 0.5], 0, [0], "must not include the target"),
        ([0.5, 0.25, 0.25], 0, [1, 1], "distinct"),
        ([0.5, 0.25, 0.25], 0, [5], "contributors"),
        ([0.5, 0.25, 0.25], 0, [1.0], "integers"),
    ],
)
def test_renormalise_refuses_bad_input(
    row: list[float], target: int, contributors: list[int], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        renormalise_row(np.array(row), target=target, contributors=contributors)


def test_inputs_are_not_modified() -> None:
    dist = DIST.copy()
    models = MODELS.copy()
    fedamp_weights_from_distances(dist, alpha=2.0, sigma=1.0)
    heurfedamp_weights(models, self_weight=0.5, sigma=1.0)
    np.testing.assert_array_equal(dist, DIST)
    np.testing.assert_array_equal(models, MODELS)


def test_mode_names() -> None:
    names = [mode.value for mode in PersonalizationMode]
    assert names == ["local", "fedavg", "fedamp", "heurfedamp", "group"]
    assert PersonalizationMode("heurfedamp").is_attention
    assert not PersonalizationMode.GROUP.is_attention
