"""The declared schema of an institution's table, and its digest (docs/tabular.md).

Every institution of a federation imports its own CSV or Parquet files against the *same* schema:
a TOML file that says which columns exist, what type each has, which one is the target, which
columns (ids) are dropped, the full category list of every categorical column, and what a missing
value means. :func:`load_schema` reads and validates it into a :class:`TabularSchema`::

    version = 1                      # optional; the only version is 1
    target = "default"               # the label column: binary or categorical
    drop = ["customer_id"]           # columns removed if present (ids); never features

    [split]                          # optional: this institution's train/test split
    test_fraction = 0.2              # default 0.2, in [0, 1)
    seed = 0                         # default 0

    [[column]]
    name = "income"
    type = "numeric"                 # numeric | binary | categorical
    missing = "indicator"            # forbid (default) | indicator
    range = [0, 1000000]             # numeric only, optional: the public bounds that
                                     #   federation-wide statistics clip to (docs/tabular.md)

    [[column]]
    name = "housing"
    type = "categorical"
    categories = ["own", "rent", "free"]

    [[column]]
    name = "default"
    type = "binary"

**Features** are the declared columns other than the target, in declared order: a numeric or
binary column is one feature (its name); a categorical column is one feature per declared
category (``housing=own``, ...), one-hot over the *declared* vocabulary in the declared order, so
every institution's arrays have the same columns whatever values its own file happens to hold. A
column with ``missing = "indicator"`` adds one more feature, ``<name>:missing`` (1.0 where the
value was missing), right after its own; the missing cell itself is written as 0.0 (all zeros for
a categorical). Missing values are never imputed at import: a federation-wide mean is a
statistic of all institutions together, computed later by secure aggregation, and the indicator
says exactly which cells it should replace.

**The digest** (:attr:`TabularSchema.digest`) is the SHA-256 of a canonical encoding of what
fixes the meaning of the prepared arrays: ``version``, ``target`` and the columns in order with
their type, missing treatment and categories in order. It is computed over compact JSON with
sorted keys (:meth:`TabularSchema.canonical_json`), so comments, whitespace, the order of keys
inside a table and the TOML spelling do not change it, while renaming, reordering or retyping a
column, or changing a category list, does. ``drop`` and ``[split]`` are each institution's own
business (their id columns and their held-out rows) and are not part of it.

Failure modes: :class:`SchemaError` (a :class:`~securefed.errors.ConfigError`) names the schema
file and the offending key or column.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

from securefed.data.layout import IMAGE_SIDE, MAX_CLASSES
from securefed.errors import ConfigError

__all__ = [
    "MISSING_MARKERS",
    "SCHEMA_FORMAT",
    "Column",
    "ColumnType",
    "Missing",
    "SchemaError",
    "Split",
    "TabularSchema",
    "load_schema",
    "parse_schema",
    "schema_from_canonical",
]

SCHEMA_FORMAT = "securefed/tabular-schema"
SCHEMA_VERSION = 1

#: CSV cells read as missing (exact, case-sensitive). A category may not be one of them.
MISSING_MARKERS = ("", "NA", "N/A", "NaN", "nan", "NULL", "null")

_E = TypeVar("_E", bound=Enum)

_TOP_KEYS = frozenset({"version", "target", "drop", "split", "column"})
_COLUMN_KEYS = frozenset({"name", "type", "missing", "categories", "range"})
_SPLIT_KEYS = frozenset({"test_fraction", "seed"})


class SchemaError(ConfigError):
    """The schema file is missing, not TOML, or breaks a rule. The message names file and key."""


class ColumnType(Enum):
    """What a column holds."""

    NUMERIC = "numeric"
    """Any integer or floating-point number (finite); one feature, the value as float32."""
    BINARY = "binary"
    """0/1 (CSV: also true/false, True/False, TRUE/FALSE); one feature, 0.0 or 1.0."""
    CATEGORICAL = "categorical"
    """Text from the declared ``categories``; one-hot, one feature per category."""


class Missing(Enum):
    """What a missing cell (empty, or a :data:`MISSING_MARKERS` entry, or NaN) means."""

    FORBID = "forbid"
    """A missing cell is an error naming file, row and column."""
    INDICATOR = "indicator"
    """The cell becomes 0.0 and the extra feature ``<name>:missing`` is 1.0 in that row."""


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _enum_value(kind: type[_E], value: object, where: str) -> _E:
    """``value`` as a member of ``kind`` (a member or its value); SchemaError otherwise."""
    try:
        return kind(value)
    except ValueError:
        known = ", ".join(repr(m.value) for m in kind)
        raise SchemaError(f"{where}: {value!r} is not one of {known}") from None


@dataclass(frozen=True, slots=True)
class Column:
    """One declared column, validated on construction.

    Raises:
        SchemaError: an empty name; categories given for a non-categorical column, or a
            categorical column without categories, with a duplicate, with a non-string, or with
            a :data:`MISSING_MARKERS` entry (such a cell would read as missing); a ``range``
            on a non-numeric column, or one that is not two finite numbers ``lo < hi``.

    ``range`` (numeric columns, optional) is the public interval ``[lo, hi]`` that
    federation-wide statistics clip a value to before it is summed (it bounds what one record
    can add: :mod:`securefed.data.statistics`); the features themselves are never clipped.
    """

    name: str
    type: ColumnType
    missing: Missing = Missing.FORBID
    categories: tuple[str, ...] = ()
    range: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise SchemaError(f"a column name must be a non-empty string, got {self.name!r}")
        where = f"column {self.name!r}"
        object.__setattr__(self, "type", _enum_value(ColumnType, self.type, f"{where}: type"))
        object.__setattr__(self, "missing", _enum_value(Missing, self.missing, f"{where}: missing"))
        object.__setattr__(self, "categories", tuple(self.categories))
        self._check_range(where)
        if self.type is not ColumnType.CATEGORICAL:
            if self.categories:
                raise SchemaError(f"{where}: categories are only for categorical columns")
            return
        if not self.categories:
            raise SchemaError(f"{where}: a categorical column needs a non-empty categories list")
        if not all(isinstance(c, str) for c in self.categories):
            raise SchemaError(f'{where}: categories must be strings (write "1", not 1)')
        if len(set(self.categories)) != len(self.categories):
            raise SchemaError(f"{where}: categories hold a duplicate")
        marker = next((c for c in self.categories if c in MISSING_MARKERS), None)
        if marker is not None:
            raise SchemaError(
                f"{where}: category {marker!r} would be read as a missing value "
                f"(missing markers: {', '.join(repr(m) for m in MISSING_MARKERS)})"
            )

    def _check_range(self, where: str) -> None:
        if self.range is None:
            return
        if self.type is not ColumnType.NUMERIC:
            raise SchemaError(f"{where}: range is only for numeric columns")
        bounds = self.range
        if (
            isinstance(bounds, str | bytes)
            or len(bounds) != 2
            or any(isinstance(b, bool) or not isinstance(b, int | float) for b in bounds)
            or not all(math.isfinite(b) for b in bounds)
            or not bounds[0] < bounds[1]
        ):
            raise SchemaError(f"{where}: range must be [lo, hi], two finite numbers, lo < hi")
        object.__setattr__(self, "range", (float(bounds[0]), float(bounds[1])))

    @property
    def feature_names(self) -> tuple[str, ...]:
        """The names of this column's features, in order (see the module docstring)."""
        own = (
            tuple(f"{self.name}={c}" for c in self.categories)
            if self.type is ColumnType.CATEGORICAL
            else (self.name,)
        )
        return (*own, f"{self.name}:missing") if self.missing is Missing.INDICATOR else own

    def canonical(self) -> dict[str, Any]:
        """The column in the digest's canonical form (``range`` only when declared, so that a
        schema without ranges keeps its digest)."""
        out: dict[str, Any] = {
            "name": self.name,
            "type": self.type.value,
            "missing": self.missing.value,
            "categories": list(self.categories),
        }
        if self.range is not None:
            out["range"] = list(self.range)
        return out


