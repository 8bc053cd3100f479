"""Labels are bounded (issue 19, section 4): the class count is the largest label + 1, so a
label above :data:`MAX_CLASSES` is refused with a one-line error naming the file, before the
model's output layer is allocated."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from securefed.data import MAX_CLASSES, DataFormatError, TenantData, load_tenants, num_classes
from securefed.errors import ConfigError
from tests.data.test_layout import images, labels, save_tenant


@pytest.mark.parametrize("dtype", [np.int64, np.uint64, np.float64, np.int32])
def test_a_label_beyond_the_maximum_names_the_file(tmp_path: Path, dtype: type) -> None:
    for i in range(3):
        save_tenant(tmp_path, i, train=(images(6, i), labels(6)), test=(images(2), labels(2)))
    huge = labels(6).astype(dtype)
    huge[3] = 10**9
    np.save(tmp_path / "client_train_labels_1.npy", huge, allow_pickle=False)
    with pytest.raises(DataFormatError) as caught:
        load_tenants(tmp_path)
    message = str(caught.value)
    assert "\n" not in message
    assert "client_train_labels_1.npy" in message
    assert "1000000000" in message
    assert str(MAX_CLASSES) in message


def test_the_largest_allowed_label_loads(tmp_path: Path) -> None:
    for i in range(3):
        y = labels(6)
        if i == 2:
            y[0] = MAX_CLASSES - 1
        save_tenant(tmp_path, i, train=(images(6, i), y), test=(images(2), labels(2)))
    assert num_classes(load_tenants(tmp_path)) == MAX_CLASSES


def test_tenant_data_in_memory_is_bounded_too() -> None:
    y = np.zeros(4, dtype=np.int64)
    y[1] = MAX_CLASSES
    x = np.zeros((4, 3), dtype=np.float32)
    with pytest.raises(ConfigError, match="labels must be <"):
        TenantData(0, x, y, x[:0], y[:0])
