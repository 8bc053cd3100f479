"""The model families securefed trains: a small DP-compatible CNN, a tabular MLP and logistic
regression (the credit scorecard's model).

All are plain :class:`torch.nn.Sequential` stacks of layers Opacus supports natively (Conv2d,
GroupNorm, Linear, ReLU, MaxPool2d, Flatten, and the parameter-free :class:`BinaryLogits`): no
BatchNorm, whose statistics mix records of a batch and break per-record privacy, and no
parameter tying, so ghost clipping applies. Every model maps a batch to logits of shape
``(N, num_classes)``, so one loss (cross-entropy), one evaluation (arg-max) and one score
(``softmax(logits)[:, 1]`` for a binary target) serve them all.

A tabular model built with ``scaled=True`` (:class:`ModelSpec`) starts with a
:class:`FeatureScaler`: the federation's standardisation of the features (shift, scale and
mean-imputation of missing cells, docs/tabular.md) as a fixed layer of BUFFERS, never
parameters -- not trained, not in ``model.parameters()``, so never clipped, noised or
aggregated, but saved in the model's file and applied wherever the model scores
(``securefed predict``, the ONNX export). The scaled model is
``Sequential(scaler=FeatureScaler, model=<the unscaled model>)``: its parameters are the inner
model's, in the same order.

:class:`ModelSpec` is a model's architecture as data (kind, number of classes, input width,
hidden sizes): what :func:`build_model` builds and what a model file records in its metadata
(:meth:`ModelSpec.to_metadata`), so that a saved model can be rebuilt without the run's
configuration (:func:`securefed.models.load_saved_model`).

Initialisation: with ``seed=None`` PyTorch's default initialisation draws from the global torch RNG.
With an integer ``seed`` the same distributions (PyTorch's defaults: Kaiming-uniform weights with
``a = sqrt(5)``, biases uniform in +-1/sqrt(fan_in)) are drawn from a :class:`torch.Generator`
seeded with it, so a simulation is reproducible without touching the global RNG.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import cast

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn

from securefed.errors import ConfigError
from securefed.models.params import unwrap

__all__ = [
    "CNN_INPUT_SHAPE",
    "DEFAULT_HIDDEN",
    "BinaryLogits",
    "FeatureScaler",
    "ModelKind",
    "ModelSpec",
    "build_model",
    "check_scaler_values",
    "cnn",
    "feature_scaler",
    "logistic",
    "mlp",
]

#: Input shape (channels, height, width) of :func:`cnn`, e.g. MNIST / EMNIST images.
CNN_INPUT_SHAPE = (1, 28, 28)
#: Hidden layer widths of :func:`mlp` when none are given.
DEFAULT_HIDDEN = (64, 32)


class ModelKind(Enum):
    """Which model family :func:`build_model` builds."""

    CNN = "cnn"  # 1x28x28 images
    MLP = "mlp"  # rows of in_features columns, ReLU hidden layers
    LOGISTIC = "logistic"  # rows of in_features columns, one linear layer


class BinaryLogits(nn.Module):
    """``(N, 1)`` logits ``z`` -> ``(N, 2)`` logits ``[0, z]``, so that ``softmax`` gives
    ``P(class 1) = sigmoid(z)`` and cross-entropy equals the logistic (binary cross-entropy)
    loss. No parameters: under Opacus only the linear layer before it has per-sample
    gradients."""

    def forward(self, z: Tensor) -> Tensor:
        return torch.cat((torch.zeros_like(z), z), dim=1)


class FeatureScaler(nn.Module):
    """The federation's standardisation of ``features`` input columns, a fixed first layer.

    ``forward(x) = (x - shift) / scale``, column by column, then 0 (the federation mean, once
    standardised) in column ``j`` of every record whose missing indicator ``x[:, indicator[j]]``
    is 1 -- a missing cell, written as 0.0 by the import, is imputed by the mean. Columns with
    ``indicator[j] == -1`` have no indicator. There is no data-dependent control flow (the
    indicator columns are gathered and multiplied in), so Opacus, ``torch.onnx`` and the
    hand-built ONNX graph see one fixed computation.

    ``shift`` (float32), ``scale`` (float32) and ``indicator`` (int64) are BUFFERS: never in
    ``parameters()``, never trained or aggregated, but in ``state_dict()`` and so in the model's
    file. A new scaler is the identity (shift 0, scale 1, no indicators) until :meth:`set`.
    """

    shift: Tensor
    scale: Tensor
    indicator: Tensor

    def __init__(self, features: int) -> None:
        super().__init__()
        _check_positive("features", features)
        self.features = features
        self.register_buffer("shift", torch.zeros(features, dtype=torch.float32))
        self.register_buffer("scale", torch.ones(features, dtype=torch.float32))
        self.register_buffer("indicator", torch.full((features,), -1, dtype=torch.int64))

    def set(
        self,
        shift: npt.ArrayLike | Tensor,
        scale: npt.ArrayLike | Tensor,
        indicator: npt.ArrayLike | Tensor,
    ) -> None:
        """Copy new values into the buffers, in place (so a model that Opacus wrapped, or
        one already on a device, is updated where it is).

        ``shift`` and ``scale``: ``features`` finite numbers (finite as float32 too), every
        ``scale`` > 0 (after rounding to float32). ``indicator``: ``features`` integers (an
        integer dtype) in ``[-1, features)``, ``indicator[j] != j``. Raises
        :class:`ConfigError` otherwise, leaving the buffers unchanged.
        """
        values = check_scaler_values(self.features, shift, scale, indicator)
        with torch.no_grad():
            for buffer, value in zip((self.shift, self.scale, self.indicator), values, strict=True):
                buffer.copy_(value.to(buffer.device))

    def forward(self, x: Tensor) -> Tensor:
        z = (x - self.shift) / self.scale
        has_indicator = (self.indicator >= 0).to(x.dtype)
        missing = x.index_select(1, self.indicator.clamp(min=0)) * has_indicator
        return z * (1 - missing)

    def extra_repr(self) -> str:
        return f"features={self.features}"


def check_scaler_values(
    features: int,
    shift: npt.ArrayLike | Tensor,
    scale: npt.ArrayLike | Tensor,
    indicator: npt.ArrayLike | Tensor,
) -> tuple[Tensor, Tensor, Tensor]:
    """The values of a :class:`FeatureScaler` of ``features`` columns as its buffers' tensors
    (float32, float32, int64, on the CPU), checked as :meth:`FeatureScaler.set` says. Raises
    :class:`ConfigError` naming the first problem."""
    shift32 = _float32_vector("shift", shift, features)
    scale32 = _float32_vector("scale", scale, features)
    if not bool(np.all(scale32 > 0)):
        bad = int(np.flatnonzero(~(scale32 > 0))[0])
        raise ConfigError(f"scaler scale[{bad}] = {float(scale32[bad])!r} must be > 0")
    links = _indicator_vector(indicator, features)
    return torch.from_numpy(shift32), torch.from_numpy(scale32), torch.from_numpy(links)


def _indicator_vector(values: npt.ArrayLike | Tensor, features: int) -> npt.NDArray[np.int64]:
    """``values`` as the int64 indicator links of a scaler of ``features`` columns, checked."""
    raw = _as_array("indicator", values)
    if raw.shape != (features,):
        raise ConfigError(f"scaler indicator must have shape ({features},), got {raw.shape}")
    if raw.dtype.kind not in "iu":
        raise ConfigError(f"scaler indicator must hold integers, got dtype {raw.dtype}")
    wide = cast("npt.NDArray[np.integer]", raw)  # kind i or u: checked above
    outside = np.flatnonzero((wide < -1) | (wide >= features))  # before any cast can wrap
    if outside.size:
        j = int(outside[0])
        raise ConfigError(
            f"scaler indicator[{j}] = {int(wide[j])} is not a column in [0, {features}) or -1"
        )
    links = wide.astype(np.int64)
    own = np.flatnonzero(links == np.arange(features))
    if own.size:
        raise ConfigError(f"scaler indicator[{int(own[0])}] points at its own column")
    return links


def _as_array(name: str, values: npt.ArrayLike | Tensor) -> npt.NDArray[np.generic]:
    """``values`` as a new numpy array; :class:`ConfigError` if they are not an array."""
    try:
        if isinstance(values, Tensor):
            return values.detach().to("cpu").numpy().copy()
        return np.array(values)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"scaler {name} is not an array of numbers: {exc}") from None


def _float32_vector(
    name: str, values: npt.ArrayLike | Tensor, features: int
) -> npt.NDArray[np.float32]:
    array = _as_array(name, values)
    if array.shape != (features,):
        raise ConfigError(f"scaler {name} must have shape ({features},), got {array.shape}")
    if array.dtype.kind not in "iuf":
        raise ConfigError(f"scaler {name} must hold numbers, got dtype {array.dtype}")
    with np.errstate(over="ignore"):
        array32 = array.astype(np.float32)
    if not bool(np.all(np.isfinite(array32))):
        bad = int(np.flatnonzero(~np.isfinite(array32))[0])
        raise ConfigError(
            f"scaler {name}[{bad}] = {float(array[bad])!r} is not a finite float32 number"
        )
    return array32


def feature_scaler(model: nn.Module) -> FeatureScaler | None:
    """The :class:`FeatureScaler` of a model built with ``scaled=True`` (through an Opacus
    wrapper too), or None for any other model."""
    inner = unwrap(model)
    if not isinstance(inner, nn.Sequential):
        return None
    scaler = getattr(inner, "scaler", None)
    return scaler if isinstance(scaler, FeatureScaler) else None


def cnn(num_classes: int = 10, *, seed: int | None = None) -> nn.Module:
    """The DP-compatible CNN for ``(N, 1, 28, 28)`` inputs (about 64k parameters at 10 classes).

    Conv(1->16, 5x5, pad 2) -> GroupNorm(4) -> ReLU -> MaxPool(2) -> Conv(16->32, 5x5, pad 2) ->
    GroupNorm(4) -> ReLU -> MaxPool(2) -> Flatten -> Linear(1568 -> 32) -> ReLU ->
    Linear(32 -> num_classes). Raises :class:`ConfigError` if ``num_classes < 2``.
    """
    _check_positive("num_classes", num_classes, minimum=2)
    model = nn.Sequential(
        nn.Conv2d(1, 16, kernel_size=5, padding=2),
        nn.GroupNorm(4, 16),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, kernel_size=5, padding=2),
        nn.GroupNorm(4, 32),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 7 * 7, 32),
        nn.ReLU(),
        nn.Linear(32, num_classes),
    )
    return _seeded(model, seed)


def mlp(
    in_features: int,
    num_classes: int,
    hidden: Sequence[int] = DEFAULT_HIDDEN,
    *,
    seed: int | None = None,
) -> nn.Module:
    """A ReLU multilayer perceptron for tabular rows: ``in_features -> *hidden -> num_classes``.

    ``hidden`` may be empty (a linear model). Raises :class:`ConfigError` for non-positive sizes
    or ``num_classes < 2``.
    """
    _check_positive("in_features", in_features)
    _check_positive("num_classes", num_classes, minimum=2)
    for width in hidden:
        _check_positive("hidden layer width", width)
    layers: list[nn.Module] = []
    previous = in_features
    for width in hidden:
        layers += [nn.Linear(previous, width), nn.ReLU()]
        previous = width
    layers.append(nn.Linear(previous, num_classes))
    return _seeded(nn.Sequential(*layers), seed)


def logistic(in_features: int, num_classes: int, *, seed: int | None = None) -> nn.Module:
    """Logistic regression on rows of ``in_features`` columns.

    Binary (``num_classes == 2``): ONE weight vector and bias, ``Linear(in_features -> 1)``
    followed by :class:`BinaryLogits` -- the scorecard model, ``P(y = 1) = sigmoid(w.x + b)``,
    whose file holds exactly those coefficients. More classes: softmax regression,
    ``Linear(in_features -> num_classes)``. Raises :class:`ConfigError` for a non-positive
    ``in_features`` or ``num_classes < 2``.
    """
    _check_positive("in_features", in_features)
    _check_positive("num_classes", num_classes, minimum=2)
    if num_classes == 2:
        return _seeded(nn.Sequential(nn.Linear(in_features, 1), BinaryLogits()), seed)
    return _seeded(nn.Sequential(nn.Linear(in_features, num_classes)), seed)


_KIND = "model.kind"
_CLASSES = "model.num_classes"
_FEATURES = "model.in_features"
_HIDDEN = "model.hidden"
_SCALED = "model.scaled"


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A model's architecture: enough to rebuild it (:meth:`build`) and to record it in a
    model file (:meth:`to_metadata` / :meth:`from_metadata`).

    ``in_features`` is the number of input columns (the CNN: always 784, its 1x28x28 pixels;
    None is accepted for the CNN and stored as 784). ``hidden`` is the MLP's hidden layer
    widths (None: :data:`DEFAULT_HIDDEN`; stored resolved) and must be None for the other
    kinds. ``scaled`` (the MLP and logistic regression only) puts a :class:`FeatureScaler`
    of ``in_features`` columns first (see the module docstring). Construction validates: a
    spec that exists can be built. Raises :class:`ConfigError` for a kind that is not a
    :class:`ModelKind`, ``num_classes < 2``, a missing or non-positive ``in_features``, the
    CNN with another input width, hidden sizes for a model without hidden layers, empty or
    non-positive hidden sizes, a ``scaled`` that is not a bool, or a scaled CNN.
    """

    kind: ModelKind
    num_classes: int
    in_features: int | None = None
    hidden: tuple[int, ...] | None = None
    scaled: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.kind, ModelKind):
            raise ConfigError(f"model kind must be a ModelKind, got {self.kind!r}")
        if not isinstance(self.scaled, bool):
            raise ConfigError(f"scaled must be true or false, got {self.scaled!r}")
        if self.scaled and self.kind is ModelKind.CNN:
            raise ConfigError(
                "feature scaling applies to tabular models (mlp, logistic), not to the cnn"
            )
        _check_positive("num_classes", self.num_classes, minimum=2)
        pixels = math.prod(CNN_INPUT_SHAPE)
        features = self.in_features
        if self.kind is ModelKind.CNN:
            if features is not None and features != pixels:
                raise ConfigError(
                    f"the CNN takes 1x28x28 images ({pixels} features), not {features}"
                )
            features = pixels
        elif features is None:
            raise ConfigError(
                f"the {self.kind.value} model needs in_features (the number of columns of a record)"
            )
        _check_positive("in_features", features)
        object.__setattr__(self, "in_features", features)
        if self.kind is not ModelKind.MLP:
            if self.hidden is not None:
                raise ConfigError(
                    f"hidden layer sizes apply to the mlp only, not to the {self.kind.value} model"
                )
            return
        hidden = DEFAULT_HIDDEN if self.hidden is None else self.hidden
        if isinstance(hidden, str | bytes) or not isinstance(hidden, Sequence) or not hidden:
            raise ConfigError(
                f"the mlp's hidden layer sizes must be a non-empty list of widths, got {hidden!r}"
                ' (a model without hidden layers is model = "logistic")'
            )
        for width in hidden:
            _check_positive("hidden layer width", width)
        object.__setattr__(self, "hidden", tuple(hidden))

    def build(self, *, seed: int | None = None) -> nn.Module:
        """A new model of this architecture (seeded initialisation with ``seed``). Scaled:
        ``Sequential(scaler=FeatureScaler(in_features), model=<the unscaled model>)``, the
        inner model initialised exactly as the unscaled one and the scaler the identity."""
        features = int(self.in_features or 0)  # never 0: resolved in __post_init__
        model: nn.Module
        if self.kind is ModelKind.CNN:
            return cnn(self.num_classes, seed=seed)
        if self.kind is ModelKind.LOGISTIC:
            model = logistic(features, self.num_classes, seed=seed)
        else:
            model = mlp(features, self.num_classes, self.hidden or DEFAULT_HIDDEN, seed=seed)
        if not self.scaled:
            return model
        return nn.Sequential(OrderedDict(scaler=FeatureScaler(features), model=model))

    def to_metadata(self) -> dict[str, str]:
        """The architecture as model-file metadata (strings): ``model.kind``,
        ``model.num_classes``, ``model.in_features``, for the MLP ``model.hidden`` (a JSON
        list), and ``model.scaled = "true"`` for a scaled model only (an unscaled model's
        metadata is what it was before scaling existed)."""
        meta = {
            _KIND: self.kind.value,
            _CLASSES: str(self.num_classes),
            _FEATURES: str(self.in_features),
        }
        if self.hidden is not None:
            meta[_HIDDEN] = json.dumps(list(self.hidden))
        if self.scaled:
            meta[_SCALED] = "true"
        return meta

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str]) -> ModelSpec:
        """The spec a model file's metadata records (:meth:`to_metadata`). Raises
        :class:`ConfigError` when the architecture is missing (a file written without it) or
        malformed, naming the key. Without ``model.scaled`` (files from before scaling) the
        model is unscaled; with it, it must be ``"true"`` or ``"false"``."""
        missing = [key for key in (_KIND, _CLASSES, _FEATURES) if key not in metadata]
        if missing:
            raise ConfigError(
                f"the model file does not record its architecture (missing {', '.join(missing)})"
            )
        try:
            kind = ModelKind(metadata[_KIND])
        except ValueError:
            raise ConfigError(f"{_KIND} = {metadata[_KIND]!r} is not a known model") from None
        hidden = None
        if _HIDDEN in metadata:
            hidden = _json_ints(metadata[_HIDDEN], _HIDDEN)
        return cls(
            kind,
            num_classes=_decimal(metadata[_CLASSES], _CLASSES),
            in_features=_decimal(metadata[_FEATURES], _FEATURES),
            hidden=None if hidden is None else tuple(hidden),
            scaled=_flag(metadata.get(_SCALED, "false"), _SCALED),
        )


