"""``PrivateTrainer``: an institution's local training over its whole participation.

Privacy guarantee (with ``dp``): every released model is the output of DP-SGD with record-level
(epsilon, delta)-DP accounted by one Opacus accountant over ALL rounds of the participation, at
most ``dp.target_epsilon`` at ``dp.delta``. The unit of privacy is one record (row) of this
institution's ``train_x``/``train_y``; other institutions have their own budgets.

The rules that keep that true:

* sigma is fixed once (``get_noise_multiplier`` for ``planned_rounds`` x ``steps_per_round``
  steps at q = batch_size / n, unless given) and persisted; q and steps per round follow from the
  data size and the :class:`TrainingConfig`;
* before a round, the epsilon after it is computed; above the budget the round is refused with
  :class:`~securefed.errors.PrivacyBudgetExceeded` and nothing changes;
* otherwise the round is CHARGED FIRST: its steps are added to the accountant history and the
  state file is replaced atomically (see :mod:`securefed.dp.state`) before the first training
  step. A crash at any later point leaves the round charged (conservative: epsilon never goes
  down, and the recorded epsilon is never lower than that of anything released);
* a similarity statistic (``dp.statistic_epsilon``) is ONE more Gaussian mechanism on the same
  records (:meth:`PrivateTrainer.release_statistic`): reserved when sigma is fixed (the
  training noise leaves room for it), charged first like a round, in the same history;
* with a ``spend`` account (:mod:`securefed.dp.spend`) the budget follows the RECORDS, not the
  state directory: sigma is planned for what earlier participations on the same records left,
  every charge is composed with theirs, checked and written next to the records under a lock
  before the round trains, and :meth:`PrivateTrainer.epsilon` is the records' epsilon;
* a restart with the same ``state_dir`` reloads the history (epsilon continues, never resets)
  and refuses a configuration that would change sigma, q, steps per round, the accountant, delta,
  the clipping norm or the budget (:class:`~securefed.errors.ConfigError`);
* sampling is Poisson with rate q (Opacus's ``UniformWithReplacementSampler``); an epoch is
  ``n // batch_size`` steps (at least 1), Opacus's default ``int(1 / q)`` computed exactly.

Failure modes: ``PrivacyBudgetExceeded`` (refusal, nothing charged), ``ConfigError`` (bad
configuration, bad anchor, inconsistent or unreadable state; raised before any charge), and any
exception from training itself AFTER the charge (the round stays charged).

Randomness: with ``seed`` (SIMULATION ONLY -- never in a deployment: anyone who knows the seed
can subtract the noise) data order and DP noise come from ``torch.Generator`` objects reseeded
from ``(seed, round)`` at every round, so runs and restarts are reproducible. Without ``seed``
the generators are seeded from the operating system (``secrets``); they are still torch's
non-cryptographic Mersenne Twister unless ``torchcsprng`` is installed, in which case Opacus
``secure_mode`` is used (see :meth:`PrivateTrainer.hazards`).
"""

from __future__ import annotations

import hashlib
import math
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import opacus
import torch
from opacus.utils.uniform_sampler import UniformWithReplacementSampler
from torch import Tensor, nn

from securefed.dp.accounting import (
    PLANNING_TOLERANCE,
    History,
    epsilon_for,
    extend_history,
    noise_multiplier_for,
)
from securefed.dp.config import DPConfig, GradSampleMode, RoundSpend, TrainingConfig
from securefed.dp.spend import SpendAccount
from securefed.dp.state import (
    STATE_FILE,
    STATISTIC_MECHANISM,
    AccountantState,
    Charge,
    load_state,
    save_state,
)
from securefed.dp.steppers import DPStepper, PlainStepper, Proximal, secure_rng_available
from securefed.errors import ConfigError, PrivacyBudgetExceeded

__all__ = ["EPSILON_TOLERANCE", "PrivateTrainer"]

#: A round is refused when the epsilon after it exceeds the target by more than this.
EPSILON_TOLERANCE = 1e-9


