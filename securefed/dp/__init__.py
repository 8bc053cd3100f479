"""Record-level differentially private local training (Opacus DP-SGD) with persistent accounting.

* :class:`PrivateTrainer`: one institution's local training over its whole participation: one
  Opacus ``PrivacyEngine``, sigma fixed once, each round charged (and persisted) BEFORE it trains,
  refusal with :class:`~securefed.errors.PrivacyBudgetExceeded` when a round would exceed the
  budget, FedAMP's proximal term applied after clipping and noise.
* :class:`DPConfig`, :class:`TrainingConfig`, :class:`AccountantKind`, :class:`RoundSpend`.
* :class:`WeightedCrossEntropy` / :func:`training_loss`: the loss, optionally class-weighted so
  that each record's per-sample gradient depends on that record alone (accounting unchanged).
* :func:`epsilon_for`, :func:`noise_multiplier_for`: Opacus's accountants (same numbers), memoised.

See ``docs/dp.md`` for the guarantees in plain words.
"""

from securefed.dp.accounting import epsilon_for, extend_history, noise_multiplier_for
from securefed.dp.config import (
    AccountantKind,
    DPConfig,
    GradSampleMode,
    RoundSpend,
    TrainingConfig,
)
from securefed.dp.loss import WeightedCrossEntropy, training_loss
from securefed.dp.state import STATE_FILE, AccountantState, Charge, load_state
from securefed.dp.steppers import DPStepper, PlainStepper, Proximal, secure_rng_available
from securefed.dp.trainer import EPSILON_TOLERANCE, PrivateTrainer

__all__ = [
    "EPSILON_TOLERANCE",
    "STATE_FILE",
    "AccountantKind",
    "AccountantState",
    "Charge",
    "DPConfig",
    "DPStepper",
    "GradSampleMode",
    "PlainStepper",
    "PrivateTrainer",
    "Proximal",
    "RoundSpend",
    "TrainingConfig",
    "WeightedCrossEntropy",
    "epsilon_for",
    "extend_history",
    "load_state",
    "noise_multiplier_for",
    "secure_rng_available",
    "training_loss",
]
