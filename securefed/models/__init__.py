"""Models for private local training: definitions, flat parameter vectors, safetensors files.

* :func:`cnn`, :func:`mlp`, :func:`logistic`, :func:`build_model` / :class:`ModelKind`:
  DP-compatible networks (GroupNorm, no BatchNorm, no tied parameters), all with logits of shape
  ``(N, num_classes)``; :class:`ModelSpec`: a model's architecture, recorded in its file.
* :class:`FeatureScaler` / :func:`feature_scaler`: the fixed first layer of a ``scaled``
  tabular model (the federation's standardisation and mean imputation, as buffers: never
  trained or aggregated, saved with the model).
* :func:`flat_parameters` / :func:`load_flat_parameters`: the float64 vector that secure
  aggregation and FedAMP work on (same order for a model and its Opacus wrapper).
* :func:`save_model` / :func:`load_model` / :func:`load_saved_model`: safetensors files (no
  pickle), atomic writes, never a ``_module.`` key; a file saved with its spec is rebuilt from
  the file alone.
* :func:`evaluate`: accuracy; :func:`class_probabilities`: softmax of the logits;
  :func:`positive_scores`: P(class 1) of a binary model.
"""

from securefed.models.io import SavedModel, load_model, load_saved_model, save_model
from securefed.models.metrics import class_probabilities, evaluate, positive_scores
from securefed.models.nets import (
    CNN_INPUT_SHAPE,
    DEFAULT_HIDDEN,
    BinaryLogits,
    FeatureScaler,
    ModelKind,
    ModelSpec,
    build_model,
    cnn,
    feature_scaler,
    logistic,
    mlp,
)
from securefed.models.params import (
    flat_parameters,
    load_flat_parameters,
    parameter_count,
    unwrap,
)

__all__ = [
    "CNN_INPUT_SHAPE",
    "DEFAULT_HIDDEN",
    "BinaryLogits",
    "FeatureScaler",
    "ModelKind",
    "ModelSpec",
    "SavedModel",
    "build_model",
    "class_probabilities",
    "cnn",
    "evaluate",
    "feature_scaler",
    "flat_parameters",
    "load_flat_parameters",
    "load_model",
    "load_saved_model",
    "logistic",
    "mlp",
    "parameter_count",
    "positive_scores",
    "save_model",
    "unwrap",
]
