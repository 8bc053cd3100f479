"""``securefed bench dp``: the cost of one DP-SGD step of the CNN against one plain SGD step.

Both steps run on the same random batch (``batch_size`` images of 1x28x28, fixed seed) with the
same model architecture (:func:`securefed.models.cnn`) and optimizer settings. The DP step is the
trainer's own path (:class:`securefed.dp.DPStepper`, ghost clipping where the model allows it,
as :class:`~securefed.dp.DPConfig` defaults to): per-sample clipping, Gaussian noise, SGD. For
reference the per-sample "hooks" path is timed too (``hooks_step_s``).

The paths are interleaved step by step after ``warmup`` steps each, and the median of ``steps``
timings is kept, so that load from other tenants of the machine hits all paths alike. PyTorch's
thread count is left as configured (reported as ``torch_threads``). The goal is
``ratio = dp_step_s / nondp_step_s <= 2.5``; a miss is data, not an error.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import opacus
import torch

from securefed.dp import AccountantKind, DPStepper, PlainStepper, TrainingConfig
from securefed.errors import ConfigError
from securefed.models import cnn, parameter_count

__all__ = ["TARGET_RATIO", "DPBenchmark", "run_dp_benchmark"]

TARGET_RATIO = 2.5


@dataclass(frozen=True)
class DPBenchmark:
    """Result of one DP step benchmark (see module docstring); times in seconds."""

    benchmark: str
    batch_size: int
    steps: int
    params: int
    grad_sample_mode: str
    dp_step_s: float
    nondp_step_s: float
    hooks_step_s: float | None
    ratio: float
    hooks_ratio: float | None
    target: float
    met: bool
    torch_threads: int
    torch_version: str
    opacus_version: str

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def run_dp_benchmark(
    *,
    batch_size: int = 64,
    steps: int = 20,
    num_classes: int = 10,
    warmup: int = 3,
    include_hooks: bool = True,
) -> dict[str, object]:
    """Time DP vs non-DP steps of the CNN; returns :meth:`DPBenchmark.to_dict`.

    Raises :class:`ConfigError` for ``batch_size < 1``, ``steps < 1``, ``warmup < 0`` or
    ``num_classes < 2``.
    """
    if batch_size < 1 or steps < 1 or warmup < 0 or num_classes < 2:
        raise ConfigError(
            "need batch_size >= 1, steps >= 1, warmup >= 0 and num_classes >= 2, got "
            f"{batch_size}, {steps}, {warmup}, {num_classes}"
        )
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, 1, 28, 28, generator=generator)
    y = torch.randint(0, num_classes, (batch_size,), generator=generator)
    training = TrainingConfig(batch_size=batch_size)
    plain = PlainStepper(cnn(num_classes, seed=0), training)
    private = _dp_stepper(x, y, training, num_classes, ghost_clipping=True)
    paths: dict[str, Callable[[], None]] = {
        "nondp": lambda: plain.step(x, y, None),
        "dp": lambda: private.step(x, y, None),
    }
    if include_hooks and private.grad_sample_mode.value != "hooks":
        hooks = _dp_stepper(x, y, training, num_classes, ghost_clipping=False)
        paths["hooks"] = lambda: hooks.step(x, y, None)
    for _ in range(warmup):
        for run in paths.values():
            run()
    timings: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(steps):
        for name, run in paths.items():
            start = time.perf_counter()
            run()
            timings[name].append(time.perf_counter() - start)
    median = {name: statistics.median(values) for name, values in timings.items()}
    ratio = median["dp"] / median["nondp"]
    hooks_s = median.get("hooks")
    if hooks_s is None and include_hooks:  # the DP path already is the hooks path
        hooks_s = median["dp"]
    return DPBenchmark(
        benchmark="dp",
        batch_size=batch_size,
        steps=steps,
        params=parameter_count(plain.module),
        grad_sample_mode=private.grad_sample_mode.value,
        dp_step_s=median["dp"],
        nondp_step_s=median["nondp"],
        hooks_step_s=hooks_s,
        ratio=ratio,
        hooks_ratio=None if hooks_s is None else hooks_s / median["nondp"],
        target=TARGET_RATIO,
        met=ratio <= TARGET_RATIO,
        torch_threads=torch.get_num_threads(),
        torch_version=torch.__version__,
        opacus_version=opacus.__version__,
    ).to_dict()


def _dp_stepper(
    x: torch.Tensor,
    y: torch.Tensor,
    training: TrainingConfig,
    num_classes: int,
    *,
    ghost_clipping: bool,
) -> DPStepper:
    return DPStepper(
        cnn(num_classes, seed=0),
        train_x=x,
        train_y=y,
        training=training,
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        expected_batch_size=float(len(x)),
        accountant=AccountantKind.PRV,
        ghost_clipping=ghost_clipping,
        noise_generator=torch.Generator().manual_seed(1),
        secure_mode=False,
    )
