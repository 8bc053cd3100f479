"""Model files in safetensors format: tensors and string metadata only, never pickle.

``torch.save`` files are pickles and can run code when loaded; safetensors files cannot. Saved
keys are those of the plain module: an Opacus wrapper's ``_module.`` prefix never reaches a file,
so a file saved during private training loads into a fresh model. Writes are atomic: a reader
sees the old file or the complete new one, never a torn write.

A file saved with its :class:`~securefed.models.nets.ModelSpec` records the architecture in its
metadata (``model.kind``, ``model.num_classes``, ``model.in_features``, ``model.hidden``,
``model.scaled``), and :func:`load_saved_model` rebuilds the model from the file alone.

The state dict, and so the file, holds buffers as well as parameters: a scaled model's
:class:`~securefed.models.nets.FeatureScaler` values travel with it, and a file's scaler values
are checked as :meth:`~securefed.models.nets.FeatureScaler.set` checks them before they are
loaded.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import safetensors
import safetensors.torch
import torch
from torch import nn

from securefed.errors import ConfigError
from securefed.files import write_atomic
from securefed.models.nets import FeatureScaler, ModelSpec, check_scaler_values
from securefed.models.params import unwrap

__all__ = ["SavedModel", "load_model", "load_saved_model", "save_model"]

WRAPPER_PREFIX = "_module."


def save_model(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    metadata: Mapping[str, str] | None = None,
    spec: ModelSpec | None = None,
    mode: int = 0o600,
) -> None:
    """Write the state dict of ``model`` (unwrapped) to ``path`` as a safetensors file, with
    file mode ``mode`` (default 0600: a model is its institution's secret).

    ``metadata`` is stored as the file's string-to-string metadata; with ``spec`` the
    architecture's keys (:meth:`ModelSpec.to_metadata`) are added, after checking that ``model``
    has exactly the parameter names and shapes of ``spec.build()`` (so the file can be rebuilt
    by :func:`load_saved_model`). The file is written to a temporary file in the same directory,
    fsynced, and renamed over ``path``. Raises :class:`ConfigError` for non-string metadata,
    metadata that sets an architecture key itself, a model that does not match ``spec``, a key
    that still contains ``_module.`` or an unwritable path; nothing is written then.
    """
    target = Path(path)
    meta = dict(metadata or {})
    for key, value in meta.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ConfigError("model metadata must map strings to strings")
    state = unwrap(model).state_dict()
    if spec is not None:
        architecture = spec.to_metadata()
        clash = sorted(set(meta) & set(architecture))
        if clash:
            raise ConfigError(f"metadata sets the architecture keys {clash}: pass spec instead")
        _check_matches(state, _shapes_of(spec), f"the model to save as {target}")
        meta.update(architecture)
    tensors: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if WRAPPER_PREFIX in key:
            raise ConfigError(f"state dict key {key!r} contains {WRAPPER_PREFIX!r}")
        # clone: safetensors refuses tensors that share storage (e.g. tied weights).
        tensors[key] = tensor.detach().to("cpu").contiguous().clone()
    data = safetensors.torch.save(tensors, metadata=meta or None)
    write_atomic(target, data, mode=mode)


def load_model(model: nn.Module, path: str | os.PathLike[str]) -> dict[str, str]:
    """Load a file written by :func:`save_model` into ``model`` (strictly); return its metadata.

    Raises :class:`ConfigError` if the file is missing, is not a safetensors file (for example a
    ``torch.save`` pickle, which is never unpickled), its keys or shapes do not match the model
    exactly, or it holds values for a :class:`~securefed.models.nets.FeatureScaler` of the model
    that :meth:`~securefed.models.nets.FeatureScaler.set` would refuse; the model is unchanged
    in the last two cases.
    """
    source = Path(path)
    if not source.is_file():
        raise ConfigError(f"model file {source} does not exist")
    try:
        with safetensors.safe_open(str(source), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    except (safetensors.SafetensorError, OSError, ValueError) as exc:
        raise ConfigError(
            f"{source} is not a readable safetensors model file (pickle files such as "
            f"torch.save checkpoints are refused): {exc}"
        ) from None
    target = unwrap(model)
    _check_matches(tensors, target.state_dict(), f"model file {source}")
    _check_scalers(tensors, target, f"model file {source}")
    target.load_state_dict(tensors, strict=True)
    return metadata


@dataclass(frozen=True, slots=True)
class SavedModel:
    """A model rebuilt from its file: the module (weights loaded, in eval mode), its
    architecture and the file's metadata."""

    model: nn.Module
    spec: ModelSpec
    metadata: dict[str, str]


def load_saved_model(path: str | os.PathLike[str]) -> SavedModel:
    """Rebuild the model that ``path`` records (a file written by :func:`save_model` with
    ``spec``) and load its weights, without the run's configuration.

    Raises :class:`ConfigError` as :func:`load_model` does, and when the file does not record
    its architecture (saved without ``spec``) or records a malformed one.
    """
    source = Path(path)
    metadata = _read_metadata(source)
    try:
        spec = ModelSpec.from_metadata(metadata)
    except ConfigError as exc:
        raise ConfigError(f"model file {source}: {exc}") from None
    with torch.random.fork_rng(devices=[]):  # the weights come from the file: leave the RNG
        model = spec.build()
    load_model(model, source)
    model.eval()
    return SavedModel(model=model, spec=spec, metadata=metadata)


def _read_metadata(source: Path) -> dict[str, str]:
    if not source.is_file():
        raise ConfigError(f"model file {source} does not exist")
    try:
        with safetensors.safe_open(str(source), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except (safetensors.SafetensorError, OSError, ValueError) as exc:
        raise ConfigError(
            f"{source} is not a readable safetensors model file (pickle files such as "
            f"torch.save checkpoints are refused): {exc}"
        ) from None


def _shapes_of(spec: ModelSpec) -> dict[str, torch.Tensor]:
    """The state dict of ``spec.build()`` as storage-free meta tensors (keys and shapes only),
    built without drawing from torch's global random generator."""
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        return dict(spec.build().state_dict())


def _check_scalers(tensors: Mapping[str, torch.Tensor], model: nn.Module, what: str) -> None:
    """Raise ConfigError unless the values ``tensors`` holds for every FeatureScaler of
    ``model`` are ones it accepts (keys present: checked by :func:`_check_matches`)."""
    for name, module in model.named_modules():
        if isinstance(module, FeatureScaler):
            prefix = f"{name}." if name else ""
            try:
                check_scaler_values(
                    module.features,
                    tensors[f"{prefix}shift"],
                    tensors[f"{prefix}scale"],
                    tensors[f"{prefix}indicator"],
                )
            except ConfigError as exc:
                raise ConfigError(f"{what}: {exc}") from None


def _check_matches(
    tensors: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], what: str
) -> None:
    """Raise ConfigError unless ``tensors`` has exactly the keys and shapes of ``expected``."""
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    shapes = sorted(
        f"{key}: file {tuple(tensors[key].shape)} vs model {tuple(expected[key].shape)}"
        for key in set(expected) & set(tensors)
        if tensors[key].shape != expected[key].shape
    )
    if missing or unexpected or shapes:
        raise ConfigError(
            f"{what} does not match the model: missing keys {missing}, "
            f"unexpected keys {unexpected}, shape mismatches {shapes}"
        )
