"""One local SGD step, with DP-SGD (Opacus) or without: the engine room of the trainer.

:class:`DPStepper` owns the ONE Opacus ``PrivacyEngine`` of a trainer and the model, optimizer
and criterion ``make_private`` returned. Opacus's accountant step hook is replaced by a step
counter: privacy is charged by the trainer, for a whole round, before the round's first step, so
the steps must not be counted a second time.

A DP step (``mu/2 ||w - u||^2`` the optional proximal term):

1. per-sample gradients of the data loss (ghost clipping: only their norms) -- each record's
   cross-entropy, times its label's fixed class weight if ``TrainingConfig.class_weights`` is
   set (:mod:`securefed.dp.loss`: a function of that record alone) -- clipped to
   ``max_grad_norm``, summed; Gaussian noise of std ``noise_multiplier * max_grad_norm`` added;
   divided by the expected batch size (``q * n``, fixed: Poisson batches vary in size);
2. then the proximal gradient ``mu * (w - u)`` is ADDED to that noisy gradient -- after clipping
   and noise, so it is never clipped with the data gradient and never scaled by the batch size;
3. the wrapped ``torch.optim.SGD`` step (momentum, if any, sees the sum).

The proximal term only reads ``w`` (itself a DP output) and the anchor ``u`` (a function of DP
outputs), never a record, so step 2 is post-processing and costs no privacy.
"""

from __future__ import annotations

import copy
import importlib.util
import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from opacus import PrivacyEngine
from opacus.grad_sample import GradSampleModuleFastGradientClipping
from opacus.optimizers import DPOptimizer, DPOptimizerFastGradientClipping
from opacus.utils.fast_gradient_clipping_utils import DPLossFastGradientClipping
from opacus.validators import ModuleValidator
from opacus.validators.errors import UnsupportedModuleError
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from securefed.dp.accounting import make_accountant
from securefed.dp.config import AccountantKind, GradSampleMode, TrainingConfig
from securefed.dp.loss import training_loss
from securefed.errors import ConfigError

__all__ = ["DPStepper", "PlainStepper", "Proximal", "secure_rng_available"]


def secure_rng_available() -> bool:
    """Whether ``torchcsprng`` (needed by Opacus ``secure_mode``) is importable."""
    return importlib.util.find_spec("torchcsprng") is not None


@dataclass(frozen=True)
class Proximal:
    """The proximal term ``(mu/2) ||w - u||^2``; ``anchor`` holds ``u``, one tensor per parameter
    of the module (``module.parameters()`` order, same shapes and dtypes)."""

    mu: float
    anchor: tuple[Tensor, ...]

    def add_gradient(self, params: list[nn.Parameter]) -> None:
        """``p.grad += mu * (p - u)`` for every trainable parameter (no autograd, no ``.data``)."""
        with torch.no_grad():
            for p, u in zip(params, self.anchor, strict=True):
                if not p.requires_grad:
                    continue
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                p.grad.add_(p - u, alpha=self.mu)


class PlainStepper:
    """Non-private minibatch SGD on the module itself (cross-entropy, mean over the batch;
    class-weighted as :func:`~securefed.dp.loss.training_loss` says, the same loss as with DP)."""

    def __init__(self, module: nn.Module, training: TrainingConfig) -> None:
        self.module = module
        self._params = list(module.parameters())
        self._optimizer = torch.optim.SGD(self._params, lr=training.lr, momentum=training.momentum)
        self._criterion = training_loss(training.class_weights)

    @property
    def grad_sample_mode(self) -> GradSampleMode | None:
        return None

    def reset_optimizer_state(self) -> None:
        """Forget momentum buffers (each round starts from the parameters the runtime loaded)."""
        self._optimizer.state.clear()

    def step(self, x: Tensor, y: Tensor, proximal: Proximal | None) -> None:
        self._optimizer.zero_grad(set_to_none=True)
        loss = self._criterion(self.module(x), y)
        loss.backward()
        if proximal is not None:
            proximal.add_gradient(self._params)
        self._optimizer.step()


