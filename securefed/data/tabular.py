"""Import one institution's CSV or Parquet table(s) against a declared schema (docs/tabular.md).

:func:`import_tabular` reads each input file with pyarrow (its CSV and Parquet readers are typed,
multithreaded C++), checks it against a :class:`~securefed.data.schema.TabularSchema`, encodes it
into float32 features and int64 labels (:func:`encode_file`; the encoding rules are in
:mod:`~securefed.data.schema`), concatenates the files in the order given, splits the rows into
train and test with the schema's seeded split (:func:`~securefed.data.partition.split_rows`), and
writes the seed layout plus an import record, all or nothing
(:func:`~securefed.data.tabular_store.write_import`). :func:`encode_records` reads records to
score (``securefed predict``) with the same code and encoding: their target column may be
absent and is never read, and id columns of the schema's ``drop`` list may be kept.

Reading rules. A CSV file has one header row; its cells are separated by commas and may be quoted;
``.csv.gz`` and ``.csv.bz2`` are decompressed. A cell that is exactly one of
:data:`~securefed.data.schema.MISSING_MARKERS` (``""``, ``NA``, ``NaN``, ``null``, ...) is missing,
and so is a NaN or null in Parquet. Every declared column must be in every file, and every column
of a file must be declared or listed in ``drop`` (a typo never silently drops a feature); dropped
columns are never read. Validation is vectorised over whole columns with pyarrow.compute and
numpy; per-row work happens only on an error, to find the first bad row.

Errors. Each bad input raises :class:`TabularDataError` (a
:class:`~securefed.data.layout.DataFormatError`, so a :class:`~securefed.errors.ConfigError`) whose
:attr:`~TabularDataError.problem` is a :class:`Problem` and whose message starts with the file,
then ``row N`` (the N-th data row of that file, 1-based, header and blank lines not counted) and
``column 'name'`` where they apply, and may quote the offending cell (at most 40 characters).
Every check finishes before anything is written: a failed import writes nothing.

pyarrow is an optional dependency (``pip install 'securefed[tabular]'``), imported only when a
file is read; without it :func:`import_tabular` raises :class:`~securefed.errors.ConfigError`
saying how to install it. Nothing here unpickles.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from securefed.data.layout import DataFormatError, TenantData
from securefed.data.partition import split_rows
from securefed.data.schema import MISSING_MARKERS, Column, ColumnType, Missing, TabularSchema
from securefed.data.tabular_store import (
    ImportRecord,
    InputFile,
    check_destination,
    write_import,
)
from securefed.errors import ConfigError

__all__ = [
    "INSTALL_HINT",
    "EncodedRecords",
    "InputFormat",
    "Problem",
    "TabularDataError",
    "encode_file",
    "encode_records",
    "import_tabular",
]

INSTALL_HINT = "pip install 'securefed[tabular]' (make install does)"
_CELL_CHARS = 40
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_HASH_CHUNK = 1 << 20

Float64Array = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
Int64Array = npt.NDArray[np.int64]


class Problem(Enum):
    """What is wrong with an input file (:attr:`TabularDataError.problem`)."""

    FILE_NOT_FOUND = "file not found"
    UNSUPPORTED_FORMAT = "not a .csv, .csv.gz, .csv.bz2, .parquet or .pq file"
    UNREADABLE = "not a readable CSV or Parquet file"
    MALFORMED_ROW = "a CSV row with the wrong number of cells"
    EMPTY = "no data rows"
    DUPLICATE_COLUMN = "a column name twice in the header"
    MISSING_TARGET = "the target column is absent"
    MISSING_COLUMN = "a declared column is absent"
    UNKNOWN_COLUMN = "a column neither declared nor dropped"
    WRONG_TYPE = "a value or column of the wrong type"
    UNKNOWN_CATEGORY = "a category outside the declared list"
    MISSING_VALUE = 'a missing value where the schema says missing = "forbid"'
    NOT_FINITE = "an infinite number, or one beyond float32"


class TabularDataError(DataFormatError):
    """An input file breaks the schema. The message reads ``<file>: row N, column 'c': ...``.

    ``row`` (1-based data row) and ``column`` are None where the problem has none (a missing
    file, an absent column, a Parquet column of the wrong type).
    """

    def __init__(
        self,
        problem: Problem,
        path: Path,
        detail: str,
        *,
        row: int | None = None,
        column: str | None = None,
    ) -> None:
        located = [f"row {row}"] if row is not None else []
        located += [f"column {column!r}"] if column is not None else []
        super().__init__(": ".join([str(path), *([", ".join(located)] if located else []), detail]))
        self.problem = problem
        self.path = path
        self.row = row
        self.column = column


class InputFormat(Enum):
    """An input file's format, from its name."""

    CSV = "csv"
    PARQUET = "parquet"

    @classmethod
    def of(cls, path: Path) -> InputFormat:
        """The format of ``path`` by suffix (case-insensitive).

        Raises:
            TabularDataError: (:attr:`Problem.UNSUPPORTED_FORMAT`) any other suffix.
        """
        name = path.name.lower()
        if name.endswith((".csv", ".csv.gz", ".csv.bz2")):
            return cls.CSV
        if name.endswith((".parquet", ".pq")):
            return cls.PARQUET
        raise TabularDataError(
            Problem.UNSUPPORTED_FORMAT,
            path,
            f"unsupported file type ({Problem.UNSUPPORTED_FORMAT.value})",
        )


