"""Choosing group mode's partition from the first round's (sketched) distances (DESIGN §4e).

Group mode needs a partition fixed for the session. It can be given by the deployment (known
segments) or chosen once from the first round's pairwise squared distances -- estimated from the
secret sketches, so the server never sees a model. :func:`partition_from_distances` is a small,
deterministic k-medoids (farthest-first start, nearest-medoid assignment, medoid update), with a
minimum group size enforced by moving the members closest to an undersized group's medoid.
Deterministic: the same distances always give the same labels, so every party can recompute and
check the partition.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from securefed.errors import ConfigError

__all__ = ["partition_from_distances"]

MAX_ITERATIONS = 20


def _farthest_first(distances: npt.NDArray[np.float64], groups: int) -> list[int]:
    medoids = [0]
    while len(medoids) < groups:
        gap = distances[:, medoids].min(axis=1)
        gap[medoids] = -1.0
        medoids.append(int(np.argmax(gap)))
    return medoids


def _assign(
    distances: npt.NDArray[np.float64], medoids: list[int], min_size: int
) -> npt.NDArray[np.int64]:
    labels = np.argmin(distances[:, medoids], axis=1)
    for group in range(len(medoids)):
        while np.count_nonzero(labels == group) < min_size:
            sizes = np.bincount(labels, minlength=len(medoids))
            donors = [i for i in range(len(labels)) if sizes[labels[i]] > min_size]
            if not donors:
                raise ConfigError("cannot meet the minimum group size")
            nearest = min(donors, key=lambda i: (distances[i, medoids[group]], i))
            labels[nearest] = group
    result: npt.NDArray[np.int64] = labels.astype(np.int64)
    return result


def partition_from_distances(
    distances: npt.ArrayLike, *, groups: int, min_size: int = 3
) -> tuple[int, ...]:
    """Group labels (0..groups-1) for N clients from their N x N squared distances.

    Raises:
        ConfigError: not a square, finite, non-negative matrix; ``groups`` < 1; or
            ``groups * min_size`` > N.
    """
    d = np.asarray(distances, dtype=np.float64)
    if d.ndim != 2 or d.shape[0] != d.shape[1] or not np.all(np.isfinite(d)) or np.any(d < 0):
        raise ConfigError("distances must be a finite, non-negative square matrix")
    n = d.shape[0]
    if groups < 1 or min_size < 1 or groups * min_size > n:
        raise ConfigError(f"cannot split {n} clients into {groups} groups of at least {min_size}")
    d = (d + d.T) / 2.0
    medoids = _farthest_first(d, groups)
    labels = _assign(d, medoids, min_size)
    for _ in range(MAX_ITERATIONS):
        updated = []
        for group in range(groups):
            members = np.flatnonzero(labels == group)
            costs = d[np.ix_(members, members)].sum(axis=1)
            updated.append(int(members[int(np.argmin(costs))]))
        if updated == medoids:
            break
        medoids = updated
        labels = _assign(d, medoids, min_size)
    return tuple(int(label) for label in labels)
