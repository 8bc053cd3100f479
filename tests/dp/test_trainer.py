"""PrivateTrainer and DPStepper: DP-SGD does what it claims (clipped per-record gradients, ghost
clipping equal to hooks), models are fixed for DP, hazards are reported, training learns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from securefed.dp import (
    AccountantKind,
    DPConfig,
    DPStepper,
    GradSampleMode,
    TrainingConfig,
)
from securefed.dp import trainer as trainer_module
from securefed.errors import ConfigError
from securefed.models import cnn, evaluate, flat_parameters, load_flat_parameters, mlp
from tests.dp.helpers import CLASSES, FEATURES, blobs, dp_config, make_trainer, params_of


def _stepper(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, ghost: bool, clip: float):
    return DPStepper(
        model,
        train_x=x,
        train_y=y,
        training=TrainingConfig(lr=0.5, batch_size=len(x)),
        noise_multiplier=0.0,  # deterministic: only clipping is compared
        max_grad_norm=clip,
        expected_batch_size=float(len(x)),
        accountant=AccountantKind.RDP,
        ghost_clipping=ghost,
        noise_generator=torch.Generator().manual_seed(0),
        secure_mode=False,
    )


def _clipped_mean_gradient_step(model: nn.Module, x, y, *, lr: float, clip: float) -> np.ndarray:
    """Reference DP-SGD step without noise, one record at a time (Opacus's clip factor)."""
    params = list(model.parameters())
    total = [torch.zeros_like(p) for p in params]
    for i in range(len(x)):
        loss = nn.functional.cross_entropy(model(x[i : i + 1]), y[i : i + 1])
        grads = torch.autograd.grad(loss, params)
        norm = torch.sqrt(sum((g.double() ** 2).sum() for g in grads))
        factor = min(1.0, clip / (float(norm) + 1e-6))
        for running, g in zip(total, grads, strict=True):
            running.add_(g, alpha=factor)
    with torch.no_grad():
        return np.concatenate(
            [
                (p - lr * t / len(x)).reshape(-1).double().numpy()
                for p, t in zip(params, total, strict=True)
            ]
        )


@pytest.mark.parametrize("ghost", [True, False], ids=["ghost", "hooks"])
def test_a_dp_step_is_the_mean_of_per_record_clipped_gradients(ghost: bool) -> None:
    x, y = blobs(12, seed=4)
    reference = _clipped_mean_gradient_step(
        mlp(FEATURES, CLASSES, hidden=(8,), seed=0), x, y, lr=0.5, clip=0.1
    )
    stepper = _stepper(mlp(FEATURES, CLASSES, hidden=(8,), seed=0), x, y, ghost=ghost, clip=0.1)
    assert stepper.grad_sample_mode is (GradSampleMode.GHOST if ghost else GradSampleMode.HOOKS)
    stepper.step(x, y, None)
    np.testing.assert_allclose(flat_parameters(stepper.module), reference, atol=1e-6)


def test_ghost_clipping_equals_hooks_on_the_cnn() -> None:
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(6, 1, 28, 28, generator=generator)
    y = torch.randint(0, 10, (6,), generator=generator)
    ghost = _stepper(cnn(10, seed=0), x, y, ghost=True, clip=0.05)
    hooks = _stepper(cnn(10, seed=0), x, y, ghost=False, clip=0.05)
    assert ghost.grad_sample_mode is GradSampleMode.GHOST
    assert ghost.ghost_unavailable is None
    start = flat_parameters(ghost.module)
    for stepper in (ghost, hooks):
        stepper.step(x, y, None)
    moved_ghost = flat_parameters(ghost.module) - start
    moved_hooks = flat_parameters(hooks.module) - start
    scale = np.abs(moved_hooks).max()
    assert 1e-4 < np.linalg.norm(moved_hooks) <= 0.5 * 0.05  # clipped: lr * C at most
    np.testing.assert_allclose(moved_ghost, moved_hooks, rtol=0, atol=1e-3 * scale)


def test_module_validator_fixes_a_batchnorm_model(tmp_path: Path) -> None:
    original = nn.Sequential(
        nn.Linear(FEATURES, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, CLASSES)
    )
    before = flat_parameters(original)
    trainer = make_trainer(tmp_path, dp=dp_config(), model=original)
    fixed = trainer.model()
    assert fixed is not original
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in fixed.modules())
    assert any(isinstance(m, nn.GroupNorm) for m in fixed.modules())
    assert trainer.fixes
    assert "BatchNorm" in " ".join(trainer.fixes)
    assert any("ModuleValidator replaced" in h for h in trainer.hazards())
    start = flat_parameters(fixed)
    trainer.train_round(1)
    assert not np.array_equal(flat_parameters(fixed), start)
    np.testing.assert_array_equal(flat_parameters(original), before)  # caller's model untouched


