"""The seed layout: one directory, four ``.npy`` files per tenant (ModelArts FedAMP compatible).

For each tenant index ``i`` (any set of non-negative integers, not necessarily contiguous)::

    client_train_samples_<i>.npy   client_train_labels_<i>.npy
    client_test_samples_<i>.npy    client_test_labels_<i>.npy

This is the layout of the ModelArts FedAMP sample (62 EMNIST "virtual tenants"); such a directory
loads unchanged. Other files in the directory (``federation.json``, notes, ...) are ignored.

**Samples** on disk: a float array (any float dtype) or an integer array (``uint8`` included) of
shape ``(n, H, W)``, ``(n, C, H, W)`` or ``(n, F)``. In memory (:class:`TenantData`) they are
``float32`` with this shape rule (:func:`as_samples`):

* ``(n, 784)`` is a flattened 28 x 28 image and becomes ``(n, 1, 28, 28)``;
* ``(n, H, W)`` becomes ``(n, 1, H, W)`` (one channel);
* ``(n, C, H, W)`` stays as it is;
* any other ``(n, F)`` is tabular and stays ``(n, F)`` (a tabular data set with exactly 784
  features would be taken for images: give it as ``(n, 784)`` only if it is one).

Values are **not** rescaled, with one exception for images (three or more dimensions after the
shape rule): pixel values 0..255 are divided by 255, i.e. when the array is ``uint8``, or when its
minimum is >= 0 and its maximum is > 1.5 and <= 255. Data already in [0, 1] and standardised data
(negative values, e.g. ``(x - mean) / std``) are left alone; tabular data is never rescaled. The
decision is taken once per tenant over its train and test samples together, so both splits of a
tenant are scaled alike. Every value must be finite.

**Labels**: float or integer arrays of shape ``(n,)`` or ``(n, 1)`` whose values are integral,
>= 0 and below :data:`MAX_CLASSES` (the class count is the largest label + 1, and the model's
output layer has that many units); in memory they are ``int64`` of shape ``(n,)``.

Files are read with ``np.load(path, allow_pickle=False)``: an object array (which would need
pickle) is refused with :class:`DataFormatError`, never executed.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np
import numpy.typing as npt

from securefed.errors import ConfigError

#: The most classes a data set may have: every label is < MAX_CLASSES (docs/data.md).
MAX_CLASSES = 10_000

__all__ = [
    "FILE_PATTERN",
    "IMAGE_SIDE",
    "MAX_CLASSES",
    "DataFormatError",
    "Part",
    "TenantData",
    "as_labels",
    "as_samples",
    "discover_indices",
    "load_npy",
    "load_tenants",
    "num_classes",
    "tenant_file",
    "write_tenants",
]

IMAGE_SIDE = 28
"""``(n, IMAGE_SIDE**2)`` samples are flattened square images (EMNIST/MNIST 28 x 28)."""

_PIXEL_MAX = 255.0
_PIXEL_THRESHOLD = 1.5


class DataFormatError(ConfigError):
    """A data file or array is missing, unreadable or malformed. The message names the file."""


class Part(Enum):
    """The four files of one tenant, by their name stem in the seed layout."""

    TRAIN_SAMPLES = "client_train_samples"
    TRAIN_LABELS = "client_train_labels"
    TEST_SAMPLES = "client_test_samples"
    TEST_LABELS = "client_test_labels"


FILE_PATTERN = re.compile(
    r"^(?P<part>" + "|".join(p.value for p in Part) + r")_(?P<index>0|[1-9][0-9]*)\.npy$"
)
"""A file name of the seed layout; ``part`` and ``index`` are its groups."""


def tenant_file(directory: Path, part: Part, index: int) -> Path:
    """The path of ``part`` of tenant ``index`` in ``directory`` (whether or not it exists)."""
    return directory / f"{part.value}_{index}.npy"


@dataclass(frozen=True, eq=False)
class TenantData:
    """One tenant's data, validated on construction.

    Guarantees: ``train_x``/``test_x`` are finite ``float32`` arrays with the same per-sample
    shape (``(1, H, W)``, ``(C, H, W)`` or ``(F,)``); ``train_y``/``test_y`` are ``int64``
    arrays of shape ``(n,)`` with values >= 0 and as many entries as their samples; the train
    split is not empty (the test split may be). The arrays are not copied or frozen: do not
    mutate them.

    Raises:
        ConfigError: on construction, if any of the guarantees does not hold.
    """

    index: int
    train_x: npt.NDArray[np.float32]
    train_y: npt.NDArray[np.int64]
    test_x: npt.NDArray[np.float32]
    test_y: npt.NDArray[np.int64]

    def __post_init__(self) -> None:
        where = f"tenant {self.index}"
        if isinstance(self.index, bool) or not isinstance(self.index, int) or self.index < 0:
            raise ConfigError(f"tenant index must be a non-negative int, got {self.index!r}")
        for name in ("train_x", "test_x"):
            x = getattr(self, name)
            if not isinstance(x, np.ndarray) or x.dtype != np.float32 or x.ndim < 2:
                raise ConfigError(f"{where}: {name} must be a float32 array of shape (n, ...)")
            if not np.all(np.isfinite(x)):
                raise ConfigError(f"{where}: {name} holds non-finite values (NaN or inf)")
        for name in ("train_y", "test_y"):
            y = getattr(self, name)
            if not isinstance(y, np.ndarray) or y.dtype != np.int64 or y.ndim != 1:
                raise ConfigError(f"{where}: {name} must be an int64 array of shape (n,)")
            if y.size and int(y.min()) < 0:
                raise ConfigError(f"{where}: {name} holds negative labels")
            if y.size and int(y.max()) >= MAX_CLASSES:
                raise ConfigError(
                    f"{where}: {name} holds label {int(y.max())}: labels must be < "
                    f"{MAX_CLASSES} (at most {MAX_CLASSES} classes)"
                )
        if self.train_x.shape[1:] != self.test_x.shape[1:]:
            raise ConfigError(
                f"{where}: train samples have shape {self.train_x.shape[1:]} per sample, "
                f"test samples {self.test_x.shape[1:]}"
            )
        for x, y, split in (
            (self.train_x, self.train_y, "train"),
            (self.test_x, self.test_y, "test"),
        ):
            if len(x) != len(y):
                raise ConfigError(f"{where}: {len(x)} {split} samples but {len(y)} {split} labels")
        if len(self.train_y) == 0:
            raise ConfigError(f"{where}: the train split is empty")

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """The shape of one sample, e.g. ``(1, 28, 28)`` or ``(F,)``."""
        return tuple(int(s) for s in self.train_x.shape[1:])


def _image_shape(x: npt.NDArray[np.generic], where: str) -> npt.NDArray[np.generic]:
    if x.ndim == 2 and x.shape[1] == IMAGE_SIDE * IMAGE_SIDE:
        return x.reshape(len(x), 1, IMAGE_SIDE, IMAGE_SIDE)
    if x.ndim == 3:
        return x.reshape(x.shape[0], 1, x.shape[1], x.shape[2])
    if x.ndim in (2, 4):
        return x
    raise DataFormatError(
        f"{where}: samples must have shape (n, F), (n, H, W) or (n, C, H, W), got {x.shape}"
    )


def _looks_like_pixels(arrays: Sequence[npt.NDArray[np.generic]]) -> bool:
    """Whether image arrays hold pixel values 0..255 (the rule in the module docstring)."""
    if any(a.dtype == np.uint8 for a in arrays):
        return True
    filled = [a for a in arrays if a.size]
    if not filled:
        return False
    low = min(float(a.min()) for a in filled)
    high = max(float(a.max()) for a in filled)
    return low >= 0.0 and _PIXEL_THRESHOLD < high <= _PIXEL_MAX


def _check_sample_dtype(x: npt.NDArray[np.generic], where: str) -> None:
    if x.dtype.kind not in "fiu":
        raise DataFormatError(
            f"{where}: samples must be a float or integer array, got dtype {x.dtype}"
        )


def _as_samples(
    arrays: Sequence[npt.ArrayLike], wheres: Sequence[str]
) -> tuple[npt.NDArray[np.float32], ...]:
    shaped: list[npt.NDArray[np.generic]] = []
    for a, where in zip(arrays, wheres, strict=True):
        x = np.asarray(a)
        _check_sample_dtype(x, where)
        x = _image_shape(x, where)
        if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
            raise DataFormatError(f"{where}: samples hold non-finite values (NaN or inf)")
        if shaped and x.shape[1:] != shaped[0].shape[1:]:
            raise DataFormatError(
                f"{where}: per-sample shape {x.shape[1:]} differs from "
                f"{wheres[0]}'s {shaped[0].shape[1:]}"
            )
        shaped.append(x)
    scale = bool(shaped) and shaped[0].ndim == 4 and _looks_like_pixels(shaped)
    out: list[npt.NDArray[np.float32]] = []
    for x, where in zip(shaped, wheres, strict=True):
        y = x.astype(np.float32, copy=False)
        if scale:
            y = y / np.float32(_PIXEL_MAX)
        if not np.all(np.isfinite(y)):  # float64 values beyond float32's range
            raise DataFormatError(f"{where}: samples overflow float32")
        out.append(y)
    return tuple(out)


def as_samples(*arrays: npt.ArrayLike, where: str) -> tuple[npt.NDArray[np.float32], ...]:
    """Samples in the in-memory form: ``float32``, shape rule and pixel scaling applied.

    All ``arrays`` (e.g. one tenant's train and test samples) take the same scaling decision;
    see the module docstring for both rules. Idempotent: applying it to its own output returns
    equal arrays. The result may share memory with a ``float32`` input that needs no change.

    Raises:
        DataFormatError: an array is not float/integer, has an unsupported number of dimensions,
            the arrays' per-sample shapes differ, or a value is not finite. ``where`` (a file
            name or a description) starts the message.
    """
    return _as_samples(arrays, [where] * len(arrays))


def as_labels(array: npt.ArrayLike, *, where: str) -> npt.NDArray[np.int64]:
    """Labels as ``int64`` of shape ``(n,)``.

    Accepts float or integer arrays of shape ``(n,)`` or ``(n, 1)``.

    Raises:
        DataFormatError: another dtype or shape, a value that is not finite, not integral or
            negative. ``where`` starts the message.
    """
    y = np.asarray(array)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataFormatError(f"{where}: labels must have shape (n,) or (n, 1), got {y.shape}")
    if y.dtype.kind not in "fiu":
        raise DataFormatError(
            f"{where}: labels must be a float or integer array, got dtype {y.dtype}"
        )
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)):
            raise DataFormatError(f"{where}: labels hold non-finite values (NaN or inf)")
        if not np.all(y == np.round(y)):
            raise DataFormatError(f"{where}: labels must be integral, found a fractional value")
        if y.size and float(y.max()) >= 2.0**62:
            raise DataFormatError(f"{where}: labels are too large")
    if y.size and y.min() < 0:
        raise DataFormatError(f"{where}: labels must be >= 0, found {y.min()}")
    if y.size and y.max() >= MAX_CLASSES:
        raise DataFormatError(
            f"{where}: label {int(y.max())} is too large: labels must be < {MAX_CLASSES} "
            f"(at most {MAX_CLASSES} classes; the class count is the largest label + 1)"
        )
    result: npt.NDArray[np.int64] = y.astype(np.int64)
    return result


def load_npy(path: Path) -> npt.NDArray[np.generic]:
    """One ``.npy`` array, read with ``allow_pickle=False``.

    Raises:
        DataFormatError: the file is missing, unreadable, not a ``.npy`` array, or holds an
            object array (which would need pickle: it is refused, never unpickled).
    """
    try:
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataFormatError(f"{path}: file not found") from None
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "Object arrays" in str(exc):
            raise DataFormatError(
                f"{path}: holds an object array that would need pickle to load; refused "
                "(save plain numeric arrays)"
            ) from None
        raise DataFormatError(f"{path}: not a readable .npy array ({exc})") from None
    except (OSError, EOFError) as exc:
        raise DataFormatError(f"{path}: not a readable .npy array ({exc})") from None
    if not isinstance(array, np.ndarray):  # an .npz archive under a .npy name
        array.close()
        raise DataFormatError(f"{path}: not a single .npy array")
    return array


def discover_indices(directory: Path) -> dict[int, set[Part]]:
    """The tenant indices in ``directory`` and which of their four files exist.

    Raises:
        DataFormatError: ``directory`` is not a directory.
    """
    if not directory.is_dir():
        raise DataFormatError(f"{directory}: not a directory")
    found: dict[int, set[Part]] = {}
    for entry in directory.iterdir():
        match = FILE_PATTERN.match(entry.name)
        if match and entry.is_file():
            found.setdefault(int(match["index"]), set()).add(Part(match["part"]))
    return found


def _load_one(directory: Path, index: int) -> TenantData:
    paths = {part: tenant_file(directory, part, index) for part in Part}
    raw = {part: load_npy(path) for part, path in paths.items()}
    train_y = as_labels(raw[Part.TRAIN_LABELS], where=str(paths[Part.TRAIN_LABELS]))
    test_y = as_labels(raw[Part.TEST_LABELS], where=str(paths[Part.TEST_LABELS]))
    train_x, test_x = _as_samples(
        [raw[Part.TRAIN_SAMPLES], raw[Part.TEST_SAMPLES]],
        [str(paths[Part.TRAIN_SAMPLES]), str(paths[Part.TEST_SAMPLES])],
    )
    for x, y, xs, ys in (
        (train_x, train_y, Part.TRAIN_SAMPLES, Part.TRAIN_LABELS),
        (test_x, test_y, Part.TEST_SAMPLES, Part.TEST_LABELS),
    ):
        if len(x) != len(y):
            raise DataFormatError(
                f"{paths[xs]}: {len(x)} samples but {paths[ys].name} has {len(y)} labels"
            )
    if len(train_y) == 0:
        raise DataFormatError(f"{paths[Part.TRAIN_SAMPLES]}: the train split is empty")
    return TenantData(index, train_x, train_y, test_x, test_y)


def load_tenants(
    directory: str | os.PathLike[str], *, indices: Sequence[int] | None = None
) -> list[TenantData]:
    """Load the tenants of a seed-layout directory, sorted by index.

    ``indices`` = None loads every tenant found; otherwise exactly those (duplicates ignored).
    Files that do not match the layout's names are ignored.

    Guarantees: every returned tenant satisfies :class:`TenantData`'s guarantees, and all of
    them share one per-sample shape.

    Raises:
        DataFormatError: the directory is missing or holds no tenant; a tenant has some but not
            all four files (the message names the missing file); a requested index is absent;
            a file is unreadable, holds an object (pickle-bearing) array, or breaks the sample
            or label rules; sample and label counts differ; the train split is empty; or the
            per-sample shape differs between splits or tenants.
        ConfigError: a requested index is not a non-negative int.
    """
    root = Path(directory)
    found = discover_indices(root)
    for index, parts in sorted(found.items()):
        for part in Part:
            if part not in parts:
                raise DataFormatError(
                    f"{tenant_file(root, part, index)}: missing (tenant {index} has "
                    f"{len(parts)} of its 4 files)"
                )
    if indices is None:
        wanted = sorted(found)
        if not wanted:
            raise DataFormatError(
                f"{root}: no tenant files (expected client_train_samples_<i>.npy and friends)"
            )
    else:
        for i in indices:
            if isinstance(i, bool) or not isinstance(i, int | np.integer) or i < 0:
                raise ConfigError(f"tenant indices must be non-negative ints, got {i!r}")
        wanted = sorted({int(i) for i in indices})
        absent = [i for i in wanted if i not in found]
        if absent:
            raise DataFormatError(
                f"{root}: no tenant {absent[0]} (missing "
                f"{tenant_file(root, Part.TRAIN_SAMPLES, absent[0]).name}); "
                f"requested indices absent: {absent}"
            )
    tenants = [_load_one(root, i) for i in wanted]
    first = tenants[0] if tenants else None
    for tenant in tenants:
        if first is not None and tenant.sample_shape != first.sample_shape:
            raise DataFormatError(
                f"{tenant_file(root, Part.TRAIN_SAMPLES, tenant.index)}: per-sample shape "
                f"{tenant.sample_shape} differs from tenant {first.index}'s {first.sample_shape}"
            )
    return tenants


def num_classes(tenants: Iterable[TenantData]) -> int:
    """The number of classes, max label + 1 over every tenant's train and test labels.

    Raises:
        ConfigError: ``tenants`` is empty.
    """
    highest = -1
    seen = False
    for tenant in tenants:
        seen = True
        for y in (tenant.train_y, tenant.test_y):
            if y.size:
                highest = max(highest, int(y.max()))
    if not seen:
        raise ConfigError("num_classes() needs at least one tenant")
    return highest + 1


def _on_disk(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """The seed layout's sample shape: one-channel images ``(n, 1, H, W)`` go as ``(n, H, W)``."""
    if x.ndim == 4 and x.shape[1] == 1:
        return x.reshape(x.shape[0], x.shape[2], x.shape[3])
    return x