def _flag(text: str, key: str) -> bool:
    if text not in ("true", "false"):
        raise ConfigError(f"{key} = {text!r} is not true or false")
    return text == "true"


def _decimal(text: str, key: str) -> int:
    if not text.isdigit() or len(text) > 9:
        raise ConfigError(f"{key} = {text!r} is not a positive integer")
    return int(text)


def _json_ints(text: str, key: str) -> list[int]:
    try:
        values = json.loads(text)
    except ValueError:
        values = None
    if not isinstance(values, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in values
    ):
        raise ConfigError(f"{key} = {text!r} is not a JSON list of integers")
    return values


def build_model(
    kind: ModelKind | str,
    *,
    num_classes: int,
    in_features: int | None = None,
    hidden: Sequence[int] | None = None,
    scaled: bool = False,
    seed: int | None = None,
) -> nn.Module:
    """Build a model of ``kind`` (a :class:`ModelKind` or its value: ``"cnn"``, ``"mlp"``,
    ``"logistic"``); see :class:`ModelSpec` for the arguments.

    The MLP and logistic regression need ``in_features``; the CNN takes 28x28 images and
    accepts ``in_features`` only if it is ``None`` or 784; ``hidden`` (default
    :data:`DEFAULT_HIDDEN`) is for the MLP only; ``scaled`` (a :class:`FeatureScaler` first)
    for the MLP and logistic regression only. Anything else raises :class:`ConfigError`.
    """
    try:
        kind = ModelKind(kind)
    except ValueError:
        known = ", ".join(k.value for k in ModelKind)
        raise ConfigError(f"unknown model kind {kind!r} (known: {known})") from None
    spec = ModelSpec(
        kind,
        num_classes=num_classes,
        in_features=in_features,
        hidden=None if hidden is None else tuple(hidden),
        scaled=scaled,
    )
    return spec.build(seed=seed)


def _check_positive(name: str, value: int, *, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _seeded(model: nn.Module, seed: int | None) -> nn.Module:
    """Redraw the default initialisation of ``model`` from a generator seeded with ``seed``."""
    if seed is None:
        return model
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5), generator=generator)
                if module.bias is not None:
                    bound = 1.0 / math.sqrt(module.weight[0].numel())
                    nn.init.uniform_(module.bias, -bound, bound, generator=generator)
    return model