def test_a_valid_model_is_trained_in_place(tmp_path: Path) -> None:
    model = mlp(FEATURES, CLASSES, hidden=(8,), seed=0)
    trainer = make_trainer(tmp_path, dp=dp_config(), model=model)
    assert trainer.model() is model
    assert trainer.fixes == ()


def test_a_model_already_attached_to_an_engine_is_refused(tmp_path: Path) -> None:
    model = mlp(FEATURES, CLASSES, hidden=(8,), seed=0)
    make_trainer(tmp_path / "first", dp=dp_config(), model=model)
    with pytest.raises(ConfigError, match="already attached to an Opacus engine"):
        make_trainer(tmp_path / "second", dp=dp_config(), model=model)


def test_missing_torchcsprng_is_reported_as_a_hazard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(trainer_module, "secure_rng_available", lambda: False)
    trainer = make_trainer(tmp_path, dp=dp_config(), seed=None)
    hazards = trainer.hazards()
    assert any(
        "secure_mode is off (torchcsprng is not installed)" in h and "Mersenne Twister" in h
        for h in hazards
    )
    assert not any("simulation seed" in h for h in hazards)


def test_a_simulation_seed_is_reported_as_a_hazard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(trainer_module, "secure_rng_available", lambda: True)  # csprng "present"
    hazards = make_trainer(tmp_path, dp=dp_config(), seed=42).hazards()
    assert any("simulation seed 42 is set" in h and "NOT private" in h for h in hazards)
    assert any("secure_mode is off (a simulation seed is set)" in h for h in hazards)
    assert not any("torchcsprng is not installed" in h for h in hazards)


@pytest.mark.parametrize("ghost", [True, False], ids=["ghost", "hooks"])
def test_empty_poisson_batches_are_steps_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ghost: bool
) -> None:
    training = TrainingConfig(lr=0.1, batch_size=1, local_epochs=3)  # n = 10: q = 0.1, 30 steps
    trainer = make_trainer(tmp_path, n=10, dp=dp_config(ghost_clipping=ghost), training=training)
    sizes: list[int] = []
    real_step = trainer._stepper.step

    def step(x: torch.Tensor, y: torch.Tensor, proximal: object) -> None:
        sizes.append(len(x))
        real_step(x, y, proximal)  # type: ignore[arg-type]

    monkeypatch.setattr(trainer._stepper, "step", step)
    spend = trainer.train_round(1)
    assert spend is not None
    assert spend.steps == len(sizes) == 30
    assert 0 in sizes  # with this seed some Poisson batches are empty ...
    assert np.all(np.isfinite(params_of(trainer)))  # ... and still give finite (noise) updates


def test_seeded_runs_are_reproducible_and_seeds_matter(tmp_path: Path) -> None:
    runs = {}
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        trainer = make_trainer(tmp_path / name, dp=dp_config(), seed=seed)
        trainer.train_round(1)
        runs[name] = params_of(trainer)
    np.testing.assert_array_equal(runs["a"], runs["b"])
    assert not np.array_equal(runs["a"], runs["c"])


def test_dp_training_learns_within_its_budget(tmp_path: Path) -> None:
    """Default accountant (PRV), sigma from the target: accuracy rises, epsilon stays in budget."""
    x, y = blobs(400, seed=0)
    test_x, test_y = blobs(400, seed=1)
    model = mlp(FEATURES, CLASSES, hidden=(16,), seed=0)
    before = evaluate(model, test_x, test_y)
    trainer = trainer_module.PrivateTrainer(
        model,
        x,
        y,
        training=TrainingConfig(lr=0.5, batch_size=40),
        dp=DPConfig(target_epsilon=4.0, delta=1e-5),
        planned_rounds=3,
        state_dir=tmp_path,
        seed=3,
    )
    spends = [trainer.train_round(r) for r in range(1, 4)]
    after = evaluate(trainer.model(), test_x, test_y)
    assert before < 0.6
    assert after > 0.9
    epsilons = [s.epsilon for s in spends if s is not None]
    assert epsilons == sorted(epsilons)
    assert 3.5 < epsilons[-1] <= 4.0
    assert all(s is not None and s.accountant == "prv" for s in spends)


def test_the_runtime_can_load_weights_between_rounds(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, dp=dp_config())
    trainer.train_round(1)
    vector = np.linspace(-1, 1, params_of(trainer).size)
    load_flat_parameters(trainer.model(), vector)
    np.testing.assert_allclose(params_of(trainer), vector, atol=1e-7)
    trainer.train_round(2)  # trains on from the loaded parameters
    assert not np.allclose(params_of(trainer), vector)


@pytest.mark.parametrize("round_", [-1, True, 1.5])
def test_a_bad_round_number_is_refused_before_the_charge(tmp_path: Path, round_: object) -> None:
    trainer = make_trainer(tmp_path, dp=dp_config())
    with pytest.raises(ConfigError, match="round must be an integer >= 0"):
        trainer.train_round(round_)  # type: ignore[arg-type]
    assert trainer.charges == ()
