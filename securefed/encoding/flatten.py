"""Model state dicts <-> one flat float64 vector, in a pinned, canonical layout.

The torch side converts its state dict to numpy first (``{k: t.detach().cpu().numpy()}``); this
module never imports torch, and nothing here uses pickle.

Order: tensors are laid out by name in code-point order (Python's ``str`` ordering), never in dict
insertion order, which differs between institutions whose code builds their models differently;
each tensor is flattened in C order. A :class:`ModelLayout` pins names, shapes and dtypes; its
canonical JSON (:meth:`ModelLayout.to_json`) and SHA-256 digest (:meth:`ModelLayout.digest`) bind
it into protocol transcripts.

Guarantees:

* :func:`flatten` refuses a state that does not match the layout exactly (names, shapes, dtypes),
  listing every mismatch in one ConfigError.
* Integer and bool tensors round-trip exactly: :func:`flatten` refuses ``|v| > 2**53`` and
  :func:`unflatten` refuses values that are not integers in the dtype's range (and in
  ``[-2**53, 2**53]``).
* float16/32/64 widen to float64 exactly; :func:`unflatten` rounds to each tensor's dtype (round to
  nearest) and refuses finite values that would overflow it.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from securefed.errors import ConfigError

__all__ = [
    "LAYOUT_FORMAT",
    "SUPPORTED_DTYPES",
    "ModelLayout",
    "TensorSpec",
    "flatten",
    "unflatten",
]

LAYOUT_FORMAT = "securefed/layout/v1"
SUPPORTED_DTYPES = frozenset(
    {
        "bool",
        "float16",
        "float32",
        "float64",
        "int8",
        "int16",
        "int32",
        "int64",
        "uint8",
        "uint16",
        "uint32",
        "uint64",
    }
)
# Integers of at most this magnitude are exact in float64.
EXACT_INT_LIMIT = 2**53
_SPEC_KEYS = frozenset({"dtype", "name", "shape"})
_LAYOUT_KEYS = frozenset({"format", "tensors"})


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """Name, shape and numpy dtype name of one tensor.

    Raises:
        ConfigError: empty or non-string name, shape not a tuple of ints >= 0, or a dtype name not
            in :data:`SUPPORTED_DTYPES`.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError("tensor names are non-empty strings")
        if not isinstance(self.shape, tuple) or not all(_is_dim(d) for d in self.shape):
            raise ConfigError(f"tensor {self.name!r}: shape must be a tuple of ints >= 0")
        if self.dtype not in SUPPORTED_DTYPES:
            supported = ", ".join(sorted(SUPPORTED_DTYPES))
            raise ConfigError(f"tensor {self.name!r}: dtype must be one of {supported}")

    @property
    def size(self) -> int:
        """Number of elements (1 for a scalar of shape ``()``)."""
        return math.prod(self.shape)


