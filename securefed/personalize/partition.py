"""Choosing group mode's partition from the first round's (sketched) distances (DESIGN §4e).

Group mode needs a partition fixed for the session. It can be given by the deployment (known
segments) or chosen once from pairwise squared distances -- estimated from the secret sketches,
so the server never sees a model or a statistic. :func:`partition_from_distances` is spectral
clustering in the classical sense:

1. **Embedding** (classical multidimensional scaling): the doubly centred Gram matrix
   ``G = -1/2 J D J`` of the squared distances and its top ``groups - 1`` eigenvectors, scaled by
   the square roots of their eigenvalues. Latent groups differ in at most ``groups - 1``
   directions of their means; the remaining directions carry only noise, which this step drops.
   It is what makes noisy inputs cluster: the group signal adds up over all N clients in the
   leading eigenvectors, while per-pair noise does not (docs/results.md measures the gain on DP
   statistics: own-group share 0.46 -> 0.87 at seed scale).
2. **k-means** in the embedding, restarted from every client as the first centre (the others
   by farthest-first), keeping the lowest within-group sum of squares -- deterministic.
3. **Minimum size**: an undersized group takes the members of other groups (that can spare
   one) nearest to its centre, one at a time.

Deterministic: the same distances always give the same labels (ties broken by index), so every
party can recompute and check the partition.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from securefed.errors import ConfigError

__all__ = ["partition_from_distances"]

MAX_ITERATIONS = 50
FloatArray = npt.NDArray[np.float64]
Labels = npt.NDArray[np.int64]


def _embedding(distances: FloatArray, groups: int) -> FloatArray:
    n = distances.shape[0]
    centring = np.eye(n) - 1.0 / n
    gram = -0.5 * centring @ distances @ centring
    values, vectors = np.linalg.eigh((gram + gram.T) / 2.0)
    keep = max(1, groups - 1)
    scale = np.sqrt(np.maximum(values[-keep:], 0.0))
    embedded: FloatArray = vectors[:, -keep:] * scale
    return embedded


def _squared_gaps(points: FloatArray, centres: FloatArray) -> FloatArray:
    gaps: FloatArray = ((points[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2)
    return gaps


def _farthest_first(points: FloatArray, first: int, groups: int) -> FloatArray:
    chosen = [first]
    while len(chosen) < groups:
        gap = _squared_gaps(points, points[chosen]).min(axis=1)
        gap[chosen] = -1.0
        chosen.append(int(np.argmax(gap)))
    centres: FloatArray = points[chosen].copy()
    return centres


def _lloyd(points: FloatArray, centres: FloatArray) -> tuple[Labels, FloatArray]:
    labels: Labels = np.argmin(_squared_gaps(points, centres), axis=1).astype(np.int64)
    for _ in range(MAX_ITERATIONS):
        updated = np.stack(
            [
                points[labels == g].mean(axis=0) if np.any(labels == g) else centres[g]
                for g in range(len(centres))
            ]
        )
        relabelled = np.argmin(_squared_gaps(points, updated), axis=1).astype(np.int64)
        centres = updated
        if np.array_equal(relabelled, labels):
            break
        labels = relabelled
    return labels, centres


def _enforce_min_size(
    points: FloatArray, labels: Labels, centres: FloatArray, min_size: int
) -> Labels:
    labels = labels.copy()
    for group in range(len(centres)):
        while np.count_nonzero(labels == group) < min_size:
            sizes = np.bincount(labels, minlength=len(centres))
            donors = [i for i in range(len(labels)) if sizes[labels[i]] > min_size]
            if not donors:  # pragma: no cover - groups * min_size <= N is checked first
                raise ConfigError("cannot meet the minimum group size")
            gaps = _squared_gaps(points[donors], centres[group : group + 1])[:, 0]
            labels[donors[int(np.argmin(gaps))]] = group
    return labels


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
    points = _embedding((d + d.T) / 2.0, groups)
    best: tuple[float, Labels, FloatArray] | None = None
    for first in range(n):
        labels, centres = _lloyd(points, _farthest_first(points, first, groups))
        labels = _enforce_min_size(points, labels, centres, min_size)
        inertia = float(
            sum(_squared_gaps(points[labels == g], centres[g : g + 1]).sum() for g in range(groups))
        )
        if best is None or inertia < best[0] - 1e-12 * max(1.0, abs(best[0])):
            best = (inertia, labels, centres)
    assert best is not None  # noqa: S101 - n >= 1
    return _canonical(best[1])


def _canonical(labels: Labels) -> tuple[int, ...]:
    """Relabel groups in order of first appearance (client 0 is in group 0)."""
    order: dict[int, int] = {}
    for label in labels:
        order.setdefault(int(label), len(order))
    return tuple(order[int(label)] for label in labels)
