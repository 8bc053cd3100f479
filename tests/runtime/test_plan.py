"""securefed.runtime.plan (``securefed run --dry-run``): the run's checks and its DP plan, with
nothing written -- not the run directory, not the data home, not the records' spend record."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from securefed.dp import AccountantKind, epsilon_for
from securefed.errors import ConfigError
from securefed.runtime.config import DataConfig, DPSettings, RunConfig, TrainingSettings
from securefed.runtime.demo import demo_config
from securefed.runtime.plan import plan_run
from securefed.runtime.tenants import data_home, load_run_tenants, peek_run_tenants

SMALL = RunConfig(
    name="plan",
    rounds=2,
    data=DataConfig(tenants=4, groups=1, samples_per_tenant=120),
    training=TrainingSettings(batch_size=32),
    dp=DPSettings(target_epsilon=4.0, delta=1e-4),
)


def _files(directory: Path) -> list[str]:
    return sorted(str(p) for p in directory.rglob("*")) if directory.exists() else []


def test_a_plan_of_an_unprepared_source_writes_nothing(tmp_path: Path) -> None:
    home = data_home()
    before = _files(home)
    plan = plan_run(SMALL, tmp_path / "run", estimate=False)
    assert _files(home) == before  # not prepared into the data home
    assert not (tmp_path / "run").exists()
    assert not (tmp_path / "run.partial").exists()
    assert [p.party for p in plan.parties] == ["bank-0", "bank-1", "bank-2", "bank-3"]
    assert plan.seconds is None
    for party in plan.parties:
        assert party.sample_rate == pytest.approx(32 / party.train_records)
        assert party.steps_per_round == party.train_records // 32
        assert party.noise_multiplier is not None
        assert party.sample_rate is not None
        assert party.steps_per_round is not None
        history = ((party.noise_multiplier, party.sample_rate, 2 * party.steps_per_round),)
        assert party.projected_epsilon == epsilon_for(AccountantKind.PRV, history, 1e-4)
        assert 3.9 < (party.projected_epsilon or 0) <= 4.0
        assert party.projected_epsilon_pld == pytest.approx(party.projected_epsilon, rel=0.02)


def test_peeking_gives_what_loading_gives(tmp_path: Path) -> None:
    config = demo_config(tenants=9)
    peeked = peek_run_tenants(config.data, tmp_path / "run.partial", copy=True)
    assert not (tmp_path / "run.partial").exists()
    loaded = load_run_tenants(config.data, tmp_path / "run.partial", copy=True)
    assert peeked.segments == loaded.segments
    assert peeked.num_classes == loaded.num_classes
    assert peeked.directory == loaded.directory
    for a, b in zip(peeked.tenants, loaded.tenants, strict=True):
        assert a.index == b.index
        assert (a.train_y == b.train_y).all()


def test_a_plan_matches_the_sigma_the_demo_trains_with(tmp_path: Path) -> None:
    """The demo's bank-0 (331 records, q = 64/331, 5 steps a round, 20 rounds) trains with
    sigma 1.409912109375 (runs/demo's ledgers); the plan says the same."""
    plan = plan_run(demo_config(), tmp_path / "demo", copy_data=True, estimate=False)
    bank0 = plan.parties[0]
    assert (bank0.train_records, bank0.steps_per_round) == (331, 5)
    assert bank0.noise_multiplier == 1.409912109375
    assert plan.composed_epsilon_pld == pytest.approx(14.9, abs=0.05)  # three methods
    assert "every method trains the same records: over all 3" in plan.describe()


def test_a_plan_refuses_what_the_run_refuses(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="group 0 has 2 members"):
        plan_run(demo_config(tenants=6), tmp_path / "demo", copy_data=True, estimate=False)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    with pytest.raises(ConfigError, match="is not empty"):
        plan_run(SMALL, tmp_path / "busy", estimate=False)
    tiny = dataclasses.replace(SMALL, dp=DPSettings(target_epsilon=1e-6, delta=1e-4))
    with pytest.raises(ConfigError, match="no noise multiplier reaches"):
        plan_run(tiny, tmp_path / "run", estimate=False)
    assert sorted(os.listdir(tmp_path)) == ["busy"]


def test_the_estimate_times_a_real_round(tmp_path: Path) -> None:
    plan = plan_run(SMALL, tmp_path / "run")
    assert plan.seconds is not None
    assert plan.seconds > 0
    assert "estimated training time: about" in plan.describe()
    assert plan.to_dict()["estimated_seconds"] == round(plan.seconds, 1)
