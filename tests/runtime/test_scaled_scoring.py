"""``securefed predict`` and ``securefed export --format onnx`` of a SCALED model (its first
layer the federation's standardisation, :class:`~securefed.models.FeatureScaler`): predict
scores the raw records as the saved model's forward pass does, and onnxruntime scores the
export like torch within 1e-5 -- missing cells imputed by the mean included -- for the scaled
logistic regression and MLP. The run directory is faked: a finished run's ``metrics.json`` and
one institution's model file, saved with the schema digest as ``securefed run`` saves it."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
import torch

from securefed.data.schema import ColumnType, TabularSchema, load_schema
from securefed.data.tabular import encode_records
from securefed.models import (
    ModelKind,
    ModelSpec,
    class_probabilities,
    feature_scaler,
    load_saved_model,
    save_model,
)
from securefed.runtime.export import ExportInputs, export_onnx
from securefed.runtime.federated import METRICS_FILE, MODELS_DIR, RUN_FILE, SCHEMA_METADATA
from securefed.runtime.scoring import predict

SCHEMA = """\
target = "{target}"
drop = ["application_id"]

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
name = "debt"
type = "numeric"
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
HEADER = ["application_id", "age", "income", "housing", "debt", "has_phone", "default", "grade"]
PARTY = "bank-0"
ROWS = 120


def _write_records(path: Path) -> Path:
    """Seeded applications on the raw scales a bank keeps them; 25% blank incomes and debts."""
    rng = np.random.default_rng(11)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        for i in range(ROWS):
            income = "" if rng.random() < 0.25 else f"{rng.normal(3000, 900):.2f}"
            debt = "" if rng.random() < 0.25 else f"{rng.normal(500, 250):.2f}"
            writer.writerow(
                [
                    f"a{i:04d}",
                    f"{rng.normal(40, 12):.1f}",
                    income,
                    str(rng.choice(["own", "rent", "free"])),
                    debt,
                    str(int(rng.random() < 0.5)),
                    str(int(rng.random() < 0.3)),
                    str(rng.choice(["A", "B", "C"])),
                ]
            )
    return path


