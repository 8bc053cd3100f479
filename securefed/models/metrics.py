"""Model evaluation."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from securefed.errors import ConfigError

__all__ = ["evaluate"]


def evaluate(model: nn.Module, x: Tensor, y: Tensor, *, batch_size: int = 512) -> float:
    """Top-1 accuracy of ``model`` on ``(x, y)``, in [0, 1].

    Runs in eval mode without gradients, in batches of ``batch_size``, and restores the model's
    previous train/eval mode. Evaluation releases nothing and costs no privacy budget by itself;
    publishing the accuracy on private data is a release that is NOT covered by the DP training
    guarantee. Raises :class:`ConfigError` for empty or mismatched inputs.
    """
    if len(x) == 0 or len(x) != len(y):
        raise ConfigError(f"evaluate needs as many labels as inputs (>0), got {len(x)}, {len(y)}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    was_training = model.training
    model.eval()
    correct = 0
    try:
        with torch.no_grad():
            for start in range(0, len(x), batch_size):
                logits = model(x[start : start + batch_size])
                labels = y[start : start + batch_size]
                correct += int((logits.argmax(dim=1) == labels).sum())
    finally:
        model.train(was_training)
    return correct / len(x)
