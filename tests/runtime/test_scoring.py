"""``securefed predict`` and ``securefed export --format onnx`` (docs/tabular.md, "Scoring new
records" and "Export to ONNX"): three banks import their CSV files, run a federation, and one
bank scores records with its personalized model -- the same scores as the model on its prepared
arrays, the same through onnxruntime within 1e-5, and every refusal typed, before anything is
written."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import torch

from securefed.cli import main
from securefed.data import load_tenants
from securefed.data.partition import split_rows
from securefed.data.schema import TabularSchema, load_schema
from securefed.data.tabular import Problem, TabularDataError
from securefed.data.tabular_store import read_schema_digest
from securefed.errors import ConfigError
from securefed.models import class_probabilities, load_saved_model, positive_scores, save_model
from securefed.models.credit import credit_metrics
from securefed.runtime.config import parse_run_config
from securefed.runtime.export import ExportInputs, export_onnx, sidecar_path
from securefed.runtime.federated import METRICS_FILE, SCHEMA_METADATA, run_federation
from securefed.runtime.scoring import (
    OutputExistsError,
    RunNotFinishedError,
    SchemaMismatchError,
    UnknownInstitutionError,
    predict,
)

SCHEMA = """\
target = "{target}"
drop = ["application_id", "notes"]

[split]
test_fraction = 0.25
seed = 1

[[column]]
name = "age"
type = "numeric"

[[column]]
name = "income"
type = "numeric"
missing = "indicator"

[[column]]
name = "housing"
type = "categorical"
categories = ["own", "rent", "free"]

[[column]]
name = "purpose"
type = "categorical"
categories = ["car", "home", "other"]
missing = "indicator"

[[column]]
name = "has_phone"
type = "binary"

[[column]]
name = "default"
type = "binary"

