"""Group mode's partition from (sketched) distances: finds latent groups, respects sizes."""

from __future__ import annotations

import numpy as np
import pytest

from securefed.errors import ConfigError
from securefed.personalize import partition_from_distances, squared_distances


def latent_groups(n: int, groups: int, seed: int = 0) -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (groups, 20))
    truth = [i % groups for i in range(n)]
    models = np.stack([centres[g] + rng.normal(0, 0.3, 20) for g in truth])
    return squared_distances(models), truth


def same_partition(a: tuple[int, ...], b: list[int]) -> bool:
    mapping: dict[int, int] = {}
    return all(mapping.setdefault(x, y) == y for x, y in zip(a, b, strict=True)) and len(
        set(mapping.values())
    ) == len(mapping)


@pytest.mark.parametrize(("n", "groups"), [(6, 2), (9, 3), (12, 2)])
def test_recovers_well_separated_groups(n: int, groups: int) -> None:
    distances, truth = latent_groups(n, groups)
    labels = partition_from_distances(distances, groups=groups)
    assert same_partition(labels, truth)
    assert labels == partition_from_distances(distances, groups=groups)  # deterministic


def test_minimum_group_size_is_enforced() -> None:
    distances, _ = latent_groups(8, 2)
    distances[7, :] = distances[:, 7] = 1e6  # an outlier would form a singleton group
    distances[7, 7] = 0.0
    labels = partition_from_distances(distances, groups=2, min_size=3)
    assert min(np.bincount(labels)) >= 3


@pytest.mark.parametrize(
    ("matrix", "groups", "min_size"),
    [
        (np.zeros((4, 3)), 1, 1),
        (-np.ones((4, 4)), 1, 1),
        (np.zeros((4, 4)), 2, 3),
        (np.zeros((4, 4)), 0, 1),
    ],
)
def test_refusals(matrix: np.ndarray, groups: int, min_size: int) -> None:
    with pytest.raises(ConfigError):
        partition_from_distances(matrix, groups=groups, min_size=min_size)
