"""PrivateTrainer.release_statistic: the similarity statistic's Gaussian release is reserved in
the training noise, charged first in the same accountant, clipped, noised, persisted."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from securefed.dp import AccountantKind
from securefed.dp.accounting import epsilon_for, noise_multiplier_for
from securefed.dp.state import STATE_FILE
from securefed.errors import ConfigError, PrivacyBudgetExceeded
from tests.dp.helpers import dp_config, make_trainer

N = 100


def _rows(n: int = N, width: int = 6, *, seed: int = 0) -> np.ndarray:
    rows = np.random.default_rng(seed).normal(size=(n, width))
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_training_noise_leaves_room_for_the_statistic(tmp_path: Path) -> None:
    """sigma is fixed so that the statistic plus every planned round meet the target exactly
    (within Opacus's search tolerance), and is larger than without the reservation."""
    kind = AccountantKind.RDP
    dp = dp_config(noise_multiplier=None, statistic_epsilon=2.0, accountant=kind)
    trainer = make_trainer(tmp_path / "a", dp=dp, planned_rounds=5)
    plain = make_trainer(tmp_path / "b", dp=dp_config(noise_multiplier=None, accountant=kind))
    state = trainer.accountant_state
    assert state is not None
    assert state.statistic_noise_multiplier is not None
    sigma_s = state.statistic_noise_multiplier
    assert sigma_s == noise_multiplier_for(kind, 2.0, 1e-5, 1.0, 1)
    assert trainer.noise_multiplier is not None
    assert plain.noise_multiplier is not None
    assert trainer.noise_multiplier > plain.noise_multiplier
    q, steps = state.sample_rate, 5 * trainer.steps_per_round
    total = epsilon_for(kind, ((sigma_s, 1.0, 1), (trainer.noise_multiplier, q, steps)), 1e-5)
    assert 8.0 - 0.011 <= total <= 8.0


def test_release_then_every_round_stays_within_budget(tmp_path: Path) -> None:
    dp = dp_config(noise_multiplier=None, statistic_epsilon=2.0)
    trainer = make_trainer(tmp_path, dp=dp, planned_rounds=3)
    spends = []
    trainer.release_statistic(0, _rows(), on_charge=spends.append)
    for round_ in (1, 2, 3):
        trainer.train_round(round_)
    assert spends[0].mechanism == "gaussian-statistic"
    assert spends[0].steps == 1
    assert spends[0].sample_rate == 1.0
    eps = trainer.epsilon()
    assert eps is not None
    assert eps <= 8.0 + 1e-9
    with pytest.raises(PrivacyBudgetExceeded):
        trainer.train_round(4)


def test_charge_is_durable_before_the_noise_and_survives_a_restart(tmp_path: Path) -> None:
    dp = dp_config(noise_multiplier=None, statistic_epsilon=1.0)
    trainer = make_trainer(tmp_path, dp=dp)
    seen: list[dict[str, object]] = []

    def on_charge(spend: object) -> None:  # the state on disk when the ledger is written
        seen.append(json.loads((tmp_path / STATE_FILE).read_text()))

    trainer.release_statistic(0, _rows(), on_charge=on_charge)
    charges = seen[0]["charges"]
    assert isinstance(charges, list)
    assert charges[-1]["mechanism"] == "gaussian-statistic"
    before = trainer.epsilon()
    restarted = make_trainer(tmp_path, dp=dp)
    assert restarted.epsilon() == before
    assert before is not None
    assert before > 0
    with pytest.raises(ConfigError, match="statistic noise multiplier"):
        make_trainer(tmp_path, dp=dp_config(noise_multiplier=None, statistic_epsilon=2.0))


def test_release_is_the_clipped_sum_plus_gaussian_noise_of_the_planned_sigma(
    tmp_path: Path,
) -> None:
    dp = dp_config(statistic_epsilon=1.0)
    rows = _rows(width=4000) * 3.0  # norm 3: clipped to 1
    released = make_trainer(tmp_path, dp=dp).release_statistic(0, rows)
    state = make_trainer(tmp_path, dp=dp).accountant_state
    assert state is not None
    assert state.statistic_noise_multiplier is not None
    noise = released - rows.sum(axis=0) / 3.0
    assert abs(noise.mean()) < 0.2
    assert noise.std() == pytest.approx(state.statistic_noise_multiplier, rel=0.05)


def test_same_seed_same_release_and_no_dp_gives_the_exact_sum(tmp_path: Path) -> None:
    dp = dp_config(statistic_epsilon=1.0)
    first = make_trainer(tmp_path / "a", dp=dp).release_statistic(0, _rows())
    second = make_trainer(tmp_path / "b", dp=dp).release_statistic(0, _rows())
    np.testing.assert_array_equal(first, second)
    exact = make_trainer(tmp_path / "c", dp=None).release_statistic(0, _rows())
    np.testing.assert_allclose(exact, _rows().sum(axis=0))


def test_a_release_that_would_exceed_the_budget_is_refused_and_charges_nothing(
    tmp_path: Path,
) -> None:
    dp = dp_config(noise_multiplier=None, statistic_epsilon=4.0)
    trainer = make_trainer(tmp_path, dp=dp, planned_rounds=2)
    trainer.release_statistic(0, _rows())
    trainer.train_round(1)
    trainer.train_round(2)
    before = trainer.accountant_state
    with pytest.raises(PrivacyBudgetExceeded, match="statistic refused"):
        trainer.release_statistic(3, _rows())
    assert trainer.accountant_state == before


@pytest.mark.parametrize(
    ("rows", "match"),
    [
        (np.ones((N - 1, 3)), "one row per training record"),
        (np.ones(N), "one row per training record"),
        (np.full((N, 3), np.nan), "NaN"),
    ],
)
def test_bad_contributions_are_refused_before_any_charge(
    tmp_path: Path, rows: np.ndarray, match: str
) -> None:
    trainer = make_trainer(tmp_path, dp=dp_config(statistic_epsilon=1.0))
    with pytest.raises(ConfigError, match=match):
        trainer.release_statistic(0, rows)
    assert trainer.epsilon() == 0.0


def test_unplanned_statistic_is_refused(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, dp=dp_config())
    with pytest.raises(ConfigError, match="statistic_epsilon"):
        trainer.release_statistic(0, _rows())
    assert trainer.epsilon() == 0.0


def test_statistic_budget_must_leave_room_for_training() -> None:
    with pytest.raises(ConfigError, match="below target_epsilon"):
        dp_config(statistic_epsilon=8.0)
    with pytest.raises(ConfigError, match="statistic_epsilon"):
        dp_config(statistic_epsilon=-1.0)


def test_prv_accountant_handles_the_full_batch_release_quietly(
    recwarn: pytest.WarningsRecorder,
) -> None:
    sigma = noise_multiplier_for(AccountantKind.PRV, 2.0, 1e-5, 1.0, 1)
    eps = epsilon_for(AccountantKind.PRV, ((sigma, 1.0, 1),), 1e-5)
    # The analytic Gaussian mechanism (Balle & Wang 2018) at sigma 2.0 gives eps 2.0 at
    # delta 9.4e-6: PRV's sigma for eps 2 at delta 1e-5 must be just about 2.
    assert 1.98 <= sigma <= 2.05
    assert 1.98 <= eps <= 2.0
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]