[[column]]
name = "grade"
type = "categorical"
categories = ["A", "B", "C"]
"""
HEADER = ["application_id", "age", "income", "housing", "purpose", "has_phone", "notes"]
ROWS = 160
PARTY = "bank-1"


def _rows(bank: int) -> list[dict[str, str]]:
    """Seeded applications: the label shifts age and income; 10% blank incomes and purposes."""
    rng = np.random.default_rng(bank)
    rows = []
    for i in range(ROWS):
        label = int(rng.random() < 0.3)
        grade = "ABC"[min(2, int(rng.integers(0, 2)) + label)]
        rows.append(
            {
                "application_id": f"{bank}{i:05d}",
                "age": f"{rng.normal(label, 1.0):.4f}",
                "income": "" if rng.random() < 0.1 else f"{rng.normal(1.5 * label, 1.0):.4f}",
                "housing": str(rng.choice(["own", "rent", "free"])),
                "purpose": "" if rng.random() < 0.1 else str(rng.choice(["car", "home", "other"])),
                "has_phone": str(int(rng.random() < 0.5)),
                "notes": "free text, never read",
                "default": str(label),
                "grade": grade,
            }
        )
    return rows


def _write_csv(path: Path, rows: list[dict[str, str]], header: list[str]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=header, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


class Federation:
    """A finished run on three imported banks, for a binary or a three-class target."""

    def __init__(self, root: Path, target: str) -> None:
        self.root = root
        self.target = target
        self.schema_path = root / "schema.toml"
        self.schema_path.write_text(SCHEMA.format(target=target), encoding="utf-8")
        self.schema: TabularSchema = load_schema(self.schema_path)
        self.prepared = root / "prepared"
        other = "grade" if target == "default" else "default"
        self.header = [*HEADER, target, other]
        self.files = {}
        for bank in range(3):
            path = _write_csv(root / f"bank{bank}.csv", _rows(bank), self.header)
            self.files[bank] = path
            argv = ["data", "import", "--schema", str(self.schema_path), "--input", str(path)]
            assert main([*argv, "--out", str(self.prepared), "--institution", str(bank)]) == 0
        binary = target == "default"
        config = parse_run_config(
            {
                "mode": "fedavg",
                "rounds": 2 if binary else 1,
                "seed": 0,
                "data": {"directory": str(self.prepared), "model": "logistic"}
                if binary
                else {"directory": str(self.prepared), "model": "mlp", "hidden": [8]},
                "training": {"lr": 0.5, "batch_size": 32},
                **({"dp": {"target_epsilon": 4.0, "delta": 1e-4}} if binary else {}),
            }
        )
        self.run = root / "run"
        self.metrics: dict[str, Any] = run_federation(config, self.run).metrics
        self.model = self.run / "models" / f"{PARTY}.safetensors"

    def tenant(self, party: str = PARTY) -> int:
        return next(c["tenant"] for c in self.metrics["clients"] if c["id"] == party)


@pytest.fixture(scope="module")
def binary(tmp_path_factory: pytest.TempPathFactory) -> Federation:
    return Federation(tmp_path_factory.mktemp("binary"), "default")


@pytest.fixture(scope="module")
def three_classes(tmp_path_factory: pytest.TempPathFactory) -> Federation:
    return Federation(tmp_path_factory.mktemp("three"), "grade")


def _read_csv(path: Path) -> pa.Table:
    return pacsv.read_csv(
        path, convert_options=pacsv.ConvertOptions(column_types={"application_id": pa.string()})
    )


def _onnx_feed(path: Path, schema: TabularSchema) -> dict[str, np.ndarray]:
    """A CSV's feature columns as the exported graph takes them: double (NaN = missing) or
    text (missing as the empty string)."""
    table = pacsv.read_csv(
        path,
        convert_options=pacsv.ConvertOptions(
            column_types={name: pa.string() for name in pacsv.read_csv(path).column_names},
            strings_can_be_null=False,
        ),
    )
    feed = {}
    for column in schema.features:
        cells = table.column(column.name).to_pylist()
        if column.type.value == "categorical":
            feed[column.name] = np.array(cells, dtype=object)
        else:
            feed[column.name] = np.array([float(c) if c else np.nan for c in cells])
    return feed


# --- predict --------------------------------------------------------------------------------


def test_the_run_records_the_schema_digest_in_every_final_model(binary: Federation) -> None:
    for client in binary.metrics["clients"]:
        saved = load_saved_model(binary.run / "models" / f"{client['id']}.safetensors")
        digest = read_schema_digest(binary.prepared, client["tenant"])
        assert saved.metadata[SCHEMA_METADATA] == digest == binary.schema.digest


def test_predict_scores_the_institutions_own_file_as_its_model_scores_the_prepared_arrays(
    binary: Federation, tmp_path: Path
) -> None:
    tenant = binary.tenant()
    out = tmp_path / "scores.csv"
    result = predict(binary.run, PARTY, binary.schema, binary.files[tenant], out)
    assert (result.rows, result.columns) == (ROWS, ("row", "score"))
    table = _read_csv(out)
    assert table.column_names == ["row", "score"]
    assert table.column("row").to_pylist() == list(range(1, ROWS + 1))
    scores = table.column("score").to_numpy()
    # the import's split of this file: the prepared arrays are these rows, in this order
    train, test = split_rows(ROWS, test_fraction=0.25, seed=1)
    prepared = next(t for t in load_tenants(binary.prepared) if t.index == tenant)
    model = load_saved_model(binary.model).model
    for rows, x in ((test, prepared.test_x), (train, prepared.train_x)):
        expected = positive_scores(model, torch.from_numpy(x))
        np.testing.assert_allclose(scores[rows], expected, rtol=0, atol=1e-12)
    # and metrics.json's credit metrics are those of these scores on the test rows
    credit = next(c["credit"] for c in binary.metrics["clients"] if c["id"] == PARTY)
    exact = credit_metrics(scores[test], prepared.test_y)
    assert credit["roc_auc"] == pytest.approx(exact.roc_auc)
    assert (out.stat().st_mode & 0o777) == 0o600


def test_new_records_without_the_target_keep_their_ids_as_written(
    binary: Federation, tmp_path: Path
) -> None:
    rows = _rows(binary.tenant())[:5]
    for row, weird in zip(rows, ["007", "NA", "", "a,b", "x"], strict=True):
        row["application_id"] = weird
    unlabelled = [name for name in binary.header if name != "default"]
    new = _write_csv(tmp_path / "new.csv", rows, unlabelled)  # no target: it is not read
    out = tmp_path / "scores.parquet"
    predict(binary.run, PARTY, binary.schema, new, out, ids=["application_id", "notes"])
    table = pq.read_table(out)
    assert table.column_names == ["application_id", "notes", "score"]
    assert table.column("application_id").to_pylist() == ["007", "NA", "", "a,b", "x"]
    full = tmp_path / "full.csv"
    predict(binary.run, PARTY, binary.schema, binary.files[binary.tenant()], full)
    np.testing.assert_array_equal(
        table.column("score").to_numpy(), _read_csv(full).column("score").to_numpy()[:5]
    )


def test_a_categorical_target_gets_one_score_column_per_class(
    three_classes: Federation, tmp_path: Path
) -> None:
    out = tmp_path / "scores.csv"
    tenant = three_classes.tenant()
    predict(three_classes.run, PARTY, three_classes.schema, three_classes.files[tenant], out)
    table = _read_csv(out)
    assert table.column_names == ["row", "score=A", "score=B", "score=C"]
    scores = np.column_stack([table.column(f"score={c}").to_numpy() for c in "ABC"])
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-12)
    _, test = split_rows(ROWS, test_fraction=0.25, seed=1)
    prepared = next(t for t in load_tenants(three_classes.prepared) if t.index == tenant)
    model = load_saved_model(three_classes.model).model
    expected = class_probabilities(model, torch.from_numpy(prepared.test_x))
    np.testing.assert_allclose(scores[test], expected, rtol=0, atol=1e-12)


# --- refusals: typed, before anything is written ---------------------------------------------


def test_an_unknown_institution_is_refused_naming_the_known_ones(
    binary: Federation, tmp_path: Path
) -> None:
    out = tmp_path / "scores.csv"
    with pytest.raises(UnknownInstitutionError, match=r"no institution 'bank-7'.*bank-0, bank-1"):
        predict(binary.run, "bank-7", binary.schema, binary.files[0], out)
    with pytest.raises(UnknownInstitutionError):
        export_onnx(binary.run, "../bank-1", binary.schema, tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_a_run_that_has_not_finished_is_refused(binary: Federation, tmp_path: Path) -> None:
    partial = Path(shutil.copytree(binary.run, tmp_path / "run.partial"))
    (partial / METRICS_FILE).unlink()
    out = tmp_path / "out" / "scores.csv"
    for run_dir, message in (
        (tmp_path / "run", "the run has not finished"),
        (partial, "the run has not finished"),
        (tmp_path / "nowhere", "no run directory"),
    ):
        with pytest.raises(RunNotFinishedError, match=message):
            predict(run_dir, PARTY, binary.schema, binary.files[1], out)
    no_metrics = Path(shutil.copytree(partial, tmp_path / "copied"))
    with pytest.raises(RunNotFinishedError, match=r"no metrics\.json"):
        export_onnx(no_metrics, PARTY, binary.schema, tmp_path / "m.onnx")
    failed = Path(shutil.copytree(binary.run, tmp_path / "failed"))
    metrics = json.loads((failed / METRICS_FILE).read_text())
    (failed / METRICS_FILE).write_text(json.dumps({**metrics, "status": "failed"}))
    with pytest.raises(RunNotFinishedError, match="the run ended failed"):
        predict(failed, PARTY, binary.schema, binary.files[1], out)
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "m.onnx").exists()


def test_another_schema_is_refused(binary: Federation, tmp_path: Path) -> None:
    other = tmp_path / "other.toml"
    text = SCHEMA.format(target="default").replace('"rent", "free"]', '"rent", "free", "boat"]')
    other.write_text(text, encoding="utf-8")
    out = tmp_path / "scores.csv"
    with pytest.raises(
        SchemaMismatchError, match=r"other.toml: schema sha256 .* is not the schema"
    ):
        predict(
            binary.run, PARTY, load_schema(other), binary.files[1], out, schema_source=str(other)
        )
    with pytest.raises(SchemaMismatchError, match="is not the schema"):
        export_onnx(binary.run, PARTY, load_schema(other), tmp_path / "m.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.toml"]


def test_a_run_without_a_recorded_schema_falls_back_to_the_import_record_or_refuses(
    binary: Federation, tmp_path: Path
) -> None:
    """A model file without the digest (a run from before it was recorded): the import record
    next to the run's data gives it; without that either, nothing can be checked."""
    run = Path(shutil.copytree(binary.run, tmp_path / "old"))
    model = run / "models" / f"{PARTY}.safetensors"
    saved = load_saved_model(model)
    kept = {k: v for k, v in saved.metadata.items() if k in ("party", "config_sha256")}
    save_model(saved.model, model, metadata=kept, spec=saved.spec)
    predict(run, PARTY, binary.schema, binary.files[1], tmp_path / "a.csv")
    metrics = json.loads((run / METRICS_FILE).read_text())
    metrics["data_directory"] = str(tmp_path / "moved")
    (run / METRICS_FILE).write_text(json.dumps(metrics))
    with pytest.raises(SchemaMismatchError, match="does not record which schema"):
        predict(run, PARTY, binary.schema, binary.files[1], tmp_path / "b.csv")
    assert not (tmp_path / "b.csv").exists()


