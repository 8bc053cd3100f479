"""``[data] model`` / ``hidden`` and ``[training] class_weights`` in the run configuration:
parsed, validated with the key named, round-tripped, and existing configurations unchanged."""

from __future__ import annotations

import math
import tomllib

import pytest

from securefed.errors import ConfigError
from securefed.runtime.config import ModelName, parse_run_config


def test_the_tabular_models_and_class_weights_parse_and_round_trip() -> None:
    config = parse_run_config(
        {
            "data": {"model": "mlp", "hidden": [16, 8]},
            "training": {"class_weights": [1, 50.0]},
        }
    )
    assert config.data.model is ModelName.MLP
    assert config.data.hidden == (16, 8)
    assert config.training.class_weights == (1.0, 50.0)
    again = parse_run_config(tomllib.loads(config.to_toml()))
    assert again == config
    assert again.sha256() == config.sha256()
    logistic = parse_run_config({"data": {"model": "logistic"}})
    assert logistic.data.model is ModelName.LOGISTIC
    assert logistic.data.hidden is None


def test_configurations_without_the_new_keys_are_unchanged() -> None:
    """The defaults are absent keys: an existing configuration keeps its digest."""
    config = parse_run_config({"data": {"model": "mlp"}})
    assert config.data.hidden is None  # the MLP's default widths (64, 32)
    assert config.training.class_weights is None
    assert "hidden" not in config.to_dict()["data"]
    assert "class_weights" not in config.to_dict()["training"]
    assert "hidden" not in config.to_toml()
    assert parse_run_config({}).data.model is ModelName.CNN


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ({"data": {"model": "tree"}}, r"data\.model = 'tree' is not one of .*'logistic'"),
        ({"data": {"model": "mlp", "hidden": []}}, r"data\.hidden must be a non-empty list"),
        ({"data": {"model": "mlp", "hidden": [16, 0]}}, r"data\.hidden .* integers >= 1"),
        ({"data": {"model": "mlp", "hidden": [-8]}}, r"data\.hidden .* integers >= 1"),
        ({"data": {"model": "mlp", "hidden": [16.5]}}, r"data\.hidden .* integers >= 1"),
        ({"data": {"model": "mlp", "hidden": [True]}}, r"data\.hidden .* integers >= 1"),
        ({"data": {"model": "mlp", "hidden": 16}}, r"data\.hidden .* list"),
        ({"data": {"model": "logistic", "hidden": [16]}}, r'data\.hidden applies to model = "mlp"'),
        ({"data": {"hidden": [16]}}, r'data\.hidden applies to model = "mlp" only.*"cnn"'),
        ({"training": {"class_weights": [1.0]}}, r"training\.class_weights must list one weight"),
        ({"training": {"class_weights": 50.0}}, r"training\.class_weights must list one weight"),
        (
            {"training": {"class_weights": [1.0, -50.0]}},
            r"class_weights\[1\] must be finite and > 0",
        ),
        ({"training": {"class_weights": [0, 1.0]}}, r"class_weights\[0\] must be finite and > 0"),
        ({"training": {"class_weights": [1.0, math.nan]}}, r"class_weights\[1\] must be finite"),
        ({"training": {"class_weights": [1.0, math.inf]}}, r"class_weights\[1\] must be finite"),
        ({"training": {"class_weights": [1.0, "50"]}}, r"class_weights\[1\] must be a number"),
        ({"training": {"class_weights": [False, 1.0]}}, r"class_weights\[0\] must be a number"),
        ({"training": {"pos_weight": 50.0}}, r"unknown key\(s\) in \[training\]: pos_weight"),
    ],
)
def test_invalid_model_settings_are_configuration_errors(
    raw: dict[str, object], match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_run_config(raw)
