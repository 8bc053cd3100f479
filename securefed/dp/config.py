"""Configuration and result records of private local training (all frozen)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from enum import Enum

from securefed.errors import ConfigError

__all__ = [
    "AccountantKind",
    "DPConfig",
    "GradSampleMode",
    "RoundSpend",
    "TrainingConfig",
    "check_class_weights",
]


class AccountantKind(Enum):
    """Opacus privacy accountant. PRV (Gopi et al. 2021) is tight, close to Google's PLD
    accountant; RDP is the classic Renyi bound and overstates epsilon by roughly 10-15%."""

    PRV = "prv"
    RDP = "rdp"


class GradSampleMode(Enum):
    """How Opacus obtains per-sample gradient norms for clipping.

    ``GHOST``: ghost / fast gradient clipping (per-sample norms without materialising every
    per-sample gradient, then a second backward pass on the clipped loss); ``HOOKS``: per-sample
    gradients materialised by hooks, clipped, summed. Both give the same clipped sum.
    """

    GHOST = "ghost"
    HOOKS = "hooks"


def _finite_positive(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} must be finite and > 0, got {value!r}")


def check_class_weights(weights: Sequence[float], *, key: str = "class_weights") -> None:
    """Raise :class:`ConfigError` unless ``weights`` is a sequence of at least two finite
    numbers > 0 (booleans are not numbers here). ``key`` names the setting in the message."""
    if isinstance(weights, str | bytes) or not isinstance(weights, Sequence):
        raise ConfigError(f"{key} must be a list of numbers, got {weights!r}")
    if len(weights) < 2:
        raise ConfigError(f"{key} needs one weight per class (at least 2), got {len(weights)}")
    for index, value in enumerate(weights):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}[{index}] must be a number, got {value!r}")
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(f"{key}[{index}] must be finite and > 0, got {value!r}")


@dataclass(frozen=True)
class DPConfig:
    """Record-level (epsilon, delta)-DP budget of ONE institution over its whole participation.

    ``noise_multiplier=None`` fixes sigma once, from the target, the sampling rate and the planned
    rounds x steps per round (Opacus ``get_noise_multiplier``); it is then persisted with the
    accountant state and reused after a restart. ``ghost_clipping`` asks for the faster per-sample
    path; where the model does not support it the trainer falls back to hooks and says so.

    ``statistic_epsilon`` reserves part of the budget for ONE Gaussian release of a similarity
    statistic of L2 sensitivity 1 (:meth:`~securefed.dp.PrivateTrainer.release_statistic`): its
    noise is the smallest that costs at most ``statistic_epsilon`` on its own, and the DP-SGD
    noise is then chosen so that the statistic and every planned round TOGETHER stay within
    ``target_epsilon`` (composition by the accountant, not by adding epsilons). None: no
    statistic is planned, and :meth:`release_statistic` refuses.
    """

    target_epsilon: float
    delta: float
    max_grad_norm: float = 1.0
    noise_multiplier: float | None = None
    accountant: AccountantKind = AccountantKind.PRV
    ghost_clipping: bool = True
    statistic_epsilon: float | None = None

    def __post_init__(self) -> None:
        _finite_positive("target_epsilon", self.target_epsilon)
        _finite_positive("delta", self.delta)
        if self.delta >= 1:
            raise ConfigError(f"delta must be < 1, got {self.delta}")
        _finite_positive("max_grad_norm", self.max_grad_norm)
        if self.noise_multiplier is not None:
            _finite_positive("noise_multiplier", self.noise_multiplier)
        if not isinstance(self.accountant, AccountantKind):
            raise ConfigError(f"accountant must be an AccountantKind, got {self.accountant!r}")
        if self.statistic_epsilon is not None:
            _finite_positive("statistic_epsilon", self.statistic_epsilon)
            if self.statistic_epsilon >= self.target_epsilon:
                raise ConfigError(
                    f"statistic_epsilon ({self.statistic_epsilon}) must be below target_epsilon "
                    f"({self.target_epsilon}): the rest of the budget pays for training"
                )


@dataclass(frozen=True)
class TrainingConfig:
    """Local SGD settings, the same with and without DP.

    ``proximal_lambda`` is FedAMP's coefficient mu of the proximal term (mu/2)||w - u||^2 towards
    the personalised anchor u; 0 disables it.

    ``class_weights``: one fixed weight per class (label ``k`` gets ``class_weights[k]``; only
    the ratios count, they are divided by the largest so that clipping does not cancel them);
    each record's loss is multiplied by the relative weight of its label and the batch loss is
    the mean over the batch size (:class:`~securefed.dp.loss.WeightedCrossEntropy`), so with DP
    each record's per-sample gradient is a function of that record alone and is clipped as
    usual: the weights do not change the sensitivity or the accounting. None: plain
    cross-entropy. They must be public constants (never derived from an institution's own class
    counts). Raises :class:`ConfigError` for fewer than two weights or a weight that is not
    finite and > 0; the trainer refuses labels without a weight.
    """

    lr: float = 0.05
    batch_size: int = 64
    local_epochs: int = 1
    momentum: float = 0.0
    proximal_lambda: float = 0.0
    class_weights: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        _finite_positive("lr", self.lr)
        for name in ("batch_size", "local_epochs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        if not (math.isfinite(self.momentum) and 0 <= self.momentum < 1):
            raise ConfigError(f"momentum must be in [0, 1), got {self.momentum!r}")
        if not (math.isfinite(self.proximal_lambda) and self.proximal_lambda >= 0):
            raise ConfigError(
                f"proximal_lambda must be finite and >= 0, got {self.proximal_lambda}"
            )
        if self.class_weights is not None:
            check_class_weights(self.class_weights)
            object.__setattr__(self, "class_weights", tuple(float(w) for w in self.class_weights))


@dataclass(frozen=True)
class RoundSpend:
    """What one round charged, as recorded before its training started (for the audit ledger).

    ``epsilon`` is the CUMULATIVE epsilon of the institution after this round, at ``delta``;
    ``steps`` the DP-SGD steps of this round, each a Poisson-sampled Gaussian mechanism with
    ``sample_rate`` and ``noise_multiplier``. ``mechanism`` is ``"dp-sgd"`` for a training round
    and ``"gaussian-statistic"`` for the one release of a similarity statistic (``steps`` 1,
    ``sample_rate`` 1: every record, once).
    """

    round: int
    epsilon: float
    delta: float
    noise_multiplier: float
    sample_rate: float
    steps: int
    accountant: str
    opacus_version: str
    mechanism: str = "dp-sgd"

    def to_dict(self) -> dict[str, object]:
        return asdict(self)