class DPStepper:
    """DP-SGD steps through one Opacus ``PrivacyEngine`` (see module docstring).

    Construction validates the module with ``ModuleValidator`` and, if needed, replaces it by
    ``ModuleValidator.fix``'s copy (``fixes`` says what was wrong; :attr:`module` is then that
    copy). With ``ghost_clipping`` it first tries ghost clipping on a throw-away copy of the model
    with an all-zero input (no record is read); if that fails it uses hooks and
    ``ghost_unavailable`` says why. Raises :class:`ConfigError` if the module cannot be made DP
    compatible or is already attached to an Opacus engine (a module takes part in one engine
    only: Opacus would refuse it with a bare ``ValueError``).
    """

    def __init__(
        self,
        module: nn.Module,
        *,
        train_x: Tensor,
        train_y: Tensor,
        training: TrainingConfig,
        noise_multiplier: float,
        max_grad_norm: float,
        expected_batch_size: float,
        accountant: AccountantKind,
        ghost_clipping: bool,
        noise_generator: torch.Generator | None,
        secure_mode: bool,
    ) -> None:
        if hasattr(module, "autograd_grad_sample_hooks") or hasattr(module, "_module"):
            raise ConfigError(
                "this model is already attached to an Opacus engine (one engine per "
                "participation): build a fresh model and load the weights into it "
                "(securefed.models.load_model / load_flat_parameters)"
            )
        module.train()
        problems = ModuleValidator.validate(module, strict=False)
        self.fixes: tuple[str, ...] = tuple(str(problem) for problem in problems)
        if problems:
            module = ModuleValidator.fix(module)
            try:
                ModuleValidator.validate(module, strict=True)
            except UnsupportedModuleError as exc:
                raise ConfigError(f"the model cannot be made DP compatible: {exc}") from None
        self.module = module
        self._params = list(module.parameters())
        self.ghost_unavailable: str | None = None
        mode = GradSampleMode.HOOKS
        if ghost_clipping:
            self.ghost_unavailable = _probe_ghost(
                module, train_x, max_grad_norm, training_loss(training.class_weights)
            )
            if self.ghost_unavailable is None:
                mode = GradSampleMode.GHOST
        self.mode = mode
        with warnings.catch_warnings():
            # "Secure RNG turned off": reported by the trainer as a hazard instead.
            warnings.simplefilter("ignore", UserWarning)
            self.engine = PrivacyEngine(accountant=accountant.value, secure_mode=secure_mode)
        self.engine.accountant = make_accountant(accountant)
        optimizer = torch.optim.SGD(self._params, lr=training.lr, momentum=training.momentum)
        loader = DataLoader(TensorDataset(train_x, train_y), batch_size=training.batch_size)
        made = self.engine.make_private(
            module=module,
            optimizer=optimizer,
            criterion=training_loss(training.class_weights),
            data_loader=loader,
            noise_multiplier=noise_multiplier,
            max_grad_norm=max_grad_norm,
            poisson_sampling=True,
            grad_sample_mode=mode.value,
            noise_generator=noise_generator,
        )
        # make_private derives q and the expected batch size from len(loader); the trainer
        # samples at q = batch_size / n itself (``made``'s loader is not used), so set both here.
        self.wrapped: nn.Module = made[0]
        self.optimizer: DPOptimizer = made[1]
        # Hooks: the loss is a mean over the batch size of per-record losses (each weighted by
        # its own label's fixed weight at most), as Opacus's loss_reduction="mean" assumes.
        self._criterion: nn.Module = (
            made[2] if mode is GradSampleMode.GHOST else training_loss(training.class_weights)
        )
        self.optimizer.expected_batch_size = expected_batch_size  # type: ignore[assignment]
        self.steps_taken = 0
        self.optimizer.attach_step_hook(self._count_step)

    @property
    def grad_sample_mode(self) -> GradSampleMode:
        return self.mode

    @property
    def secure_rng(self) -> torch.Generator | None:
        """Opacus's cryptographic generator in secure mode (use it for sampling), else None."""
        return self.engine.secure_rng  # type: ignore[no-any-return]

    def _count_step(self, _optimizer: DPOptimizer) -> None:
        self.steps_taken += 1

    def reset_optimizer_state(self) -> None:
        """Forget momentum buffers (each round starts from the parameters the runtime loaded)."""
        self.optimizer.original_optimizer.state.clear()

    def step(self, x: Tensor, y: Tensor, proximal: Proximal | None) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss = self._criterion(self.wrapped(x), y)
        with _quiet_hooks():
            loss.backward()  # ghost clipping: both backward passes happen here
        if not self.optimizer.pre_step():  # clip, sum, noise, scale
            raise RuntimeError("Opacus skipped a DP step; this trainer never asks it to")
        if proximal is not None:
            proximal.add_gradient(self._params)  # after clipping and noise (post-processing)
        self.optimizer.original_optimizer.step()


@contextmanager
def _quiet_hooks() -> Iterator[None]:
    """Silence torch's note that Opacus's full backward hooks fire while the input needs no
    gradient (always true for a first layer; harmless)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        yield


def _probe_ghost(
    module: nn.Module, train_x: Tensor, max_grad_norm: float, criterion: nn.Module
) -> str | None:
    """Run one ghost-clipping forward/backward on a copy of ``module`` with a zero input.

    Returns ``None`` if it works, else a one-line reason. Nothing is released and no record is
    used, so the probe has no privacy cost.
    """
    try:
        trial = copy.deepcopy(module)
        gsm = GradSampleModuleFastGradientClipping(
            trial, batch_first=True, loss_reduction="mean", max_grad_norm=max_grad_norm
        )
        optimizer = DPOptimizerFastGradientClipping(
            torch.optim.SGD(trial.parameters(), lr=0.0),
            noise_multiplier=0.0,
            max_grad_norm=max_grad_norm,
            expected_batch_size=2,
        )
        loss = DPLossFastGradientClipping(gsm, optimizer, criterion, "mean")
        inputs = torch.zeros((2, *train_x.shape[1:]), dtype=train_x.dtype)
        with _quiet_hooks():
            loss(gsm(inputs), torch.zeros(2, dtype=torch.long)).backward()
        norms = gsm.per_sample_gradient_norms
        if norms.shape != (2,) or not all(math.isfinite(float(v)) for v in norms):
            return f"ghost clipping gave unusable per-sample norms {norms.tolist()}"
    except Exception as exc:  # any failure means: use hooks
        return f"{type(exc).__name__}: {exc}"
    return None
