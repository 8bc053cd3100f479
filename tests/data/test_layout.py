"""The seed layout: ModelArts-compatible loading, validation with file names, safe writing."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest

from securefed.data import (
    DataFormatError,
    TenantData,
    load_tenants,
    num_classes,
    write_tenants,
)
from securefed.errors import ConfigError

PARTS = ("client_train_samples", "client_train_labels", "client_test_samples", "client_test_labels")


def save_tenant(
    directory: Path,
    index: int,
    *,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
) -> None:
    arrays = (train[0], train[1], test[0], test[1])
    for part, array in zip(PARTS, arrays, strict=True):
        np.save(directory / f"{part}_{index}.npy", array, allow_pickle=False)


def images(n: int, seed: int = 0, *, flat: bool = False, dtype: type = np.float32) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.random((n, 784) if flat else (n, 28, 28))
    return x.astype(dtype)


def labels(n: int, classes: int = 10, seed: int = 0, *, dtype: type = np.float64) -> np.ndarray:
    return np.random.default_rng(seed + 1).integers(0, classes, n).astype(dtype)


def emnist_like(directory: Path, tenants: int = 62, classes: int = 62) -> None:
    """A small stand-in for the ModelArts EMNIST directory: float samples, float labels."""
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(tenants):
        save_tenant(
            directory,
            i,
            train=(images(8, i, dtype=np.float64), labels(8, classes, i)),
            test=(images(3, 100 + i, dtype=np.float64), labels(3, classes, 100 + i)),
        )
    # make sure the last class occurs, so num_classes is exactly `classes`
    np.save(
        directory / "client_train_labels_0.npy",
        np.array([classes - 1] + [0] * 7, dtype=np.float64),
        allow_pickle=False,
    )


def test_emnist_like_directory_loads_unchanged(tmp_path: Path) -> None:
    emnist_like(tmp_path)
    tenants = load_tenants(tmp_path)
    assert [t.index for t in tenants] == list(range(62))
    assert num_classes(tenants) == 62
    t = tenants[5]
    assert t.train_x.shape == (8, 1, 28, 28)
    assert t.train_x.dtype == np.float32
    assert t.test_x.shape == (3, 1, 28, 28)
    assert t.test_y.dtype == np.int64
    raw = np.load(tmp_path / "client_train_samples_5.npy", allow_pickle=False)
    np.testing.assert_array_equal(t.train_x[:, 0], raw.astype(np.float32))  # not rescaled
    np.testing.assert_array_equal(
        t.test_y, np.load(tmp_path / "client_test_labels_5.npy", allow_pickle=False)
    )


def test_flat_784_becomes_one_channel_image_and_labels_n_by_1_are_accepted(
    tmp_path: Path,
) -> None:
    x = images(6, flat=True, dtype=np.float64)
    y = labels(6).reshape(-1, 1)
    save_tenant(tmp_path, 0, train=(x, y), test=(x[:2], y[:2]))
    (t,) = load_tenants(tmp_path)
    assert t.train_x.shape == (6, 1, 28, 28)
    np.testing.assert_allclose(t.train_x.reshape(6, 784), x, rtol=1e-6)
    np.testing.assert_array_equal(t.train_y, y[:, 0].astype(np.int64))


@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.float64, np.int32])
def test_pixel_values_0_to_255_are_divided_by_255(tmp_path: Path, dtype: type) -> None:
    x: np.ndarray = np.random.default_rng(0).integers(0, 256, (5, 28, 28)).astype(dtype)
    x[0, 0, 0] = 255
    y = labels(5)
    save_tenant(tmp_path, 0, train=(x, y), test=(x[:1] * 0, y[:1]))
    (t,) = load_tenants(tmp_path)
    np.testing.assert_allclose(t.train_x[:, 0], x.astype(np.float32) / 255, rtol=1e-6)
    assert t.train_x.max() == 1.0


def test_uint8_is_scaled_even_when_dark(tmp_path: Path) -> None:
    x = np.ones((3, 28, 28), dtype=np.uint8)  # max 1 <= 1.5, but uint8 means 0..255
    save_tenant(tmp_path, 0, train=(x, labels(3)), test=(x, labels(3)))
    (t,) = load_tenants(tmp_path)
    np.testing.assert_allclose(t.train_x, 1 / 255)


def test_scaling_is_decided_per_tenant_over_both_splits(tmp_path: Path) -> None:
    train = np.full((2, 28, 28), 200.0)
    test = np.full((2, 28, 28), 1.0)  # alone it would look like [0, 1] data
    save_tenant(tmp_path, 0, train=(train, labels(2)), test=(test, labels(2)))
    (t,) = load_tenants(tmp_path)
    np.testing.assert_allclose(t.test_x, 1 / 255)


@pytest.mark.parametrize(
    "x",
    [
        np.random.default_rng(0).random((4, 28, 28)),  # already [0, 1]
        np.random.default_rng(0).normal(0, 1, (4, 28, 28)) * 3,  # standardised: negatives
        np.random.default_rng(0).random((4, 28, 28)) * 1000,  # beyond 255: not pixels
    ],
    ids=["unit", "standardised", "beyond-255"],
)
def test_other_images_are_not_rescaled(tmp_path: Path, x: np.ndarray) -> None:
    save_tenant(tmp_path, 0, train=(x, labels(4)), test=(x, labels(4)))
    (t,) = load_tenants(tmp_path)
    np.testing.assert_allclose(t.train_x[:, 0], x.astype(np.float32))


def test_tabular_samples_keep_their_shape_and_values(tmp_path: Path) -> None:
    x = np.random.default_rng(0).random((7, 12)) * 100  # e.g. amounts: never rescaled
    save_tenant(tmp_path, 0, train=(x, labels(7)), test=(x[:2], labels(2)))
    (t,) = load_tenants(tmp_path)
    assert t.train_x.shape == (7, 12)
    assert t.sample_shape == (12,)
    np.testing.assert_allclose(t.train_x, x.astype(np.float32))


def test_indices_need_not_be_contiguous_and_stray_files_are_ignored(tmp_path: Path) -> None:
    for i in (7, 3, 12):
        save_tenant(tmp_path, i, train=(images(4, i), labels(4)), test=(images(2), labels(2)))
    (tmp_path / "README.txt").write_text("notes")
    (tmp_path / "federation.json").write_text("{}")
    np.save(tmp_path / "client_train_samples_x.npy", np.zeros(3), allow_pickle=False)
    np.save(tmp_path / "client_train_samples_3.npy.bak", np.zeros(3), allow_pickle=False)
    np.save(tmp_path / "other_5.npy", np.zeros(3), allow_pickle=False)
    assert [t.index for t in load_tenants(tmp_path)] == [3, 7, 12]
    assert [t.index for t in load_tenants(tmp_path, indices=[12, 3])] == [3, 12]


def test_a_requested_index_that_is_absent_is_an_error(tmp_path: Path) -> None:
    save_tenant(tmp_path, 0, train=(images(4), labels(4)), test=(images(2), labels(2)))
    with pytest.raises(DataFormatError, match=r"client_train_samples_4\.npy"):
        load_tenants(tmp_path, indices=[0, 4])
    with pytest.raises(ConfigError, match="non-negative"):
        load_tenants(tmp_path, indices=[-1])


@pytest.mark.parametrize("missing", PARTS)
def test_a_tenant_with_a_missing_file_is_named(tmp_path: Path, missing: str) -> None:
    save_tenant(tmp_path, 0, train=(images(4), labels(4)), test=(images(2), labels(2)))
    save_tenant(tmp_path, 1, train=(images(4), labels(4)), test=(images(2), labels(2)))
    (tmp_path / f"{missing}_1.npy").unlink()
    with pytest.raises(DataFormatError, match=rf"{missing}_1\.npy: missing"):
        load_tenants(tmp_path)


def test_empty_or_missing_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match="no tenant files"):
        load_tenants(tmp_path)
    with pytest.raises(DataFormatError, match="not a directory"):
        load_tenants(tmp_path / "nowhere")


class Exploit:
    """Unpickling this would create a directory: proof that the loader never unpickles."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.mkdir, (str(self.marker),))


