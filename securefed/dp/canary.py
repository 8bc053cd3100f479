"""The training side of the one-run canary audit (Steinke, Nasr, Jagielski, NeurIPS 2023).

``m`` canaries are inserted into ONE run, each independently with probability 1/2; after the run
every canary gets a score. The result, :class:`CanaryRun`, carries the scores, the secret
inclusion bits, the guess counts fixed in advance and the epsilon the run claims; the statistics
(guessing, counting, the epsilon lower bound) are in :mod:`securefed.audit.canary_bound`,
torch-free, which reads a :class:`CanaryRun` structurally::

    from securefed.audit.canary_bound import evaluate_canaries, write_canary_result
    result = evaluate_canaries(run_canary_audit("broken-no-noise"))
    write_canary_result(result, run_dir)          # run_dir / canary.json, read by the report

Three presets (:class:`Preset`):

* ``calibration`` -- a Gaussian mechanism of known epsilon: the output is the sum of the included
  canaries' orthonormal vectors plus N(0, sigma^2 I); the score of canary i is the inner product
  with its vector. The claimed epsilon is the EXACT epsilon at delta (:func:`gaussian_epsilon`),
  so a sound audit never exceeds it (except with probability 1 - confidence).
* ``dp-sgd`` -- a real :class:`~securefed.dp.PrivateTrainer` run (Opacus DP-SGD, Poisson
  sampling, accountant charged before training) on a linear softmax model over synthetic records
  plus the included canary records. Claimed epsilon: the trainer's accountant.
* ``broken-no-noise`` -- the same run with a simulated bug: the accountant is told sigma = 1 (and
  charges for it) while training adds NO noise. The audit must find a lower bound above the claim.

The DP-SGD canaries are white-box "Dirac" canaries in input space: canary i is a record whose
only non-zero feature is a private feature column ``d + i`` (value ``canary_scale``) that no
ordinary record uses, with a random label. Its per-sample gradient therefore lives in that
column of the weight matrix (plus the shared bias), so the column moves only when canary i is
sampled -- and by DP noise. Score (:attr:`CanaryScore.GRADIENT`): the dot product of that
column of ``w_final - w_initial`` with the canary's initial gradient direction ``e_y - 1/K``;
(:attr:`CanaryScore.LOSS`, black-box): the final model's cross-entropy on an all-zero record
minus that on the canary, both with the canary's label (the reference removes the label's
prior, which the shared bias learns from the ordinary records). This measures the DP-SGD
implementation (clipping, noise, sampling, accounting); it is not a measure of how much a
production model memorises its customers.

Randomness: with ``seed`` (SIMULATION / TESTS ONLY) every draw (inclusion bits, data, labels,
mechanism noise, DP-SGD noise and sampling) comes from ``torch.Generator`` objects seeded from
``(seed, purpose)``. Without a seed they are seeded from ``secrets``; the inclusion bits are
the secret of the audit, and anyone who knows them knows the answer.

Guarantee and limits: the bound is valid at the stated confidence only if the run's epsilon
claim covers each canary (record-level DP: it does) and ``k_plus`` / ``k_minus`` were fixed
before the scores were seen (the presets fix them from ``m`` alone). It is a LOWER bound: a
bound below the claim is no proof of privacy. One run certifies at most about 5-6 with 1000
canaries, whatever the true epsilon.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import secrets
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import torch
from torch import Tensor, nn

from securefed.dp.config import AccountantKind, DPConfig, RoundSpend, TrainingConfig
from securefed.dp.steppers import DPStepper
from securefed.dp.trainer import PrivateTrainer
from securefed.errors import ConfigError

__all__ = [
    "METHOD",
    "PRESETS",
    "CanaryRun",
    "CanaryScore",
    "DPSGDCanaryAudit",
    "GaussianCanaryAudit",
    "Preset",
    "gaussian_delta",
    "gaussian_epsilon",
    "preset_audit",
    "run_canary_audit",
]

METHOD = "one-run canary audit (Steinke, Nasr, Jagielski, NeurIPS 2023)"

#: A DP-SGD budget far above any claim, so the trainer never refuses the audited round.
_NO_BUDGET_LIMIT = 1e6
_BISECTION_STEPS = 60


class Preset(Enum):
    """The audits :func:`run_canary_audit` knows (see the module docstring)."""

    CALIBRATION = "calibration"
    DP_SGD = "dp-sgd"
    BROKEN_NO_NOISE = "broken-no-noise"


class CanaryScore(Enum):
    """How a DP-SGD canary is scored (higher: more likely included)."""

    GRADIENT = "gradient"  # white-box: <column of w_T - w_0, e_y - 1/K>
    LOSS = "loss"  # black-box: loss on the all-zero record minus loss on the canary, same label


@dataclass(frozen=True, slots=True)
class CanaryRun:
    """What one audited run produced (an observation for
    :func:`securefed.audit.canary_bound.evaluate_canaries`; no statistics yet).

    ``scores`` and ``included`` have one entry per canary; ``included`` is the SECRET inclusion
    bits (do not publish them with the model). ``seconds`` is the wall time of the run.
    """

    method: str
    scores: tuple[float, ...]
    included: tuple[bool, ...]
    k_plus: int
    k_minus: int
    confidence: float
    delta: float
    claimed_epsilon: float
    configuration: str
    seconds: float


# -- the Gaussian mechanism's exact epsilon ---------------------------------------------------


def gaussian_delta(epsilon: float, *, sigma: float, sensitivity: float = 1.0) -> float:
    """The smallest delta for which the Gaussian mechanism N(f(D), sigma^2 I) with l2-sensitivity
    ``sensitivity`` is (epsilon, delta)-DP -- exact (Balle and Wang, ICML 2018, Theorem 8)::

        delta(eps) = Phi(s/(2 sigma) - eps sigma/s) - e^eps Phi(-s/(2 sigma) - eps sigma/s)

    Raises :class:`ConfigError` for a non-positive sigma or sensitivity or a negative epsilon.
    """
    for name, value in (("sigma", sigma), ("sensitivity", sensitivity)):
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(f"{name} must be finite and > 0, got {value!r}")
    if not (math.isfinite(epsilon) and epsilon >= 0):
        raise ConfigError(f"epsilon must be finite and >= 0, got {epsilon!r}")
    a = sensitivity / (2 * sigma)
    b = epsilon * sigma / sensitivity
    lower = _normal_cdf(-a - b)
    second = 0.0 if lower == 0 else math.exp(epsilon + math.log(lower))
    return max(0.0, _normal_cdf(a - b) - second)


def gaussian_epsilon(*, sigma: float, delta: float, sensitivity: float = 1.0) -> float:
    """The exact epsilon of the Gaussian mechanism at ``delta``: the smallest epsilon >= 0 with
    ``gaussian_delta(epsilon) <= delta`` (bisection to about 1e-15 absolute; the returned end
    satisfies the inequality). Raises :class:`ConfigError` for delta outside (0, 1) or an
    epsilon above 1000."""
    if not (math.isfinite(delta) and 0 < delta < 1):
        raise ConfigError(f"delta must be in (0, 1), got {delta!r}")

    def too_small(epsilon: float) -> bool:
        return gaussian_delta(epsilon, sigma=sigma, sensitivity=sensitivity) > delta

    if not too_small(0.0):
        return 0.0
    low, high = 0.0, 1.0
    while too_small(high):
        low, high = high, 2 * high
        if high > 1000:
            raise ConfigError(f"sigma={sigma} is too small for delta={delta}: epsilon > 1000")
    for _ in range(_BISECTION_STEPS):
        middle = (low + high) / 2
        if too_small(middle):
            low = middle
        else:
            high = middle
    return high


def _normal_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2))


# -- the audits ---------------------------------------------------------------------------------


def _check_common(
    canaries: int, k_plus: int, k_minus: int, confidence: float, delta: float
) -> None:
    for name, value, minimum in (
        ("canaries", canaries, 1),
        ("k_plus", k_plus, 0),
        ("k_minus", k_minus, 0),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if k_plus + k_minus > canaries:
        raise ConfigError(f"k_plus + k_minus = {k_plus + k_minus} exceeds the {canaries} canaries")
    if not (math.isfinite(confidence) and 0 < confidence < 1):
        raise ConfigError(f"confidence must be in (0, 1), got {confidence!r}")
    if not (math.isfinite(delta) and 0 < delta < 1):
        raise ConfigError(f"delta must be in (0, 1), got {delta!r}")


@dataclass(frozen=True)
class GaussianCanaryAudit:
    """Calibration: ``m`` canaries through one Gaussian mechanism of known epsilon.

    Canary i is the standard basis vector e_i of R^m (orthonormal; any orthonormal set gives the
    same score distribution, the noise being isotropic); the mechanism releases
    ``sum of included e_i + N(0, sigma^2 I)`` -- l2-sensitivity 1 per canary, so it is
    (gaussian_epsilon(sigma, delta), delta)-DP with respect to each canary. Score i: the inner
    product of the release with e_i.
    """

    canaries: int = 1000
    k_plus: int = 100
    k_minus: int = 100
    confidence: float = 0.95
    delta: float = 1e-5
    sigma: float = 1.0

    def __post_init__(self) -> None:
        _check_common(self.canaries, self.k_plus, self.k_minus, self.confidence, self.delta)
        if not (math.isfinite(self.sigma) and self.sigma > 0):
            raise ConfigError(f"sigma must be finite and > 0, got {self.sigma!r}")

    def run(self, *, seed: int | None = None) -> CanaryRun:
        """Draw the inclusion bits and the noise, release, score (milliseconds)."""
        start = time.perf_counter()
        included = _inclusion_bits(self.canaries, _generator(seed, "inclusion"))
        noise = torch.randn(
            self.canaries, generator=_generator(seed, "mechanism-noise"), dtype=torch.float64
        )
        release = included.to(torch.float64) + self.sigma * noise  # sum_i S_i e_i + N(0, s^2 I)
        claimed = gaussian_epsilon(sigma=self.sigma, delta=self.delta)
        configuration = (
            f"preset calibration: Gaussian mechanism, sigma={self.sigma:g}, l2-sensitivity 1 per "
            f"canary, {self.canaries} orthonormal canaries, k+={self.k_plus}, k-={self.k_minus}, "
            f"claimed epsilon exact (Balle-Wang 2018), {_seed_text(seed)}"
        )
        return CanaryRun(
            method=f"{METHOD}, inner-product score",
            scores=tuple(release.tolist()),
            included=tuple(bool(b) for b in included.tolist()),
            k_plus=self.k_plus,
            k_minus=self.k_minus,
            confidence=self.confidence,
            delta=self.delta,
            claimed_epsilon=claimed,
            configuration=configuration,
            seconds=time.perf_counter() - start,
        )


@dataclass(frozen=True)
class DPSGDCanaryAudit:
    """A :class:`~securefed.dp.PrivateTrainer` DP-SGD run with ``m`` Dirac canary records.

    Records: ``real_records`` synthetic records (``features`` Gaussian features around one of
    ``classes`` random class means) plus every included canary (module docstring), all of
    width ``features + canaries``. Model: one linear softmax layer, zero-initialised. Training:
    one round of ``epochs`` local epochs (Poisson sampling at q = batch_size / n, or q = 1 with
    ``batch_size=None``: full batch, one step per epoch; clipping at
    ``max_grad_norm``, Opacus noise), charged to the ``accountant`` first. ``noise_multiplier``
    is the sigma the accountant is told (None: derived from ``target_epsilon``);
    ``training_noise=False`` simulates the bug "the accountant is told sigma while training
    adds no noise". ``claimed_epsilon`` is what the trainer charged.
    """

    canaries: int = 1000
    k_plus: int = 100
    k_minus: int = 100
    confidence: float = 0.95
    delta: float = 1e-5
    target_epsilon: float = 8.0
    noise_multiplier: float | None = None
    training_noise: bool = True
    real_records: int = 1000
    features: int = 16
    classes: int = 4
    epochs: int = 2
    batch_size: int | None = 8
    lr: float = 0.05
    canary_scale: float = 4.0
    max_grad_norm: float = 1.0
    score: CanaryScore = CanaryScore.GRADIENT
    accountant: AccountantKind = AccountantKind.PRV

    def __post_init__(self) -> None:
        _check_common(self.canaries, self.k_plus, self.k_minus, self.confidence, self.delta)
        for name in ("real_records", "features", "epochs", "batch_size"):
            value = getattr(self, name)
            if name == "batch_size" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        if isinstance(self.classes, bool) or not isinstance(self.classes, int) or self.classes < 2:
            raise ConfigError(f"classes must be an integer >= 2, got {self.classes!r}")
        for name in ("target_epsilon", "lr", "canary_scale", "max_grad_norm"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be finite and > 0, got {value!r}")
        if self.noise_multiplier is not None and not (
            math.isfinite(self.noise_multiplier) and self.noise_multiplier > 0
        ):
            raise ConfigError(f"noise_multiplier must be > 0, got {self.noise_multiplier!r}")
        if not isinstance(self.score, CanaryScore):
            raise ConfigError(f"score must be a CanaryScore, got {self.score!r}")

    def run(self, *, seed: int | None = None) -> CanaryRun:
        """Insert, train (one charged round), score. Raises :class:`ConfigError` for a
        configuration the trainer refuses (e.g. delta not below 1/n)."""
        start = time.perf_counter()
        m, d = self.canaries, self.features
        included = _inclusion_bits(m, _generator(seed, "inclusion"))
        real_x, real_y, canary_y = self._records(_generator(seed, "data"))
        canary_x = torch.zeros((m, d + m))
        canary_x[:, d:] = self.canary_scale * torch.eye(m)
        x = torch.cat([real_x, canary_x[included]])
        y = torch.cat([real_y, canary_y[included]])
        trainer_seed = None if seed is None else _derived_seed(seed, "trainer")
        spend, weight, bias = self._train(x, y, trainer_seed)
        scores = self._scores(weight[:, d:], bias, canary_y)
        return CanaryRun(
            method=f"{METHOD}, {self.score.value} score",
            scores=tuple(scores.tolist()),
            included=tuple(bool(b) for b in included.tolist()),
            k_plus=self.k_plus,
            k_minus=self.k_minus,
            confidence=self.confidence,
            delta=self.delta,
            claimed_epsilon=spend.epsilon,
            configuration=self._describe(spend, int(included.sum()), seed),
            seconds=time.perf_counter() - start,
        )

    def _train(self, x: Tensor, y: Tensor, seed: int | None) -> tuple[RoundSpend, Tensor, Tensor]:
        """One charged PrivateTrainer round from zero weights; returns the spend, the change of
        the weight matrix and the final bias."""
        model = nn.Linear(x.shape[1], self.classes)
        with torch.no_grad():
            model.weight.zero_()
            model.bias.zero_()
        initial = model.weight.detach().clone()
        with tempfile.TemporaryDirectory(prefix="securefed-canary-") as state_dir:
            trainer = PrivateTrainer(
                model,
                x,
                y,
                training=TrainingConfig(
                    lr=self.lr,
                    batch_size=len(x) if self.batch_size is None else self.batch_size,
                    local_epochs=self.epochs,
                ),
                dp=self._dp_config(),
                planned_rounds=1,
                state_dir=Path(state_dir),
                seed=seed,
            )
            if not self.training_noise:
                _disable_training_noise(trainer)
            spend = trainer.train_round(0)
            final = _linear(trainer.model())
        if spend is None:  # pragma: no cover -- a DP trainer always returns its spend
            raise RuntimeError("the DP trainer returned no spend")
        return spend, final.weight.detach() - initial, final.bias.detach().clone()

    def _describe(self, spend: RoundSpend, inserted: int, seed: int | None) -> str:
        name = "dp-sgd" if self.training_noise else "broken-no-noise"
        noise = f"{spend.noise_multiplier:.4g}" if self.training_noise else "0 (SIMULATED BUG)"
        return (
            f"preset {name}: Opacus DP-SGD (PrivateTrainer), linear softmax model, "
            f"{self.real_records} synthetic records ({self.features} features, {self.classes} "
            f"classes) + {inserted} of {self.canaries} Dirac canary records (scale "
            f"{self.canary_scale:g}), {self.epochs} epochs, q={spend.sample_rate:.4g}, "
            f"{spend.steps} steps, lr={self.lr:g}, C={self.max_grad_norm:g}, accountant "
            f"{spend.accountant} told sigma={spend.noise_multiplier:.4g}, training noise sigma="
            f"{noise}, {self.score.value} score, k+={self.k_plus}, k-={self.k_minus}, "
            f"{_seed_text(seed)}"
        )

    def _dp_config(self) -> DPConfig:
        # With an explicit sigma the budget is not what is audited: no refusal.
        budget = self.target_epsilon if self.noise_multiplier is None else _NO_BUDGET_LIMIT
        return DPConfig(
            target_epsilon=budget,
            delta=self.delta,
            max_grad_norm=self.max_grad_norm,
            noise_multiplier=self.noise_multiplier,
            accountant=self.accountant,
        )

    def _records(self, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        """Synthetic ordinary records (zero in every canary column) and the canaries' labels."""
        n, d, k = self.real_records, self.features, self.classes
        means = 1.5 * torch.randn((k, d), generator=generator)
        real_y = torch.randint(k, (n,), generator=generator)
        real_x = torch.zeros((n, d + self.canaries))
        real_x[:, :d] = means[real_y] + torch.randn((n, d), generator=generator)
        canary_y = torch.randint(k, (self.canaries,), generator=generator)
        return real_x, real_y, canary_y

    def _scores(self, columns: Tensor, bias: Tensor, labels: Tensor) -> Tensor:
        """One score per canary from its weight column (``columns[:, i]``, change since init)."""
        k = self.classes
        if self.score is CanaryScore.LOSS:
            # Two black-box queries per canary: the canary record, and the all-zero record
            # (whose logits are the bias) as the reference for the same label.
            logits = self.canary_scale * columns.T + bias
            loss = nn.functional.cross_entropy(logits, labels, reduction="none")
            reference = nn.functional.cross_entropy(
                bias.expand_as(logits), labels, reduction="none"
            )
            return reference - loss
        direction = nn.functional.one_hot(labels, k).to(columns.dtype) - 1.0 / k
        direction = direction / math.sqrt((k - 1) / k)  # unit vectors e_y - 1/K
        return (columns.T * direction).sum(dim=1)