@dataclass(frozen=True, slots=True)
class Split:
    """This institution's train/test split: ``round(test_fraction * rows)`` test rows, seeded.

    Raises:
        SchemaError: ``test_fraction`` outside [0, 1) or ``seed`` not an int >= 0.
    """

    test_fraction: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        fraction = self.test_fraction
        if (
            isinstance(fraction, bool)
            or not isinstance(fraction, int | float)
            or not (math.isfinite(fraction) and 0 <= fraction < 1)
        ):
            raise SchemaError(f"split.test_fraction must be in [0, 1), got {fraction!r}")
        if not _is_int(self.seed) or self.seed < 0:
            raise SchemaError(f"split.seed must be an int >= 0, got {self.seed!r}")


@dataclass(frozen=True, slots=True)
class TabularSchema:
    """A validated schema (see the module docstring for the rules).

    Guarantees: column names are unique; ``target`` names a declared binary or categorical
    column with ``missing = "forbid"``; at least one feature column; ``drop`` names no declared
    column; feature names are unique; the feature count is not 784 (the seed layout would take
    ``(n, 784)`` samples for 28 x 28 images); a categorical target has at most
    :data:`~securefed.data.layout.MAX_CLASSES` categories.

    Raises:
        SchemaError: on construction, if any of the guarantees does not hold.
    """

    columns: tuple[Column, ...]
    target: str
    drop: tuple[str, ...] = ()
    split: Split = field(default_factory=Split)

    def __post_init__(self) -> None:
        if not all(isinstance(c, Column) for c in self.columns):
            raise SchemaError("columns must be Column objects")
        if not isinstance(self.target, str) or not all(isinstance(d, str) for d in self.drop):
            raise SchemaError("target and drop must be column names (strings)")
        object.__setattr__(self, "columns", tuple(self.columns))
        object.__setattr__(self, "drop", tuple(self.drop))
        names = [c.name for c in self.columns]
        duplicate = next((n for n in names if names.count(n) > 1), None)
        if duplicate is not None:
            raise SchemaError(f"column {duplicate!r} is declared twice")
        if self.target not in names:
            raise SchemaError(f"target {self.target!r} is not a declared column")
        self._check_target(self.target_column)
        if not self.features:
            raise SchemaError("the schema declares no feature column besides the target")
        both = sorted(set(self.drop) & set(names))
        if both:
            raise SchemaError(f"column {both[0]!r} is both declared and in drop")
        if len(set(self.drop)) != len(self.drop):
            raise SchemaError("drop names a column twice")
        features = self.feature_names
        if len(set(features)) != len(features):
            clash = next(f for f in features if features.count(f) > 1)
            raise SchemaError(f"two columns give the same feature name {clash!r}; rename one")
        if len(features) == IMAGE_SIDE * IMAGE_SIDE:
            raise SchemaError(
                f"the schema gives exactly {len(features)} features, which the seed layout "
                "takes for 28 x 28 images; drop or add a column"
            )

    @staticmethod
    def _check_target(column: Column) -> None:
        where = f"target {column.name!r}"
        if column.type is ColumnType.NUMERIC:
            raise SchemaError(f"{where}: must be binary or categorical (labels are classes)")
        if column.missing is not Missing.FORBID:
            raise SchemaError(f'{where}: missing must be "forbid" (a row needs its label)')
        if len(column.categories) > MAX_CLASSES:
            raise SchemaError(f"{where}: more than {MAX_CLASSES} categories")

    @property
    def target_column(self) -> Column:
        """The declared target column."""
        return next(c for c in self.columns if c.name == self.target)

    @property
    def features(self) -> tuple[Column, ...]:
        """The declared columns other than the target, in declared order."""
        return tuple(c for c in self.columns if c.name != self.target)

    @property
    def feature_names(self) -> tuple[str, ...]:
        """The name of every column of the prepared samples, in order."""
        return tuple(name for c in self.features for name in c.feature_names)

    @property
    def classes(self) -> tuple[str, ...]:
        """What each label value means: label ``k`` is ``classes[k]``."""
        target = self.target_column
        return ("0", "1") if target.type is ColumnType.BINARY else target.categories

    def canonical(self) -> dict[str, Any]:
        """What the digest covers, as a JSON-ready object (``drop`` and ``split`` excluded)."""
        return {
            "format": SCHEMA_FORMAT,
            "version": SCHEMA_VERSION,
            "target": self.target,
            "columns": [c.canonical() for c in self.columns],
        }

    def canonical_json(self) -> str:
        """The canonical encoding: compact JSON, keys sorted, UTF-8 text (not ASCII-escaped)."""
        return json.dumps(
            self.canonical(), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        )

    @property
    def digest(self) -> str:
        """The hex SHA-256 of :meth:`canonical_json` in UTF-8 (see the module docstring)."""
        return hashlib.sha256(self.canonical_json().encode("utf-8")).hexdigest()