def _is_dim(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


@dataclass(frozen=True, slots=True)
class ModelLayout:
    """The tensors of a model, sorted by name. Immutable; validated on construction.

    Raises:
        ConfigError: no tensors, an element that is not a TensorSpec, or names not unique and in
            sorted (code-point) order. Use :meth:`from_state` to build a layout from a state dict.
    """

    tensors: tuple[TensorSpec, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.tensors, tuple) or not self.tensors:
            raise ConfigError("a layout is a non-empty tuple of TensorSpec")
        if not all(isinstance(spec, TensorSpec) for spec in self.tensors):
            raise ConfigError("a layout is a non-empty tuple of TensorSpec")
        names = [spec.name for spec in self.tensors]
        if names != sorted(set(names)):
            raise ConfigError("layout tensor names must be unique and in sorted order")

    @property
    def size(self) -> int:
        """Total number of elements: the length of the flat vector."""
        return sum(spec.size for spec in self.tensors)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.tensors)

    @classmethod
    def from_state(cls, state: Mapping[str, npt.NDArray[Any]]) -> ModelLayout:
        """The layout of ``state`` (names sorted; shapes and dtypes as found).

        Raises:
            ConfigError: listing every key that is not a string and every value that is not a
                numpy array of a supported dtype; or an empty state.
        """
        if not isinstance(state, Mapping):
            raise ConfigError("state must be a mapping of names to numpy arrays")
        problems: list[str] = []
        specs: list[TensorSpec] = []
        for name, value in state.items():
            if not isinstance(name, str) or not name:
                problems.append(f"key {name!r} is not a non-empty string")
            elif not isinstance(value, np.ndarray | np.generic):
                problems.append(f"tensor {name!r}: not a numpy array ({type(value).__name__})")
            elif value.dtype.name not in SUPPORTED_DTYPES:
                problems.append(f"tensor {name!r}: unsupported dtype {value.dtype.name}")
            else:
                shape = tuple(int(d) for d in value.shape)
                specs.append(TensorSpec(name, shape, value.dtype.name))
        _raise_problems("state has no valid layout", problems)
        return cls(tuple(sorted(specs, key=lambda spec: spec.name)))

    def to_json(self) -> str:
        """Canonical JSON: sorted keys, no whitespace, ASCII only, with a format tag.

        Two equal layouts always give the same string, on every platform.
        """
        payload = {
            "format": LAYOUT_FORMAT,
            "tensors": [
                {"dtype": spec.dtype, "name": spec.name, "shape": list(spec.shape)}
                for spec in self.tensors
            ],
        }
        return json.dumps(
            payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> ModelLayout:
        """Parse a layout written by :meth:`to_json` (whitespace and key order may vary).

        Raises:
            ConfigError: not JSON, duplicate keys, unknown format tag, missing or extra fields,
                wrong types, or an invalid layout.
        """
        try:
            payload = json.loads(text, object_pairs_hook=_no_duplicate_keys)
        except (ValueError, TypeError) as exc:  # JSONDecodeError and UnicodeDecodeError included
            raise ConfigError("layout is not valid JSON") from exc
        if not isinstance(payload, dict) or set(payload) != _LAYOUT_KEYS:
            raise ConfigError(f"layout JSON must be an object with keys {sorted(_LAYOUT_KEYS)}")
        if payload["format"] != LAYOUT_FORMAT:
            raise ConfigError(f"unknown layout format; expected {LAYOUT_FORMAT!r}")
        entries = payload["tensors"]
        if not isinstance(entries, list):
            raise ConfigError("layout JSON 'tensors' must be a list")
        return cls(tuple(_spec_from_json(entry) for entry in entries))

    def digest(self) -> str:
        """SHA-256 (hex) of :meth:`to_json` as ASCII: binds the layout into transcripts."""
        return hashlib.sha256(self.to_json().encode("ascii")).hexdigest()


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ConfigError("layout JSON has duplicate keys")
    return result


def _spec_from_json(entry: object) -> TensorSpec:
    if not isinstance(entry, dict) or set(entry) != _SPEC_KEYS:
        raise ConfigError(f"each layout tensor must be an object with keys {sorted(_SPEC_KEYS)}")
    shape = entry["shape"]
    if not isinstance(shape, list):
        raise ConfigError("layout tensor 'shape' must be a list of ints")
    return TensorSpec(entry["name"], tuple(shape), entry["dtype"])


def _slices(layout: ModelLayout) -> Iterator[tuple[TensorSpec, int, int]]:
    """Each tensor with its ``[start, stop)`` range in the flat vector."""
    start = 0
    for spec in layout.tensors:
        yield spec, start, start + spec.size
        start += spec.size


def _raise_problems(summary: str, problems: list[str]) -> None:
    if problems:
        raise ConfigError(f"{summary} ({len(problems)} problem(s)): " + "; ".join(problems))


def flatten(state: Mapping[str, npt.NDArray[Any]], layout: ModelLayout) -> npt.NDArray[np.float64]:
    """The tensors of ``state`` concatenated in ``layout`` order, as a new float64 vector.

    The layout is required: it is pinned for the whole federation (build it once with
    :meth:`ModelLayout.from_state`), and every state is checked against it.

    Raises:
        ConfigError: listing every mismatch at once -- missing or unexpected names, values that
            are not numpy arrays, wrong shapes or dtypes, integer values beyond ``+-2**53``.
    """
    if not isinstance(layout, ModelLayout):
        raise ConfigError("flatten needs a ModelLayout")
    if not isinstance(state, Mapping):
        raise ConfigError("state must be a mapping of names to numpy arrays")
    _raise_problems("state does not match the layout", _mismatches(state, layout))
    out = np.empty(layout.size, dtype=np.float64)
    for spec, start, stop in _slices(layout):
        out[start:stop] = np.asarray(state[spec.name]).reshape(-1)
    return out


def _mismatches(state: Mapping[str, object], layout: ModelLayout) -> list[str]:
    expected = set(layout.names)
    problems = [f"key {key!r} is not a string" for key in state if not isinstance(key, str)]
    extra = sorted(key for key in state if isinstance(key, str) and key not in expected)
    problems += [f"unexpected tensor {name!r}" for name in extra]
    for spec in layout.tensors:
        if spec.name not in state:
            problems.append(f"missing tensor {spec.name!r}")
        else:
            problems += _tensor_problems(spec, state[spec.name])
    return problems


def _tensor_problems(spec: TensorSpec, value: object) -> list[str]:
    if not isinstance(value, np.ndarray | np.generic):
        return [f"tensor {spec.name!r}: not a numpy array ({type(value).__name__})"]
    array = np.asarray(value)
    problems = []
    if array.shape != spec.shape:
        problems.append(f"tensor {spec.name!r}: shape {array.shape} != layout {spec.shape}")
    if array.dtype.name != spec.dtype:
        problems.append(f"tensor {spec.name!r}: dtype {array.dtype.name} != layout {spec.dtype}")
    elif array.dtype.kind in "iu" and array.size and not _exact_in_float64(array):
        problems.append(
            f"tensor {spec.name!r}: integer values beyond +-2**53 are not exact in float64"
        )
    return problems


def _exact_in_float64(array: npt.NDArray[Any]) -> bool:
    return int(array.min()) >= -EXACT_INT_LIMIT and int(array.max()) <= EXACT_INT_LIMIT


def unflatten(vector: npt.NDArray[np.float64], layout: ModelLayout) -> dict[str, npt.NDArray[Any]]:
    """Split ``vector`` back into new arrays with the layout's names, shapes and dtypes.

    The dict is in layout (sorted-name) order. Float tensors are rounded to their dtype;
    integer and bool tensors must hold exact integers (bool: 0 or 1).

    Raises:
        ConfigError: ``vector`` is not a 1-D float64 array of length ``layout.size``; or, listing
            every offending tensor with counts (never values), integer/bool tensors with values
            that are not integers in range, or float tensors with finite values that overflow.
    """
    if not isinstance(layout, ModelLayout):
        raise ConfigError("unflatten needs a ModelLayout")
    if not isinstance(vector, np.ndarray) or vector.ndim != 1 or vector.dtype != np.float64:
        raise ConfigError("vector must be a 1-D float64 numpy array")
    if vector.size != layout.size:
        raise ConfigError(f"vector has {vector.size} elements; the layout needs {layout.size}")
    result: dict[str, npt.NDArray[Any]] = {}
    problems: list[str] = []
    for spec, start, stop in _slices(layout):
        piece = vector[start:stop]
        problem = _restore_problem(spec, piece)
        if problem is not None:
            problems.append(problem)
            continue
        with np.errstate(over="ignore"):
            result[spec.name] = piece.astype(spec.dtype).reshape(spec.shape)
    _raise_problems("vector does not fit the layout", problems)
    return result


def _restore_problem(spec: TensorSpec, piece: npt.NDArray[np.float64]) -> str | None:
    """Why ``piece`` cannot be restored as ``spec.dtype`` without loss, or None."""
    dtype = np.dtype(spec.dtype)
    if dtype.kind == "f":
        with np.errstate(over="ignore"):
            overflow = np.isfinite(piece) & ~np.isfinite(piece.astype(dtype))
        count = int(np.count_nonzero(overflow))
        return f"tensor {spec.name!r}: {count} finite value(s) overflow {dtype}" if count else None
    if dtype.kind == "b":
        low, high = 0.0, 1.0
    else:
        info = np.iinfo(dtype)
        low, high = float(max(info.min, -EXACT_INT_LIMIT)), float(min(info.max, EXACT_INT_LIMIT))
    exact = (piece >= low) & (piece <= high) & (piece == np.floor(piece))
    count = piece.size - int(np.count_nonzero(exact))
    if count:
        return f"tensor {spec.name!r}: {count} value(s) are not integers in [{low:.0f}, {high:.0f}]"
    return None
