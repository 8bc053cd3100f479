"""securefed.models io/params/metrics: safetensors files without ``_module.``, flat vectors,
accuracy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import safetensors
import torch
from opacus import GradSampleModule
from torch import nn

from securefed.dp import AccountantKind, DPStepper, TrainingConfig
from securefed.errors import ConfigError
from securefed.models import (
    cnn,
    evaluate,
    flat_parameters,
    load_flat_parameters,
    load_model,
    mlp,
    save_model,
    unwrap,
)


def _keys(path: Path) -> list[str]:
    with safetensors.safe_open(str(path), framework="pt") as handle:
        return list(handle.keys())


def test_save_and_load_round_trip_with_metadata(tmp_path: Path) -> None:
    model = cnn(10, seed=1)
    path = tmp_path / "client-3.safetensors"
    save_model(model, path, metadata={"round": "7", "client": "3"})
    fresh = cnn(10, seed=2)
    assert load_model(fresh, path) == {"round": "7", "client": "3"}
    np.testing.assert_array_equal(flat_parameters(fresh), flat_parameters(model))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["client-3.safetensors"]  # no temp file


def test_a_wrapped_model_is_saved_without_the_module_prefix(tmp_path: Path) -> None:
    model = mlp(4, 3, hidden=(8,), seed=0)
    wrapped = GradSampleModule(model)
    assert all(k.startswith("_module.") for k in wrapped.state_dict())  # what would leak
    path = tmp_path / "wrapped.safetensors"
    save_model(wrapped, path)
    keys = _keys(path)
    assert keys
    assert not any("_module." in k for k in keys)
    assert sorted(keys) == sorted(model.state_dict())
    fresh = mlp(4, 3, hidden=(8,), seed=9)
    load_model(fresh, path)
    np.testing.assert_array_equal(flat_parameters(fresh), flat_parameters(model))
    assert unwrap(wrapped) is model
    np.testing.assert_array_equal(flat_parameters(wrapped), flat_parameters(model))


def test_a_model_trained_with_dp_saves_plain_keys(tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(10, 4, generator=generator)
    y = torch.arange(10) % 3
    stepper = DPStepper(
        mlp(4, 3, hidden=(8,), seed=0),
        train_x=x,
        train_y=y,
        training=TrainingConfig(batch_size=10),
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        expected_batch_size=10.0,
        accountant=AccountantKind.RDP,
        ghost_clipping=True,
        noise_generator=generator,
        secure_mode=False,
    )
    stepper.step(x, y, None)
    path = tmp_path / "trained.safetensors"
    save_model(stepper.wrapped, path)  # even the Opacus wrapper itself
    assert not any("_module." in k for k in _keys(path))
    fresh = mlp(4, 3, hidden=(8,))
    load_model(fresh, path)
    np.testing.assert_array_equal(flat_parameters(fresh), flat_parameters(stepper.module))


def test_a_pickle_checkpoint_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save(cnn(10).state_dict(), path)  # a pickle: never to be loaded
    with pytest.raises(ConfigError, match="not a readable safetensors model file"):
        load_model(cnn(10), path)


def test_a_mismatched_file_is_refused_and_the_model_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_model(mlp(4, 3, hidden=(8,), seed=0), path)
    target = mlp(4, 3, hidden=(16,), seed=1)
    before = flat_parameters(target)
    with pytest.raises(ConfigError, match="shape mismatches"):
        load_model(target, path)
    np.testing.assert_array_equal(flat_parameters(target), before)
    other = mlp(4, 3, hidden=(8, 8), seed=1)
    with pytest.raises(ConfigError, match="missing keys"):
        load_model(other, path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_model(target, tmp_path / "absent.safetensors")


def test_metadata_must_be_strings(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="strings to strings"):
        save_model(mlp(4, 3), tmp_path / "m.safetensors", metadata={"round": 7})  # type: ignore[dict-item]


def test_flat_parameters_round_trip_and_errors_leave_the_model_unchanged() -> None:
    model = mlp(4, 3, hidden=(8,), seed=0)
    vector = np.arange(4 * 8 + 8 + 8 * 3 + 3, dtype=np.float64) / 100
    load_flat_parameters(model, vector)
    np.testing.assert_allclose(flat_parameters(model), vector, rtol=1e-6)
    assert model[0].weight[0, 1].item() == pytest.approx(0.01)  # parameters() order, row-major
    before = flat_parameters(model)
    for bad, match in [
        (vector[:-1], "has 66 values, the model has 67"),
        (vector.reshape(1, -1), "must be 1-D"),
        (np.where(vector > 0.5, np.inf, vector), "NaN or infinite"),
    ]:
        with pytest.raises(ConfigError, match=match):
            load_flat_parameters(model, bad)
        np.testing.assert_array_equal(flat_parameters(model), before)


def test_evaluate_counts_top1_and_restores_the_mode() -> None:
    model = nn.Sequential(nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.eye(2))  # predicts the larger coordinate
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [2.0, 3.0]])
    y = torch.tensor([0, 1, 1, 0])
    model.train()
    assert evaluate(model, x, y, batch_size=3) == 0.5
    assert model.training
    with pytest.raises(ConfigError, match="as many labels as inputs"):
        evaluate(model, x, y[:2])
    with pytest.raises(ConfigError, match="batch_size must be >= 1"):
        evaluate(model, x, y, batch_size=0)
