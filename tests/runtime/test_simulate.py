"""The one-round engine harness (``securefed.testing.rounds.simulate_round``): secure results
equal the plaintext reference, reproducibly, and the server's view is complete."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from securefed.errors import ConfigError
from securefed.personalize.rounds import RoundParams, server_dropouts, server_policy
from securefed.personalize.weights import fedamp_weights, heurfedamp_weights
from securefed.secagg.masking import round_outputs, unmask_sum
from securefed.secagg.policy import enforce_policy
from securefed.testing.rounds import RoundResult, simulate_round

PHASE_NAMES = ["advertise", "share", "mask", "consistency", "unmask"]


def make_models(n: int, dim: int = 24, seed: int = 0) -> list[npt.NDArray[np.float64]]:
    rng = np.random.default_rng(seed)
    groups = [rng.uniform(-2, 2, dim) for _ in range(2)]
    return [groups[i % 2] + rng.normal(0, 0.3, dim) for i in range(n)]


def params_for(mode: str, n: int) -> dict[str, Any]:
    return {"partition": [i % 2 for i in range(n)]} if mode == "group" else {}


def check_against_reference(result: RoundResult, models: list[npt.NDArray[np.float64]]) -> None:
    stacked = np.stack(models)
    assert result.personalized
    for target, personalized in result.personalized.items():
        assert np.isclose(result.weights[target].sum(), 1.0)
        expected = result.weights[target] @ stacked
        assert np.max(np.abs(personalized - expected)) <= result.error_bound


@pytest.mark.parametrize("n", [3, 5, 8])
@pytest.mark.parametrize("mode", ["fedavg", "fedamp", "heurfedamp", "group"])
def test_secure_equals_plaintext_without_dropouts(mode: str, n: int) -> None:
    if mode == "group" and n < 6:
        pytest.skip("groups need at least 3 members")
    models = make_models(n)
    result = simulate_round(models, mode=mode, seed=1, **params_for(mode, n))
    assert set(result.personalized) == set(range(n))
    assert result.aborted == {}
    check_against_reference(result, models)


@pytest.mark.parametrize("phase", PHASE_NAMES)
@pytest.mark.parametrize("mode", ["fedavg", "fedamp", "heurfedamp", "group"])
def test_a_dropout_at_every_phase(mode: str, phase: str) -> None:
    n = 8
    models = make_models(n)
    result = simulate_round(models, mode=mode, seed=2, dropouts={5: phase}, **params_for(mode, n))
    assert 5 not in result.personalized
    assert 5 in result.aborted
    assert set(result.personalized) == set(range(n)) - {5}
    check_against_reference(result, models)


def test_same_seed_same_result_and_another_seed_other_rounding() -> None:
    models = make_models(5)
    first = simulate_round(models, mode="fedamp", seed=11)
    again = simulate_round(models, mode="fedamp", seed=11)
    other = simulate_round(models, mode="fedamp", seed=12)
    for i in range(5):
        assert np.array_equal(first.personalized[i], again.personalized[i])
    assert any(not np.array_equal(first.personalized[i], other.personalized[i]) for i in range(5))


def test_server_view_alone_reproduces_the_servers_outputs() -> None:
    """The view is complete: unmasking again from it gives the blinded outputs bit for bit."""
    models = make_models(5)
    result = simulate_round(models, mode="heurfedamp", seed=4, dropouts={2: "mask"})
    view = result.server_view
    (config,) = result.configs
    suite = config.mask_suite  # mask keys are P-256 under verifiable sharing
    dropped = {v: suite.agreement_private_key(k) for v, k in view.mask_keys.items()}
    for output in round_outputs(config, view.survivors):
        contributors = output.contributors(view.survivors)
        secrets = {
            (u, v): key.exchange(suite.agreement_public_key(view.advertised_mask_keys[u]))
            for v, key in dropped.items()
            for u in contributors
            if v != output.target
        }
        again = unmask_sum(
            [view.masked_inputs[(u, output.target)] for u in contributors],
            config=config,
            output=output,
            self_seeds={u: view.self_seeds[u] for u in contributors},
            dropped_secrets=secrets,
        )
        assert np.array_equal(again, view.outputs[output.target])
    for key, vector in view.masked_inputs.items():
        assert vector.ndim == 1
        assert vector.size == 24
        assert isinstance(key, tuple)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "fedprox"}, "unknown mode"),
        ({"mode": "fedamp", "dropouts": {0: "lunch"}}, "phases"),
        ({"mode": "fedamp", "learning_rate": 0.1}, "unknown simulate_round parameters"),
        ({"mode": "group"}, "partition"),
        ({"mode": "fedamp", "similarity": "magic"}, "similarity"),
    ],
)
def test_bad_arguments_are_config_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        simulate_round(make_models(5), seed=0, **kwargs)  # type: ignore[arg-type]


def test_models_of_different_lengths_are_refused() -> None:
    with pytest.raises(ConfigError):
        simulate_round([np.zeros(3), np.zeros(3), np.zeros(4)], mode="fedavg", seed=0)


@pytest.mark.parametrize("mode", ["fedamp", "heurfedamp"])
def test_sketch_based_weights_are_close_to_exact_and_the_server_sees_only_sketches(
    mode: str,
) -> None:
    models = make_models(8, dim=400)
    exact = simulate_round(models, mode=mode, seed=5)
    sketched = simulate_round(models, mode=mode, seed=5, similarity="sketch", sketch_dim=256)
    check_against_reference(sketched, models)
    assert len(sketched.server_view.sketches) == 8
    assert all(s.shape == (256,) for s in sketched.server_view.sketches.values())
    assert np.max(np.abs(sketched.weights - exact.weights)) < 0.15
    # Both find the two latent groups: each target's largest weight is on a same-group client.
    for i in range(8):
        row = sketched.weights[i].copy()
        row[i] = -1
        assert int(np.argmax(row)) % 2 == i % 2


def test_group_partition_chosen_from_sketches_finds_the_latent_groups() -> None:
    models = make_models(8, dim=300)
    result = simulate_round(models, mode="group", seed=9, partition="sketch", groups=2)
    assert result.partition is not None
    labels = result.partition
    assert len(set(labels)) == 2
    assert all((labels[i] == labels[0]) == (i % 2 == 0) for i in range(8))  # the latent groups
    assert len(result.server_view.sketches) == 8
    check_against_reference(result, models)


def test_similarity_inputs_replace_the_models_in_the_similarities_only() -> None:
    """The partition (and the attention weights) follow the similarity inputs -- here grouped
    by i < 4, against the models' i % 2 -- while the aggregate is still of the models."""
    models = make_models(8, dim=300)
    rng = np.random.default_rng(4)
    centres = rng.normal(0, 5, (2, 40))
    inputs = [centres[int(i >= 4)] + rng.normal(0, 0.1, 40) for i in range(8)]
    result = simulate_round(
        models, mode="group", seed=9, partition="sketch", groups=2, similarity_inputs=inputs
    )
    assert result.partition is not None
    assert all((result.partition[i] == result.partition[0]) == (i < 4) for i in range(8))
    assert all(s.shape == (256,) for s in result.server_view.sketches.values())
    check_against_reference(result, models)
    attention = simulate_round(
        models, mode="heurfedamp", seed=5, similarity="sketch", similarity_inputs=inputs
    )
    for i in range(8):
        row = attention.weights[i].copy()
        row[i] = -1
        assert (int(np.argmax(row)) < 4) == (i < 4)


