"""The label-conditional input projection: public, deterministic, one unit row per record in its
label's block, so the summed statistic has L2 sensitivity 1."""

from __future__ import annotations

import numpy as np
import pytest

from securefed.errors import ConfigError
from securefed.personalize.statistic import (
    DEFAULT_PROJECTION_LABEL,
    label_projection_contributions,
    projection_matrix,
)


def _records(n: int = 40, features: int = 30, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.random((n, features)), rng.integers(0, 4, size=n)


def test_projection_is_public_deterministic_and_gaussian() -> None:
    p = projection_matrix(300, 16)
    assert p.shape == (300, 16)
    assert not p.flags.writeable
    np.testing.assert_array_equal(p, projection_matrix(300, 16, label=DEFAULT_PROJECTION_LABEL))
    assert not np.array_equal(p[:, :8], projection_matrix(300, 8))  # dim is part of the key
    assert not np.array_equal(p, projection_matrix(300, 16, label=b"another deployment"))
    assert abs(p.mean()) < 0.01
    assert p.var() * 16 == pytest.approx(1.0, rel=0.05)


def test_each_record_is_one_unit_row_in_its_labels_block() -> None:
    x, y = _records()
    rows = label_projection_contributions(x, y, num_classes=4, dim=5)
    assert rows.shape == (40, 20)
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0)
    for row, label in zip(rows, y, strict=True):
        outside = np.delete(row, np.arange(label * 5, label * 5 + 5))
        assert not outside.any()
    expected = x @ projection_matrix(30, 5)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(rows[np.arange(40), y * 5], expected[:, 0])


def test_sum_has_sensitivity_one() -> None:
    x, y = _records()
    full = label_projection_contributions(x, y, num_classes=4).sum(axis=0)
    for removed in range(0, 40, 7):
        keep = np.arange(40) != removed
        partial = label_projection_contributions(x[keep], y[keep], num_classes=4).sum(axis=0)
        assert np.linalg.norm(full - partial) == pytest.approx(1.0)


def test_images_and_zero_inputs() -> None:
    x = np.zeros((3, 1, 28, 28))
    x[0, 0, 5, 5] = 1.0
    rows = label_projection_contributions(x, np.array([0, 1, 1]), num_classes=2)
    assert rows.shape == (3, 16)
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), [1.0, 0.0, 0.0])


def test_concept_shift_separates_the_statistics() -> None:
    """The same inputs with permuted labels give a different statistic; the same labelling, a
    close one (what group mode clusters on)."""
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(4, 50)) * 3

    def tenant(permutation: list[int], seed: int) -> np.ndarray:
        r = np.random.default_rng(seed)
        classes = r.integers(0, 4, size=200)
        x = centres[classes] + r.normal(size=(200, 50))
        y = np.array(permutation)[classes]
        return label_projection_contributions(x, y, num_classes=4).sum(axis=0) / 200

    a1, a2 = tenant([0, 1, 2, 3], 2), tenant([0, 1, 2, 3], 3)
    b = tenant([1, 0, 3, 2], 4)
    assert np.linalg.norm(a1 - a2) * 4 < np.linalg.norm(a1 - b)


@pytest.mark.parametrize(
    ("x", "y", "classes", "dim", "match"),
    [
        (np.ones((3, 4)), np.array([0, 1]), 2, 8, "one label per record"),
        (np.ones((3, 4)), np.array([0, 1, 2]), 2, 8, r"\[0, 2\)"),
        (np.ones((3, 4)), np.array([0, -1, 1]), 2, 8, r"\[0, 2\)"),
        (np.ones((3, 4)), np.array([0.0, 1.0, 1.0]), 2, 8, "integers"),
        (np.full((3, 4), np.inf), np.array([0, 1, 1]), 2, 8, "NaN or infinite"),
        (np.ones((3, 4)), np.array([0, 1, 1]), 1, 8, "num_classes"),
        (np.ones((3, 4)), np.array([0, 1, 1]), 2, 0, "dim"),
        (np.ones((3, 4)), np.array([0, 1, 1]), 2, 5000, "dim"),
    ],
)
def test_bad_input_is_refused(
    x: np.ndarray, y: np.ndarray, classes: int, dim: int, match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        label_projection_contributions(x, y, num_classes=classes, dim=dim)
