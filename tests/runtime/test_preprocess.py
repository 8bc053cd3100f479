"""Federation-wide standardisation by secure aggregation (issue 22 item 2; docs/tabular.md).

Every institution releases the sum of its records' statistics vectors through its DP trainer,
the sums are added by a secure-aggregation run of the engine, and every model's feature scaler
gets the same federation-wide mean and deviation. Checked here: without DP the statistics are
the pooled ones exactly (no party revealed its own: the server's view is masked vectors and the
total); under DP the release is charged and ledgered before round 1 and the statistics stay
close; every party's ledger records what it applied; the scaler is in the saved models; bad
schemas and configurations are refused before anything trains.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from securefed.audit import EventType, verify_run
from securefed.audit.entry import parse_entry
from securefed.audit.ledger import ledger_path
from securefed.data.schema import load_schema, parse_schema, schema_from_canonical
from securefed.data.statistics import StatisticsLayout, record_contributions, statistics_from_sum
from securefed.data.tabular import import_tabular
from securefed.dp.spend import load_spend
from securefed.errors import ConfigError
from securefed.models import ModelKind, ModelSpec, feature_scaler, load_saved_model
from securefed.runtime.config import parse_run_config
from securefed.runtime.federated import run_federation
from securefed.runtime.flower.deployment import check_deployable
from securefed.runtime.preprocess import (
    PREPROCESSING_DIR,
    RELEASED_FILE,
    STATISTICS_FILE,
    _released,
)

SCHEMA = """\
target = "default"

[[column]]
name = "income"
type = "numeric"
missing = "indicator"
{income_range}

[[column]]
name = "age"
type = "numeric"
range = [18, 100]

[[column]]
name = "housing"
type = "categorical"
categories = ["own", "rent"]

[[column]]
name = "default"
type = "binary"
"""
RANGE = "range = [0, 200000]"
BANKS = 3
ROWS = 120


def _tables(root: Path, *, income_range: str = RANGE) -> tuple[Path, dict[str, np.ndarray]]:
    """Three banks' seeded tables, each with its own income level (so the federation's mean is
    none of the banks' own), imported into one directory; the pooled training values."""
    schema_path = root / "schema.toml"
    schema_path.write_text(SCHEMA.format(income_range=income_range), encoding="utf-8")
    schema = load_schema(schema_path)
    out = root / "prepared"
    for bank in range(BANKS):
        rng = np.random.default_rng(bank)
        path = root / f"bank{bank}.csv"
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["income", "age", "housing", "default"])
            for _ in range(ROWS):
                label = int(rng.random() < 0.3)
                income = rng.normal(30000 + 20000 * bank - 15000 * label, 8000)
                cell = "" if rng.random() < 0.1 else f"{max(income, 0):.2f}"
                age = rng.uniform(20, 80)
                writer.writerow([cell, f"{age:.1f}", rng.choice(["own", "rent"]), label])
        import_tabular(schema, [path], out=out, institution=bank)
    pooled = {
        "x": np.concatenate([np.load(out / f"client_train_samples_{b}.npy") for b in range(BANKS)]),
        "y": np.concatenate([np.load(out / f"client_train_labels_{b}.npy") for b in range(BANKS)]),
    }
    return out, pooled


def _config(data: Path, *, dp: bool, **data_keys: Any) -> Any:
    raw: dict[str, Any] = {
        "mode": "fedavg",
        "rounds": 2,
        "seed": 0,
        "data": {"directory": str(data), "model": "logistic", "standardize": "federation"}
        | data_keys,
        "training": {"lr": 0.5, "batch_size": 16},
    }
    if dp:
        raw["dp"] = {"target_epsilon": 8.0, "statistic_epsilon": 2.0}
    return parse_run_config(raw)


def _events(run_dir: Path, actor: str, event: EventType) -> list[dict[str, Any]]:
    lines = ledger_path(run_dir, actor).read_bytes().splitlines()
    return [dict(e.payload) for e in map(parse_entry, lines) if e.event is event]


