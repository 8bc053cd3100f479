"""Logistic regression, MLPs with configurable hidden sizes, and the architecture a model file
records (:class:`ModelSpec`): built, validated, saved and rebuilt from the file alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from opacus.validators import ModuleValidator
from torch import nn

from securefed.dp import DPConfig, PrivateTrainer, TrainingConfig
from securefed.errors import ConfigError
from securefed.models import (
    DEFAULT_HIDDEN,
    BinaryLogits,
    ModelKind,
    ModelSpec,
    build_model,
    flat_parameters,
    load_saved_model,
    logistic,
    mlp,
    parameter_count,
    positive_scores,
    save_model,
)


def test_binary_logistic_regression_is_one_weight_vector_and_a_sigmoid() -> None:
    model = logistic(7, 2, seed=0)
    assert [type(m) for m in model] == [nn.Linear, BinaryLogits]
    assert parameter_count(model) == 7 + 1  # the scorecard's coefficients and intercept
    assert ModuleValidator.validate(model, strict=False) == []
    x = torch.randn(5, 7, generator=torch.Generator().manual_seed(1))
    z = model[0](x)
    p = torch.softmax(model(x), dim=1)
    torch.testing.assert_close(p[:, 1:], torch.sigmoid(z))
    # cross-entropy on [0, z] is the logistic loss on z
    y = torch.tensor([0, 1, 1, 0, 1])
    torch.testing.assert_close(
        nn.functional.cross_entropy(model(x), y),
        nn.functional.binary_cross_entropy_with_logits(z[:, 0], y.float()),
    )


def test_multi_class_logistic_regression_is_softmax_regression() -> None:
    model = logistic(7, 4, seed=0)
    assert [type(m) for m in model] == [nn.Linear]
    assert model(torch.zeros(3, 7)).shape == (3, 4)
    assert parameter_count(model) == 7 * 4 + 4


def test_mlp_hidden_sizes_are_configurable_and_the_default_is_unchanged() -> None:
    assert DEFAULT_HIDDEN == (64, 32)
    default = build_model("mlp", num_classes=2, in_features=5)
    assert parameter_count(default) == 5 * 64 + 64 + 64 * 32 + 32 + 32 * 2 + 2
    narrow = build_model(ModelKind.MLP, num_classes=2, in_features=5, hidden=[16])
    assert [m.out_features for m in narrow if isinstance(m, nn.Linear)] == [16, 2]
    assert parameter_count(narrow) == 5 * 16 + 16 + 16 * 2 + 2
    seeded = build_model("logistic", num_classes=2, in_features=5, seed=3)
    again = build_model("logistic", num_classes=2, in_features=5, seed=3)
    assert (flat_parameters(seeded) == flat_parameters(again)).all()


@pytest.mark.parametrize(
    ("arguments", "match"),
    [
        ({"kind": "mlp", "num_classes": 2, "in_features": 3}, "must be a ModelKind"),
        ({"kind": ModelKind.MLP, "num_classes": 2, "in_features": 3, "hidden": ()}, "non-empty"),
        ({"kind": ModelKind.MLP, "num_classes": 2, "in_features": 3, "hidden": (8, 0)}, ">= 1"),
        ({"kind": ModelKind.MLP, "num_classes": 2, "in_features": 3, "hidden": (-4,)}, ">= 1"),
        ({"kind": ModelKind.MLP, "num_classes": 2, "in_features": 3, "hidden": (2.5,)}, ">= 1"),
        (
            {"kind": ModelKind.LOGISTIC, "num_classes": 2, "in_features": 3, "hidden": (8,)},
            "apply to the mlp only",
        ),
        ({"kind": ModelKind.CNN, "num_classes": 10, "hidden": (8,)}, "apply to the mlp only"),
        ({"kind": ModelKind.LOGISTIC, "num_classes": 2}, "logistic model needs in_features"),
        ({"kind": ModelKind.LOGISTIC, "num_classes": 1, "in_features": 3}, "num_classes"),
        ({"kind": ModelKind.LOGISTIC, "num_classes": 2, "in_features": 0}, "in_features"),
        ({"kind": ModelKind.CNN, "num_classes": 10, "in_features": 30}, "1x28x28"),
    ],
)
def test_an_invalid_architecture_cannot_be_built(arguments: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        ModelSpec(**arguments)  # type: ignore[arg-type]


def test_unknown_kinds_are_refused_by_name() -> None:
    with pytest.raises(ConfigError, match=r"unknown model kind 'tree'.*logistic"):
        build_model("tree", num_classes=2, in_features=3)


@pytest.mark.parametrize(
    "spec",
    [
        ModelSpec(ModelKind.LOGISTIC, num_classes=2, in_features=6),
        ModelSpec(ModelKind.LOGISTIC, num_classes=3, in_features=6),
        ModelSpec(ModelKind.MLP, num_classes=2, in_features=6, hidden=(16,)),
        ModelSpec(ModelKind.MLP, num_classes=2, in_features=6),
        ModelSpec(ModelKind.CNN, num_classes=10),
    ],
    ids=lambda s: f"{s.kind.value}-{s.num_classes}-{s.hidden}",
)
def test_a_file_saved_with_its_spec_is_rebuilt_from_the_file_alone(
    spec: ModelSpec, tmp_path: Path
) -> None:
    model = spec.build(seed=5)
    rng = torch.random.get_rng_state()
    save_model(model, tmp_path / "m.safetensors", metadata={"party": "bank-0"}, spec=spec)
    saved = load_saved_model(tmp_path / "m.safetensors")
    assert torch.equal(torch.random.get_rng_state(), rng)  # the global RNG is left alone
    assert saved.spec == spec
    assert saved.metadata["party"] == "bank-0"
    assert saved.metadata["model.kind"] == spec.kind.value
    assert saved.metadata["model.in_features"] == str(spec.in_features)
    assert (flat_parameters(saved.model) == flat_parameters(model)).all()
    assert not saved.model.training
    shape = (2, 1, 28, 28) if spec.kind is ModelKind.CNN else (2, 6)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    model.eval()
    torch.testing.assert_close(saved.model(x), model(x))


def test_the_spec_records_the_resolved_architecture() -> None:
    mlp_spec = ModelSpec(ModelKind.MLP, num_classes=2, in_features=6)
    assert mlp_spec.hidden == DEFAULT_HIDDEN
    assert json.loads(mlp_spec.to_metadata()["model.hidden"]) == [64, 32]
    assert ModelSpec(ModelKind.CNN, num_classes=10).in_features == 784
    assert "model.hidden" not in ModelSpec(ModelKind.LOGISTIC, 2, 6).to_metadata()
    for spec in (mlp_spec, ModelSpec(ModelKind.CNN, num_classes=62)):
        assert ModelSpec.from_metadata(spec.to_metadata()) == spec


@pytest.mark.parametrize(
    ("metadata", "match"),
    [
        ({}, "does not record its architecture"),
        ({"model.kind": "tree", "model.num_classes": "2", "model.in_features": "3"}, "tree"),
        ({"model.kind": "mlp", "model.num_classes": "-2", "model.in_features": "3"}, "classes"),
        ({"model.kind": "mlp", "model.num_classes": "2", "model.in_features": "3x"}, "features"),
        (
            {
                "model.kind": "mlp",
                "model.num_classes": "2",
                "model.in_features": "3",
                "model.hidden": "[16, true]",
            },
            "model.hidden",
        ),
        (
            {
                "model.kind": "mlp",
                "model.num_classes": "2",
                "model.in_features": "3",
                "model.hidden": "[]",
            },
            "non-empty",
        ),
    ],
)
def test_a_malformed_recorded_architecture_is_refused(metadata: dict[str, str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        ModelSpec.from_metadata(metadata)


def test_files_without_or_against_their_architecture_are_refused(tmp_path: Path) -> None:
    plain = tmp_path / "plain.safetensors"
    save_model(mlp(6, 2, hidden=(16,)), plain)
    with pytest.raises(ConfigError, match=r"plain\.safetensors.*does not record its architecture"):
        load_saved_model(plain)
    wrong = tmp_path / "wrong.safetensors"
    with pytest.raises(ConfigError, match="does not match the model"):
        save_model(
            mlp(6, 2, hidden=(16,)),
            wrong,
            spec=ModelSpec(ModelKind.MLP, num_classes=2, in_features=6, hidden=(8,)),
        )
    assert not wrong.exists()  # nothing written
    with pytest.raises(ConfigError, match="architecture keys"):
        save_model(
            logistic(6, 2),
            wrong,
            metadata={"model.kind": "cnn"},
            spec=ModelSpec(ModelKind.LOGISTIC, num_classes=2, in_features=6),
        )
    assert not wrong.exists()


def test_a_model_trained_under_dp_saves_and_rebuilds_through_the_same_path(
    tmp_path: Path,
) -> None:
    spec = ModelSpec(ModelKind.LOGISTIC, num_classes=2, in_features=4)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(200, 4, generator=generator)
    y = (x[:, 0] > 0).long()
    trainer = PrivateTrainer(
        spec.build(seed=0),
        x,
        y,
        training=TrainingConfig(lr=0.5, batch_size=20, class_weights=(1.0, 3.0)),
        dp=DPConfig(target_epsilon=8.0, delta=1e-4, noise_multiplier=1.0),
        planned_rounds=1,
        state_dir=tmp_path / "state",
        seed=1,
    )
    trainer.train_round(1)
    save_model(trainer.model(), tmp_path / "bank.safetensors", spec=spec)
    saved = load_saved_model(tmp_path / "bank.safetensors")
    assert (flat_parameters(saved.model) == flat_parameters(trainer.model())).all()
    assert not any("_module" in key for key in saved.model.state_dict())


def test_positive_scores_are_the_sigmoid_of_the_logistic_logit() -> None:
    model = logistic(3, 2, seed=0)
    model.train()
    x = torch.randn(1100, 3, generator=torch.Generator().manual_seed(2))  # more than one batch
    scores = positive_scores(model, x)
    assert scores.dtype.name == "float64"
    with torch.no_grad():
        expected = torch.sigmoid(model[0](x)[:, 0].double()).numpy()
    assert abs(scores - expected).max() < 1e-6
    assert model.training  # mode restored
    with pytest.raises(ConfigError, match="binary model"):
        positive_scores(logistic(3, 4), x)
    with pytest.raises(ConfigError, match="at least one row"):
        positive_scores(model, x[:0])