def _scaler_values(
    schema: TabularSchema, features: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-feature mean and standard deviation of the numeric columns over the observed cells
    (what the federation computes, here from one bank's records), identity elsewhere, and
    each numeric column's link to its missing indicator."""
    names = list(schema.feature_names)
    shift = np.zeros(len(names))
    scale = np.ones(len(names))
    indicator = np.full(len(names), -1, dtype=np.int64)
    for column in schema.features:
        if column.type is not ColumnType.NUMERIC:
            continue
        j = names.index(column.name)
        observed = np.ones(len(features), dtype=bool)
        if f"{column.name}:missing" in names:
            indicator[j] = names.index(f"{column.name}:missing")
            observed = features[:, indicator[j]] == 0
        shift[j] = features[observed, j].mean()
        scale[j] = features[observed, j].std()
    return shift, scale, indicator


class FakeRun:
    """A finished run whose institution ``bank-0`` has a model of ``kind`` on ``target``."""

    def __init__(self, root: Path, kind: ModelKind, target: str, *, scaled: bool = True) -> None:
        self.schema_path = root / "schema.toml"
        self.schema_path.write_text(SCHEMA.format(target=target), encoding="utf-8")
        self.schema = load_schema(self.schema_path)
        self.records = _write_records(root / "records.csv")
        self.features = encode_records(self.records, self.schema).features
        self.spec = ModelSpec(
            kind,
            num_classes=len(self.schema.classes),
            in_features=len(self.schema.feature_names),
            hidden=(8,) if kind is ModelKind.MLP else None,
            scaled=scaled,
        )
        model = self.spec.build(seed=4)
        scaler = feature_scaler(model)
        if scaled:
            assert scaler is not None
            scaler.set(*_scaler_values(self.schema, self.features))
        self.run = root / "run"
        (self.run / MODELS_DIR).mkdir(parents=True)
        clients = [{"id": PARTY, "tenant": 0}]
        (self.run / METRICS_FILE).write_text(
            json.dumps({"status": "completed", "clients": clients})
        )
        (self.run / RUN_FILE).write_text(json.dumps({"run_id": "fake-run"}))
        self.model_path = self.run / MODELS_DIR / f"{PARTY}.safetensors"
        save_model(
            model, self.model_path, metadata={SCHEMA_METADATA: self.schema.digest}, spec=self.spec
        )

    @property
    def binary(self) -> bool:
        return self.schema.target_column.type is ColumnType.BINARY

    def torch_scores(self, features: np.ndarray) -> np.ndarray:
        """The saved model's own forward pass: P(label 1), or every class's probability (on a
        C-ordered copy, as predict scores: the import's arrays are column-major, and another
        memory layout may round the float32 matrix products differently)."""
        model = load_saved_model(self.model_path).model
        probabilities = class_probabilities(model, torch.from_numpy(np.ascontiguousarray(features)))
        return probabilities[:, 1:] if self.binary else probabilities


CASES = [
    pytest.param(ModelKind.LOGISTIC, "default", id="logistic"),
    pytest.param(ModelKind.MLP, "default", id="mlp"),
    pytest.param(ModelKind.MLP, "grade", id="mlp-three-classes"),
]


def _onnx_feed(run: FakeRun) -> dict[str, np.ndarray]:
    table = pacsv.read_csv(
        run.records,
        convert_options=pacsv.ConvertOptions(
            column_types=dict.fromkeys(HEADER, pa.string()),
            strings_can_be_null=False,
        ),
    )
    feed = {}
    for column in run.schema.features:
        cells = table.column(column.name).to_pylist()
        if column.type is ColumnType.CATEGORICAL:
            feed[column.name] = np.array(cells, dtype=object)
        else:
            feed[column.name] = np.array([float(c) if c else np.nan for c in cells])
    return feed


@pytest.mark.parametrize(("kind", "target"), CASES)
def test_predict_scores_a_scaled_model_as_its_forward_pass_on_the_encoded_records(
    kind: ModelKind, target: str, tmp_path: Path
) -> None:
    run = FakeRun(tmp_path, kind, target)
    out = tmp_path / "scores.csv"
    result = predict(run.run, PARTY, run.schema, run.records, out)
    assert result.rows == ROWS
    assert load_saved_model(run.model_path).spec.scaled
    table = pacsv.read_csv(out)
    scores = np.column_stack([table.column(c).to_numpy() for c in table.column_names[1:]])
    expected = run.torch_scores(run.features)
    np.testing.assert_array_equal(scores, expected)
    # the scaler is applied: the inner model alone on the raw features scores otherwise
    inner = load_saved_model(run.model_path).model.model
    unscaled = class_probabilities(inner, torch.from_numpy(run.features))
    unscaled = unscaled[:, 1:] if run.binary else unscaled
    assert float(np.abs(unscaled - expected).max()) > 1e-3


@pytest.mark.parametrize(("kind", "target"), CASES)
def test_onnxruntime_scores_a_scaled_export_like_torch(
    kind: ModelKind, target: str, tmp_path: Path
) -> None:
    ort = pytest.importorskip("onnxruntime")
    run = FakeRun(tmp_path, kind, target)
    missing = run.features[:, list(run.schema.feature_names).index("income:missing")] == 1
    assert missing.any()  # mean imputation is exercised
    expected = run.torch_scores(run.features)

    columns = export_onnx(run.run, PARTY, run.schema, tmp_path / "columns.onnx")
    session = ort.InferenceSession(str(columns.onnx))
    scores, valid = session.run(["score", "valid"], _onnx_feed(run))
    assert valid.all()
    assert scores.shape == expected.shape
    assert float(np.abs(scores - expected).max()) <= 1e-5

    features = export_onnx(
        run.run, PARTY, run.schema, tmp_path / "features.onnx", inputs=ExportInputs.FEATURES
    )
    session = ort.InferenceSession(str(features.onnx))
    (scores,) = session.run(["score"], {"features": run.features})
    assert float(np.abs(scores - expected).max()) <= 1e-5

    for sidecar in (columns.sidecar, features.sidecar):
        model = json.loads(sidecar.read_text())["model"]
        assert model["scaled"] is True
        assert model["kind"] == kind.value


def test_the_sidecar_of_an_unscaled_model_says_so(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    run = FakeRun(tmp_path, ModelKind.LOGISTIC, "default", scaled=False)
    exported = export_onnx(run.run, PARTY, run.schema, tmp_path / "m.onnx")
    assert json.loads(exported.sidecar.read_text())["model"]["scaled"] is False