@pytest.mark.parametrize(
    "inputs",
    [[np.zeros(5)] * 7, [np.zeros(5)] * 7 + [np.zeros(6)], [np.full(5, np.nan)] * 8],
)
def test_bad_similarity_inputs_are_refused(inputs: list[np.ndarray]) -> None:
    with pytest.raises(ConfigError, match="similarity inputs"):
        simulate_round(
            make_models(8), mode="group", seed=0, partition="sketch", similarity_inputs=inputs
        )


def test_group_mode_refuses_groups_smaller_than_k_min_plus_colluders() -> None:
    models = [np.full(8, float(i) / 10) for i in range(8)]
    partition = [0, 0, 0, 0, 1, 1, 1, 1]
    ok = simulate_round(models, mode="group", seed=0, partition=partition, colluders=2)
    assert set(ok.personalized) == set(range(8))
    with pytest.raises(ConfigError, match=r"k_min \+ colluders = 5"):
        simulate_round(models, mode="group", seed=0, partition=partition, colluders=3)
    with pytest.raises(ConfigError, match="colluders"):
        simulate_round(models, mode="group", seed=0, partition=partition, colluders=-1)


def test_policy_refusals_are_reported_per_contributor_and_target() -> None:
    # k_min 3.5 leaves the server uniform rows over 4 contributors; when client 4 drops before
    # the masked upload, the renormalised rows have 3 -- below k_min, so contributors refuse.
    models = [np.full(16, i / 10) for i in range(5)]
    result = simulate_round(models, mode="fedamp", seed=0, k_min=3.5, dropouts={4: "mask"})
    assert result.personalized == {}
    assert sorted(result.refusals) == [0, 1, 2, 3]
    assert [target for target, _ in result.refusals[0]] == [1, 2, 3]
    assert {rule for _, rule in result.refusals[0]} == {"effective-contributors"}
    fine = simulate_round(models, mode="fedamp", seed=0, dropouts={4: "mask"})
    assert fine.refusals == {}


