"""Credit metrics (securefed/models/credit.py): hand-computed cases, the pairwise definition,
histograms that pool across institutions, and clear errors."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from securefed.errors import ConfigError
from securefed.models.credit import credit_metrics, metrics_from_histogram, score_histogram


def test_a_hand_computed_case() -> None:
    scores = [0.1, 0.4, 0.35, 0.8]
    labels = [0, 0, 1, 1]
    metrics = credit_metrics(scores, labels)
    assert metrics.roc_auc == pytest.approx(0.75)  # 3 of 4 (pos, neg) pairs ordered right
    assert metrics.gini == pytest.approx(0.5)
    assert metrics.ks == pytest.approx(0.5)  # at 0.8: TPR 0.5, FPR 0
    # average precision: at 0.8 precision 1; at 0.35 precision 2/3
    assert metrics.pr_auc == pytest.approx((1 + 2 / 3) / 2)
    assert metrics.brier == pytest.approx((0.01 + 0.16 + 0.4225 + 0.04) / 4)
    assert (metrics.positives, metrics.negatives) == (2, 2)


def test_auc_is_the_pairwise_probability_with_ties_as_one_half() -> None:
    generator = np.random.default_rng(5)  # test data only
    scores = np.round(generator.random(60), 1)  # many ties
    labels = generator.integers(0, 2, 60)
    pairs = [
        1.0 if p > n else 0.5 if p == n else 0.0
        for p, n in itertools.product(scores[labels == 1], scores[labels == 0])
    ]
    assert credit_metrics(scores, labels).roc_auc == pytest.approx(np.mean(pairs))


def test_perfect_and_inverted_scores() -> None:
    perfect = credit_metrics([0.1, 0.2, 0.9, 0.95], [0, 0, 1, 1])
    assert (perfect.roc_auc, perfect.ks, perfect.gini, perfect.pr_auc) == (1.0, 1.0, 1.0, 1.0)
    inverted = credit_metrics([0.9, 0.95, 0.1, 0.2], [0, 0, 1, 1])
    assert inverted.roc_auc == 0.0
    assert inverted.gini == -1.0


def test_one_class_only_gives_nan_not_an_error() -> None:
    metrics = credit_metrics([0.2, 0.3], [0, 0])
    assert math.isnan(metrics.roc_auc)
    assert math.isnan(metrics.ks)
    assert metrics.brier == pytest.approx((0.04 + 0.09) / 2)


def test_histograms_pool_across_institutions_and_match_the_exact_metrics() -> None:
    generator = np.random.default_rng(7)
    banks = []
    for _ in range(3):
        labels = (generator.random(400) < 0.2).astype(int)
        scores = np.clip(0.3 * labels + 0.7 * generator.random(400), 0, 1)
        banks.append((scores, labels))
    pooled = score_histogram(*banks[0], bins=1000)
    for scores, labels in banks[1:]:
        pooled = pooled + score_histogram(scores, labels, bins=1000)
    from_histogram = metrics_from_histogram(pooled)
    exact = credit_metrics(
        np.concatenate([s for s, _ in banks]), np.concatenate([y for _, y in banks])
    )
    assert from_histogram.positives == exact.positives
    assert from_histogram.brier is None
    for name in ("roc_auc", "ks", "gini", "pr_auc"):
        assert getattr(from_histogram, name) == pytest.approx(getattr(exact, name), abs=5e-3)


def test_a_histogram_whose_bins_hold_one_score_each_is_exact() -> None:
    scores = [0.05, 0.15, 0.25, 0.35, 0.45, 0.55]
    labels = [0, 1, 0, 1, 1, 0]
    exact = credit_metrics(scores, labels)
    binned = metrics_from_histogram(score_histogram(scores, labels, bins=10))
    assert binned.roc_auc == pytest.approx(exact.roc_auc)
    assert binned.ks == pytest.approx(exact.ks)
    assert binned.pr_auc == pytest.approx(exact.pr_auc)


@pytest.mark.parametrize(
    ("scores", "labels", "message"),
    [
        ([0.1, 0.2], [0], "2 scores but 1 labels"),
        ([], [], "no scores"),
        ([0.1, 1.5], [0, 1], r"probabilities in \[0, 1\]"),
        ([0.1, float("nan")], [0, 1], r"probabilities in \[0, 1\]"),
        ([0.1, 0.2], [0, 2], "labels must be 0 or 1"),
    ],
)
def test_bad_input_is_a_clear_error(scores: list[float], labels: list[int], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        credit_metrics(scores, labels)


def test_histograms_of_different_sizes_do_not_add() -> None:
    with pytest.raises(ConfigError, match="bins"):
        score_histogram([0.1], [1], bins=10) + score_histogram([0.1], [1], bins=20)
    with pytest.raises(ConfigError, match="bins must be"):
        score_histogram([0.1], [1], bins=1)
