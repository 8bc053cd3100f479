"""The training loss: cross-entropy, optionally with a fixed weight per class.

Two rules make class weights compatible with record-level DP (Opacus DP-SGD):

1. **The mean is over the batch size, not over the weights.** ``nn.CrossEntropyLoss(weight=w)``
   with ``reduction="mean"`` divides the weighted sum by the sum of the weights of the batch's
   labels, ``sum_i w[y_i] l_i / sum_j w[y_j]``. Opacus (hooks, ``loss_reduction="mean"``) takes
   a record's gradient to be the batch size times its share of the loss gradient, so every
   record's "per-sample" gradient would be scaled by ``B / sum_j w[y_j]``: a function of the
   OTHER records' labels. Adding or removing one record would then change every other record's
   clipped contribution, and the sensitivity ``C`` that the accountant assumes would not hold.
   :class:`WeightedCrossEntropy` returns ``mean_i w[y_i] l_i``: each record's per-sample
   gradient is exactly ``w[y_i] * grad l_i``, a function of that record alone, and is clipped
   to ``C = max_grad_norm`` like any other -- the sensitivity of the clipped sum stays ``C`` and
   the accounting is unchanged. With ghost clipping Opacus sets ``reduction = "none"`` while it
   computes the per-sample losses (``DPLossFastGradientClipping``), and this loss then returns
   ``w[y_i] l_i`` per record: the same quantity (``tests/dp/test_class_weights.py``).
2. **Only the ratios count: the weights are divided by the largest.** Clipping caps every
   record's contribution at ``C`` whatever its weight, so a weight ABOVE 1 acts only on records
   whose gradient is still below ``C / w``; where gradients are clipped anyway (typical in
   DP-SGD), up-weighting the rare class does nothing at all (measured: ``[1, 50]`` applied
   verbatim left a 1%-positive logistic model unchanged). A weight below 1 shrinks a gradient
   before the clip and keeps acting. So ``[1, 50]`` is applied as ``[0.02, 1]``: the
   most-weighted class keeps its plain loss and the others are down-weighted. Without DP this
   is the same weighted loss at a learning rate divided by the largest weight.

The weights are public constants of the run configuration. Weights derived from an
institution's own class counts would be a release of those counts that nothing accounts for.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional

from securefed.dp.config import check_class_weights
from securefed.errors import ConfigError

__all__ = ["WeightedCrossEntropy", "training_loss"]

_REDUCTIONS = ("mean", "sum", "none")


class WeightedCrossEntropy(nn.Module):
    """Cross-entropy of logits ``(N, C)`` against labels ``(N,)``, record ``i`` weighted by
    ``weights[y_i] / max(weights)`` (:attr:`weights` holds these relative weights, the largest
    1); ``reduction`` ``"mean"`` (over the batch SIZE, not the weights: see the module
    docstring), ``"sum"`` or ``"none"`` (one loss per record).

    ``reduction`` is a plain attribute because Opacus's ghost clipping switches it to
    ``"none"`` and back. Raises :class:`ConfigError` for invalid weights (fewer than two, or
    not finite and > 0) or reduction; a label ``>= len(weights)`` raises torch's
    ``IndexError`` (the trainer refuses such labels first).
    """

    weights: Tensor

    def __init__(self, weights: Sequence[float], *, reduction: str = "mean") -> None:
        super().__init__()
        check_class_weights(weights)
        if reduction not in _REDUCTIONS:
            raise ConfigError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
        largest = max(float(w) for w in weights)
        self.register_buffer("weights", torch.tensor([float(w) / largest for w in weights]))
        self.reduction = reduction

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        losses = functional.cross_entropy(logits, target, reduction="none")
        weighted = self.weights.to(device=losses.device, dtype=losses.dtype)[target] * losses
        if self.reduction == "none":
            return weighted
        if self.reduction == "sum":
            return weighted.sum()
        if self.reduction == "mean":
            return weighted.mean()
        raise ConfigError(f"reduction must be one of {_REDUCTIONS}, got {self.reduction!r}")


def training_loss(class_weights: Sequence[float] | None) -> nn.Module:
    """A fresh criterion for one stepper: ``nn.CrossEntropyLoss()`` (mean over the batch)
    without class weights -- exactly what securefed trained with before class weights existed --
    or :class:`WeightedCrossEntropy` with them. Fresh, because Opacus's ghost clipping mutates
    the criterion's ``reduction``."""
    if class_weights is None:
        return nn.CrossEntropyLoss()
    return WeightedCrossEntropy(class_weights)