@pytest.mark.parametrize("mode", ["fedavg", "fedamp", "heurfedamp", "group"])
def test_plaintext_comparison_is_the_reference_up_to_float_rounding(mode: str) -> None:
    models = make_models(6)
    result = simulate_round(models, mode=mode, seed=3, secure=False, **params_for(mode, 6))
    assert set(result.personalized) == set(range(6))
    assert result.server_view.masked_inputs == {}
    assert result.error_bound < 1e-12
    check_against_reference(result, models)


@pytest.mark.parametrize("mode", ["fedamp", "heurfedamp"])
def test_exact_similarity_is_the_exact_weights_with_the_server_policy(mode: str) -> None:
    """The "exact" oracle: the coordinator's estimators on the raw vectors give xi exactly as
    computed from the models, with the server's weight policy applied."""
    models = make_models(7)
    result = simulate_round(models, mode=mode, seed=6)
    params = RoundParams()
    stacked = np.stack(models)
    if mode == "fedamp":
        raw = fedamp_weights(stacked, alpha=params.alpha, sigma_scale=params.sigma_scale)
    else:
        raw = heurfedamp_weights(stacked, self_weight=0.5, sigma=params.temperature)
    expected = enforce_policy(raw, server_policy(7, params), dropouts=server_dropouts(7, params))
    assert np.allclose(result.server_view.weights, expected, atol=1e-12)
    assert all(
        np.array_equal(result.server_view.sketches[i], models[i]) for i in range(7)
    )  # the oracle's coordinator holds the models themselves: never a deployment's view


def test_a_learned_partition_below_the_group_size_rule_fails_the_round() -> None:
    """Learned groups obey max(3, k_min + colluders) too: the coordinator cannot go on, says
    why in its ledger, and nobody gets a model."""
    models = make_models(8, dim=300)
    ok = simulate_round(models, mode="group", seed=9, partition="sketch", groups=2)
    assert ok.status == "completed"
    failed = simulate_round(models, mode="group", seed=9, partition="sketch", groups=2, colluders=3)
    assert failed.status == "failed"
    assert failed.personalized == {}
    assert set(failed.aborted.values()) == {"the run failed"}
