"""Model parameters as one flat float64 vector, the form secure aggregation and FedAMP use.

The order is ``model.parameters()`` order. An Opacus ``GradSampleModule`` yields its wrapped
module's parameters in the same order (it owns none itself), so these functions give the same
vector for a model and for its Opacus wrapper.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from securefed.errors import ConfigError

__all__ = ["flat_parameters", "load_flat_parameters", "parameter_count", "unwrap"]


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside any stack of wrappers that keep it as ``_module`` (Opacus, DDP)."""
    while isinstance(getattr(model, "_module", None), nn.Module):
        model = model._module  # type: ignore[assignment]
    return model


def parameter_count(model: nn.Module) -> int:
    """Number of scalar parameters (trainable or not) of ``model``."""
    return sum(p.numel() for p in model.parameters())


def flat_parameters(model: nn.Module) -> npt.NDArray[np.float64]:
    """All parameters of ``model`` concatenated into a new 1-D float64 array (a copy)."""
    parts = [
        p.detach().reshape(-1).to(device="cpu", dtype=torch.float64) for p in model.parameters()
    ]
    if not parts:
        return np.zeros(0, dtype=np.float64)
    return torch.cat(parts).numpy()


def load_flat_parameters(model: nn.Module, vector: npt.ArrayLike) -> None:
    """Copy ``vector`` (as produced by :func:`flat_parameters`) into the parameters of ``model``.

    Values are cast to each parameter's dtype (float64 -> float32 rounds). Raises
    :class:`ConfigError`, leaving the model unchanged, if ``vector`` is not 1-D, has the wrong
    length, or holds NaN or infinity.
    """
    values = np.asarray(vector, dtype=np.float64)
    params = list(model.parameters())
    expected = sum(p.numel() for p in params)
    if values.ndim != 1:
        raise ConfigError(f"a parameter vector must be 1-D, got shape {values.shape}")
    if values.shape[0] != expected:
        raise ConfigError(
            f"parameter vector has {values.shape[0]} values, the model has {expected} parameters"
        )
    if not np.all(np.isfinite(values)):
        raise ConfigError("parameter vector holds NaN or infinite values")
    source = torch.from_numpy(values)
    offset = 0
    with torch.no_grad():
        for p in params:
            count = p.numel()
            p.copy_(source[offset : offset + count].view_as(p))
            offset += count