def test_a_bad_record_is_refused_naming_file_row_and_column(
    binary: Federation, tmp_path: Path
) -> None:
    rows = _rows(1)[:6]
    rows[3]["housing"] = "castle"
    bad = _write_csv(tmp_path / "bad.csv", rows, binary.header)
    out = tmp_path / "scores.csv"
    with pytest.raises(TabularDataError, match=r"bad.csv: row 4, column 'housing': category") as e:
        predict(binary.run, PARTY, binary.schema, bad, out)
    assert e.value.problem is Problem.UNKNOWN_CATEGORY
    rows[3]["housing"], rows[1]["age"] = "own", ""
    with pytest.raises(TabularDataError, match=r"row 2, column 'age': missing value"):
        predict(binary.run, PARTY, binary.schema, _write_csv(bad, rows, binary.header), out)
    with pytest.raises(ConfigError, match="'age' is not in the schema's drop list"):
        predict(binary.run, PARTY, binary.schema, binary.files[1], out, ids=["age"])
    assert not out.exists()


def test_an_existing_output_is_replaced_only_with_force(binary: Federation, tmp_path: Path) -> None:
    out = tmp_path / "scores.csv"
    out.write_text("keep me\n")
    with pytest.raises(OutputExistsError, match="exists; give --force"):
        predict(binary.run, PARTY, binary.schema, binary.files[1], out)
    assert out.read_text() == "keep me\n"
    predict(binary.run, PARTY, binary.schema, binary.files[1], out, force=True)
    assert _read_csv(out).num_rows == ROWS
    onnx_out = tmp_path / "m.onnx"
    sidecar_path(onnx_out).write_text("{}")
    with pytest.raises(OutputExistsError):
        export_onnx(binary.run, PARTY, binary.schema, onnx_out)
    assert not onnx_out.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [
        "m.json",
        "scores.csv",
    ]