def test_object_arrays_are_refused_not_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    save_tenant(tmp_path, 0, train=(images(2), labels(2)), test=(images(1), labels(1)))
    np.save(
        tmp_path / "client_train_labels_0.npy",
        np.array([Exploit(marker), {"a": 1}], dtype=object),
        allow_pickle=True,
    )
    with pytest.raises(DataFormatError, match=r"client_train_labels_0\.npy.*pickle"):
        load_tenants(tmp_path)
    assert not marker.exists()


def test_dict_object_array_is_refused(tmp_path: Path) -> None:
    save_tenant(tmp_path, 0, train=(images(2), labels(2)), test=(images(1), labels(1)))
    np.save(
        tmp_path / "client_test_samples_0.npy",
        np.array([{"a": 1}], dtype=object),
        allow_pickle=True,
    )
    with pytest.raises(DataFormatError, match=r"client_test_samples_0\.npy.*pickle"):
        load_tenants(tmp_path)


def test_a_file_that_is_not_npy_is_named(tmp_path: Path) -> None:
    save_tenant(tmp_path, 0, train=(images(2), labels(2)), test=(images(1), labels(1)))
    (tmp_path / "client_test_labels_0.npy").write_bytes(b"not numpy at all")
    with pytest.raises(DataFormatError, match=r"client_test_labels_0\.npy"):
        load_tenants(tmp_path)


