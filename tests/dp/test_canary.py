"""The one-run canary audit end to end: calibration on a Gaussian mechanism of known epsilon,
an honest DP-SGD run (bound below the accountant), and the simulated bug -- the accountant told
sigma = 1 while training adds no noise -- which the audit must flag."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
from dp_accounting.pld.privacy_loss_mechanism import GaussianPrivacyLoss

from securefed.audit.canary_bound import CanaryResult, evaluate_canaries, write_canary_result
from securefed.audit.rundata import load_run_data
from securefed.dp import AccountantKind, epsilon_for
from securefed.dp.canary import (
    PRESETS,
    CanaryRun,
    CanaryScore,
    DPSGDCanaryAudit,
    GaussianCanaryAudit,
    Preset,
    gaussian_delta,
    gaussian_epsilon,
    preset_audit,
    run_canary_audit,
)
from securefed.errors import ConfigError


def _fast_broken(seed: int, score: str = "gradient") -> CanaryRun:
    """A small, seeded variant of the broken-no-noise preset (seconds on one core)."""
    return run_canary_audit(
        "broken-no-noise", canaries=500, real_records=500, score=score, seed=seed
    )


# -- the Gaussian mechanism's exact epsilon -----------------------------------------------------


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.0, 5.0])
def test_gaussian_delta_is_balle_wang_exactly(sigma: float) -> None:
    reference = GaussianPrivacyLoss(standard_deviation=sigma, sensitivity=1.0)
    for epsilon in (0.0, 0.3, 1.0, 3.0, 8.0):
        expected = reference.get_delta_for_epsilon(epsilon)
        assert gaussian_delta(epsilon, sigma=sigma) == pytest.approx(expected, rel=1e-9, abs=1e-15)


def test_gaussian_epsilon_inverts_delta_and_agrees_with_opacus() -> None:
    for sigma in (0.7, 1.0, 2.0):
        epsilon = gaussian_epsilon(sigma=sigma, delta=1e-5)
        assert (
            gaussian_delta(epsilon, sigma=sigma)
            <= 1e-5
            < gaussian_delta(epsilon * 0.999, sigma=sigma)
        )
        # Opacus's PRV accountant for one full-batch step is an upper bound within ~1%
        prv = epsilon_for(AccountantKind.PRV, ((sigma, 1.0, 1),), 1e-5)
        assert epsilon <= prv <= epsilon * 1.01 + 1e-3
    assert gaussian_epsilon(sigma=1.0, delta=0.5) == 0.0  # delta(0) = 0.383 < 0.5
    with pytest.raises(ConfigError, match="delta"):
        gaussian_epsilon(sigma=1.0, delta=0.0)


# -- calibration --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sigma", "canaries", "k"),
    [
        (2.0, 1000, 100),  # true eps ~ 1.8; one run with 200 guesses can certify up to ~4.2
        (1.0, 4000, 400),  # true eps ~ 4.4; 800 guesses can certify up to ~5.6
    ],
)
def test_calibration_bound_never_exceeds_the_true_epsilon(
    sigma: float, canaries: int, k: int
) -> None:
    truth = gaussian_epsilon(sigma=sigma, delta=1e-5)
    bounds = []
    for seed in range(10):
        run = GaussianCanaryAudit(canaries=canaries, k_plus=k, k_minus=k, sigma=sigma).run(
            seed=seed
        )
        result = evaluate_canaries(run)
        assert result.claimed_epsilon == truth
        bounds.append(result.epsilon_lower_bound)
    assert max(bounds) <= truth
    assert sum(bounds) / len(bounds) > 0.25 * truth  # not vacuous: it sees the signal


def test_calibration_preset_runs_and_is_reproducible() -> None:
    first = run_canary_audit("calibration", seed=3)
    assert first == dataclasses.replace(
        run_canary_audit("calibration", seed=3), seconds=first.seconds
    )
    assert len(first.scores) == len(first.included) == 1000
    assert 400 < sum(first.included) < 600  # fair coins
    assert run_canary_audit("calibration", seed=4).included != first.included
    result = evaluate_canaries(first)
    assert 0 < result.epsilon_lower_bound <= result.claimed_epsilon
    assert "Gaussian mechanism, sigma=1" in result.configuration


# -- DP-SGD ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def broken() -> CanaryResult:
    return evaluate_canaries(_fast_broken(0))


def test_broken_configuration_is_flagged(broken: CanaryResult) -> None:
    """THE acceptance test: the accountant is told sigma = 1, training adds no noise."""
    result = broken
    assert "SIMULATED BUG" in result.configuration
    assert 0 < result.claimed_epsilon < 2  # what the accountant charged for sigma = 1
    assert result.exceeds_claim
    assert result.epsilon_lower_bound > 2 * result.claimed_epsilon


def test_the_same_run_with_the_noise_it_claims_is_not_flagged() -> None:
    preset = preset_audit("broken-no-noise", canaries=500)
    assert isinstance(preset, DPSGDCanaryAudit)
    broken = dataclasses.replace(preset, real_records=500)
    honest = dataclasses.replace(broken, training_noise=True)
    flagged = evaluate_canaries(broken.run(seed=0))
    clean = evaluate_canaries(honest.run(seed=0))
    assert clean.claimed_epsilon == flagged.claimed_epsilon  # same records, q, steps, sigma claim
    assert clean.epsilon_lower_bound <= clean.claimed_epsilon < flagged.epsilon_lower_bound


def test_honest_dp_sgd_bound_stays_below_the_accountant() -> None:
    # target 2 is below what one run with 200 guesses can certify (~4.2): this can fail.
    result = evaluate_canaries(run_canary_audit("dp-sgd", target_epsilon=2.0, seed=0))
    assert result.claimed_epsilon <= 2.0 + 1e-9
    assert result.epsilon_lower_bound <= result.claimed_epsilon
    assert "q=1," in result.configuration


def test_honest_dp_sgd_audit_has_power() -> None:
    # At the preset's target (8) the white-box scores separate the canaries clearly.
    result = evaluate_canaries(run_canary_audit("dp-sgd", seed=1))
    assert 1.5 < result.epsilon_lower_bound <= result.claimed_epsilon <= 8.0 + 1e-9


def test_black_box_loss_score_also_flags_the_bug() -> None:
    run = _fast_broken(2, "loss")
    result = evaluate_canaries(run)
    assert "loss score" in result.method
    assert result.exceeds_claim


def test_the_result_lands_in_the_report(broken: CanaryResult, tmp_path: Path) -> None:
    path = write_canary_result(broken, tmp_path)
    assert path.name == "canary.json"
    assert load_run_data(tmp_path).canary == broken.to_dict()


# -- presets and errors -------------------------------------------------------------------------


def test_presets_fix_the_guess_counts_from_m_alone() -> None:
    assert set(PRESETS) == set(Preset)
    for preset in Preset:
        audit = preset_audit(preset)
        assert audit.canaries == PRESETS[preset][0] == 1000
        assert audit.k_plus + audit.k_minus <= audit.canaries
    broken = preset_audit("broken-no-noise")
    assert isinstance(broken, DPSGDCanaryAudit)
    assert (broken.noise_multiplier, broken.training_noise, broken.k_minus) == (1.0, False, 0)
    honest = preset_audit(Preset.DP_SGD, canaries=200)
    assert isinstance(honest, DPSGDCanaryAudit)
    assert (honest.canaries, honest.k_plus, honest.training_noise) == (200, 20, True)
    assert honest.score is CanaryScore.GRADIENT


@pytest.mark.parametrize(
    ("preset", "kwargs", "match"),
    [
        ("nope", {}, "unknown canary preset"),
        ("calibration", {"epochs": 3}, "has no setting epochs"),
        ("calibration", {"k_plus": 600, "k_minus": 600}, "exceeds"),
        ("dp-sgd", {"score": "vibes"}, "unknown canary score"),
        ("dp-sgd", {"confidence": 1.0}, "confidence"),
        ("broken-no-noise", {"delta": 0.1}, "delta"),  # the trainer: delta must be << 1/n
        ("calibration", {"sigma": -1.0}, "sigma"),
    ],
)
def test_bad_settings_are_refused(preset: str, kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        run_canary_audit(preset, seed=0, **kwargs)  # type: ignore[arg-type]


def test_an_unseeded_run_draws_fresh_inclusion_bits() -> None:
    first = GaussianCanaryAudit(canaries=256, k_plus=10, k_minus=10).run()
    second = GaussianCanaryAudit(canaries=256, k_plus=10, k_minus=10).run()
    assert first.included != second.included  # 2^-256 chance of a false failure
    assert "unseeded" in first.configuration
    assert math.isfinite(first.claimed_epsilon)