def _save_atomic(path: Path, array: npt.NDArray[np.generic]) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as f:
            np.save(f, array, allow_pickle=False)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_tenants(
    directory: str | os.PathLike[str],
    tenants: Iterable[TenantData],
    *,
    overwrite: bool = False,
) -> list[Path]:
    """Write ``tenants`` in the seed layout into ``directory`` (created if needed).

    Samples are saved as ``float32`` -- one-channel images as ``(n, H, W)`` (``(n, 28, 28)`` for
    EMNIST/MNIST), other shapes unchanged -- and labels as ``int64`` ``(n,)``, with
    ``allow_pickle=False``. Each file is written to a temporary name and renamed, so a reader
    never sees a half-written file. Returns the paths written.

    Raises:
        ConfigError: no tenants, or two tenants with the same index.
        DataFormatError: a tenant file already exists and ``overwrite`` is False; or the
            directory holds seed-layout files of *other* tenant indices (they would silently
            join the federation when it is loaded: remove them first -- never deleted here,
            even with ``overwrite``). All checks happen before anything is written.
    """
    items = list(tenants)
    if not items:
        raise ConfigError("write_tenants() needs at least one tenant")
    indices = [t.index for t in items]
    if len(set(indices)) != len(indices):
        raise ConfigError(f"duplicate tenant indices: {sorted(indices)}")
    root = Path(directory)
    if root.exists() and not root.is_dir():
        raise DataFormatError(f"{root}: exists and is not a directory")
    if root.is_dir():
        present = discover_indices(root)
        stale = sorted(set(present) - set(indices))
        if stale:
            raise DataFormatError(
                f"{root}: already holds files of tenants {stale} that are not being written "
                f"(e.g. {tenant_file(root, next(iter(present[stale[0]])), stale[0]).name}); "
                "remove them or choose an empty directory"
            )
        if not overwrite:
            for index in indices:
                for part in sorted(present.get(index, ()), key=lambda p: p.value):
                    raise DataFormatError(
                        f"{tenant_file(root, part, index)}: already exists "
                        "(pass overwrite=True to replace it)"
                    )
    root.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for tenant in sorted(items, key=lambda t: t.index):
        arrays: dict[Part, npt.NDArray[np.generic]] = {
            Part.TRAIN_SAMPLES: _on_disk(tenant.train_x),
            Part.TRAIN_LABELS: tenant.train_y,
            Part.TEST_SAMPLES: _on_disk(tenant.test_x),
            Part.TEST_LABELS: tenant.test_y,
        }
        for part, array in arrays.items():
            path = tenant_file(root, part, tenant.index)
            _save_atomic(path, array)
            written.append(path)
    return written