class _Arrow(NamedTuple):
    """pyarrow's modules, imported on first use (pyarrow has no type information: Any)."""

    pa: Any
    pc: Any
    csv: Any
    pq: Any


def _arrow() -> _Arrow:
    try:
        import pyarrow  # noqa: PLC0415 -- optional dependency, imported only when needed
        import pyarrow.compute  # noqa: PLC0415
        import pyarrow.csv  # noqa: PLC0415
        import pyarrow.parquet  # noqa: PLC0415
    except ImportError:
        raise ConfigError(f"reading CSV or Parquet files needs pyarrow: {INSTALL_HINT}") from None
    return _Arrow(pyarrow, pyarrow.compute, pyarrow.csv, pyarrow.parquet)


def _cell(values: Any, index: int) -> str:
    text = repr(values[index].as_py())
    return text if len(text) <= _CELL_CHARS else text[: _CELL_CHARS - 3] + "..."


# --- reading: header check, CSV and Parquet -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Wanted:
    """What to read from a file: the declared ``columns`` (every column for an import; the
    features only for records to score, whose target may be absent) and ``keep``, columns of
    the schema's ``drop`` list carried through as they are (ids to join scores back on)."""

    columns: tuple[Column, ...]
    keep: tuple[str, ...] = ()

    @classmethod
    def of(cls, schema: TabularSchema, *, with_target: bool, keep: Sequence[str] = ()) -> _Wanted:
        return cls(schema.columns if with_target else schema.features, tuple(keep))

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]


def _check_header(names: Sequence[str], schema: TabularSchema, wanted: _Wanted, path: Path) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise TabularDataError(
                Problem.DUPLICATE_COLUMN, path, "appears twice in the header", column=name
            )
        seen.add(name)
    if schema.target not in seen and schema.target_column in wanted.columns:
        raise TabularDataError(
            Problem.MISSING_TARGET,
            path,
            "the target column is not in the file",
            column=schema.target,
        )
    for column in wanted.columns:
        if column.name not in seen:
            raise TabularDataError(
                Problem.MISSING_COLUMN,
                path,
                "declared in the schema, not in the file",
                column=column.name,
            )
    for name in wanted.keep:
        if name not in seen:
            raise TabularDataError(
                Problem.MISSING_COLUMN, path, "an id column to keep, not in the file", column=name
            )
    declared = {c.name for c in schema.columns} | set(schema.drop)
    for name in names:
        if name not in declared:
            raise TabularDataError(
                Problem.UNKNOWN_COLUMN,
                path,
                "in the file but neither declared nor in drop (declare it, or add it to drop)",
                column=name,
            )


def _csv_type(arrow: _Arrow, column: Column) -> Any:
    if column.type is ColumnType.NUMERIC:
        return arrow.pa.float64()
    if column.type is ColumnType.BINARY:
        return arrow.pa.bool_()
    return arrow.pa.dictionary(arrow.pa.int32(), arrow.pa.string())


def _csv_options(arrow: _Arrow, wanted: _Wanted, *, as_text: bool = False) -> Any:
    types = {c.name: arrow.pa.string() if as_text else _csv_type(arrow, c) for c in wanted.columns}
    return arrow.csv.ConvertOptions(
        column_types=types,
        include_columns=wanted.names,
        null_values=list(MISSING_MARKERS),
        strings_can_be_null=True,
        quoted_strings_can_be_null=True,
    )


