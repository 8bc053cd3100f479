"""Model files in safetensors format: tensors and string metadata only, never pickle.

``torch.save`` files are pickles and can run code when loaded; safetensors files cannot. Saved
keys are those of the plain module: an Opacus wrapper's ``_module.`` prefix never reaches a file,
so a file saved during private training loads into a fresh model. Writes are atomic: a reader
sees the old file or the complete new one, never a torn write.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import safetensors
import safetensors.torch
import torch
from torch import nn

from securefed.errors import ConfigError
from securefed.files import write_atomic
from securefed.models.params import unwrap

__all__ = ["load_model", "save_model"]

WRAPPER_PREFIX = "_module."


def save_model(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    metadata: Mapping[str, str] | None = None,
    mode: int = 0o600,
) -> None:
    """Write the state dict of ``model`` (unwrapped) to ``path`` as a safetensors file, with
    file mode ``mode`` (default 0600: a model is its institution's secret).

    ``metadata`` is stored as the file's string-to-string metadata. The file is written to a
    temporary file in the same directory, fsynced, and renamed over ``path``. Raises
    :class:`ConfigError` for non-string metadata, a key that still contains ``_module.`` or an
    unwritable path.
    """
    target = Path(path)
    meta = dict(metadata or {})
    for key, value in meta.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ConfigError("model metadata must map strings to strings")
    state = unwrap(model).state_dict()
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
    ``torch.save`` pickle, which is never unpickled), or its keys or shapes do not match the
    model exactly; the model is unchanged in the last case.
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
    expected = target.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    shapes = sorted(
        f"{key}: file {tuple(tensors[key].shape)} vs model {tuple(expected[key].shape)}"
        for key in set(expected) & set(tensors)
        if tensors[key].shape != expected[key].shape
    )
    if missing or unexpected or shapes:
        raise ConfigError(
            f"model file {source} does not match the model: missing keys {missing}, "
            f"unexpected keys {unexpected}, shape mismatches {shapes}"
        )
    target.load_state_dict(tensors, strict=True)
    return metadata
