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


def test_spectral_embedding_recovers_noisy_groups() -> None:
    """Per-pair noise larger than the group gap: the leading eigenvectors still carry the groups
    (signal adds up over all N clients), and the partition is nearly right. (The k-medoids it
    replaced got 0.87 of the pairs right here.)"""
    rng = np.random.default_rng(3)
    n, groups, dim = 60, 3, 64
    centres = rng.normal(0, 1.0, (groups, dim))
    truth = [i % groups for i in range(n)]
    points = np.stack([centres[g] + rng.normal(0, 2.0, dim) for g in truth])
    distances = squared_distances(points)
    same_gap = np.mean(
        [distances[i, j] for i in range(n) for j in range(n) if i != j and truth[i] == truth[j]]
    )
    cross_gap = np.mean(
        [distances[i, j] for i in range(n) for j in range(n) if truth[i] != truth[j]]
    )
    assert cross_gap < 1.5 * same_gap  # a hard case: pairs barely tell the groups apart
    labels = partition_from_distances(distances, groups=groups)
    agreement = np.mean(
        [
            (labels[i] == labels[j]) == (truth[i] == truth[j])
            for i in range(n)
            for j in range(i + 1, n)
        ]
    )
    assert agreement >= 0.95


def test_labels_are_canonical() -> None:
    distances, _ = latent_groups(9, 3, seed=5)
    labels = partition_from_distances(distances, groups=3)
    assert labels[0] == 0
    assert sorted(set(labels)) == [0, 1, 2]
    assert [labels.index(g) for g in range(3)] == sorted(labels.index(g) for g in range(3))