class PrivateTrainer:
    """Local (DP-)SGD for one institution; see the module docstring for the guarantees.

    ``model`` is trained in place (unless Opacus's ``ModuleValidator`` had to replace layers: then
    a fixed copy is trained, see :attr:`fixes`) -- always use :meth:`model` to read or load
    parameters. Do not run forward passes on it in training mode outside the trainer: Opacus's
    hooks would record their activations.
    """

    def __init__(
        self,
        model: nn.Module,
        train_x: Tensor,
        train_y: Tensor,
        *,
        training: TrainingConfig,
        dp: DPConfig | None,
        planned_rounds: int,
        state_dir: Path,
        seed: int | None = None,
        spend: SpendAccount | None = None,
    ) -> None:
        _check_arguments(train_x, train_y, training, dp, planned_rounds)
        n = len(train_x)
        self._x = train_x
        self._y = train_y.long()
        self._n = n
        self._training = training
        self._seed = seed
        self._state_dir = Path(state_dir)
        self._planned_rounds = planned_rounds
        self._spend = spend
        existing = load_state(self._state_dir)
        self._stepper: DPStepper | PlainStepper
        self._private: _Private | None = None
        self._noise_generator: torch.Generator | None = None
        self._secure = False
        if dp is None:
            if existing is not None:
                raise ConfigError(
                    f"{self._state_dir / STATE_FILE} holds a DP accountant state: this "
                    "institution trained with DP before and cannot continue without it"
                )
            self._sample_rate: float | None = None
            self._steps_per_epoch = math.ceil(n / training.batch_size)
            self._stepper = PlainStepper(model, training)
            self._sample_generator: torch.Generator | None = _os_seeded_generator()
            return
        if dp.delta >= 1 / n:
            raise ConfigError(f"delta={dp.delta} must be much smaller than 1/n = {1 / n:.3g}")
        q = min(1.0, training.batch_size / n)
        self._sample_rate = q
        self._steps_per_epoch = max(1, n // training.batch_size)
        prior = _prior(spend)
        state = self._initial_state(existing, dp, q, prior)
        self._secure = seed is None and secure_rng_available()
        if seed is not None:
            self._noise_generator = torch.Generator()
        elif not self._secure:
            self._noise_generator = _os_seeded_generator()
        stepper = DPStepper(
            model,
            train_x=train_x,
            train_y=self._y,
            training=training,
            noise_multiplier=state.noise_multiplier,
            max_grad_norm=dp.max_grad_norm,
            expected_batch_size=q * n,
            accountant=dp.accountant,
            ghost_clipping=dp.ghost_clipping,
            noise_generator=self._noise_generator,
            secure_mode=self._secure,
        )
        stepper.engine.accountant.history = list(state.history)
        self._stepper = stepper
        self._private = _Private(config=dp, stepper=stepper, state=state, prior=prior)
        self._sample_generator = stepper.secure_rng if self._secure else _os_seeded_generator()
        if existing is None or state is not existing:
            save_state(self._state_dir, state)  # persists sigma before any round

    def _initial_state(
        self, existing: AccountantState | None, dp: DPConfig, q: float, prior: History
    ) -> AccountantState:
        steps = self.steps_per_round
        statistic_sigma = (
            None
            if dp.statistic_epsilon is None
            else noise_multiplier_for(dp.accountant, dp.statistic_epsilon, dp.delta, 1.0, 1)
        )
        if existing is None:
            if self._spend is not None and self._spend.own_history():
                raise ConfigError(
                    f"{self._state_dir / STATE_FILE} is missing, but this participation "
                    f"({self._spend.run_id}) has charges recorded next to the records: its "
                    "accountant state was lost; it cannot continue (start a new run)"
                )
            sigma = dp.noise_multiplier
            if sigma is None:
                reserved: History = () if statistic_sigma is None else ((statistic_sigma, 1.0, 1),)
                spent = epsilon_for(dp.accountant, prior, dp.delta)
                if prior and spent >= dp.target_epsilon - PLANNING_TOLERANCE:
                    raise PrivacyBudgetExceeded(
                        "earlier participations on these records already spent epsilon "
                        f"{spent:.4g} of the budget "
                        f"{dp.target_epsilon:g} at delta {dp.delta:g}: nothing is left to train"
                    )
                sigma = noise_multiplier_for(
                    dp.accountant,
                    dp.target_epsilon,
                    dp.delta,
                    q,
                    self._planned_rounds * steps,
                    prefix=(*prior, *reserved),
                )
            return AccountantState(
                accountant=dp.accountant,
                noise_multiplier=sigma,
                sample_rate=q,
                steps_per_round=steps,
                delta=dp.delta,
                target_epsilon=dp.target_epsilon,
                max_grad_norm=dp.max_grad_norm,
                opacus_version=opacus.__version__,
                statistic_noise_multiplier=statistic_sigma,
            )
        checks = [
            ("accountant", existing.accountant.value, dp.accountant.value),
            ("sample rate q = batch_size / n", existing.sample_rate, q),
            ("steps per round", existing.steps_per_round, steps),
            ("delta", existing.delta, dp.delta),
            ("target epsilon", existing.target_epsilon, dp.target_epsilon),
            ("max_grad_norm", existing.max_grad_norm, dp.max_grad_norm),
            ("statistic noise multiplier", existing.statistic_noise_multiplier, statistic_sigma),
        ]
        if dp.noise_multiplier is not None:
            checks.append(("noise multiplier", existing.noise_multiplier, dp.noise_multiplier))
        for name, saved, configured in checks:
            if saved != configured:
                raise ConfigError(
                    f"{self._state_dir / STATE_FILE}: saved {name} {saved!r} differs from the "
                    f"configured {configured!r}; the accountant state of a participation cannot "
                    "change its privacy parameters"
                )
        return self._catch_up(existing)

    def _catch_up(self, state: AccountantState) -> AccountantState:
        """``state`` with any charge the records' spend record holds beyond it (a crash between
        the two durable writes of a charge: the spend record is written first)."""
        if self._spend is None:
            return state
        own = self._spend.own_history()
        if own == state.history:
            return state
        steps = sum(s for _, _, s in own) - state.total_steps
        last = max((c.round for c in state.charges), default=0)
        sigma_s = state.statistic_noise_multiplier
        if steps > 0 and own == extend_history(
            state.history, state.noise_multiplier, state.sample_rate, steps
        ):
            return state.charged(last + 1, steps, epsilon_for(state.accountant, own, state.delta))
        if sigma_s is not None and own == extend_history(state.history, sigma_s, 1.0, 1):
            return state.charged_statistic(0, epsilon_for(state.accountant, own, state.delta))
        raise ConfigError(
            f"{self._state_dir / STATE_FILE} does not continue the participation recorded next "
            "to the records (their charges differ): this state directory belongs to another "
            "participation"
        )

    # -- properties ---------------------------------------------------------------------------

    @property
    def noise_multiplier(self) -> float | None:
        """Sigma (noise std / max_grad_norm), fixed for the participation; None without DP."""
        return None if self._private is None else self._private.state.noise_multiplier

    @property
    def sample_rate(self) -> float | None:
        """Poisson sampling rate q = min(1, batch_size / n); None without DP."""
        return self._sample_rate

    @property
    def steps_per_round(self) -> int:
        """Optimizer steps per round: local_epochs x (n // batch_size, at least 1) with DP,
        local_epochs x ceil(n / batch_size) without."""
        return self._training.local_epochs * self._steps_per_epoch

    @property
    def grad_sample_mode(self) -> GradSampleMode | None:
        """The per-sample gradient path Opacus uses; None without DP."""
        return self._stepper.grad_sample_mode

    @property
    def fixes(self) -> tuple[str, ...]:
        """What Opacus's ``ModuleValidator`` found and fixed (empty if nothing)."""
        return () if self._private is None else self._private.stepper.fixes

    @property
    def accountant_state(self) -> AccountantState | None:
        """The persisted accountant state (budget, sigma, q, history); None without DP."""
        return None if self._private is None else self._private.state

    @property
    def charges(self) -> tuple[Charge, ...]:
        """Every charged round so far (from the persisted state); empty without DP."""
        return () if self._private is None else self._private.state.charges

    @property
    def spend(self) -> SpendAccount | None:
        """The participation's account in the records' spend record, if it has one."""
        return self._spend

    @property
    def state_path(self) -> Path:
        """The accountant state file (exists once a DP trainer was constructed)."""
        return self._state_dir / STATE_FILE

    def model(self) -> nn.Module:
        """The plain module being trained (never the Opacus wrapper)."""
        return self._stepper.module

    # -- accounting ---------------------------------------------------------------------------

    def epsilon(self) -> float | None:
        """Cumulative epsilon charged so far at ``dp.delta`` (0.0 before any round), composed
        with earlier participations on the same records (with a spend account); None without
        DP."""
        if self._private is None:
            return None
        return self._private.epsilon(self._private.state.history)

    def epsilon_after_next_round(self) -> float | None:
        """The cumulative epsilon the next round would reach; None without DP."""
        if self._private is None:
            return None
        return self._private.epsilon(self._private.next_history(self.steps_per_round))

    def hazards(self) -> list[str]:
        """Conditions that weaken the guarantee or its evidence, one sentence each."""
        found: list[str] = []
        private = self._private
        if private is None:
            found.append(
                "differential privacy is off: the model updates this institution releases "
                "carry no record-level privacy guarantee"
            )
            return found
        if self._seed is not None:
            found.append(
                f"simulation seed {self._seed} is set: DP noise and batch sampling are a "
                "function of it (reproducible, NOT private against anyone who knows the seed; "
                "never use a seed in a deployment)"
            )
        if not self._secure:
            reason = (
                "a simulation seed is set"
                if secure_rng_available()
                else "torchcsprng is not installed"
            )
            found.append(
                f"Opacus secure_mode is off ({reason}): DP noise and Poisson sampling come from "
                "torch's non-cryptographic PRNG (Mersenne Twister), and the floating-point noise "
                "hardening of secure_mode is not applied"
            )
        if private.stepper.ghost_unavailable is not None:
            found.append(
                "ghost clipping is unavailable for this model "
                f"({private.stepper.ghost_unavailable}); per-sample gradients use hooks (slower)"
            )
        if private.stepper.fixes:
            found.append(
                "Opacus ModuleValidator replaced incompatible layers ("
                + "; ".join(private.stepper.fixes)
                + "): the trained module is a fixed copy, use PrivateTrainer.model()"
            )
        return found

    # -- training -----------------------------------------------------------------------------

    def train_round(
        self,
        round_: int,
        *,
        anchor: npt.ArrayLike | None = None,
        on_charge: Callable[[RoundSpend], None] | None = None,
    ) -> RoundSpend | None:
        """Charge (with DP), then train one round from the module's current parameters.

        ``on_charge`` (with DP) is called with the round's spend after the charge is durable and
        before the first training step -- the place to ledger it (docs/audit.md: a spend is
        recorded before training starts). If it raises, the round stays charged and is not trained.

        ``anchor`` is FedAMP's u_i as a flat vector in ``model().parameters()`` order; with
        ``training.proximal_lambda`` > 0 it adds ``(mu/2) ||w - u||^2`` (gradient ``mu (w - u)``
        added after clipping and noise; see :mod:`securefed.dp.steppers`). Returns what the
        round charged, or None without DP. Raises :class:`PrivacyBudgetExceeded` (nothing
        charged, nothing trained) or :class:`ConfigError` (bad round or anchor; nothing charged).
        """
        if isinstance(round_, bool) or not isinstance(round_, int) or round_ < 0:
            raise ConfigError(f"round must be an integer >= 0, got {round_!r}")
        proximal = self._proximal(anchor)
        private = self._private
        if private is None and self._spend is not None:
            self._spend.mark_unbounded()  # recorded next to the records before the release
        spend = None if private is None else self._charge(private, round_)
        if spend is not None and on_charge is not None:
            on_charge(spend)
        self._reseed(round_)
        self._stepper.reset_optimizer_state()
        self._stepper.module.train()
        before = 0 if private is None else private.stepper.steps_taken
        for x, y in self._batches():
            self._stepper.step(x, y, proximal)
        if private is not None:
            taken = private.stepper.steps_taken - before
            if taken != self.steps_per_round:  # pragma: no cover -- internal invariant
                raise RuntimeError(f"took {taken} DP steps, charged {self.steps_per_round}")
        return spend

    def _charge(self, private: _Private, round_: int) -> RoundSpend:
        steps = self.steps_per_round
        config = private.config
        after = self._commit_charge(
            private,
            f"round {round_}",
            private.next_history(steps),
            lambda epsilon: private.state.charged(round_, steps, epsilon),
        )
        charged = private.state
        return RoundSpend(
            round=round_,
            epsilon=after,
            delta=config.delta,
            noise_multiplier=charged.noise_multiplier,
            sample_rate=charged.sample_rate,
            steps=steps,
            accountant=config.accountant.value,
            opacus_version=opacus.__version__,
        )

    def release_statistic(
        self,
        round_: int,
        contributions: npt.ArrayLike,
        *,
        on_charge: Callable[[RoundSpend], None] | None = None,
    ) -> npt.NDArray[np.float64]:
        """Release ``sum of contributions + N(0, sigma_s^2 I)``: the Gaussian mechanism on a
        statistic of L2 sensitivity 1, charged to this participation's accountant FIRST.

        ``contributions`` has one row per training record (``n`` rows, in ``train_x`` order),
        each a function of that record alone; rows are clipped to L2 norm 1 here, so the
        sensitivity of the sum is at most 1 whatever the caller computed. sigma_s is fixed at
        construction from ``dp.statistic_epsilon`` (see :class:`DPConfig`). As with a round: the
        epsilon after the release is checked against the budget (:class:`PrivacyBudgetExceeded`,
        nothing charged), the charge is made durable, ``on_charge`` is called with the spend
        (``mechanism="gaussian-statistic"``), and only then is the noise drawn.

        Without DP the exact sum is returned and nothing is charged (the trainer's hazards say
        that DP is off). Raises :class:`ConfigError` for a malformed array or when no statistic
        was planned (``dp.statistic_epsilon`` is None); nothing is charged then.
        """
        if isinstance(round_, bool) or not isinstance(round_, int) or round_ < 0:
            raise ConfigError(f"round must be an integer >= 0, got {round_!r}")
        rows = np.asarray(contributions, dtype=np.float64)
        if rows.ndim != 2 or rows.shape[0] != self._n or rows.shape[1] < 1:
            raise ConfigError(
                f"contributions must have one row per training record ({self._n} rows), "
                f"got shape {rows.shape}"
            )
        if not np.isfinite(rows).all():
            raise ConfigError("contributions hold NaN or infinite values")
        norms = np.linalg.norm(rows, axis=1, keepdims=True)
        total = (rows / np.maximum(norms, 1.0)).sum(axis=0)
        private = self._private
        if private is None:
            return total
        sigma = private.state.statistic_noise_multiplier
        if sigma is None:
            raise ConfigError(
                "no similarity statistic was planned: set DPConfig.statistic_epsilon so that "
                "the training noise leaves room for it"
            )
        spend = self._charge_statistic(private, round_, sigma)
        if on_charge is not None:
            on_charge(spend)
        generator = self._noise_generator
        if generator is not None and self._seed is not None:
            generator.manual_seed(_derived_seed(self._seed, "statistic", round_))
        if generator is None:  # secure mode: Opacus's cryptographically secure generator
            generator = private.stepper.secure_rng
        noise = torch.normal(
            0.0, sigma, size=(total.shape[0],), generator=generator, dtype=torch.float64
        )
        result: npt.NDArray[np.float64] = total + noise.numpy()
        return result

    def _charge_statistic(self, private: _Private, round_: int, sigma: float) -> RoundSpend:
        config = private.config
        after = self._commit_charge(
            private,
            "similarity statistic",
            extend_history(private.state.history, sigma, 1.0, 1),
            lambda epsilon: private.state.charged_statistic(round_, epsilon),
        )
        return RoundSpend(
            round=round_,
            epsilon=after,
            delta=config.delta,
            noise_multiplier=sigma,
            sample_rate=1.0,
            steps=1,
            accountant=config.accountant.value,
            opacus_version=opacus.__version__,
            mechanism=STATISTIC_MECHANISM,
        )

    def _commit_charge(
        self,
        private: _Private,
        what: str,
        history_after: History,
        charged: Callable[[float], AccountantState],
    ) -> float:
        """Refuse ``what`` if ``history_after`` exceeds the budget (nothing changes); otherwise
        make ``charged(epsilon_after)`` the durable state -- CHARGE FIRST, before any noise is
        drawn or step taken -- and return epsilon after it."""
        config = private.config
        limit = config.target_epsilon + EPSILON_TOLERANCE
        if self._spend is not None:  # composed with the records' other participations, locked
            after = self._spend.charge(
                history_after,
                lambda history: epsilon_for(config.accountant, history, config.delta),
                limit,
                what,
            )
        else:
            current = private.epsilon(private.state.history)
            after = private.epsilon(history_after)
            if after > limit:
                raise PrivacyBudgetExceeded(
                    f"{what} refused: it would raise epsilon from {current:.6g} to "
                    f"{after:.6g} at delta={config.delta:g}, above the budget "
                    f"{config.target_epsilon:g}; nothing was charged, trained or released"
                )
        state = charged(after)
        save_state(self._state_dir, state)
        private.state = state
        private.stepper.engine.accountant.history = list(state.history)
        return after

    def _proximal(self, anchor: npt.ArrayLike | None) -> Proximal | None:
        mu = self._training.proximal_lambda
        if anchor is None or mu == 0:
            return None
        params = list(self._stepper.module.parameters())
        values = np.asarray(anchor, dtype=np.float64)
        expected = sum(p.numel() for p in params)
        if values.ndim != 1 or values.shape[0] != expected:
            raise ConfigError(
                f"anchor must be a 1-D vector of {expected} values, got shape {values.shape}"
            )
        if not np.all(np.isfinite(values)):
            raise ConfigError("anchor holds NaN or infinite values")
        flat = torch.from_numpy(values)
        pieces: list[Tensor] = []
        offset = 0
        for p in params:
            piece = flat[offset : offset + p.numel()].view_as(p).to(dtype=p.dtype, device=p.device)
            pieces.append(piece)
            offset += p.numel()
        return Proximal(mu=mu, anchor=tuple(pieces))

    def _reseed(self, round_: int) -> None:
        if self._seed is None:
            return
        if self._noise_generator is not None:
            self._noise_generator.manual_seed(_derived_seed(self._seed, "noise", round_))
        if self._sample_generator is not None:
            self._sample_generator.manual_seed(_derived_seed(self._seed, "sampling", round_))

    def _batches(self) -> Iterator[tuple[Tensor, Tensor]]:
        size = self._training.batch_size
        if self._sample_rate is None:  # plain SGD: shuffled batches covering every record
            for _ in range(self._training.local_epochs):
                order = torch.randperm(self._n, generator=self._sample_generator)
                for start in range(0, self._n, size):
                    index = order[start : start + size]
                    yield self._x[index], self._y[index]
            return
        sampler = UniformWithReplacementSampler(
            num_samples=self._n,
            sample_rate=self._sample_rate,
            generator=self._sample_generator,
            steps=self.steps_per_round,
        )
        for indices in sampler:  # Poisson: each record independently with probability q
            index = torch.tensor(indices, dtype=torch.long)
            yield self._x[index], self._y[index]


@dataclass
class _Private:
    """The DP half of a trainer: its configuration, its Opacus stepper and accountant state."""

    config: DPConfig
    stepper: DPStepper
    state: AccountantState
    prior: History = ()  # earlier participations on the same records, composed first

    def next_history(self, steps: int) -> History:
        state = self.state
        return extend_history(state.history, state.noise_multiplier, state.sample_rate, steps)

    def epsilon(self, history: History) -> float:
        return epsilon_for(self.config.accountant, (*self.prior, *history), self.config.delta)


def _prior(spend: SpendAccount | None) -> History:
    """What earlier participations on the records spent; refuses when that is unbounded."""
    if spend is None:
        return ()
    prior = spend.others()
    if prior is None:
        raise PrivacyBudgetExceeded(
            "models trained on these records without DP were released before "
            f"({spend.records_dir}): no DP guarantee is left to spend; reset explicitly "
            "(securefed budget reset) only if that release did not happen"
        )
    return prior


def _check_arguments(
    train_x: Tensor,
    train_y: Tensor,
    training: TrainingConfig,
    dp: DPConfig | None,
    planned_rounds: int,
) -> None:
    if not isinstance(training, TrainingConfig):
        raise ConfigError("training must be a TrainingConfig")
    if dp is not None and not isinstance(dp, DPConfig):
        raise ConfigError("dp must be a DPConfig or None")
    if isinstance(planned_rounds, bool) or not isinstance(planned_rounds, int):
        raise ConfigError(f"planned_rounds must be an integer, got {planned_rounds!r}")
    if planned_rounds < 1:
        raise ConfigError(f"planned_rounds must be >= 1, got {planned_rounds}")
    n = len(train_x)
    if n < 1 or len(train_y) != n:
        raise ConfigError(f"need as many labels as records (>0), got {n} and {len(train_y)}")
    if train_y.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise ConfigError(f"labels must be an integer tensor, got {train_y.dtype}")
    weights = training.class_weights
    if weights is not None and int(train_y.max()) >= len(weights):
        raise ConfigError(
            f"label {int(train_y.max())} has no class weight: class_weights lists "
            f"{len(weights)} weights (labels 0..{len(weights) - 1})"
        )


def _os_seeded_generator() -> torch.Generator:
    return torch.Generator().manual_seed(secrets.randbits(63))


def _derived_seed(seed: int, purpose: str, round_: int) -> int:
    digest = hashlib.sha256(f"securefed/dp/{purpose}/{seed}/{round_}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1
