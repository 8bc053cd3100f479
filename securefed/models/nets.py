"""The two model families securefed trains: a small DP-compatible CNN and a tabular MLP.

Both are plain :class:`torch.nn.Sequential` stacks of layers Opacus supports natively (Conv2d,
GroupNorm, Linear, ReLU, MaxPool2d, Flatten): no BatchNorm, whose statistics mix records of a batch
and break per-record privacy, and no parameter tying, so ghost clipping applies.

Initialisation: with ``seed=None`` PyTorch's default initialisation draws from the global torch RNG.
With an integer ``seed`` the same distributions (PyTorch's defaults: Kaiming-uniform weights with
``a = sqrt(5)``, biases uniform in +-1/sqrt(fan_in)) are drawn from a :class:`torch.Generator`
seeded with it, so a simulation is reproducible without touching the global RNG.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from enum import Enum

import torch
from torch import nn

from securefed.errors import ConfigError

__all__ = ["CNN_INPUT_SHAPE", "ModelKind", "build_model", "cnn", "mlp"]

#: Input shape (channels, height, width) of :func:`cnn`, e.g. MNIST / EMNIST images.
CNN_INPUT_SHAPE = (1, 28, 28)


class ModelKind(Enum):
    """Which model family :func:`build_model` builds."""

    CNN = "cnn"
    MLP = "mlp"


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
    hidden: Sequence[int] = (64, 32),
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


def build_model(
    kind: ModelKind | str,
    *,
    num_classes: int,
    in_features: int | None = None,
    seed: int | None = None,
) -> nn.Module:
    """Build a model of ``kind`` (a :class:`ModelKind` or its value, ``"cnn"`` / ``"mlp"``).

    The MLP needs ``in_features``; the CNN takes 28x28 images and accepts ``in_features`` only if
    it is ``None`` or 784. Anything else raises :class:`ConfigError`.
    """
    try:
        kind = ModelKind(kind)
    except ValueError:
        known = ", ".join(k.value for k in ModelKind)
        raise ConfigError(f"unknown model kind {kind!r} (known: {known})") from None
    if kind is ModelKind.CNN:
        pixels = math.prod(CNN_INPUT_SHAPE)
        if in_features is not None and in_features != pixels:
            raise ConfigError(
                f"the CNN takes 1x28x28 images ({pixels} features), not {in_features}"
            )
        return cnn(num_classes, seed=seed)
    if in_features is None:
        raise ConfigError("the MLP needs in_features (the number of columns of a record)")
    return mlp(in_features, num_classes, seed=seed)


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
