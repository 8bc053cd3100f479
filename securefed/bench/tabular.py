"""``securefed bench import``: importing a CSV against a schema vs pyarrow alone reading it.

Writes a CSV of ``rows`` x 30 columns into a temporary directory -- an id column (dropped), a
binary target, 22 numeric columns (two of them with about 1% missing cells, declared
``missing = "indicator"``), 5 categorical columns of 5 categories and one binary column -- then
measures, in the same process and on the same (page-cached) file, after one untimed read that
warms up pyarrow's thread pool and memory allocator:

* ``pyarrow_read_s``: ``pyarrow.csv.read_csv(path)`` with its defaults (all columns, types
  inferred): the floor any importer built on pyarrow pays;
* ``import_s``: :func:`~securefed.data.tabular.import_tabular` end to end -- header check, typed
  read, validation of every cell, one-hot encoding, the seeded split, hashing the input, and the
  seed layout plus its record written and fsynced into a fresh directory.

``ratio`` = ``import_s / pyarrow_read_s``. The goal (issue 22, item 8) is ``import_s`` <= 15 s
and ``ratio`` <= 4 at 1,000,000 rows on a 2-core machine. Both are interleaved ``repeats`` times
and the best time of each is kept. The cell values are a fixed function of the row and column
(a 64-bit integer hash), not random draws: the same ``rows`` always writes the same file.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from securefed.data.schema import Column, ColumnType, Missing, TabularSchema
from securefed.data.tabular import INSTALL_HINT, import_tabular
from securefed.errors import ConfigError

__all__ = ["ImportBenchmark", "bench_schema", "run_import_benchmark", "write_bench_csv"]

TARGET_IMPORT_S = 15.0
TARGET_RATIO = 4.0
COLUMNS = 30
_NUMERIC = 22
_CATEGORICAL = 5
_INDICATOR = 2
_CATEGORIES = ("alpha", "beta", "gamma", "delta", "epsilon")
_MASK64 = (1 << 64) - 1


@dataclass(frozen=True, slots=True)
class ImportBenchmark:
    """Result of one import benchmark (see the module docstring)."""

    benchmark: str
    rows: int
    columns: int
    features: int
    csv_mib: float
    repeats: int
    pyarrow_read_s: float
    import_s: float
    ratio: float
    target_import_s: float
    target_ratio: float
    target_met: bool
    cpus: int
    pyarrow_version: str
    numpy_version: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def bench_schema() -> TabularSchema:
    """The schema of the benchmark's CSV."""
    numeric = tuple(
        Column(
            f"x{j}",
            ColumnType.NUMERIC,
            Missing.INDICATOR if j < _INDICATOR else Missing.FORBID,
        )
        for j in range(_NUMERIC)
    )
    categorical = tuple(
        Column(f"c{j}", ColumnType.CATEGORICAL, categories=_CATEGORIES) for j in range(_CATEGORICAL)
    )
    return TabularSchema(
        columns=(
            Column("y", ColumnType.BINARY),
            *numeric,
            *categorical,
            Column("flag", ColumnType.BINARY),
        ),
        target="y",
        drop=("id",),
    )


def _hash(rows: npt.NDArray[np.uint64], column: int) -> npt.NDArray[np.uint64]:
    """SplitMix64's finaliser of (row, column): a fixed, well-mixed 64-bit value per cell."""
    salt = np.uint64((column * 0x9E3779B97F4A7C15 + 0xBF58476D1CE4E5B9) & _MASK64)
    h = rows * np.uint64(0x9E3779B97F4A7C15) + salt
    h ^= h >> np.uint64(30)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(27)
    h *= np.uint64(0x94D049BB133111EB)
    h ^= h >> np.uint64(31)
    return h


def write_bench_csv(path: Path, rows: int) -> None:
    """Write the benchmark's CSV (header plus ``rows`` rows of :func:`bench_schema`'s columns)."""
    import pyarrow as pa  # noqa: PLC0415 -- optional dependency
    import pyarrow.csv as pacsv  # noqa: PLC0415

    index = np.arange(rows, dtype=np.uint64)
    columns: dict[str, Any] = {"id": pa.array(index.astype(np.int64))}
    columns["y"] = pa.array((_hash(index, 0) % np.uint64(2)).astype(np.int8))
    for j in range(_NUMERIC):
        h = _hash(index, 1 + j)
        values = np.round((h % np.uint64(2_000_000)).astype(np.float64) / 1000.0 - 1000.0, 3)
        missing = (h >> np.uint64(40)) % np.uint64(100) == 0 if j < _INDICATOR else None
        columns[f"x{j}"] = pa.array(values, mask=missing)
    dictionary = pa.array(list(_CATEGORIES))
    for j in range(_CATEGORICAL):
        codes = (_hash(index, 100 + j) % np.uint64(len(_CATEGORIES))).astype(np.int32)
        columns[f"c{j}"] = pa.DictionaryArray.from_arrays(codes, dictionary).cast(pa.string())
    columns["flag"] = pa.array((_hash(index, 200) % np.uint64(2)).astype(np.int8))
    pacsv.write_csv(pa.table(columns), path)


def _time(action: Any) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def run_import_benchmark(*, rows: int = 1_000_000, repeats: int = 1) -> ImportBenchmark:
    """Measure both times in the same process (see the module docstring).

    Raises:
        ConfigError: ``rows`` < 10 or ``repeats`` < 1, or pyarrow is not installed.
    """
    if rows < 10 or repeats < 1:
        raise ConfigError("rows must be >= 10 and repeats >= 1")
    try:
        import pyarrow as pa  # noqa: PLC0415 -- optional dependency
        import pyarrow.csv as pacsv  # noqa: PLC0415
    except ImportError:
        raise ConfigError(f"bench import needs pyarrow: {INSTALL_HINT}") from None
    schema = bench_schema()
    with tempfile.TemporaryDirectory(prefix="securefed-bench-import-") as scratch:
        root = Path(scratch)
        csv_path = root / "bank.csv"
        write_bench_csv(csv_path, rows)
        pacsv.read_csv(csv_path)  # untimed: pyarrow's thread pool and allocator warm up
        reads, imports = [], []
        for attempt in range(repeats):
            reads.append(_time(lambda: pacsv.read_csv(csv_path)))
            out = root / f"prepared-{attempt}"
            imports.append(
                _time(lambda out=out: import_tabular(schema, [csv_path], out=out, institution=0))
            )
            shutil.rmtree(out)
        size = csv_path.stat().st_size
    read_s, import_s = min(reads), min(imports)
    ratio = import_s / read_s
    return ImportBenchmark(
        benchmark="import",
        rows=rows,
        columns=COLUMNS,
        features=len(schema.feature_names),
        csv_mib=round(size / (1 << 20), 1),
        repeats=repeats,
        pyarrow_read_s=round(read_s, 3),
        import_s=round(import_s, 3),
        ratio=round(ratio, 2),
        target_import_s=TARGET_IMPORT_S,
        target_ratio=TARGET_RATIO,
        target_met=import_s <= TARGET_IMPORT_S and ratio <= TARGET_RATIO,
        cpus=os.cpu_count() or 1,
        pyarrow_version=str(pa.__version__),
        numpy_version=np.__version__,
    )
