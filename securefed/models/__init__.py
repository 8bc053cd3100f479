"""Models for private local training: definitions, flat parameter vectors, safetensors files.

* :func:`cnn`, :func:`mlp`, :func:`build_model` / :class:`ModelKind`: DP-compatible networks
  (GroupNorm, no BatchNorm, no tied parameters).
* :func:`flat_parameters` / :func:`load_flat_parameters`: the float64 vector that secure
  aggregation and FedAMP work on (same order for a model and its Opacus wrapper).
* :func:`save_model` / :func:`load_model`: safetensors files (no pickle), atomic writes, never a
  ``_module.`` key.
* :func:`evaluate`: accuracy.
"""

from securefed.models.io import load_model, save_model
from securefed.models.metrics import evaluate
from securefed.models.nets import CNN_INPUT_SHAPE, ModelKind, build_model, cnn, mlp
from securefed.models.params import (
    flat_parameters,
    load_flat_parameters,
    parameter_count,
    unwrap,
)

__all__ = [
    "CNN_INPUT_SHAPE",
    "ModelKind",
    "build_model",
    "cnn",
    "evaluate",
    "flat_parameters",
    "load_flat_parameters",
    "load_model",
    "mlp",
    "parameter_count",
    "save_model",
    "unwrap",
]
