"""The budget: sigma fixed once, refusal exactly when the next round would exceed it, and a
refusal charges and trains nothing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from opacus.accountants import PRVAccountant
from opacus.accountants.utils import get_noise_multiplier

from securefed.dp import STATE_FILE, AccountantKind, TrainingConfig
from securefed.errors import PrivacyBudgetExceeded
from tests.dp.helpers import dp_config, make_trainer, params_of

SIGMA, Q, STEPS, DELTA = 1.0, 0.1, 10, 1e-5  # n = 100, batch 10: q = 0.1, 10 steps a round


def _opacus_prv_epsilon(rounds: int) -> float:
    """The epsilon after ``rounds`` rounds, from a plain Opacus PRV accountant."""
    accountant = PRVAccountant()
    accountant.history = [(SIGMA, Q, STEPS * rounds)]
    return float(accountant.get_epsilon(DELTA))


def _train_until_refused(tmp_path: Path, target: float, limit: int = 8) -> tuple[int, list[float]]:
    trainer = make_trainer(
        tmp_path,
        dp=dp_config(target_epsilon=target, accountant=AccountantKind.PRV, noise_multiplier=SIGMA),
    )
    assert trainer.sample_rate == Q
    assert trainer.steps_per_round == STEPS
    epsilons = []
    for round_ in range(1, limit + 1):
        try:
            spend = trainer.train_round(round_)
        except PrivacyBudgetExceeded:
            return round_ - 1, epsilons
        assert spend is not None
        epsilons.append(spend.epsilon)
    return limit, epsilons


@pytest.mark.parametrize(
    ("where", "expected_rounds"),
    [("exactly eps(3)", 3), ("between eps(3) and eps(4)", 3), ("just below eps(3)", 2)],
)
def test_refusal_exactly_when_the_next_round_would_exceed(
    tmp_path: Path, where: str, expected_rounds: int
) -> None:
    eps3, eps4 = _opacus_prv_epsilon(3), _opacus_prv_epsilon(4)
    target = {
        "exactly eps(3)": eps3,
        "between eps(3) and eps(4)": (eps3 + eps4) / 2,
        "just below eps(3)": eps3 - 1e-6,
    }[where]
    rounds, epsilons = _train_until_refused(tmp_path, target)
    assert rounds == expected_rounds
    assert epsilons == [_opacus_prv_epsilon(k) for k in range(1, rounds + 1)]


def test_a_refused_round_charges_and_trains_nothing(tmp_path: Path) -> None:
    target = (_opacus_prv_epsilon(1) + _opacus_prv_epsilon(2)) / 2
    trainer = make_trainer(
        tmp_path,
        dp=dp_config(target_epsilon=target, accountant=AccountantKind.PRV, noise_multiplier=SIGMA),
    )
    trainer.train_round(1)
    state_before = (tmp_path / STATE_FILE).read_bytes()
    params_before = params_of(trainer)
    epsilon_before = trainer.epsilon()
    assert trainer.epsilon_after_next_round() == pytest.approx(_opacus_prv_epsilon(2))
    for _ in range(2):  # refusing twice changes nothing either
        with pytest.raises(PrivacyBudgetExceeded, match=r"round 2 refused.*nothing was charged"):
            trainer.train_round(2)
    assert (tmp_path / STATE_FILE).read_bytes() == state_before
    np.testing.assert_array_equal(params_of(trainer), params_before)
    assert trainer.epsilon() == epsilon_before
    assert [c.round for c in trainer.charges] == [1]


def test_sigma_is_fixed_once_from_the_target_and_the_planned_rounds(tmp_path: Path) -> None:
    dp = dp_config(target_epsilon=3.0, noise_multiplier=None, accountant=AccountantKind.PRV)
    trainer = make_trainer(tmp_path, dp=dp, planned_rounds=4)
    expected = get_noise_multiplier(
        target_epsilon=3.0, target_delta=DELTA, sample_rate=Q, steps=4 * STEPS, accountant="prv"
    )
    assert trainer.noise_multiplier == expected
    assert json.loads((tmp_path / STATE_FILE).read_text())["noise_multiplier"] == expected
    spends = [trainer.train_round(r) for r in range(1, 5)]  # all planned rounds fit ...
    assert all(s is not None and s.noise_multiplier == expected for s in spends)
    assert spends[-1] is not None
    assert 2.9 < spends[-1].epsilon <= 3.0
    with pytest.raises(PrivacyBudgetExceeded):  # ... and not one more
        trainer.train_round(5)
    # A restart that plans many more rounds (which would call for a larger sigma) keeps sigma.
    restarted = make_trainer(tmp_path, dp=dp, planned_rounds=100)
    assert restarted.noise_multiplier == expected
    with pytest.raises(PrivacyBudgetExceeded):
        restarted.train_round(5)


def test_without_dp_nothing_is_accounted(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, dp=None, training=TrainingConfig(lr=0.1, batch_size=32))
    assert trainer.train_round(1) is None
    assert trainer.epsilon() is None
    assert trainer.noise_multiplier is None
    assert trainer.steps_per_round == 4  # ceil(100 / 32): every record once per epoch
    assert not (tmp_path / STATE_FILE).exists()
    assert trainer.hazards() == [
        "differential privacy is off: the model updates this institution releases carry no "
        "record-level privacy guarantee"
    ]
