"""FeatureScaler and scaled models: the federation's standardisation as a fixed first layer of
buffers -- the math (missing cells imputed by the mean), validation that leaves the layer
unchanged, never a parameter (so never trained or aggregated), recorded in the model file's
metadata and saved with the weights, and untouched by DP-SGD."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
from opacus import GradSampleModule
from opacus.validators import ModuleValidator
from torch import nn

from securefed.dp import DPConfig, GradSampleMode, PrivateTrainer, TrainingConfig
from securefed.errors import ConfigError
from securefed.models import (
    FeatureScaler,
    ModelKind,
    ModelSpec,
    build_model,
    feature_scaler,
    flat_parameters,
    load_model,
    load_saved_model,
    save_model,
)

# columns: 0 age, 1 income, 2 income:missing, 3 debt, 4 debt:missing, 5 has_phone
FEATURES = 6
SHIFT = np.array([40.0, 3000.0, 0.0, 500.0, 0.0, 0.0], dtype=np.float32)
SCALE = np.array([12.0, 900.0, 1.0, 250.0, 1.0, 1.0], dtype=np.float32)
INDICATOR = np.array([-1, 2, -1, 4, -1, -1], dtype=np.int64)


def _records(n: int, *, seed: int = 0) -> np.ndarray:
    """Rows as the import writes them: a missing cell is 0.0 with its indicator 1."""
    rng = np.random.default_rng(seed)
    x = np.column_stack(
        [
            rng.normal(40, 12, n),
            rng.normal(3000, 900, n),
            np.zeros(n),
            rng.normal(500, 250, n),
            np.zeros(n),
            rng.integers(0, 2, n),
        ]
    )
    for value, flag in ((1, 2), (3, 4)):
        missing = rng.random(n) < 0.3
        x[missing, value], x[missing, flag] = 0.0, 1.0
    return x.astype(np.float32)


def _scaler() -> FeatureScaler:
    scaler = FeatureScaler(FEATURES)
    scaler.set(SHIFT, SCALE, INDICATOR)
    return scaler


def _scaled(kind: ModelKind, *, seed: int = 0) -> tuple[ModelSpec, nn.Module]:
    hidden = (8,) if kind is ModelKind.MLP else None
    spec = ModelSpec(kind, num_classes=2, in_features=FEATURES, hidden=hidden, scaled=True)
    model = spec.build(seed=seed)
    scaler = feature_scaler(model)
    assert scaler is not None
    scaler.set(SHIFT, SCALE, INDICATOR)
    return spec, model


# --- the math ------------------------------------------------------------------------------


def test_the_scaler_standardises_and_imputes_missing_cells_by_the_mean() -> None:
    x = _records(200)
    expected = (x.astype(np.float64) - SHIFT) / SCALE
    for value, flag in ((1, 2), (3, 4)):
        expected[x[:, flag] == 1, value] = 0.0  # the federation mean, standardised
    with torch.no_grad():
        z = _scaler()(torch.from_numpy(x)).numpy()
    assert z.dtype == np.float32
    np.testing.assert_allclose(z, expected, rtol=1e-6, atol=1e-6)
    assert (x[:, 2] == 1).any()  # both cases were exercised
    assert (x[:, 4] == 1).any()
    # the indicators and the binary column pass through unchanged
    np.testing.assert_array_equal(z[:, [2, 4, 5]], x[:, [2, 4, 5]])


def test_a_new_scaler_is_the_identity_and_its_state_is_buffers() -> None:
    scaler = FeatureScaler(FEATURES)
    x = torch.from_numpy(_records(5))
    torch.testing.assert_close(scaler(x), x, rtol=0, atol=0)
    assert list(scaler.parameters()) == []
    assert {k: v.dtype for k, v in scaler.state_dict().items()} == {
        "shift": torch.float32,
        "scale": torch.float32,
        "indicator": torch.int64,
    }
    assert scaler.indicator.tolist() == [-1] * FEATURES


# --- validation: refused, and the buffers unchanged ----------------------------------------


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"shift": SHIFT[:-1]}, r"shift must have shape \(6,\)"),
        ({"scale": np.ones((2, FEATURES))}, r"scale must have shape \(6,\)"),
        ({"shift": np.where(np.arange(FEATURES) == 3, np.nan, SHIFT)}, r"shift\[3\].*finite"),
        ({"scale": np.where(np.arange(FEATURES) == 1, np.inf, SCALE)}, r"scale\[1\].*finite"),
        ({"shift": np.full(FEATURES, 1e39)}, r"shift\[0\].*finite float32"),  # beyond float32
        ({"scale": np.where(np.arange(FEATURES) == 0, 0.0, SCALE)}, r"scale\[0\].*> 0"),
        ({"scale": -SCALE}, r"scale\[0\].*> 0"),
        ({"scale": np.full(FEATURES, 1e-50)}, r"scale\[0\].*> 0"),  # 0 as float32
        ({"shift": ["a"] * FEATURES}, "must hold numbers"),
        ({"shift": [True] * FEATURES}, "must hold numbers"),
        ({"shift": [[1.0], [2.0, 3.0]]}, "not an array of numbers"),
        ({"indicator": INDICATOR.astype(np.float64)}, "indicator must hold integers"),
        ({"indicator": INDICATOR[:3]}, r"indicator must have shape \(6,\)"),
        ({"indicator": [-1, 2, -1, 6, -1, -1]}, r"indicator\[3\] = 6 is not a column"),
        ({"indicator": [-2, 2, -1, 4, -1, -1]}, r"indicator\[0\] = -2 is not a column"),
        ({"indicator": [-1, 1, -1, 4, -1, -1]}, r"indicator\[1\] points at its own column"),
        (  # would wrap to -1 (no indicator) as int64
            {"indicator": np.full(FEATURES, 2**64 - 1, dtype=np.uint64)},
            r"indicator\[0\] = 18446744073709551615 is not a column",
        ),
    ],
)
def test_set_refuses_bad_values_and_leaves_the_scaler_unchanged(
    change: dict[str, object], match: str
) -> None:
    scaler = _scaler()
    before = {k: v.clone() for k, v in scaler.state_dict().items()}
    values: dict[str, object] = {"shift": SHIFT, "scale": SCALE, "indicator": INDICATOR}
    with pytest.raises(ConfigError, match=match):
        scaler.set(**{**values, **change})  # type: ignore[arg-type]
    for key, tensor in scaler.state_dict().items():
        assert torch.equal(tensor, before[key])
        assert tensor.dtype == before[key].dtype


def test_set_takes_tensors_and_lists_and_copies_in_place() -> None:
    scaler = FeatureScaler(FEATURES)
    shift_storage = scaler.shift.data_ptr()
    scaler.set(torch.from_numpy(SHIFT), SCALE.tolist(), torch.from_numpy(INDICATOR))
    assert scaler.shift.data_ptr() == shift_storage
    np.testing.assert_array_equal(scaler.shift.numpy(), SHIFT)
    np.testing.assert_array_equal(scaler.scale.numpy(), SCALE)
    assert scaler.indicator.tolist() == INDICATOR.tolist()
    assert scaler.indicator.dtype == torch.int64


def test_a_scaler_needs_a_positive_width() -> None:
    with pytest.raises(ConfigError, match="features"):
        FeatureScaler(0)


# --- the scaled models -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", [ModelKind.LOGISTIC, ModelKind.MLP])
def test_a_scaled_model_is_the_scaler_then_the_unscaled_model_with_the_same_parameters(
    kind: ModelKind,
) -> None:
    spec, model = _scaled(kind, seed=3)
    assert isinstance(model, nn.Sequential)
    assert [name for name, _ in model.named_children()] == ["scaler", "model"]
    assert feature_scaler(model) is model.scaler
    assert ModuleValidator.validate(model, strict=False) == []
    buffers = {id(b) for b in model.buffers()}
    assert len(buffers) == 3
    assert not buffers & {id(p) for p in model.parameters()}
    assert all(not name.startswith("scaler.") for name, _ in model.named_parameters())
    assert (flat_parameters(model) == flat_parameters(model.model)).all()
    unscaled = ModelSpec(kind, 2, FEATURES, hidden=spec.hidden).build(seed=3)
    assert (flat_parameters(model) == flat_parameters(unscaled)).all()
    x = torch.from_numpy(_records(7))
    with torch.no_grad():
        torch.testing.assert_close(model(x), unscaled(model.scaler(x)), rtol=0, atol=0)
    assert model(x).shape == (7, 2)


def test_only_scaled_models_have_a_scaler() -> None:
    assert feature_scaler(build_model("logistic", num_classes=2, in_features=3)) is None
    assert feature_scaler(build_model("cnn", num_classes=10)) is None
    assert feature_scaler(FeatureScaler(3)) is None  # the layer alone is not a scaled model
    scaled = build_model("mlp", num_classes=3, in_features=3, hidden=[4], scaled=True)
    assert isinstance(feature_scaler(scaled), FeatureScaler)


def test_the_scaler_is_found_and_set_through_an_opacus_wrapper() -> None:
    _, model = _scaled(ModelKind.LOGISTIC)
    wrapped = GradSampleModule(model)
    scaler = feature_scaler(wrapped)
    assert scaler is model.scaler
    scaler.set(np.zeros(FEATURES), np.full(FEATURES, 2.0), np.full(FEATURES, -1))
    assert model.scaler.scale.tolist() == [2.0] * FEATURES
    assert (flat_parameters(wrapped) == flat_parameters(model.model)).all()


def test_a_scaled_cnn_or_a_scaled_flag_that_is_not_a_bool_is_refused() -> None:
    with pytest.raises(ConfigError, match="not to the cnn"):
        ModelSpec(ModelKind.CNN, num_classes=10, scaled=True)
    with pytest.raises(ConfigError, match="scaled must be true or false"):
        ModelSpec(ModelKind.LOGISTIC, 2, 3, scaled="yes")  # type: ignore[arg-type]


# --- metadata and files ------------------------------------------------------------------------


def test_the_metadata_records_scaled_only_when_scaled() -> None:
    plain = ModelSpec(ModelKind.MLP, num_classes=2, in_features=FEATURES, hidden=(8,))
    scaled = ModelSpec(ModelKind.MLP, num_classes=2, in_features=FEATURES, hidden=(8,), scaled=True)
    assert "model.scaled" not in plain.to_metadata()
    assert scaled.to_metadata() == {**plain.to_metadata(), "model.scaled": "true"}
    for spec in (plain, scaled, ModelSpec(ModelKind.LOGISTIC, 2, FEATURES, scaled=True)):
        assert ModelSpec.from_metadata(spec.to_metadata()) == spec
    # old files (no model.scaled) are unscaled; "false" is accepted as well
    old = {"model.kind": "logistic", "model.num_classes": "2", "model.in_features": "6"}
    assert ModelSpec.from_metadata(old).scaled is False
    assert ModelSpec.from_metadata({**old, "model.scaled": "false"}).scaled is False


@pytest.mark.parametrize("value", ["True", "1", "yes", ""])
def test_a_malformed_scaled_flag_is_refused_naming_the_key(value: str) -> None:
    metadata = {
        "model.kind": "logistic",
        "model.num_classes": "2",
        "model.in_features": "6",
        "model.scaled": value,
    }
    with pytest.raises(ConfigError, match=r"model\.scaled = .* is not true or false"):
        ModelSpec.from_metadata(metadata)


def test_a_scaled_cnn_in_a_file_is_refused() -> None:
    metadata = {"model.kind": "cnn", "model.num_classes": "10", "model.in_features": "784"}
    with pytest.raises(ConfigError, match="not to the cnn"):
        ModelSpec.from_metadata({**metadata, "model.scaled": "true"})


@pytest.mark.parametrize("kind", [ModelKind.LOGISTIC, ModelKind.MLP])
def test_a_saved_scaled_model_loads_back_with_its_scaler_and_the_same_outputs(
    kind: ModelKind, tmp_path: Path
) -> None:
    spec, model = _scaled(kind, seed=5)
    path = tmp_path / "bank.safetensors"
    save_model(model, path, metadata={"party": "bank-0"}, spec=spec)
    saved = load_saved_model(path)
    assert saved.spec == spec
    assert saved.metadata["model.scaled"] == "true"
    scaler = feature_scaler(saved.model)
    assert scaler is not None
    np.testing.assert_array_equal(scaler.shift.numpy(), SHIFT)
    np.testing.assert_array_equal(scaler.scale.numpy(), SCALE)
    assert scaler.indicator.tolist() == INDICATOR.tolist()
    x = torch.from_numpy(_records(50, seed=1))
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(saved.model(x), model(x), rtol=0, atol=0)
    # load_model into a fresh scaled model: the same
    fresh = spec.build()
    load_model(fresh, path)
    assert torch.equal(fresh.scaler.indicator, model.scaler.indicator)


def test_scaled_and_unscaled_files_do_not_load_into_each_other(tmp_path: Path) -> None:
    spec, model = _scaled(ModelKind.LOGISTIC)
    plain_spec = ModelSpec(ModelKind.LOGISTIC, 2, FEATURES)
    with pytest.raises(ConfigError, match="does not match the model"):
        save_model(model, tmp_path / "a.safetensors", spec=plain_spec)
    with pytest.raises(ConfigError, match="does not match the model"):
        save_model(plain_spec.build(), tmp_path / "b.safetensors", spec=spec)
    save_model(model, tmp_path / "c.safetensors", spec=spec)
    with pytest.raises(ConfigError, match=r"unexpected keys .*'scaler\.indicator'"):
        load_model(plain_spec.build(), tmp_path / "c.safetensors")


def test_a_file_with_scaler_values_that_set_refuses_is_refused_and_the_model_unchanged(
    tmp_path: Path,
) -> None:
    spec, model = _scaled(ModelKind.LOGISTIC)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    path = tmp_path / "forged.safetensors"
    _, target = _scaled(ModelKind.LOGISTIC, seed=9)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    for key, value, match in (
        ("scaler.indicator", torch.tensor([-1, 1, -1, 4, -1, -1]), "points at its own column"),
        ("scaler.indicator", torch.tensor([-1, 2, -1, 9, -1, -1]), "is not a column"),
        ("scaler.indicator", torch.from_numpy(INDICATOR).float(), "must hold integers"),
        ("scaler.scale", torch.zeros(FEATURES), "> 0"),
        ("scaler.shift", torch.full((FEATURES,), float("nan")), "finite"),
    ):
        forged = {**state, key: value}
        meta = spec.to_metadata()
        path.write_bytes(safetensors.torch.save(forged, metadata=meta))
        with pytest.raises(ConfigError, match=rf"forged\.safetensors: scaler .*{match}"):
            load_model(target, path)
        with pytest.raises(ConfigError, match=match):
            load_saved_model(path)
        for k, v in target.state_dict().items():
            assert torch.equal(v, before[k])


# --- DP training leaves the scaler alone ----------------------------------------------------------


def test_a_dp_round_trains_a_scaled_logistic_model_and_leaves_its_scaler_unchanged(
    tmp_path: Path,
) -> None:
    spec, model = _scaled(ModelKind.LOGISTIC, seed=0)
    x = _records(120, seed=2)
    y = torch.from_numpy(((x[:, 0] - 40) / 12 + (x[:, 5] - 0.5) > 0).astype(np.int64))
    scaler_state = {k: v.clone() for k, v in model.scaler.state_dict().items()}
    before = flat_parameters(model)
    trainer = _trainer(model, torch.from_numpy(x), y, tmp_path / "state")
    assert trainer.fixes == ()
    assert trainer.grad_sample_mode is GradSampleMode.GHOST
    trainer.train_round(1)
    trained = trainer.model()
    after = flat_parameters(trained)
    assert after.shape == before.shape == (FEATURES + 1,)  # the scaler adds no parameter
    assert not (after == before).all()
    assert np.isfinite(after).all()
    scaler = feature_scaler(trained)
    assert scaler is not None
    for key, tensor in scaler.state_dict().items():
        assert torch.equal(tensor, scaler_state[key])
    save_model(trained, tmp_path / "bank.safetensors", spec=spec)
    saved = load_saved_model(tmp_path / "bank.safetensors")
    assert (flat_parameters(saved.model) == after).all()
    assert torch.equal(saved.model.scaler.shift, torch.from_numpy(SHIFT))
    # the same round of the unscaled model on the scaled records: the same parameters
    plain = ModelSpec(ModelKind.LOGISTIC, 2, FEATURES).build(seed=0)
    with torch.no_grad():
        standardised = model.scaler(torch.from_numpy(x))
    reference = _trainer(plain, standardised, y, tmp_path / "reference")
    reference.train_round(1)
    np.testing.assert_array_equal(flat_parameters(reference.model()), after)


def _trainer(model: nn.Module, x: torch.Tensor, y: torch.Tensor, state: Path) -> PrivateTrainer:
    return PrivateTrainer(
        model,
        x,
        y,
        training=TrainingConfig(lr=0.5, batch_size=20),
        dp=DPConfig(target_epsilon=8.0, delta=1e-4, noise_multiplier=1.0),
        planned_rounds=1,
        state_dir=state,
        seed=1,
    )
