"""The weight policy (DESIGN §4b): every rule refuses with its reason, the server's enforcement
always yields compliant weights when the policy is feasible and leaves compliant rows alone, and
the canonical encoding of ξ round-trips while anything malformed is a RemoteProtocolError."""

from __future__ import annotations

import ast
import contextlib
import itertools
import math
import struct
import sys
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from securefed.errors import ConfigError, RemoteProtocolError, WeightPolicyViolation
from securefed.secagg import policy as policy_module
from securefed.secagg.exposure import exposure
from securefed.secagg.policy import (
    MAX_WEIGHT_CLIENTS,
    PolicyRule,
    WeightPolicy,
    check_weights,
    decode_weights,
    effective_contributors,
    encode_weights,
    enforce_policy,
)

Matrix = npt.NDArray[np.float64]
PROPERTY = settings(max_examples=300, deadline=timedelta(milliseconds=500))


def uniform_rows(n: int, self_weight: float) -> Matrix:
    out = np.full((n, n), (1 - self_weight) / (n - 1))
    np.fill_diagonal(out, self_weight)
    return out


def violations(weights: Matrix, policy: WeightPolicy, **kwargs: object) -> dict[int, PolicyRule]:
    with pytest.raises(WeightPolicyViolation) as info:
        check_weights(weights, policy, **kwargs)  # type: ignore[arg-type]
    return {target: PolicyRule(rule) for target, rule in info.value.violations}