def test_without_dp_the_statistics_are_the_pooled_ones(tmp_path: Path) -> None:
    data, pooled = _tables(tmp_path)
    run_dir = tmp_path / "run"
    summary = run_federation(_config(data, dp=False), run_dir)
    assert summary.metrics["status"] == "completed"
    document = json.loads((run_dir / PREPROCESSING_DIR / STATISTICS_FILE).read_text())
    stats = document["statistics"]["numeric"]
    x = pooled["x"]
    present = x[:, 1] == 0  # income's missing indicator
    # within the secure sum's fixed-point resolution (2**-9 of a record's worth at 3 parties)
    assert stats["income"]["mean"] == pytest.approx(x[present, 0].mean(), rel=1e-3)
    assert stats["income"]["std"] == pytest.approx(x[present, 0].std(), rel=5e-3)
    assert stats["income"]["missing_rate"] == pytest.approx(1 - present.mean(), abs=1e-3)
    assert stats["age"]["mean"] == pytest.approx(x[:, 2].mean(), rel=1e-3)
    assert document["statistics"]["class_balance"][1] == pytest.approx(pooled["y"].mean(), abs=1e-3)
    # every party applied the same statistics, in its ledger and in its saved model
    applied = {
        party: _events(run_dir, party, EventType.PREPROCESSING_APPLIED)
        for party in ("bank-0", "bank-1", "bank-2")
    }
    assert all(len(v) == 1 for v in applied.values())
    assert len({v[0]["statistics_sha256"] for v in applied.values()}) == 1
    assert summary.metrics["preprocessing"]["sha256"] == applied["bank-0"][0]["statistics_sha256"]
    saved = load_saved_model(run_dir / "models" / "bank-1.safetensors")
    scaler = feature_scaler(saved.model)
    assert scaler is not None
    assert float(scaler.shift[0]) == pytest.approx(stats["income"]["mean"], rel=1e-6)
    assert int(scaler.indicator[0]) == 1
    # the secure sum ran on the engine, with its own verifiable ledgers
    checked = verify_run(run_dir / PREPROCESSING_DIR)
    assert checked.ok, checked.problems
    assert checked.ledgers == BANKS + 1


def test_under_dp_the_release_is_charged_before_round_1(tmp_path: Path) -> None:
    data, pooled = _tables(tmp_path)
    run_dir = tmp_path / "run"
    summary = run_federation(_config(data, dp=True), run_dir)
    assert summary.metrics["status"] == "completed"
    spends = _events(run_dir, "bank-0", EventType.ROUND_SPEND)
    assert spends[0]["round"] == 0
    assert spends[0]["mechanism"] == "gaussian-statistic"
    applied = _events(run_dir, "bank-0", EventType.PREPROCESSING_APPLIED)
    assert applied  # after the charge: ledger order
    stats = summary.metrics["preprocessing"]["statistics"]["numeric"]
    x = pooled["x"]
    # noisy: 288 training records, statistic epsilon 2 (about 4 % of the range at one sigma)
    assert stats["age"]["mean"] == pytest.approx(x[:, 2].mean(), abs=0.3 * 82)
    assert stats["age"]["mean"] != pytest.approx(x[:, 2].mean(), rel=1e-3)  # noise was added
    assert stats["income"]["std"] > 0
    epsilons = [c["epsilon"] for c in summary.metrics["clients"]]
    assert all(e is not None and e <= 8.0 * 1.01 for e in epsilons)


def test_a_numeric_column_without_a_range_is_refused_before_anything_trains(
    tmp_path: Path,
) -> None:
    data, _ = _tables(tmp_path, income_range="")
    with pytest.raises(ConfigError, match="range"):
        run_federation(_config(data, dp=False), tmp_path / "run")
    assert not (tmp_path / "run").exists()
    assert not (tmp_path / "run.partial").exists()


def test_standardising_is_for_tables_and_one_release_before_round_1() -> None:
    with pytest.raises(ConfigError, match="tables"):
        parse_run_config({"data": {"standardize": "federation"}})
    with pytest.raises(ConfigError, match="one of them"):
        parse_run_config(
            {
                "mode": "heurfedamp",
                "data": {"model": "logistic", "standardize": "federation"},
                "personalize": {"similarity": "statistic"},
            }
        )
    unset = parse_run_config({"data": {"model": "logistic"}})
    none = parse_run_config({"data": {"model": "logistic", "standardize": "none"}})
    assert unset.sha256() == none.sha256()  # "none" is the default, kept out of the digest


def one_numeric_column(low: float, high: float) -> StatisticsLayout:
    """The statistics layout of a schema with one numeric column ``a`` in ``[low, high]`` and a
    binary target."""
    schema = parse_schema(
        {
            "target": "y",
            "column": [
                {"name": "a", "type": "numeric", "range": [low, high]},
                {"name": "y", "type": "binary"},
            ],
        }
    )
    return StatisticsLayout.of(schema)


