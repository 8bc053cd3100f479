"""The run configuration: validation with errors that name the key, and a TOML round trip."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from securefed.data import Scheme
from securefed.errors import ConfigError
from securefed.personalize.rounds import RoundParams
from securefed.runtime.config import (
    PersonalizationMode,
    SegmentSource,
    SimilaritySource,
    load_run_config,
    parse_run_config,
)
from securefed.runtime.demo import DEMO_CONFIG, demo_config
from securefed.runtime.engine.settings import round_params


def test_defaults_and_a_full_round_trip() -> None:
    raw = {
        "name": "pilot",
        "mode": "fedamp",
        "rounds": 3,
        "baselines": ["local"],
        "dropout_rate": 0.1,
        "data": {"tenants": 6, "groups": 2, "scheme": "dominant-class", "samples_per_tenant": 90},
        "training": {"lr": 0.1, "proximal_lambda": 0.1},
        "dp": {"target_epsilon": 4.0, "delta": 1e-6, "accountant": "rdp", "statistic_epsilon": 0.5},
        "personalize": {
            "segments": [0, 0, 0, 1, 1, 1],
            "sketch_dim": 64,
            "similarity": "statistic",
        },
    }
    config = parse_run_config(raw)
    assert config.mode is PersonalizationMode.FEDAMP
    assert config.baselines == (PersonalizationMode.LOCAL,)
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
        ({"personalize": {"similarity": "gradients"}}, "personalize.similarity"),
        ({"personalize": {"statistic_dim": 0}}, "personalize.statistic_dim"),
        ({"personalize": {"statistic_dim": 5000}}, "personalize.statistic_dim"),
        ({"dp": {"target_epsilon": 2.0, "statistic_epsilon": 2.0}}, "dp.statistic_epsilon"),
    ],
)
def test_bad_values_are_refused_with_the_key_named(raw: dict[str, object], names: str) -> None:
    with pytest.raises(ConfigError, match=names.replace(".", r"\.")):
        parse_run_config(raw)


def test_which_runs_release_the_statistic_and_with_what_epsilon() -> None:
    statistic = {"similarity": "statistic"}
    learned = parse_run_config(
        {
            "mode": "group",
            "dp": {"target_epsilon": 8.0},
            "personalize": {**statistic, "segments": "learned"},
        }
    )
    assert learned.personalize.similarity is SimilaritySource.STATISTIC
    assert learned.uses_statistic
    assert learned.statistic_epsilon == 2.0  # a quarter of the target by default
    explicit = parse_run_config(
        {"mode": "heurfedamp", "dp": {"statistic_epsilon": 1.0}, "personalize": statistic}
    )
    assert explicit.uses_statistic
    assert explicit.statistic_epsilon == 1.0
    declared = parse_run_config({"mode": "group", "dp": {}, "personalize": statistic})
    assert not declared.uses_statistic  # declared segments learn nothing
    assert declared.statistic_epsilon is None
    no_dp = parse_run_config({"mode": "fedamp", "personalize": statistic})
    assert no_dp.uses_statistic  # released exactly, without noise
    assert no_dp.statistic_epsilon is None
    assert not parse_run_config({"mode": "fedamp"}).uses_statistic


def test_load_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text("rounds = [")
    with pytest.raises(ConfigError, match=r"run\.toml: invalid TOML"):
        load_run_config(path)
    with pytest.raises(ConfigError, match="cannot read"):
        load_run_config(tmp_path / "absent.toml")


def test_the_demo_configuration() -> None:
    assert DEMO_CONFIG.mode is PersonalizationMode.GROUP
    assert DEMO_CONFIG.secure
    assert DEMO_CONFIG.dp is not None
    assert set(DEMO_CONFIG.baselines) == {PersonalizationMode.LOCAL, PersonalizationMode.FEDAVG}
    fedavg = demo_config(mode=PersonalizationMode.FEDAVG, dp=False, secure=False, rounds=2)
    assert fedavg.baselines == (PersonalizationMode.LOCAL,)
    assert fedavg.dp is None
    assert not fedavg.secure
    assert fedavg.rounds == 2


def test_the_exposure_rule_is_configured_and_unset_keys_keep_the_hash() -> None:
    base = {"mode": "fedamp", "data": {"tenants": 6}}
    plain = parse_run_config(base)
    assert round_params(plain).colluders == RoundParams().colluders
    assert round_params(plain).min_exposure == RoundParams().min_exposure
    assert "colluders" not in plain.to_dict()["personalize"]  # old configs keep their sha256
    set_ = parse_run_config({**base, "personalize": {"colluders": 2, "min_exposure": 0.6}})
    params = round_params(set_)
    assert (params.colluders, params.min_exposure) == (2, 0.6)
    assert parse_run_config(tomllib.loads(set_.to_toml())) == set_
    assert set_.sha256() != plain.sha256()
    for bad, key in (
        ({"colluders": -1}, "personalize.colluders"),
        ({"min_exposure": 1.0}, "personalize.min_exposure"),
        ({"min_exposure": -0.5}, "personalize.min_exposure"),
    ):
        with pytest.raises(ConfigError, match=key):
            parse_run_config({**base, "personalize": bad})
