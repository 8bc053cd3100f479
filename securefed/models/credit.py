"""Credit-risk metrics: ROC-AUC, PR-AUC, KS, Gini and Brier, exact or from score histograms.

A credit or fraud model outputs the probability of the positive class (default, fraud) for each
record; ``labels`` are 1 for positive and 0 for negative. Per institution the metrics are exact
(:func:`credit_metrics`). Pooled across institutions they come from per-class score histograms
(:func:`score_histogram`, :func:`metrics_from_histogram`): the counts per bin add up across
institutions, so a federation can pool them by secure aggregation of the counts without any
institution's scores leaving it (issue 22 wires that up; this module is the arithmetic).

Definitions (ties between a positive and a negative count one half, as in the Mann-Whitney
statistic):

* ROC-AUC = P(score of a random positive > score of a random negative);
* Gini = 2 * AUC - 1;
* KS = max over thresholds of |TPR - FPR|;
* PR-AUC = average precision, sum over positives of the precision at their score, divided by
  the number of positives (records with equal scores enter together);
* Brier = mean of (score - label)^2 (needs the scores themselves: not from histograms).

A metric that needs both classes is NaN when one is absent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from securefed.errors import ConfigError

__all__ = [
    "CreditMetrics",
    "ScoreHistogram",
    "credit_metrics",
    "metrics_from_histogram",
    "score_histogram",
]


@dataclass(frozen=True, slots=True)
class CreditMetrics:
    """The metrics of one set of scores (``brier`` None when computed from histograms)."""

    roc_auc: float
    pr_auc: float
    ks: float
    gini: float
    brier: float | None
    positives: int
    negatives: int


@dataclass(frozen=True, slots=True)
class ScoreHistogram:
    """Counts of scores per bin of ``[0, 1]`` (``bins`` equal bins), per class. Two histograms
    with the same ``bins`` add up (:meth:`__add__`): what a federation pools."""

    negatives: tuple[int, ...]
    positives: tuple[int, ...]

    @property
    def bins(self) -> int:
        return len(self.negatives)

    def __add__(self, other: ScoreHistogram) -> ScoreHistogram:
        if other.bins != self.bins:
            raise ConfigError(f"cannot add histograms of {self.bins} and {other.bins} bins")
        return ScoreHistogram(
            tuple(a + b for a, b in zip(self.negatives, other.negatives, strict=True)),
            tuple(a + b for a, b in zip(self.positives, other.positives, strict=True)),
        )


def _checked(
    scores: npt.ArrayLike, labels: npt.ArrayLike
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1)
    if len(s) != len(y):
        raise ConfigError(f"{len(s)} scores but {len(y)} labels")
    if len(s) == 0:
        raise ConfigError("no scores")
    if not np.isfinite(s).all() or (s < 0).any() or (s > 1).any():
        raise ConfigError("scores must be probabilities in [0, 1]")
    if not np.isin(y, (0, 1)).all():
        raise ConfigError("labels must be 0 or 1")
    return s, y.astype(bool)


def credit_metrics(scores: npt.ArrayLike, labels: npt.ArrayLike) -> CreditMetrics:
    """The exact metrics of ``scores`` (probabilities of the positive class) against ``labels``.

    Raises:
        ConfigError: lengths differ, no scores, a score outside [0, 1] or not finite, a label
            other than 0 or 1.
    """
    s, y = _checked(scores, labels)
    values, inverse = np.unique(s, return_inverse=True)
    positives = np.bincount(inverse, weights=y, minlength=len(values)).astype(np.float64)
    negatives = np.bincount(inverse, weights=~y, minlength=len(values)).astype(np.float64)
    metrics = _from_counts(negatives, positives)
    brier = float(np.mean((s - y) ** 2))
    return CreditMetrics(
        metrics.roc_auc, metrics.pr_auc, metrics.ks, metrics.gini, brier, *_sizes(y)
    )


def _sizes(y: npt.NDArray[np.bool_]) -> tuple[int, int]:
    return int(y.sum()), int((~y).sum())


def score_histogram(scores: npt.ArrayLike, labels: npt.ArrayLike, *, bins: int) -> ScoreHistogram:
    """Per-class counts of ``scores`` in ``bins`` equal bins of [0, 1] (a score of exactly 1
    falls in the last bin). Raises ConfigError as :func:`credit_metrics`, or for ``bins`` < 2."""
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 2:
        raise ConfigError(f"bins must be an integer >= 2, got {bins!r}")
    s, y = _checked(scores, labels)
    index = np.minimum((s * bins).astype(np.int64), bins - 1)
    return ScoreHistogram(
        tuple(int(c) for c in np.bincount(index[~y], minlength=bins)),
        tuple(int(c) for c in np.bincount(index[y], minlength=bins)),
    )


def metrics_from_histogram(histogram: ScoreHistogram) -> CreditMetrics:
    """ROC-AUC, PR-AUC, KS and Gini of the scores a histogram counts, treating scores in one
    bin as tied (exact when no bin holds two different scores; otherwise within the bin width
    of the exact values). Brier is None: it needs the scores."""
    negatives = np.asarray(histogram.negatives, dtype=np.float64)
    positives = np.asarray(histogram.positives, dtype=np.float64)
    if (negatives < 0).any() or (positives < 0).any():
        raise ConfigError("histogram counts must be >= 0")
    metrics = _from_counts(negatives, positives)
    return CreditMetrics(
        metrics.roc_auc,
        metrics.pr_auc,
        metrics.ks,
        metrics.gini,
        None,
        int(positives.sum()),
        int(negatives.sum()),
    )


def _from_counts(
    negatives: npt.NDArray[np.float64], positives: npt.NDArray[np.float64]
) -> CreditMetrics:
    """The metrics from counts per distinct score (or bin), in increasing score order."""
    n_pos, n_neg = float(positives.sum()), float(negatives.sum())
    if n_pos == 0 or n_neg == 0:
        nan = math.nan
        return CreditMetrics(nan, nan, nan, nan, None, int(n_pos), int(n_neg))
    below = np.cumsum(negatives) - negatives  # negatives strictly below each score
    auc = float(np.sum(positives * (below + negatives / 2))) / (n_pos * n_neg)
    # thresholds from the top: everything at or above a score is called positive
    tp = np.cumsum(positives[::-1])
    fp = np.cumsum(negatives[::-1])
    ks = float(np.max(np.abs(tp / n_pos - fp / n_neg)))
    precision = tp / np.maximum(tp + fp, 1.0)
    pr_auc = float(np.sum(precision * positives[::-1]) / n_pos)
    return CreditMetrics(auc, pr_auc, ks, 2 * auc - 1, None, int(n_pos), int(n_neg))
