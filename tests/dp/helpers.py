"""Small seeded data and models shared by the DP tests (all CPU, all tiny)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from securefed.dp import AccountantKind, DPConfig, PrivateTrainer, TrainingConfig
from securefed.models import flat_parameters, mlp

FEATURES = 4
CLASSES = 3


def blobs(n: int, *, seed: int = 0, features: int = FEATURES) -> tuple[Tensor, Tensor]:
    """``n`` rows of well separated Gaussian blobs, one blob per class (test data only)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, size=n)
    centres = np.eye(CLASSES, features) * 4.0
    rows = centres[labels] + rng.normal(size=(n, features))
    return torch.tensor(rows, dtype=torch.float32), torch.tensor(labels, dtype=torch.long)


class Silenced(nn.Module):
    """Multiplies its input by zero: every parameter before it gets an exactly zero data
    gradient (``0 * g == 0``), whatever the records are."""

    def forward(self, x: Tensor) -> Tensor:
        return x * 0.0


def silenced_linear(in_features: int, classes: int, *, seed: int) -> nn.Module:
    """``Linear -> Silenced``: constant logits and an exactly zero data gradient."""
    generator = torch.Generator().manual_seed(seed)
    linear = nn.Linear(in_features, classes)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(linear.weight.shape, generator=generator))
        linear.bias.copy_(torch.randn(linear.bias.shape, generator=generator))
    return nn.Sequential(linear, Silenced())


def dp_config(**overrides: object) -> DPConfig:
    """A DP configuration with an explicit sigma and the fast RDP accountant unless overridden."""
    values: dict[str, object] = {
        "target_epsilon": 8.0,
        "delta": 1e-5,
        "max_grad_norm": 1.0,
        "noise_multiplier": 1.0,
        "accountant": AccountantKind.RDP,
    }
    values.update(overrides)
    return DPConfig(**values)  # type: ignore[arg-type]


def make_trainer(
    state_dir: Path,
    *,
    n: int = 100,
    dp: DPConfig | None = None,
    training: TrainingConfig | None = None,
    planned_rounds: int = 5,
    seed: int | None = 7,
    model: nn.Module | None = None,
) -> PrivateTrainer:
    """A trainer of a small MLP on ``n`` blob rows (batch 10 -> q = 10/n)."""
    x, y = blobs(n)
    return PrivateTrainer(
        model if model is not None else mlp(FEATURES, CLASSES, hidden=(8,), seed=0),
        x,
        y,
        training=training or TrainingConfig(lr=0.1, batch_size=10),
        dp=dp,
        planned_rounds=planned_rounds,
        state_dir=state_dir,
        seed=seed,
    )


def params_of(trainer: PrivateTrainer) -> np.ndarray:
    return flat_parameters(trainer.model())
