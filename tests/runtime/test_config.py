"""The run configuration: validation with errors that name the key, and a TOML round trip."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from securefed.data import Scheme
from securefed.errors import ConfigError
from securefed.runtime.config import (
    RunMode,
    SegmentSource,
    load_run_config,
    parse_run_config,
)
from securefed.runtime.demo import DEMO_CONFIG, demo_config


def test_defaults_and_a_full_round_trip() -> None:
    raw = {
        "name": "pilot",
        "mode": "fedamp",
        "rounds": 3,
        "baselines": ["local"],
        "dropout_rate": 0.1,
        "data": {"tenants": 6, "groups": 2, "scheme": "dominant-class", "samples_per_tenant": 90},
        "training": {"lr": 0.1, "proximal_lambda": 0.1},
        "dp": {"target_epsilon": 4.0, "delta": 1e-6, "accountant": "rdp"},
        "personalize": {"segments": [0, 0, 0, 1, 1, 1], "sketch_dim": 64},
    }
    config = parse_run_config(raw)
    assert config.mode is RunMode.FEDAMP
    assert config.baselines == (RunMode.LOCAL,)
    assert config.data.scheme is Scheme.DOMINANT_CLASS
    assert config.personalize.segments == (0, 0, 0, 1, 1, 1)
    again = parse_run_config(tomllib.loads(config.to_toml()))
    assert again == config
    assert again.sha256() == config.sha256()
    assert parse_run_config({}).dp is None  # no [dp] table: no DP
    assert parse_run_config({}).personalize.segments is SegmentSource.DECLARED


@pytest.mark.parametrize(
    ("raw", "names"),
    [
        ({"rounds": 0}, "rounds"),
        ({"mode": "fedprox"}, "mode"),
        ({"modee": "group"}, "modee"),
        ({"data": {"tenant": 4}}, "tenant"),
        ({"dp": {"delta": 2.0}}, "delta"),
        ({"dp": {"target_epsilon": float("nan")}}, "dp.target_epsilon"),
        ({"training": {"lr": "fast"}}, "training.lr"),
        ({"personalize": {"segments": ["a"]}}, "segments"),
        ({"dropout_rate": 1.0}, "dropout_rate"),
        ({"mode": "local", "baselines": ["local"]}, "baselines"),
        ({"name": "../escape"}, "name"),
    ],
)
def test_bad_values_are_refused_with_the_key_named(raw: dict[str, object], names: str) -> None:
    with pytest.raises(ConfigError, match=names.replace(".", r"\.")):
        parse_run_config(raw)


def test_load_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text("rounds = [")
    with pytest.raises(ConfigError, match=r"run\.toml: invalid TOML"):
        load_run_config(path)
    with pytest.raises(ConfigError, match="cannot read"):
        load_run_config(tmp_path / "absent.toml")


def test_the_demo_configuration() -> None:
    assert DEMO_CONFIG.mode is RunMode.GROUP
    assert DEMO_CONFIG.secure
    assert DEMO_CONFIG.dp is not None
    assert set(DEMO_CONFIG.baselines) == {RunMode.LOCAL, RunMode.FEDAVG}
    fedavg = demo_config(mode=RunMode.FEDAVG, dp=False, secure=False, rounds=2)
    assert fedavg.baselines == (RunMode.LOCAL,)
    assert fedavg.dp is None
    assert not fedavg.secure
    assert fedavg.rounds == 2