def _unknown_keys(table: Mapping[str, object], allowed: frozenset[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise SchemaError(
            f"{where}: unknown key {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})"
        )


def _column(raw: object, number: int, where: str) -> Column:
    if not isinstance(raw, dict):
        raise SchemaError(f"{where}: column {number} must be a [[column]] table")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise SchemaError(f'{where}: column {number} needs name = "<column name>"')
    label = f"{where}: column {name!r}"
    _unknown_keys(raw, _COLUMN_KEYS, label)
    if "type" not in raw:
        raise SchemaError(f"{label}: needs a type (numeric, binary or categorical)")
    kind = _enum_value(ColumnType, raw["type"], f"{label}: type")
    missing = _enum_value(Missing, raw.get("missing", Missing.FORBID.value), f"{label}: missing")
    categories = raw.get("categories", [])
    if not isinstance(categories, list):
        raise SchemaError(f"{label}: categories must be a list of strings")
    bounds = raw.get("range")
    if bounds is not None and not isinstance(bounds, list):
        raise SchemaError(f"{label}: range must be [lo, hi], two finite numbers, lo < hi")
    try:
        return Column(
            name=name,
            type=kind,
            missing=missing,
            categories=tuple(categories),
            range=None if bounds is None else tuple(bounds),
        )
    except SchemaError as exc:
        raise SchemaError(f"{where}: {exc}") from None


def _split(raw: object, where: str) -> Split:
    if not isinstance(raw, dict):
        raise SchemaError(f"{where}: [split] must be a table")
    _unknown_keys(raw, _SPLIT_KEYS, f"{where}: [split]")
    try:
        return Split(**raw)
    except SchemaError as exc:
        raise SchemaError(f"{where}: {exc}") from None


def parse_schema(document: Mapping[str, object], *, where: str = "schema") -> TabularSchema:
    """A :class:`TabularSchema` from a parsed TOML document; ``where`` starts every message.

    Raises:
        SchemaError: an unknown key (anywhere), a missing ``target`` or ``[[column]]``, a wrong
            value type, an unknown ``type`` or ``missing``, ``version`` other than 1, or any rule
            of :class:`Column`, :class:`Split` or :class:`TabularSchema`.
    """
    _unknown_keys(document, _TOP_KEYS, where)
    version = document.get("version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION or not _is_int(version):
        raise SchemaError(f"{where}: version must be {SCHEMA_VERSION}, got {version!r}")
    target = document.get("target")
    if not isinstance(target, str) or not target:
        raise SchemaError(f'{where}: needs target = "<column name>" (the label column)')
    raw_columns = document.get("column")
    if not isinstance(raw_columns, list) or not raw_columns:
        raise SchemaError(f"{where}: needs [[column]] tables, one per column")
    drop = document.get("drop", [])
    if not isinstance(drop, list) or not all(isinstance(d, str) and d for d in drop):
        raise SchemaError(f"{where}: drop must be a list of column names")
    columns = tuple(_column(raw, k, where) for k, raw in enumerate(raw_columns, start=1))
    split = _split(document.get("split", {}), where)
    try:
        return TabularSchema(columns=columns, target=target, drop=tuple(drop), split=split)
    except SchemaError as exc:
        raise SchemaError(f"{where}: {exc}") from None


def load_schema(path: str | os.PathLike[str]) -> TabularSchema:
    """Read and validate a schema TOML file (see the module docstring for its format).

    Raises:
        SchemaError: the file is missing, unreadable, not valid TOML, or breaks a rule of
            :func:`parse_schema`; the message starts with the file's path.
    """
    schema_path = Path(path)
    try:
        text = schema_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SchemaError(f"{schema_path}: schema file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SchemaError(f"{schema_path}: unreadable ({exc})") from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SchemaError(f"{schema_path}: not valid TOML ({exc})") from None
    return parse_schema(document, where=str(schema_path))


def schema_from_canonical(text: str, *, where: str = "schema") -> TabularSchema:
    """The schema whose :meth:`TabularSchema.canonical_json` is ``text`` (what an import record
    keeps). Raises SchemaError when ``text`` is not such a canonical form or does not give
    back the same digest."""
    try:
        document = json.loads(text)
    except ValueError:
        raise SchemaError(f"{where}: the canonical schema is not JSON") from None
    if not isinstance(document, dict) or document.get("format") != SCHEMA_FORMAT:
        raise SchemaError(f"{where}: not a canonical securefed schema")
    raw_columns = document.get("columns")
    if not isinstance(raw_columns, list):
        raise SchemaError(f"{where}: the canonical schema has no columns list")
    columns = [
        {k: v for k, v in c.items() if k != "categories" or v} if isinstance(c, dict) else c
        for c in raw_columns
    ]
    schema = parse_schema(
        {"version": document.get("version"), "target": document.get("target"), "column": columns},
        where=where,
    )
    if schema.canonical_json() != json.dumps(
        document, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ):
        raise SchemaError(f"{where}: the canonical schema does not read back to itself")
    return schema