def _disable_training_noise(trainer: PrivateTrainer) -> None:
    """THE SIMULATED BUG: Opacus adds no noise, while the accountant keeps charging the sigma it
    was configured with. Only for the ``broken-no-noise`` self-test of the audit."""
    stepper = trainer._stepper  # deliberate fault injection into a private attribute
    if not isinstance(stepper, DPStepper):
        raise ConfigError("the simulated no-noise bug needs a DP trainer")
    stepper.optimizer.noise_multiplier = 0.0


def _linear(module: nn.Module) -> nn.Linear:
    if isinstance(module, nn.Linear):
        return module
    raise RuntimeError(f"the audited model changed type to {type(module).__name__}")


# -- presets and the entry point ----------------------------------------------------------------

PresetAudit = GaussianCanaryAudit | DPSGDCanaryAudit


def _calibration(m: int) -> PresetAudit:
    return GaussianCanaryAudit(canaries=m, k_plus=m // 10, k_minus=m // 10, sigma=1.0)


def _dp_sgd(m: int) -> PresetAudit:
    # Full batch (q = 1): the final model then carries all that the accountant charges for, so
    # the audit is as strong as a final-model audit can be (small q: see docs/canary.md).
    return DPSGDCanaryAudit(
        canaries=m, k_plus=m // 10, k_minus=m // 10, target_epsilon=8.0, batch_size=None, epochs=10
    )


def _broken_no_noise(m: int) -> PresetAudit:
    return DPSGDCanaryAudit(
        canaries=m, k_plus=m // 4, k_minus=0, noise_multiplier=1.0, training_noise=False
    )


#: preset -> (default number of canaries, the audit for m canaries). Guess counts depend on m
#: only, never on the scores.
PRESETS: Mapping[Preset, tuple[int, Callable[[int], PresetAudit]]] = {
    Preset.CALIBRATION: (1000, _calibration),
    Preset.DP_SGD: (1000, _dp_sgd),
    Preset.BROKEN_NO_NOISE: (1000, _broken_no_noise),
}


def preset_audit(preset: Preset | str, *, canaries: int | None = None) -> PresetAudit:
    """The audit a preset runs, for ``canaries`` canaries (default: the preset's)."""
    try:
        preset = Preset(preset)
    except ValueError:
        known = ", ".join(p.value for p in Preset)
        raise ConfigError(f"unknown canary preset {preset!r} (known: {known})") from None
    default, build = PRESETS[preset]
    return build(default if canaries is None else canaries)


def run_canary_audit(
    preset: Preset | str = Preset.DP_SGD,
    *,
    canaries: int | None = None,
    k_plus: int | None = None,
    k_minus: int | None = None,
    confidence: float | None = None,
    delta: float | None = None,
    sigma: float | None = None,
    target_epsilon: float | None = None,
    real_records: int | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    score: CanaryScore | str | None = None,
    seed: int | None = None,
) -> CanaryRun:
    """Run one canary audit: a preset (:class:`Preset`), optionally with some settings changed.

    ``None`` keeps the preset's value. ``sigma`` is the Gaussian mechanism's noise std
    (calibration) or the noise multiplier the accountant is told (DP-SGD presets; the honest
    preset also trains with it, ``broken-no-noise`` does not). ``seed`` makes the run
    reproducible (simulation only). Pass the result to
    :func:`securefed.audit.canary_bound.evaluate_canaries` for the bound.

    Raises :class:`ConfigError` for an unknown preset, a setting the preset does not have
    (e.g. ``epochs`` for calibration) or an invalid value. Run time with the presets' defaults
    (1000 canaries, one CPU core): calibration well under a second, the DP-SGD presets seconds
    to a minute (see docs/canary.md).
    """
    audit = preset_audit(preset, canaries=canaries)
    requested: dict[str, object] = {
        "k_plus": k_plus,
        "k_minus": k_minus,
        "confidence": confidence,
        "delta": delta,
        "sigma" if isinstance(audit, GaussianCanaryAudit) else "noise_multiplier": sigma,
        "target_epsilon": target_epsilon,
        "real_records": real_records,
        "epochs": epochs,
        "batch_size": batch_size,
        "score": None if score is None else _score(score),
    }
    changes = {name: value for name, value in requested.items() if value is not None}
    fields = {f.name for f in dataclasses.fields(audit)}
    unknown = sorted(set(changes) - fields)
    if unknown:
        name = Preset(preset).value
        raise ConfigError(f"preset {name} has no setting {', '.join(unknown)}")
    audit = dataclasses.replace(audit, **changes)  # type: ignore[arg-type]
    return audit.run(seed=seed)


def _score(score: CanaryScore | str) -> CanaryScore:
    try:
        return CanaryScore(score)
    except ValueError:
        known = ", ".join(s.value for s in CanaryScore)
        raise ConfigError(f"unknown canary score {score!r} (known: {known})") from None


# -- randomness -------------------------------------------------------------------------------


def _derived_seed(seed: int, purpose: str) -> int:
    digest = hashlib.sha256(f"securefed/dp/canary/{purpose}/{seed}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def _generator(seed: int | None, purpose: str) -> torch.Generator:
    """A generator for one purpose: from ``(seed, purpose)`` in a simulation, else ``secrets``."""
    value = secrets.randbits(63) if seed is None else _derived_seed(seed, purpose)
    return torch.Generator().manual_seed(value)


def _inclusion_bits(m: int, generator: torch.Generator) -> Tensor:
    """``m`` independent fair coins (bool tensor): canary i is included iff bit i is set."""
    return torch.randint(0, 2, (m,), generator=generator, dtype=torch.int64).bool()


def _seed_text(seed: int | None) -> str:
    return "unseeded (secrets)" if seed is None else f"simulation seed {seed}"