def _malformed_row(arrow: _Arrow, path: Path, exc: Exception) -> TabularDataError:
    """Re-read on one thread, where pyarrow knows row numbers, to name the bad row."""
    rows: list[int] = []

    def note(row: Any) -> str:
        if row.number is not None:
            rows.append(int(row.number) - 1)  # pyarrow counts the header as row 1
        return "error"

    with contextlib.suppress(arrow.pa.ArrowInvalid, OSError):
        arrow.csv.read_csv(
            path,
            read_options=arrow.csv.ReadOptions(use_threads=False),
            parse_options=arrow.csv.ParseOptions(invalid_row_handler=note),
        )
    detail = str(exc).removeprefix("CSV parse error: ")
    return TabularDataError(Problem.MALFORMED_ROW, path, detail, row=rows[0] if rows else None)


def _unreadable(arrow: _Arrow, path: Path, exc: Exception) -> TabularDataError:
    text = str(exc)
    if text.startswith("Empty CSV file"):
        return TabularDataError(Problem.EMPTY, path, "the file is empty")
    if text.startswith("CSV parse error"):
        return _malformed_row(arrow, path, exc)
    return TabularDataError(Problem.UNREADABLE, path, f"not a readable CSV file ({text})")


def _first_unconvertible(arrow: _Arrow, values: Any, target: Any) -> int | None:
    """The index of the first text cell that does not cast to ``target``, by bisection."""

    def fails(start: int, stop: int) -> bool:
        try:
            arrow.pc.cast(values.slice(start, stop - start), target)
        except (arrow.pa.ArrowInvalid, arrow.pa.ArrowNotImplementedError):
            return True
        return False

    low, high = 0, len(values)
    if high == 0 or not fails(low, high):
        return None
    while high - low > 1:
        middle = (low + high) // 2
        if fails(low, middle):
            high = middle
        else:
            low = middle
    return low


_EXPECTED = {
    ColumnType.NUMERIC: "not a number",
    ColumnType.BINARY: "not a binary value (0, 1, true or false)",
}


def _wrong_csv_value(
    arrow: _Arrow, path: Path, wanted: _Wanted, exc: Exception
) -> TabularDataError:
    """After a conversion error: re-read the declared columns as text, find the first bad cell."""
    try:
        table = arrow.csv.read_csv(path, convert_options=_csv_options(arrow, wanted, as_text=True))
    except (arrow.pa.ArrowInvalid, OSError):
        return TabularDataError(Problem.UNREADABLE, path, f"not a readable CSV file ({exc})")
    found: tuple[int, Column] | None = None
    for column in wanted.columns:
        if column.type is ColumnType.CATEGORICAL:
            continue
        index = _first_unconvertible(arrow, table.column(column.name), _csv_type(arrow, column))
        if index is not None and (found is None or index < found[0]):
            found = (index, column)
    if found is None:
        return TabularDataError(Problem.WRONG_TYPE, path, f"a value of the wrong type ({exc})")
    index, column = found
    value = _cell(table.column(column.name), index)
    return TabularDataError(
        Problem.WRONG_TYPE,
        path,
        f"{value} is {_EXPECTED[column.type]}: the schema declares {column.type.value}",
        row=index + 1,
        column=column.name,
    )