def test_statistics_from_any_multiple_of_the_sum() -> None:
    """A secure average (the sum over the contributors) gives the same statistics."""
    layout = one_numeric_column(-10, 10)
    rng = np.random.default_rng(3)
    x = rng.normal(2.0, 3.0, (500, 1))
    rows = record_contributions(layout, x, rng.integers(0, 2, 500))
    assert np.linalg.norm(rows, axis=1).max() <= 1.0 + 1e-12  # the DP clipping changes nothing
    once, thrice = (statistics_from_sum(layout, rows.sum(0) / k) for k in (1, 3))
    for name in ("means", "stds", "missing_rates", "class_balance", "frequencies"):
        assert np.allclose(getattr(once, name), getattr(thrice, name), rtol=1e-12)
    assert once.means[0] == pytest.approx(np.clip(x, -10, 10).mean())


def test_the_canonical_schema_reads_back() -> None:
    schema = parse_schema(
        {
            "target": "y",
            "column": [
                {"name": "a", "type": "numeric", "range": [0, 5], "missing": "indicator"},
                {"name": "c", "type": "categorical", "categories": ["x", "y"]},
                {"name": "y", "type": "binary"},
            ],
        }
    )
    again = schema_from_canonical(schema.canonical_json())
    assert again.digest == schema.digest
    no_range = parse_schema(
        {
            "target": "y",
            "column": [{"name": "a", "type": "numeric"}, {"name": "y", "type": "binary"}],
        }
    )
    assert "range" not in no_range.canonical_json()  # older schemas keep their digest


def test_a_scaled_model_standardises_and_imputes() -> None:
    model = ModelSpec(ModelKind.LOGISTIC, num_classes=2, in_features=3, scaled=True).build(seed=0)
    scaler = feature_scaler(model)
    assert scaler is not None
    scaler.set([10.0, 0.0, 1.0], [2.0, 1.0, 1.0], [1, -1, -1])
    x = torch.tensor([[14.0, 0.0, 3.0], [0.0, 1.0, 3.0]])
    z = scaler(x)
    assert torch.allclose(z[:, 0], torch.tensor([2.0, 0.0]))  # standardised; missing -> mean


def test_a_kept_release_is_not_released_again(tmp_path: Path) -> None:
    """A run resumed before its secure sum ended reuses each institution's kept release: no
    second charge."""
    layout = one_numeric_column(0, 1)

    class Client:
        party_id = "bank-0"
        releases = 0

        def release_federation_statistics(self, layout: StatisticsLayout) -> np.ndarray:
            self.releases += 1
            return np.arange(layout.length, dtype=np.float64)

    client = Client()
    (tmp_path / "state" / "bank-0").mkdir(parents=True, mode=0o700)
    first = _released(client, layout, tmp_path)  # type: ignore[arg-type]
    again = _released(client, layout, tmp_path)  # type: ignore[arg-type]
    assert client.releases == 1
    assert np.array_equal(first, again)
    kept = tmp_path / "state" / "bank-0" / RELEASED_FILE
    assert kept.stat().st_mode & 0o777 == 0o600


def test_a_deployment_refuses_to_standardise() -> None:
    with pytest.raises(ConfigError, match="standardize"):
        check_deployable(
            parse_run_config({"data": {"model": "logistic", "standardize": "federation"}})
        )


def test_local_training_that_standardises_counts_as_a_release(tmp_path: Path) -> None:
    data, _ = _tables(tmp_path)
    config = parse_run_config(
        {
            "mode": "local",
            "rounds": 1,
            "data": {"directory": str(data), "model": "logistic", "standardize": "federation"},
            "dp": {"target_epsilon": 8.0},
        }
    )
    run_federation(config, tmp_path / "run")
    record = load_spend(data, 0)
    assert record is not None
    assert record.participations
    assert all(p.released for p in record.participations)


def test_a_column_without_usable_spread_is_never_blown_up() -> None:
    """Noise that leaves a column's variance at (or below) zero: the column is scaled by its
    range's uniform spread, not by a floor that would multiply it a hundredfold."""
    layout = one_numeric_column(0, 100)
    x = np.full((200, 1), 50.0)  # a constant column: no spread at all
    stats = statistics_from_sum(layout, record_contributions(layout, x, np.zeros(200, int)).sum(0))
    assert stats.stds[0] == pytest.approx(100 / np.sqrt(12))
    assert stats.fallbacks