# --- export to ONNX -----------------------------------------------------------------------------


@pytest.mark.parametrize("fixture", ["binary", "three_classes"])
def test_onnxruntime_scores_the_export_as_predict_does(
    fixture: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    ort = pytest.importorskip("onnxruntime")
    federation: Federation = request.getfixturevalue(fixture)
    tenant = federation.tenant()
    source = federation.files[tenant]
    scores_path = tmp_path / "scores.csv"
    predict(federation.run, PARTY, federation.schema, source, scores_path)
    table = _read_csv(scores_path)
    torch_scores = np.column_stack([table.column(c).to_numpy() for c in table.column_names[1:]])

    # the encoding in the graph: raw columns in, the same scores out
    columns = export_onnx(federation.run, PARTY, federation.schema, tmp_path / "columns.onnx")
    session = ort.InferenceSession(str(columns.onnx))
    onnx_scores, valid = session.run(["score", "valid"], _onnx_feed(source, federation.schema))
    assert valid.dtype == np.bool_
    assert valid.all()
    assert onnx_scores.shape == torch_scores.shape
    difference = float(np.abs(onnx_scores - torch_scores).max())
    assert difference <= 1e-5, difference

    # the feature vector in: the prepared arrays score as the model scores them
    features = export_onnx(
        federation.run,
        PARTY,
        federation.schema,
        tmp_path / "features.onnx",
        inputs=ExportInputs.FEATURES,
    )
    prepared = next(t for t in load_tenants(federation.prepared) if t.index == tenant)
    model = load_saved_model(federation.model).model
    expected = class_probabilities(model, torch.from_numpy(prepared.test_x))
    expected = expected[:, 1:] if federation.target == "default" else expected
    session = ort.InferenceSession(str(features.onnx))
    (onnx_features,) = session.run(["score"], {"features": prepared.test_x})
    assert float(np.abs(onnx_features - expected).max()) <= 1e-5

    assert (columns.onnx.stat().st_mode & 0o777) == 0o600  # the model's weights
    assert (columns.sidecar.stat().st_mode & 0o777) == 0o644
    sidecar = json.loads(columns.sidecar.read_text())
    run_id = json.loads((federation.run / "run.json").read_text())["run_id"]
    assert sidecar["run_id"] == run_id
    assert sidecar["party"] == PARTY
    assert sidecar["schema_sha256"] == federation.schema.digest
    assert sidecar["features"] == list(federation.schema.feature_names)
    assert sidecar["classes"] == list(federation.schema.classes)
    assert sidecar["outputs"]["score"]["columns"] == table.column_names[1:]
    assert [i["name"] for i in sidecar["inputs"]] == [c.name for c in federation.schema.features]
    width = len(federation.schema.feature_names)
    assert json.loads(features.sidecar.read_text())["inputs"][0]["shape"] == ["N", width]


def test_the_graph_flags_the_rows_that_predict_would_refuse(
    binary: Federation, tmp_path: Path
) -> None:
    ort = pytest.importorskip("onnxruntime")
    exported = export_onnx(binary.run, PARTY, binary.schema, tmp_path / "m.onnx")
    session = ort.InferenceSession(str(exported.onnx))
    good = {
        "age": 0.5,
        "income": 1.0,
        "housing": "own",
        "purpose": "car",
        "has_phone": 1.0,
        "grade": "B",
    }
    cases = [
        {},  # fine
        {"income": np.nan, "purpose": "NA"},  # missing, with indicators: fine
        {"purpose": ""},  # missing, with an indicator: fine
        {"age": np.nan},  # missing where the schema forbids it
        {"age": np.inf},  # not finite
        {"age": 1e39},  # beyond float32
        {"housing": "castle"},  # not a declared category
        {"housing": ""},  # missing where the schema forbids it
        {"has_phone": 2.0},  # not binary
    ]
    rows = [{**good, **case} for case in cases]
    feed = {
        name: np.array(
            [r[name] for r in rows],
            dtype=object if name in ("housing", "purpose", "grade") else None,
        )
        for name in good
    }
    _, valid = session.run(["score", "valid"], feed)
    assert valid.tolist() == [True, True, True] + [False] * 6


def test_export_refuses_a_name_that_is_not_onnx(binary: Federation, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"must end in \.onnx"):
        export_onnx(binary.run, PARTY, binary.schema, tmp_path / "m.bin")


# --- the command line ----------------------------------------------------------------------------


def test_predict_and_export_on_the_command_line(
    binary: Federation, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["--run", str(binary.run), "--institution", PARTY, "--schema", str(binary.schema_path)]
    out = tmp_path / "scores.csv"
    argv = ["predict", *common, "--input", str(binary.files[1]), "--output", str(out)]
    assert main([*argv, "--id", "application_id"]) == 0
    assert f"scored {ROWS} records" in capsys.readouterr().out
    assert _read_csv(out).column("application_id").to_pylist()[:2] == ["100000", "100001"]
    assert main(argv) == 2
    assert "exists; give --force to replace it" in capsys.readouterr().err
    unknown = [*argv[:4], "bank-9", *argv[5:-1], str(tmp_path / "other.csv")]
    assert main(unknown) == 2
    assert "no institution 'bank-9'" in capsys.readouterr().err
    model = tmp_path / "m.onnx"
    assert main(["export", *common, "--format", "onnx", "--output", str(model)]) == 0
    assert f"wrote {model} (ONNX, inputs: columns)" in capsys.readouterr().out
    assert model.is_file()
    assert sidecar_path(model).is_file()
