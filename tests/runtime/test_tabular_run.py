"""Whole runs with the tabular models: ``model = "logistic"`` and ``model = "mlp"`` with its
hidden sizes, class-weighted, under DP and secure aggregation; every saved model rebuilds from
its file alone and scores what ``metrics.json`` reports."""

from __future__ import annotations

import json
import shutil
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch

from securefed.data import TenantData, load_tenants, write_tenants
from securefed.errors import ConfigError
from securefed.models import ModelKind, ModelSpec, evaluate, load_saved_model, positive_scores
from securefed.models.credit import credit_metrics
from securefed.runtime.config import RunConfig, parse_run_config
from securefed.runtime.federated import build_client, run_federation

FEATURES = 6


@pytest.fixture(scope="module")
def prepared_tabular(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three banks of seeded synthetic rows (20% positives, shifted by +1.5 in two columns)."""
    directory = tmp_path_factory.mktemp("tabular")
    tenants = []
    for index in range(3):
        rng = np.random.default_rng(index)
        y = (rng.random(400) < 0.2).astype(np.int64)
        x = rng.normal(size=(400, FEATURES)).astype(np.float32)
        x[:, :2] += 1.5 * y[:, None]
        tenants.append(TenantData(index, x[:300], y[:300], x[300:], y[300:]))
    write_tenants(directory, tenants)
    return directory


@pytest.fixture
def tabular_dir(prepared_tabular: Path, tmp_path: Path) -> Path:
    """A fresh copy per test: its spend record starts empty."""
    return Path(shutil.copytree(prepared_tabular, tmp_path / "records"))


def _config(directory: Path, data: dict[str, object], training: dict[str, object]) -> RunConfig:
    return parse_run_config(
        {
            "name": "tabular",
            "mode": "fedavg",
            "rounds": 2,
            "seed": 0,
            "data": {"directory": str(directory), **data},
            "training": {"lr": 0.5, "batch_size": 32, **training},
            "dp": {"target_epsilon": 4.0, "delta": 1e-4},
        }
    )


@pytest.mark.parametrize(
    ("data", "spec"),
    [
        ({"model": "logistic"}, ModelSpec(ModelKind.LOGISTIC, num_classes=2, in_features=6)),
        (
            {"model": "mlp", "hidden": [16]},
            ModelSpec(ModelKind.MLP, num_classes=2, in_features=6, hidden=(16,)),
        ),
    ],
    ids=["logistic", "mlp-16"],
)
def test_a_tabular_run_records_the_architecture_of_every_model_it_saves(
    tabular_dir: Path, tmp_path: Path, data: dict[str, object], spec: ModelSpec
) -> None:
    config = _config(tabular_dir, data, {"class_weights": [1.0, 4.0]})
    summary = run_federation(config, tmp_path / "run")
    metrics = summary.metrics
    assert metrics["status"] == "completed"
    parameters = sum(p.numel() for p in spec.build().parameters())
    assert metrics["model"] == {"kind": spec.kind.value, "parameters": parameters}
    recorded = tomllib.loads((tmp_path / "run" / "config.toml").read_text())
    assert recorded["training"]["class_weights"] == [1.0, 4.0]
    tenants = {t.index: t for t in load_tenants(tabular_dir)}
    for client in metrics["clients"]:
        assert 0 < client["epsilon"] <= 4.0
        for path in (
            tmp_path / "run" / "models" / f"{client['id']}.safetensors",
            tmp_path / "run" / "state" / client["id"] / "model.safetensors",
        ):
            saved = load_saved_model(path)  # from the file alone: no configuration, no data
            assert saved.spec == spec
            assert saved.metadata["party"] == client["id"]
            assert saved.metadata["config_sha256"] == metrics["config_sha256"]
        final = load_saved_model(tmp_path / "run" / "models" / f"{client['id']}.safetensors")
        tenant = tenants[client["tenant"]]
        x, y = torch.from_numpy(tenant.test_x), torch.from_numpy(tenant.test_y)
        assert evaluate(final.model, x, y) == pytest.approx(client["test_accuracy"])
        exact = credit_metrics(positive_scores(final.model, x), tenant.test_y)
        # measured: 0.89 to 0.96 per bank (the Bayes AUC of these rows is about 0.93)
        assert exact.roc_auc > 0.8
        # metrics.json: the institution's exact credit metrics of that same model
        credit = client["credit"]
        for key in ("roc_auc", "pr_auc", "ks", "gini", "brier"):
            assert credit[key] == pytest.approx(getattr(exact, key))
        assert (credit["positives"], credit["negatives"]) == (exact.positives, exact.negatives)
        assert credit["positives"] + credit["negatives"] == client["test_samples"]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text()) == metrics


def test_class_weights_that_do_not_fit_the_data_are_refused_before_anything_is_written(
    tabular_dir: Path, tmp_path: Path
) -> None:
    config = _config(tabular_dir, {"model": "logistic"}, {"class_weights": [1.0, 2.0, 3.0]})
    with pytest.raises(ConfigError, match="lists 3 weights, but the data has 2 classes"):
        run_federation(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()
    assert not (tmp_path / "run.partial").exists()
    assert not (tabular_dir / "securefed-spend").exists()


def test_the_cnn_on_tabular_rows_is_refused_before_anything_is_written(
    tabular_dir: Path, tmp_path: Path
) -> None:
    config = _config(tabular_dir, {"model": "cnn"}, {})
    with pytest.raises(ConfigError, match=r'1x28x28 images.*model = "mlp" or "logistic"'):
        run_federation(config, tmp_path / "run")
    assert not (tmp_path / "run.partial").exists()
    assert not (tabular_dir / "securefed-spend").exists()


def _tenant(labels: np.ndarray, test_labels: np.ndarray) -> TenantData:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(len(labels), FEATURES)).astype(np.float32)
    test_x = rng.normal(size=(len(test_labels), FEATURES)).astype(np.float32)
    return TenantData(0, x, labels.astype(np.int64), test_x, test_labels.astype(np.int64))


def test_credit_metrics_are_recorded_for_binary_targets_only(tmp_path: Path) -> None:
    config = parse_run_config({"data": {"model": "logistic"}, "training": {"batch_size": 10}})
    cases = {
        "three classes": (_tenant(np.arange(30) % 3, np.arange(12) % 3), 3),
        "no test records": (_tenant(np.arange(30) % 2, np.zeros(0)), 2),
        "one class in the test split": (_tenant(np.arange(30) % 2, np.zeros(12)), 2),
    }
    credit = {}
    for name, (tenant, classes) in cases.items():
        node = build_client(
            config,
            tenant,
            num_classes=classes,
            index=0,
            party_id="bank-0",
            state_dir=tmp_path / name,
            ledger=None,
            seed=0,
        )
        credit[name] = node.credit()
    assert credit["three classes"] is None
    assert credit["no test records"] is None
    one_class = credit["one class in the test split"]
    assert one_class is not None
    assert (one_class.positives, one_class.negatives) == (0, 12)
    assert one_class.roc_auc is None  # undefined, not NaN (metrics.json is strict JSON)
    assert one_class.brier is not None