@pytest.mark.parametrize(
    ("part", "array", "problem"),
    [
        ("client_train_labels", np.array([0.0, 1.5, 2.0, 3.0]), "integral"),
        ("client_train_labels", np.array([0, -1, 2, 3]), ">= 0"),
        ("client_train_labels", np.array([0.0, np.nan, 2.0, 3.0]), "non-finite"),
        ("client_train_labels", np.array(["a", "b", "c", "d"]), "dtype"),
        ("client_train_labels", np.zeros((4, 2)), "shape"),
        ("client_train_labels", np.array([0, 1, 2]), "4 samples but client_train_labels_0.npy"),
        ("client_test_labels", np.array([0, 1, 2]), "2 samples but client_test_labels_0.npy"),
        ("client_train_samples", np.full((4, 28, 28), np.inf), "non-finite"),
        ("client_test_samples", np.full((2, 28, 28), np.nan), "non-finite"),
        ("client_train_samples", np.zeros(4), "shape"),
        ("client_train_samples", np.zeros((4, 27, 27)), "per-sample shape"),
        ("client_train_samples", np.zeros((4, 28, 28), dtype=complex), "dtype"),
        ("client_train_samples", np.zeros((4, 28, 28), dtype=bool), "dtype"),
    ],
)
def test_malformed_arrays_are_refused_with_the_file_named(
    tmp_path: Path, part: str, array: np.ndarray, problem: str
) -> None:
    save_tenant(tmp_path, 0, train=(images(4), labels(4)), test=(images(2), labels(2)))
    np.save(tmp_path / f"{part}_0.npy", array, allow_pickle=False)
    with pytest.raises(DataFormatError) as info:
        load_tenants(tmp_path)
    assert f"{part}_0.npy" in str(info.value)
    assert problem in str(info.value)


def test_empty_train_split_is_an_error_but_empty_test_is_fine(tmp_path: Path) -> None:
    save_tenant(tmp_path, 0, train=(images(3), labels(3)), test=(images(0), labels(0)))
    (t,) = load_tenants(tmp_path)
    assert t.test_x.shape == (0, 1, 28, 28)
    save_tenant(tmp_path, 1, train=(images(0), labels(0)), test=(images(2), labels(2)))
    with pytest.raises(DataFormatError, match=r"client_train_samples_1\.npy: the train split"):
        load_tenants(tmp_path)


def test_sample_shapes_must_agree_across_tenants(tmp_path: Path) -> None:
    save_tenant(tmp_path, 0, train=(images(3), labels(3)), test=(images(1), labels(1)))
    x = np.zeros((3, 10))
    save_tenant(tmp_path, 1, train=(x, labels(3)), test=(x[:1], labels(1)))
    with pytest.raises(DataFormatError, match=r"client_train_samples_1\.npy: per-sample shape"):
        load_tenants(tmp_path)


