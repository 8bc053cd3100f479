"""Model evaluation: accuracy, class probabilities (what ``securefed predict`` writes), and the
positive-class scores that the credit metrics take."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn

from securefed.errors import ConfigError

__all__ = ["class_probabilities", "evaluate", "positive_scores"]


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


def class_probabilities(
    model: nn.Module, x: Tensor, *, batch_size: int = 512
) -> npt.NDArray[np.float64]:
    """``softmax(logits)`` of ``model`` for every row of ``x``: float64 ``(N, num_classes)``,
    each row summing to 1 (the logits are float32; the softmax is taken in float64).

    Same evaluation rules as :func:`evaluate` (eval mode, no gradients, mode restored; the
    scores are a release that the DP guarantee does not cover). Raises :class:`ConfigError` for
    no rows or a ``batch_size`` < 1.
    """
    if len(x) == 0:
        raise ConfigError("class probabilities need at least one row")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    was_training = model.training
    model.eval()
    parts = []
    try:
        with torch.no_grad():
            for start in range(0, len(x), batch_size):
                logits = model(x[start : start + batch_size])
                parts.append(torch.softmax(logits.double(), dim=1))
    finally:
        model.train(was_training)
    probabilities: npt.NDArray[np.float64] = torch.cat(parts).numpy()
    return probabilities


def positive_scores(
    model: nn.Module, x: Tensor, *, batch_size: int = 512
) -> npt.NDArray[np.float64]:
    """P(class 1) = ``softmax(logits)[:, 1]`` of a binary ``model`` for every row of ``x``, as
    float64 in [0, 1] (the score credit metrics take; for :func:`~securefed.models.logistic` it
    is sigmoid(w.x + b)): column 1 of :func:`class_probabilities`.

    Same evaluation rules as :func:`evaluate`. Raises :class:`ConfigError` for no rows, a
    ``batch_size`` < 1, or a model whose logits do not have two columns.
    """
    if len(x) == 0:
        raise ConfigError("positive_scores needs at least one row")
    probabilities = class_probabilities(model, x, batch_size=batch_size)
    if probabilities.ndim != 2 or probabilities.shape[1] != 2:
        raise ConfigError(
            f"positive scores need a binary model (2 logits), got {probabilities.shape}"
        )
    scores: npt.NDArray[np.float64] = np.ascontiguousarray(probabilities[:, 1])
    return scores