# -- the policy object ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("k_min", "cap", "message"),
    [
        (0.5, 0.5, "k_min"),
        (math.nan, 0.5, "k_min"),
        (math.inf, 0.5, "k_min"),
        (True, 0.5, "k_min"),
        (3.0, 0.0, "cap"),
        (3.0, 1.5, "cap"),
        (3.0, math.nan, "cap"),
        (3.0, "0.5", "cap"),
    ],
)
def test_policy_refuses_bad_parameters(k_min: object, cap: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        WeightPolicy(k_min=k_min, cap=cap)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"min_exposure": 1.0}, "min_exposure"),
        ({"min_exposure": -0.1}, "min_exposure"),
        ({"min_exposure": math.nan}, "min_exposure"),
        ({"min_exposure": "0.5"}, "min_exposure"),
        ({"colluders": -1}, "colluders"),
        ({"colluders": 1.0}, "colluders"),
        ({"colluders": True}, "colluders"),
    ],
)
def test_policy_refuses_bad_exposure_parameters(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        WeightPolicy(**changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("k_min", "cap", "min_exposure", "colluders", "needed"),
    [
        (3.0, 0.5, 0.5, 1, 3),  # the defaults: N >= 4 clients
        (2.0, 0.25, 0.5, 1, 4),  # the cap binds: 4 x 0.25 = 1
        (4.5, 1.0, 0.5, 1, 5),  # k_min binds, rounded up
        (1.0, 1 / 3, 0.5, 1, 3),
        (1.0, 0.1, 0.5, 1, 10),
        (1.0, 1.0, 0.0, 1, 1),  # no rule at all
        # the exposure rule binds: sqrt(1 - 1/(m + 1 - n_C)) >= rho
        (1.0, 1.0, 0.5, 1, 2),  # m >= 4/3
        (1.0, 1.0, 0.5, 3, 4),  # m >= 2 + 4/3
        (1.0, 1.0, 0.9, 1, 6),  # m >= 1/0.19 = 5.3
    ],
)
def test_min_contributors_is_ceil_of_max_k_min_inverse_cap_and_the_exposure_bound(
    k_min: float, cap: float, min_exposure: float, colluders: int, needed: int
) -> None:
    policy = WeightPolicy(k_min=k_min, cap=cap, min_exposure=min_exposure, colluders=colluders)
    assert policy.min_contributors == needed
    assert policy.feasible(needed)
    assert not policy.feasible(needed - 1)
    # the uniform row over exactly that many contributors is compliant
    check_weights(uniform_rows(needed + 1, 0.0), policy)


def test_effective_contributors() -> None:
    assert effective_contributors([0.25, 0.25, 0.25, 0.25]) == pytest.approx(4.0, rel=1e-15)
    assert effective_contributors([0.5, 0.25, 0.25]) == pytest.approx(1 / 0.375, rel=1e-15)
    assert effective_contributors([0.7, 0.0, 0.0]) == 1.0
    assert effective_contributors([0.0, 0.0]) == 0.0
    assert effective_contributors([3e-300, 1e-300]) == pytest.approx(1.6, rel=1e-15)
    assert effective_contributors([3e300, 1e300]) == pytest.approx(1.6, rel=1e-15)
    for bad in ([-0.1, 0.5], [math.nan], [[0.5]]):
        with pytest.raises(ConfigError):
            effective_contributors(bad)


# -- check_weights: each rule -----------------------------------------------------------------


def test_honest_uniform_and_local_rows_pass() -> None:
    policy = WeightPolicy()
    check_weights(uniform_rows(4, 0.2), policy)
    check_weights(np.eye(3), policy)  # local rows pass trivially, even with N - 1 < k_min
    check_weights(uniform_rows(4, 0.2), policy, contributors={0: [1, 2, 3], 2: [0, 1, 3]})


@pytest.mark.parametrize(
    ("row", "rule"),
    [
        ([0.25, 0.25, 0.25, 0.25, -0.0001], PolicyRule.ENTRY_RANGE),
        ([0.25, 0.25, 0.25, 0.25, math.nan], PolicyRule.ENTRY_RANGE),
        ([0.0, 1.5, -0.25, -0.25, 0.0], PolicyRule.ENTRY_RANGE),
        ([0.2, 0.2, 0.2, 0.2, 0.1], PolicyRule.ROW_SUM),
        ([0.2, 0.2, 0.2, 0.2, 0.2 + 2e-9], PolicyRule.ROW_SUM),
        ([0.2, 0.8, 0.0, 0.0, 0.0], PolicyRule.EFFECTIVE_CONTRIBUTORS),  # concentration on 1
        ([0.0, 0.5, 0.5, 0.0, 0.0], PolicyRule.EFFECTIVE_CONTRIBUTORS),  # N_eff = 2
        ([0.0, 0.4, 0.2, 0.2, 0.2], PolicyRule.CONTRIBUTOR_CAP),  # N_eff = 3.57, 0.4 > 0.35
    ],
)
def test_each_rule_refuses_with_its_reason(row: list[float], rule: PolicyRule) -> None:
    weights = uniform_rows(5, 0.2)
    weights[0] = row
    policy = WeightPolicy(k_min=3.0, cap=0.35)
    assert violations(weights, policy) == {0: rule}


def test_a_row_just_inside_the_rules_passes() -> None:
    # N_eff = 3 exactly and the largest share exactly the cap
    weights = uniform_rows(5, 0.2)
    weights[0] = [0.2, 0.4, 4 / 30, 4 / 30, 4 / 30]
    check_weights(weights, WeightPolicy(k_min=3.0, cap=0.5))
    check_weights(weights, WeightPolicy(k_min=3.0, cap=0.5), targets=[0])
    assert violations(weights, WeightPolicy(k_min=3.01, cap=0.5)) == {
        0: PolicyRule.EFFECTIVE_CONTRIBUTORS
    }
    assert violations(weights, WeightPolicy(k_min=1.0, cap=0.49)) == {0: PolicyRule.CONTRIBUTOR_CAP}


def test_tiny_off_diagonal_weight_is_checked_in_full() -> None:
    # The target knows its own part, so 1e-12 on one victim reveals the victim exactly.
    weights = uniform_rows(5, 0.2)
    weights[3] = [0.0, 1e-12, 0.0, 1 - 1e-12, 0.0]
    assert violations(weights, WeightPolicy()) == {3: PolicyRule.EFFECTIVE_CONTRIBUTORS}


def test_every_refused_row_is_reported_and_no_weight_values_leak() -> None:
    weights = uniform_rows(5, 0.2)
    weights[1] = [0.37, 0.0, 0.63, 0.0, 0.0]
    weights[4] = [0.1, 0.1, 0.1, 0.1, 0.59]
    with pytest.raises(WeightPolicyViolation) as info:
        check_weights(weights, WeightPolicy())
    assert info.value.violations == (
        (1, PolicyRule.EFFECTIVE_CONTRIBUTORS),
        (4, PolicyRule.ROW_SUM),
    )
    message = str(info.value)
    assert "target 1" in message
    assert "target 4" in message
    assert "0.37" not in message
    assert "0.63" not in message
    assert "0.59" not in message
    # only the requested targets are checked
    check_weights(weights, WeightPolicy(), targets=[0, 2, 3])


def test_after_dropouts_the_renormalised_weights_are_checked() -> None:
    weights = uniform_rows(6, 0.5)
    weights[0] = [0.5, 0.3, 0.05, 0.05, 0.05, 0.05]  # N_eff = 0.25/0.1 = 2.5
    # the shape rules alone: this row leaves client 1 an exposure of 0.32 (see the exposure
    # tests below), so the exposure rule is switched off here
    policy = WeightPolicy(k_min=2.0, cap=0.7, min_exposure=0.0)
    check_weights(weights, policy)
    # contributors 2 and 3 dropped: the renormalised row is 0.3 : 0.05 : 0.05 -> N_eff = 1.47
    assert violations(weights, policy, contributors={0: [1, 4, 5]}) == {
        0: PolicyRule.EFFECTIVE_CONTRIBUTORS
    }
    # 1 dropped instead: 4 equal weights survive
    check_weights(weights, policy, contributors={0: [2, 3, 4, 5]})
    # 1 and 2 survive: 0.3 / 0.35 = 0.857 of the weight on contributor 1
    shape_only = WeightPolicy(k_min=1.0, cap=0.8, min_exposure=0.0)
    assert violations(weights, shape_only, contributors={0: [1, 2]}) == {
        0: PolicyRule.CONTRIBUTOR_CAP
    }


def test_no_surviving_weight_is_refused() -> None:
    weights = uniform_rows(5, 0.2)
    weights[2] = [0.0, 0.0, 0.2, 0.4, 0.4]
    assert violations(weights, WeightPolicy(k_min=1.0), contributors={2: [0, 1]}) == {
        2: PolicyRule.NO_SURVIVING_WEIGHT
    }
    assert violations(weights, WeightPolicy(k_min=1.0), contributors={2: []}) == {
        2: PolicyRule.NO_SURVIVING_WEIGHT
    }
    # a local row has nothing to renormalise and passes
    check_weights(np.eye(4), WeightPolicy(), contributors={1: []})


@pytest.mark.parametrize(
    ("weights", "kwargs", "message"),
    [
        (np.ones((3, 4)) / 4, {}, "N x N"),
        (np.ones((1, 1)), {}, "N >= 2"),
        (np.ones(4), {}, "N x N"),
        (np.eye(3), {"targets": [3]}, "client index"),
        (np.eye(3), {"targets": [1, 1]}, "repeat"),
        (np.eye(3), {"targets": [True]}, "client index"),
        (np.eye(3), {"targets": [0], "contributors": {1: [0, 2]}}, "no contributor set"),
        (np.eye(3), {"contributors": {1: [1, 2]}}, "exclude it"),
        (np.eye(3), {"contributors": {1: [0, 0]}}, "distinct"),
        (np.eye(3), {"contributors": {1: [0, 7]}}, "client index"),
        (np.eye(3), {"contributors": {1: ["0"]}}, "client indices"),
    ],
)
def test_malformed_arguments_are_config_errors(
    weights: Matrix, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        check_weights(weights, WeightPolicy(), **kwargs)  # type: ignore[arg-type]


def test_check_needs_a_policy_object() -> None:
    with pytest.raises(ConfigError, match="WeightPolicy"):
        check_weights(np.eye(3), {"k_min": 3})  # type: ignore[arg-type]


# -- enforce_policy ---------------------------------------------------------------------------


def test_enforce_caps_by_water_filling_hand_computed() -> None:
    # cap 0.5 of S = 1: the excess 0.2 goes to the others in proportion 2 : 1
    weights = uniform_rows(4, 0.0)
    weights[0] = [0.0, 0.7, 0.2, 0.1]
    out = enforce_policy(weights, WeightPolicy(k_min=1.0, cap=0.5))
    np.testing.assert_allclose(out[0], [0.0, 0.5, 0.2 + 0.2 * 2 / 3, 0.1 + 0.2 / 3], rtol=1e-15)
    # two passes: cap 0.4 -> (0.4, 0.42, 0.18) -> (0.4, 0.4, 0.2)
    weights[0] = [0.0, 0.5, 0.35, 0.15]
    out = enforce_policy(weights, WeightPolicy(k_min=1.0, cap=0.4))
    np.testing.assert_allclose(out[0], [0.0, 0.4, 0.4, 0.2], rtol=1e-15)


def test_enforce_spreads_to_zero_entries_when_the_support_is_too_small() -> None:
    # one victim with all of S = 0.8: cap at 0.4, the rest evenly over the three zero entries
    weights = uniform_rows(5, 0.2)
    weights[0] = [0.2, 0.8, 0.0, 0.0, 0.0]
    out = enforce_policy(weights, WeightPolicy())
    np.testing.assert_allclose(out[0], [0.2, 0.4, 0.4 / 3, 0.4 / 3, 0.4 / 3], rtol=1e-15)
    check_weights(out, WeightPolicy())


def test_enforce_mixes_toward_uniform_with_the_smallest_lambda_hand_computed() -> None:
    # S = 1 on two of four: N_eff = 2 < 3. Σx² = 1/4 + (1 - λ)²·‖D‖², ‖D‖² = 1/4, so
    # (1 - λ)² = (1/3 - 1/4)/(1/4) = 1/3 and x = 1/4 ± (1/4)/sqrt(3)
    weights = uniform_rows(5, 0.0)
    weights[0] = [0.0, 0.5, 0.5, 0.0, 0.0]
    out = enforce_policy(weights, WeightPolicy(k_min=3.0, cap=1.0))
    high, low = 0.25 + 0.25 / math.sqrt(3), 0.25 - 0.25 / math.sqrt(3)
    np.testing.assert_allclose(out[0], [0.0, high, high, low, low], rtol=1e-11)
    assert effective_contributors(out[0, 1:]) == pytest.approx(3.0, rel=1e-11)


def test_enforce_leaves_compliant_and_local_rows_bit_for_bit() -> None:
    weights = uniform_rows(5, 0.3)
    weights[2] = [0.0, 0.0, 1.0, 0.0, 0.0]
    weights[4] = [0.1, 0.9, 0.0, 0.0, 0.0]
    out = enforce_policy(weights, WeightPolicy())
    np.testing.assert_array_equal(np.delete(out, 4, axis=0), np.delete(weights, 4, axis=0))
    assert out[4, 4] == 0.0  # ξ_ii is kept
    assert not np.shares_memory(out, weights)


def test_enforce_refuses_an_infeasible_policy_only_when_a_row_needs_fixing() -> None:
    np.testing.assert_array_equal(enforce_policy(np.eye(3), WeightPolicy()), np.eye(3))
    with pytest.raises(ConfigError, match="needs 3 contributors per target; 3 clients give 2"):
        enforce_policy(uniform_rows(3, 0.2), WeightPolicy())
    with pytest.raises(ConfigError, match="needs 5 contributors"):
        enforce_policy(uniform_rows(5, 0.2), WeightPolicy(k_min=1.0, cap=0.2))


@pytest.mark.parametrize(
    "row",
    [[0.5, 0.25, 0.25, 0.1], [0.5, 0.5, 0.5, -0.5], [0.25, 0.25, 0.25, math.nan]],
)
def test_enforce_refuses_non_stochastic_input(row: list[float]) -> None:
    weights = uniform_rows(4, 0.25)
    weights[1] = row
    with pytest.raises(ConfigError, match="row 1"):
        enforce_policy(weights, WeightPolicy(k_min=1.0))


@st.composite
def weights_and_policies(draw: st.DrawFn) -> tuple[Matrix, WeightPolicy]:
    """Row-stochastic matrices with Dirichlet-like rows (exponential draws, many zeros, some
    concentrated) and a policy that is feasible for them (N - 1 >= k_min, cap·(N - 1) >= 1)."""
    n = draw(st.integers(min_value=2, max_value=9))
    rows = []
    for i in range(n):
        self_weight = draw(st.sampled_from([0.0, 0.5]) | st.floats(0.0, 0.95))
        shape = draw(st.sampled_from([0.05, 1.0, 5.0]))
        uniforms = draw(
            st.lists(st.just(0.0) | st.floats(1e-6, 1.0 - 1e-9), min_size=n - 1, max_size=n - 1)
        )
        raw = np.array([(-math.log1p(-u)) ** (1 / shape) if u else 0.0 for u in uniforms])
        local = draw(st.booleans()) and draw(st.booleans())
        if local or not raw.any():
            off, self_weight = np.zeros(n - 1), 1.0
        else:
            off = (1 - self_weight) * raw / raw.sum()
        rows.append(np.insert(off, i, self_weight))
    others = n - 1
    k_min = draw(st.floats(1.0, float(others)))
    cap = draw(st.floats(1.0 / others, 1.0))
    min_exposure = draw(st.sampled_from([0.0, 0.5]) | st.floats(0.0, 0.9))
    colluders = draw(st.sampled_from([1, 1, 0, 2]))
    policy = WeightPolicy(k_min=k_min, cap=cap, min_exposure=min_exposure, colluders=colluders)
    return np.array(rows), policy


def compliant(weights: Matrix, policy: WeightPolicy, target: int) -> bool:
    try:
        check_weights(weights, policy, targets=[target])
    except WeightPolicyViolation:
        return False
    return True


@PROPERTY
@given(weights_and_policies())
def test_enforce_always_yields_compliant_weights_when_feasible(
    case: tuple[Matrix, WeightPolicy],
) -> None:
    weights, policy = case
    assume(policy.feasible(weights.shape[0] - 1))
    out = enforce_policy(weights, policy)
    check_weights(out, policy)
    np.testing.assert_array_equal(np.diag(out), np.diag(weights))
    assert (out >= 0).all()
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    for i in range(weights.shape[0]):
        # with more colluders a row that passes alone can be blamed with another
        if policy.colluders <= 1 and compliant(weights, policy, i):
            np.testing.assert_array_equal(out[i], weights[i])
    np.testing.assert_array_equal(enforce_policy(out, policy), out)  # idempotent


_SATURATED = np.eye(8)
_SATURATED[7] = [0, 0, 3.00547893e-04, 3.00547893e-04, 9.99398904e-01, 1.42060102e-24, 1.42e-24, 0]


@PROPERTY
@given(weights_and_policies())
@example((_SATURATED, WeightPolicy(k_min=1.0, cap=1 / 3)))  # found by CI: cap x 3 == the total
def test_capping_alone_preserves_the_proportions_of_uncapped_entries(
    case: tuple[Matrix, WeightPolicy],
) -> None:
    weights, policy = case
    # no mixing: only water-filling (the exposure step mixes too, so it is off here)
    policy = WeightPolicy(k_min=1.0, cap=policy.cap, min_exposure=0.0)
    out = enforce_policy(weights, policy)
    assert (out >= 0).all()
    for i in range(weights.shape[0]):
        off_in, off_out = np.delete(weights[i], i), np.delete(out[i], i)
        total = off_in.sum()
        free = (off_out < policy.cap * total * (1 - 1e-9)) & (off_in > 0)
        # when the capped entries take the whole mass (cap x their count == the total, up to
        # rounding) nothing is left for the free ones: they keep (about) zero, not their share
        if free.sum() >= 2 and off_out[free].sum() > 1e-9 * total:
            ratios = off_out[free] / off_in[free]
            np.testing.assert_allclose(ratios, ratios[0], rtol=1e-9)
            assert ratios[0] >= 1 - 1e-12  # the uncapped entries only ever gain


# -- the exposure rule (issue 21) -------------------------------------------------------------


def attack_row(n: int) -> Matrix:
    """Issue 21's weight-shape attack on target 0: cap weight on victim 1, the rest thin."""
    weights = uniform_rows(n, 0.5)
    weights[0] = 0.0
    weights[0, 0], weights[0, 1] = 0.5, 0.25
    weights[0, 2:] = 0.25 / (n - 2)
    return weights


def test_the_exposure_rule_refuses_what_the_shape_rules_accept() -> None:
    weights = attack_row(8)
    check_weights(weights, WeightPolicy(min_exposure=0.0))  # k_min 3, cap 0.5: accepted
    with pytest.raises(WeightPolicyViolation) as info:
        check_weights(weights, WeightPolicy())
    assert info.value.violations == ((0, PolicyRule.EXPOSURE),)
    message = str(info.value)
    for named in ("target 0", "client 1", "min_exposure=0.5"):
        assert named in message
    for value in ("0.25", "0.378"):  # thresholds, never values
        assert value not in message
    # the same row is fine for a policy that asks less than its exposure 1/sqrt(7) = 0.378
    check_weights(weights, WeightPolicy(min_exposure=0.37))
    assert violations(weights, WeightPolicy(min_exposure=0.38)) == {0: PolicyRule.EXPOSURE}


def test_a_two_contributor_row_passes_exposure_but_not_k_min() -> None:
    """Why the shape rules stay: N_eff = 2 leaves exposure 0.71 against one colluder, which
    the exposure rule accepts; once one of the two colludes, the other is exposed."""
    weights = uniform_rows(5, 0.5)
    weights[0] = [0.5, 0.25, 0.25, 0.0, 0.0]
    check_weights(weights, WeightPolicy(k_min=1.0, cap=1.0))
    assert violations(weights, WeightPolicy()) == {0: PolicyRule.EFFECTIVE_CONTRIBUTORS}
    # two colluders: target 0 with client 2 reads client 1 (and vice versa); target 0 with
    # target 4 differences their outputs into client 3's model (and 0 with 3 into 4's), so both
    # rows of each such pair are blamed -- each is needed
    assert violations(weights, WeightPolicy(k_min=1.0, cap=1.0, colluders=2)) == {
        0: PolicyRule.EXPOSURE,
        3: PolicyRule.EXPOSURE,
        4: PolicyRule.EXPOSURE,
    }


def test_exposure_after_dropouts_is_checked_on_the_surviving_rows() -> None:
    weights = uniform_rows(6, 0.5)
    weights[0] = [0.5, 0.15, 0.15, 0.15, 0.025, 0.025]  # client 3 well hidden among 1 and 2
    policy = WeightPolicy(k_min=1.0, cap=1.0)
    check_weights(weights, policy)
    survivors = {0: [3, 4, 5], 3: [0, 4, 5]}  # 1 and 2 dropped: 3 dominates what is left
    assert violations(weights, policy, contributors=survivors) == {0: PolicyRule.EXPOSURE}
    check_weights(weights, policy, contributors={0: [1, 3, 4, 5], 3: [0, 1, 4, 5]})


def test_every_row_gets_one_rule_and_exposure_comes_after_the_shape_rules() -> None:
    weights = attack_row(8)
    weights[3] = [0.0, 0.0, 0.0, 0.5, 0.5, 0.0, 0.0, 0.0]  # N_eff = 1 and exposure 0
    assert violations(weights, WeightPolicy()) == {
        0: PolicyRule.EXPOSURE,
        3: PolicyRule.EFFECTIVE_CONTRIBUTORS,
    }


@pytest.mark.parametrize("n", [8, 20, 40])
def test_enforce_projects_the_attack_row_to_the_boundary_and_nothing_else(n: int) -> None:
    weights = attack_row(n)
    out = enforce_policy(weights, WeightPolicy())
    check_weights(out, WeightPolicy())
    np.testing.assert_array_equal(out[1:], weights[1:])
    assert out[0, 0] == 0.5
    assert math.fsum(out[0].tolist()) == pytest.approx(1.0, abs=1e-15)
    assert exposure(out, collusion_bound=1).min() == pytest.approx(0.5, abs=1e-12)
    assert out[0, 1] < weights[0, 1]  # the victim's weight fell toward uniform
    np.testing.assert_array_equal(enforce_policy(out, WeightPolicy()), out)


def test_enforce_with_dropouts_keeps_every_survivor_set_compliant() -> None:
    rng = np.random.default_rng(4)
    policy = WeightPolicy(k_min=1.0, cap=1.0)
    for _ in range(20):
        n, dropouts = 7, 2
        weights = rng.dirichlet(np.full(n, 0.3), size=n) * 0.5
        np.fill_diagonal(weights, 0.0)
        weights = 0.5 * weights / weights.sum(axis=1, keepdims=True)
        np.fill_diagonal(weights, 0.5)
        out = enforce_policy(weights, policy, dropouts=dropouts)
        for count in range(dropouts + 1):
            for dropped in itertools.combinations(range(n), count):
                alive = [u for u in range(n) if u not in dropped]
                contributors = {i: [u for u in alive if u != i] for i in alive}
                check_weights(out, policy, contributors=contributors)
        # without the dropouts argument some survivor set fails for these concentrated rows
    plain = enforce_policy(weights, policy)
    assert not np.array_equal(plain, out)


@pytest.mark.parametrize("colluders", [2, 3])
def test_enforce_with_more_colluders_yields_compliant_weights(colluders: int) -> None:
    rng = np.random.default_rng(colluders)
    policy = WeightPolicy(k_min=1.0, cap=1.0, colluders=colluders)
    for _ in range(10):
        n = 8
        weights = rng.dirichlet(np.full(n, 0.3), size=n)
        out = enforce_policy(weights, policy)
        check_weights(out, policy)
        np.testing.assert_array_equal(np.diag(out), np.diag(weights))


def test_enforce_refuses_when_uniform_rows_miss_the_exposure() -> None:
    # N = 3, two colluders: every coalition is everyone but the victim
    with pytest.raises(ConfigError, match="contributors per target"):
        enforce_policy(uniform_rows(3, 0.2), WeightPolicy(k_min=1.0, cap=1.0, colluders=2))
    with pytest.raises(ConfigError, match="dropouts"):
        enforce_policy(uniform_rows(4, 0.2), WeightPolicy(), dropouts=-1)


def test_the_exposure_check_costs_little_at_62_clients() -> None:
    """Measured for docs/fedamp.md: the shape rules and the exposure rule at N = 62."""
    rng = np.random.default_rng(62)
    weights = enforce_policy(rng.dirichlet(np.ones(62), size=62), WeightPolicy())
    timings = {}
    for name, policy in {
        "shape": WeightPolicy(min_exposure=0.0),
        "shape+exposure n_C=1": WeightPolicy(),
        "shape+exposure n_C=2": WeightPolicy(colluders=2),
    }.items():
        best = math.inf
        for _ in range(3):
            start = time.perf_counter()
            with contextlib.suppress(WeightPolicyViolation):
                check_weights(weights, policy)
            best = min(best, time.perf_counter() - start)
        timings[name] = best
    print(
        "\n[policy] N=62 check_weights: "
        + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in timings.items())
    )
    assert max(timings.values()) < 0.5


# -- encoding ---------------------------------------------------------------------------------


def test_encoding_layout_and_round_trip() -> None:
    weights = uniform_rows(3, 0.5)
    data = encode_weights(weights)
    assert data[:9] == struct.pack(">BII", 1, 3, 3)
    assert data[9:17] == struct.pack(">d", 0.5)
    assert len(data) == 9 + 8 * 9
    decoded = decode_weights(data, 3)
    np.testing.assert_array_equal(decoded, weights)
    assert decoded.dtype == np.float64
    assert not decoded.flags.writeable
    assert encode_weights(decoded) == data


def test_negative_zero_is_encoded_as_zero() -> None:
    weights = np.eye(3)
    negative = weights.copy()
    negative[0, 1] = -0.0
    assert encode_weights(negative) == encode_weights(weights)


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        (np.ones((2, 3)), "N x N"),
        (np.full((2, 2), math.inf), "finite"),
        (np.array([[1.5, -0.5], [0.0, 1.0]]), "non-negative"),
        (np.eye(MAX_WEIGHT_CLIENTS + 1), "number of clients"),
    ],
)
def test_encode_refuses_what_it_cannot_represent(weights: Matrix, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        encode_weights(weights)


def _with_value(data: bytes, index: int, raw: bytes) -> bytes:
    start = 9 + 8 * index
    return data[:start] + raw + data[start + 8 :]


GOOD = encode_weights(uniform_rows(3, 0.25))
MALFORMED = {
    "empty": b"",
    "truncated": GOOD[:-1],
    "trailing byte": GOOD + b"\x00",
    "header only": GOOD[:9],
    "version 0": b"\x00" + GOOD[1:],
    "version 2": b"\x02" + GOOD[1:],
    "rows 4": GOOD[:1] + struct.pack(">I", 4) + GOOD[5:],
    "columns 2": GOOD[:5] + struct.pack(">I", 2) + GOOD[9:],
    "nan": _with_value(GOOD, 4, struct.pack(">d", math.nan)),
    "nan payload": _with_value(GOOD, 4, bytes.fromhex("7ff8000000000001")),
    "inf": _with_value(GOOD, 0, struct.pack(">d", math.inf)),
    "negative": _with_value(GOOD, 1, struct.pack(">d", -0.25)),
    "negative zero": _with_value(GOOD, 2, struct.pack(">d", -0.0)),
}


@pytest.mark.parametrize("data", list(MALFORMED.values()), ids=list(MALFORMED))
def test_malformed_encodings_are_remote_protocol_errors(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_weights(data, 3)


def test_decode_takes_bytes_like_only_and_a_valid_n() -> None:
    np.testing.assert_array_equal(decode_weights(bytearray(GOOD), 3), decode_weights(GOOD, 3))
    with pytest.raises(RemoteProtocolError):
        decode_weights("not bytes", 3)  # type: ignore[arg-type]
    for n in (1, MAX_WEIGHT_CLIENTS + 1, 3.0, True):
        with pytest.raises(ConfigError, match="number of clients"):
            decode_weights(GOOD, n)  # type: ignore[arg-type]


def decodes_or_rejects(data: bytes, n: int) -> None:
    """The h11 invariant: a RemoteProtocolError or a canonical encoding, nothing else."""
    try:
        weights = decode_weights(data, n)
    except RemoteProtocolError:
        return
    assert encode_weights(weights) == data


@settings(max_examples=300, deadline=timedelta(milliseconds=500))
@given(st.binary(max_size=120), st.integers(min_value=2, max_value=4))
def test_fuzz_arbitrary_bytes(data: bytes, n: int) -> None:
    decodes_or_rejects(data, n)


@settings(max_examples=300, deadline=timedelta(milliseconds=500))
@given(st.integers(min_value=0, max_value=len(GOOD) - 1), st.integers(0, 255))
def test_fuzz_single_byte_edits(position: int, value: int) -> None:
    decodes_or_rejects(GOOD[:position] + bytes([value]) + GOOD[position + 1 :], 3)


@settings(max_examples=100, deadline=timedelta(milliseconds=500))
@given(
    st.lists(
        st.floats(min_value=0.0, max_value=1e300, allow_subnormal=True), min_size=9, max_size=9
    )
)
def test_fuzz_round_trip(values: list[float]) -> None:
    weights = np.array(values).reshape(3, 3)
    data = encode_weights(weights)
    np.testing.assert_array_equal(decode_weights(data, 3), weights)
    decodes_or_rejects(data, 3)


# -- layering ---------------------------------------------------------------------------------


def test_policy_imports_only_numpy_errors_and_the_standard_library() -> None:
    source = Path(policy_module.__file__).read_text(encoding="utf-8")
    roots: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            roots.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            roots.add(node.module)
    outside = {
        name
        for name in roots
        if name.split(".")[0] not in sys.stdlib_module_names
        and name not in {"numpy", "numpy.typing", "securefed.errors", "securefed.secagg.exposure"}
    }
    assert outside == set()
