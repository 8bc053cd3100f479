"""FedAMP's proximal term (mu/2)||w - u||^2: its true gradient mu (w - u), added after clipping and
noise. With a zero data gradient the weights approach u as (1 - lr mu)^steps; with DP the data
part is still noised at exactly sigma C / B."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from securefed.dp import GradSampleMode, PrivateTrainer, TrainingConfig
from securefed.errors import ConfigError
from securefed.models import flat_parameters
from tests.dp.helpers import dp_config, make_trainer, silenced_linear

LR, MU = 0.1, 0.5
N, BATCH, EPOCHS = 64, 16, 2  # q = 0.25, 4 steps an epoch, 8 a round
STEPS_PER_ROUND = EPOCHS * (N // BATCH)

MODES = {
    "plain": (None, None),
    # C = 1e-9: the clipped data gradient and the noise (sigma C / B) are negligible, so only
    # the proximal gradient moves the weights. Had it been clipped with the data gradient, the
    # weights would move by at most lr * C per step.
    "dp-ghost": (
        dp_config(target_epsilon=50.0, max_grad_norm=1e-9, ghost_clipping=True),
        GradSampleMode.GHOST,
    ),
    "dp-hooks": (
        dp_config(target_epsilon=50.0, max_grad_norm=1e-9, ghost_clipping=False),
        GradSampleMode.HOOKS,
    ),
}


def _silenced_trainer(
    tmp_path: Path, mode: str, *, features: int, classes: int, dp: object = None
) -> PrivateTrainer:
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(N, features, generator=generator)
    y = torch.randint(0, classes, (N,), generator=generator)
    config = MODES[mode][0] if dp is None else dp
    return PrivateTrainer(
        silenced_linear(features, classes, seed=1),
        x,
        y,
        training=TrainingConfig(lr=LR, batch_size=BATCH, local_epochs=EPOCHS, proximal_lambda=MU),
        dp=config,  # type: ignore[arg-type]
        planned_rounds=2,
        state_dir=tmp_path,
        seed=11,
    )


@pytest.mark.parametrize("mode", list(MODES))
def test_with_zero_data_gradient_weights_approach_the_anchor_at_the_expected_rate(
    tmp_path: Path, mode: str
) -> None:
    trainer = _silenced_trainer(tmp_path, mode, features=8, classes=5)
    assert trainer.grad_sample_mode is MODES[mode][1]
    assert trainer.steps_per_round == STEPS_PER_ROUND
    w0 = flat_parameters(trainer.model())
    anchor = np.random.default_rng(2).normal(size=w0.shape)
    for round_ in (1, 2):
        trainer.train_round(round_, anchor=anchor)
    steps = 2 * STEPS_PER_ROUND
    expected = anchor + (1 - LR * MU) ** steps * (w0 - anchor)
    w = flat_parameters(trainer.model())
    np.testing.assert_allclose(w, expected, rtol=0, atol=2e-6)
    moved = np.abs(w - w0).max()
    assert moved > 0.1
    assert moved > 1e6 * steps * LR * 1e-9


@pytest.mark.parametrize("ghost", [True, False], ids=["ghost", "hooks"])
def test_with_dp_the_data_part_is_still_noised_at_sigma_c_over_b(
    tmp_path: Path, ghost: bool
) -> None:
    """Zero data gradient, C = sigma = 1, every coordinate starting 1 above the anchor:
    e_{t+1} = a e_t - lr xi_t with a = 1 - lr mu and xi_t ~ N(0, (sigma C / B)^2) per coordinate.
    After T steps the coordinates have mean a^T and standard deviation
    lr (sigma C / B) sqrt(sum_{k<T} a^(2k))."""
    dp = dp_config(max_grad_norm=1.0, noise_multiplier=1.0, ghost_clipping=ghost)
    trainer = _silenced_trainer(tmp_path, "plain", features=64, classes=32, dp=dp)
    w0 = flat_parameters(trainer.model())
    anchor = w0 - 1.0
    trainer.train_round(1, anchor=anchor)
    e = flat_parameters(trainer.model()) - anchor
    a, steps = 1 - LR * MU, STEPS_PER_ROUND
    std = LR * (1.0 * 1.0 / BATCH) * np.sqrt(sum(a ** (2 * k) for k in range(steps)))
    assert e.size == 64 * 32 + 32
    assert abs(e.mean() - a**steps) < 5 * std / np.sqrt(e.size)
    assert e.std() == pytest.approx(std, rel=0.06)


def test_without_an_anchor_or_with_mu_zero_there_is_no_proximal_pull(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path / "a", dp=None)
    w0 = flat_parameters(trainer.model())
    trainer.train_round(1, anchor=None)
    free = flat_parameters(trainer.model())
    again = make_trainer(tmp_path / "b", dp=None)  # proximal_lambda = 0: the anchor is ignored
    again.train_round(1, anchor=w0 + 100.0)
    np.testing.assert_array_equal(flat_parameters(again.model()), free)


@pytest.mark.parametrize(
    ("anchor", "match"),
    [
        (np.zeros(3), "anchor must be a 1-D vector of 67 values"),
        (np.zeros((67, 1)), "anchor must be a 1-D vector"),
        (np.full(67, np.nan), "NaN or infinite"),
    ],
    ids=["short", "2-D", "nan"],
)
def test_a_bad_anchor_is_refused_before_anything_is_charged(
    tmp_path: Path, anchor: np.ndarray, match: str
) -> None:
    trainer = make_trainer(
        tmp_path,
        dp=dp_config(),
        training=TrainingConfig(lr=0.1, batch_size=10, proximal_lambda=0.1),
    )
    with pytest.raises(ConfigError, match=match):
        trainer.train_round(1, anchor=anchor)
    assert trainer.charges == ()
    assert trainer.epsilon() == 0.0