def test_write_then_load_round_trips_in_the_seed_layout(tmp_path: Path) -> None:
    emnist_like(tmp_path / "src", tenants=4, classes=10)
    tenants = load_tenants(tmp_path / "src")
    out = tmp_path / "new" / "nested"
    written = write_tenants(out, tenants)
    assert sorted(p.name for p in written) == sorted(
        f"{p}_{i}.npy" for p in PARTS for i in range(4)
    )
    raw = np.load(out / "client_train_samples_2.npy", allow_pickle=False)
    assert raw.dtype == np.float32
    assert raw.shape == (8, 28, 28)
    assert np.load(out / "client_test_labels_2.npy", allow_pickle=False).dtype == np.int64
    again = load_tenants(out)
    for a, b in zip(tenants, again, strict=True):
        assert a.index == b.index
        for field in ("train_x", "train_y", "test_x", "test_y"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


def test_write_keeps_tabular_and_multichannel_shapes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    y = np.array([0, 1, 2], dtype=np.int64)
    for shape in [(3, 12), (3, 3, 8, 8)]:
        x = rng.random(shape).astype(np.float32)
        d = tmp_path / str(len(shape))
        write_tenants(d, [TenantData(0, x, y, x[:1], y[:1])])
        assert np.load(d / "client_train_samples_0.npy", allow_pickle=False).shape == shape
        np.testing.assert_array_equal(load_tenants(d)[0].train_x, x)


def test_write_refuses_to_overwrite_unless_asked(tmp_path: Path) -> None:
    x, y = images(3), labels(3).astype(np.int64)
    t = TenantData(0, x.reshape(3, 1, 28, 28), y, x[:1].reshape(1, 1, 28, 28), y[:1])
    write_tenants(tmp_path, [t])
    with pytest.raises(DataFormatError, match=r"client_\w+_0\.npy: already exists"):
        write_tenants(tmp_path, [t])
    write_tenants(tmp_path, [t], overwrite=True)
    other = dataclasses.replace(t, index=1)
    with pytest.raises(DataFormatError, match=r"tenants \[0\] that are not being written"):
        write_tenants(tmp_path, [other], overwrite=True)
    assert not (tmp_path / "client_train_samples_1.npy").exists()  # checked before writing
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_write_rejects_duplicates_and_nothing(tmp_path: Path) -> None:
    x, y = images(3).reshape(3, 1, 28, 28), np.zeros(3, dtype=np.int64)
    t = TenantData(0, x, y, x, y)
    with pytest.raises(ConfigError, match="duplicate"):
        write_tenants(tmp_path, [t, t])
    with pytest.raises(ConfigError, match="at least one"):
        write_tenants(tmp_path, [])


def test_tenant_data_validates_and_is_frozen() -> None:
    x, y = np.zeros((3, 4), dtype=np.float32), np.zeros(3, dtype=np.int64)
    t = TenantData(0, x, y, x[:0], y[:0])
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.index = 1  # type: ignore[misc]
    bad = [
        {"train_x": x.astype(np.float64)},
        {"train_y": y.astype(np.int32)},
        {"train_y": y[:2]},
        {"test_x": np.zeros((1, 5), dtype=np.float32)},
        {"train_x": x[:0], "train_y": y[:0]},
        {"test_y": -np.ones(1, dtype=np.int64), "test_x": x[:1]},
        {"train_y": -np.ones(3, dtype=np.int64)},
        {"train_x": np.full((3, 4), np.nan, dtype=np.float32)},
        {"index": -1},
    ]
    for change in bad:
        with pytest.raises(ConfigError):
            dataclasses.replace(t, **change)  # type: ignore[arg-type]


def test_num_classes() -> None:
    x = np.zeros((2, 3), dtype=np.float32)
    a = TenantData(0, x, np.array([0, 4]), x[:0], np.zeros(0, dtype=np.int64))
    b = TenantData(1, x, np.array([1, 1]), x[:1], np.array([9]))
    assert num_classes([a]) == 5
    assert num_classes([a, b]) == 10
    with pytest.raises(ConfigError):
        num_classes([])