def _read_kept_csv(arrow: _Arrow, path: Path, table: Any, keep: tuple[str, ...]) -> Any:
    """``table`` with the ``keep`` columns appended, read again as exact text: no cell of an id
    becomes null, not even one spelled like a missing marker (``NA``) or a quoted empty one."""
    kept = arrow.csv.read_csv(
        path,
        convert_options=arrow.csv.ConvertOptions(
            column_types=dict.fromkeys(keep, arrow.pa.string()),
            include_columns=list(keep),
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    )
    for name in keep:
        table = table.append_column(name, kept.column(name))
    return table


def _read_csv(arrow: _Arrow, path: Path, schema: TabularSchema, wanted: _Wanted) -> Any:
    try:
        reader = arrow.csv.open_csv(path)
        names = list(reader.schema.names)
        reader.close()
    except (arrow.pa.ArrowInvalid, OSError) as exc:
        raise _unreadable(arrow, path, exc) from None
    _check_header(names, schema, wanted, path)
    try:
        table = arrow.csv.read_csv(path, convert_options=_csv_options(arrow, wanted))
        return _read_kept_csv(arrow, path, table, wanted.keep) if wanted.keep else table
    except arrow.pa.ArrowInvalid as exc:
        if str(exc).startswith("In CSV column"):
            raise _wrong_csv_value(arrow, path, wanted, exc) from None
        raise _unreadable(arrow, path, exc) from None
    except OSError as exc:
        raise _unreadable(arrow, path, exc) from None


def _read_parquet(arrow: _Arrow, path: Path, schema: TabularSchema, wanted: _Wanted) -> Any:
    try:
        if path.stat().st_size == 0:
            raise TabularDataError(Problem.EMPTY, path, "the file is empty")
        parquet = arrow.pq.ParquetFile(path)
        _check_header(list(parquet.schema_arrow.names), schema, wanted, path)
        return parquet.read(columns=[*wanted.names, *wanted.keep])
    except (arrow.pa.ArrowInvalid, OSError) as exc:
        raise TabularDataError(
            Problem.UNREADABLE, path, f"not a readable Parquet file ({exc})"
        ) from None


def _read(arrow: _Arrow, path: Path, schema: TabularSchema, wanted: _Wanted) -> Any:
    kind = InputFormat.of(path)
    if not path.is_file():
        detail = "not a regular file" if path.exists() else "file not found"
        raise TabularDataError(Problem.FILE_NOT_FOUND, path, detail)
    table = (_read_csv if kind is InputFormat.CSV else _read_parquet)(arrow, path, schema, wanted)
    if table.num_rows == 0:
        raise TabularDataError(Problem.EMPTY, path, "no data rows (only a header)")
    return table


# --- encoding: whole columns at once ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Context:
    arrow: _Arrow
    path: Path

    def error(
        self, problem: Problem, column: Column, detail: str, index: int | None = None
    ) -> TabularDataError:
        row = None if index is None else index + 1
        return TabularDataError(problem, self.path, detail, row=row, column=column.name)

    def wrong_column_type(self, column: Column, values: Any, needs: str) -> TabularDataError:
        return self.error(
            Problem.WRONG_TYPE,
            column,
            f"has type {values.type}; a {column.type.value} column needs {needs}",
        )


def _as_float(ctx: _Context, values: Any) -> tuple[Float64Array, BoolArray]:
    """Values as float64 and where they are missing (null or NaN)."""
    cast = ctx.arrow.pc.cast(values, ctx.arrow.pa.float64())
    v = np.asarray(cast.to_numpy(), dtype=np.float64)
    return v, np.isnan(v)


def _numeric(ctx: _Context, column: Column, values: Any) -> tuple[Float64Array, BoolArray]:
    types = ctx.arrow.pa.types
    if not (
        types.is_integer(values.type)
        or types.is_floating(values.type)
        or types.is_decimal(values.type)
    ):
        raise ctx.wrong_column_type(column, values, "integers or floating-point numbers")
    v, missing = _as_float(ctx, values)
    bad = ~missing & ~(np.abs(v) <= _FLOAT32_MAX)
    if bad.any():
        index = int(np.argmax(bad))
        what = "not a finite number" if np.isinf(v[index]) else "beyond float32's range (3.4e38)"
        raise ctx.error(Problem.NOT_FINITE, column, f"{v[index]!r} is {what}", index)
    return v, missing


def _binary(ctx: _Context, column: Column, values: Any) -> tuple[Float64Array, BoolArray]:
    types = ctx.arrow.pa.types
    if types.is_boolean(values.type):
        return _as_float(ctx, values)
    if not (types.is_integer(values.type) or types.is_floating(values.type)):
        raise ctx.wrong_column_type(column, values, "booleans or the numbers 0 and 1")
    v, missing = _as_float(ctx, values)
    bad = ~missing & (v != 0.0) & (v != 1.0)
    if bad.any():
        index = int(np.argmax(bad))
        raise ctx.error(Problem.WRONG_TYPE, column, f"{_cell(values, index)} is not 0 or 1", index)
    return v, missing


def _categorical(ctx: _Context, column: Column, values: Any) -> tuple[Int64Array, BoolArray]:
    """Category codes (index in the declared list; -1 where missing) and where missing."""
    pa, pc = ctx.arrow.pa, ctx.arrow.pc
    text = values.type.value_type if pa.types.is_dictionary(values.type) else values.type
    if pa.types.is_integer(text):
        values, text = pc.cast(values, pa.string()), pa.string()
    if not (pa.types.is_string(text) or pa.types.is_large_string(text)):
        raise ctx.wrong_column_type(column, values, "text (or integer codes)")
    declared = pa.array(column.categories, type=text)
    codes = np.asarray(pc.fill_null(pc.index_in(values, value_set=declared), -1).to_numpy())
    missing = np.asarray(pc.is_null(values).to_numpy(), dtype=np.bool_)
    unknown = (codes < 0) & ~missing
    if unknown.any():
        index = int(np.argmax(unknown))
        shown = ", ".join(column.categories[:10]) + (", ..." if len(column.categories) > 10 else "")
        raise ctx.error(
            Problem.UNKNOWN_CATEGORY,
            column,
            f"category {_cell(values, index)} is not declared (declared: {shown})",
            index,
        )
    return codes.astype(np.int64), missing


def _check_missing(ctx: _Context, column: Column, missing: BoolArray) -> None:
    if column.missing is Missing.FORBID and missing.any():
        raise ctx.error(
            Problem.MISSING_VALUE,
            column,
            'missing value, and the schema says missing = "forbid" for this column',
            int(np.argmax(missing)),
        )


def _fill(
    ctx: _Context, column: Column, values: Any, features: npt.NDArray[np.float32], start: int
) -> int:
    """Write ``column``'s features into ``features[:, start:]``; returns the next start."""
    width = len(column.categories) if column.type is ColumnType.CATEGORICAL else 1
    if column.type is ColumnType.CATEGORICAL:
        codes, missing = _categorical(ctx, column, values)
        _check_missing(ctx, column, missing)
        rows = np.flatnonzero(~missing)
        features[rows, start + codes[rows]] = 1.0
    else:
        read = _numeric if column.type is ColumnType.NUMERIC else _binary
        v, missing = read(ctx, column, values)
        _check_missing(ctx, column, missing)
        features[:, start] = np.where(missing, 0.0, v) if missing.any() else v
    if column.missing is Missing.INDICATOR:
        features[:, start + width] = missing
        width += 1
    return start + width


def _labels(ctx: _Context, column: Column, values: Any) -> Int64Array:
    if column.type is ColumnType.CATEGORICAL:
        codes, missing = _categorical(ctx, column, values)
    else:
        v, missing = _binary(ctx, column, values)
        codes = np.where(missing, -1, v).astype(np.int64)
    _check_missing(ctx, column, missing)
    return codes


def _encode_features(ctx: _Context, table: Any, schema: TabularSchema) -> npt.NDArray[np.float32]:
    """The feature columns of ``table`` encoded (the one encoding, for imports and scoring)."""
    # Column-major while filling (each feature is one contiguous write); the train/test split
    # gathers rows into C-order arrays afterwards.
    features = np.zeros((table.num_rows, len(schema.feature_names)), dtype=np.float32, order="F")
    start = 0
    for column in schema.features:
        start = _fill(ctx, column, table.column(column.name), features, start)
    return features


def _encode(
    ctx: _Context, table: Any, schema: TabularSchema
) -> tuple[npt.NDArray[np.float32], Int64Array]:
    features = _encode_features(ctx, table, schema)
    return features, _labels(ctx, schema.target_column, table.column(schema.target))


def encode_file(
    path: str | os.PathLike[str], schema: TabularSchema
) -> tuple[npt.NDArray[np.float32], Int64Array]:
    """One file's rows as ``(features, labels)``: float32 ``(n, F)`` and int64 ``(n,)``.

    Column ``j`` of the features is ``schema.feature_names[j]``; label ``k`` is
    ``schema.classes[k]``. Rows stay in file order. Every value is finite. The features array
    is column-major (Fortran order); ``np.ascontiguousarray`` makes it row-major.

    Raises:
        TabularDataError: any :class:`Problem` (the message names file, row and column).
        ConfigError: pyarrow is not installed.
    """
    arrow = _arrow()
    source = Path(path)
    table = _read(arrow, source, schema, _Wanted.of(schema, with_target=True))
    return _encode(_Context(arrow, source), table, schema)


@dataclass(frozen=True, slots=True)
class EncodedRecords:
    """Records to score, encoded as an import encodes them (:func:`encode_records`).

    ``features`` is float32 ``(n, F)``, column ``j`` being ``schema.feature_names[j]``, in file
    order (column-major, as :func:`encode_file`'s). ``kept`` is a pyarrow Table of the ``keep``
    columns in the order asked, one row per record: a CSV's cells as the exact text of the file
    (nothing becomes null), a Parquet file's columns with their own types.
    """

    features: npt.NDArray[np.float32]
    kept: Any

    @property
    def rows(self) -> int:
        """The number of records."""
        return int(self.features.shape[0])


def encode_records(
    path: str | os.PathLike[str], schema: TabularSchema, *, keep: Sequence[str] = ()
) -> EncodedRecords:
    """One file of records to score, encoded under ``schema`` exactly as an import would encode
    its features: the same reading rules, checks, errors and feature order.

    The target column may be absent; when present it is not read (new records may have no label
    yet). ``keep`` names columns of ``schema.drop`` (ids) to carry through unchanged, so that
    scores can be joined back to the records; they must be in the file.

    Raises:
        ConfigError: a ``keep`` column that the schema does not drop, or one named twice;
            pyarrow is not installed.
        TabularDataError: any :class:`Problem` but ``MISSING_TARGET`` (the message names file,
            row and column).
    """
    kept_names = tuple(keep)
    for name in kept_names:
        if name not in schema.drop:
            raise ConfigError(
                f"id column {name!r} is not in the schema's drop list: only dropped columns "
                "(ids) can be kept; declared columns are features"
            )
    if len(set(kept_names)) != len(kept_names):
        raise ConfigError("an id column is named twice")
    arrow = _arrow()
    source = Path(path)
    wanted = _Wanted.of(schema, with_target=False, keep=kept_names)
    table = _read(arrow, source, schema, wanted)
    features = _encode_features(_Context(arrow, source), table, schema)
    return EncodedRecords(features, table.select(list(kept_names)))


def _describe(path: Path, rows: int) -> InputFile:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return InputFile(str(path), rows, path.stat().st_size, digest.hexdigest())


def import_tabular(
    schema: TabularSchema,
    inputs: Sequence[str | os.PathLike[str]],
    *,
    out: str | os.PathLike[str],
    institution: int,
) -> ImportRecord:
    """Import ``inputs`` (one institution's files, concatenated in order) into ``out``.

    Writes institution ``institution``'s four seed-layout arrays and its import record
    ``tabular_<institution>.json`` into ``out`` (created if absent), all or nothing; see
    :mod:`~securefed.data.tabular_store`. Deterministic: the same files, schema and institution
    write the same arrays. Returns the record written.

    Raises:
        ConfigError: no inputs, the same file twice, a negative institution, or pyarrow missing.
        TabularDataError: an input breaks the schema (checked before anything is written).
        DataFormatError: ``out`` already holds this institution, another schema's import, or
            seed-layout files without a record (checked before any file is read).
    """
    if isinstance(institution, bool) or not isinstance(institution, int) or institution < 0:
        raise ConfigError(f"institution must be an int >= 0, got {institution!r}")
    paths = [Path(p) for p in inputs]
    if not paths:
        raise ConfigError("import_tabular() needs at least one input file")
    if len({p.resolve() for p in paths}) != len(paths):
        raise ConfigError("the same input file is given twice")
    check_destination(out, institution=institution, digest=schema.digest)
    parts = [encode_file(path, schema) for path in paths]
    described = tuple(_describe(p, len(y)) for p, (_, y) in zip(paths, parts, strict=True))
    x = parts[0][0] if len(parts) == 1 else np.concatenate([f for f, _ in parts])
    y = parts[0][1] if len(parts) == 1 else np.concatenate([lab for _, lab in parts])
    train, test = split_rows(
        len(y), test_fraction=schema.split.test_fraction, seed=schema.split.seed
    )
    tenant = TenantData(institution, x[train], y[train], x[test], y[test])
    record = ImportRecord(
        institution=institution,
        schema_sha256=schema.digest,
        schema=schema.canonical_json(),
        features=schema.feature_names,
        classes=schema.classes,
        test_fraction=float(schema.split.test_fraction),
        split_seed=schema.split.seed,
        inputs=described,
        train_rows=len(train),
        test_rows=len(test),
    )
    write_import(out, tenant, record)
    return record
