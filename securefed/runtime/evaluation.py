"""Pooled credit metrics from securely aggregated score histograms (docs/tabular.md).

After the last round of a run whose target is binary, every institution scores its own test
split with its final model and counts the scores per class in :data:`HISTOGRAM_BINS` equal bins
of [0, 1], plus the sum of its squared errors (score - label)^2 and its number of test records.
Those vectors are added by a one-round secure FedAvg run of the engine (its own signed ledgers in
``RUN/evaluation/``): the server learns the pooled histogram and totals, never one institution's
scores or counts. From the total, :func:`~securefed.models.credit.metrics_from_histogram` gives
the pooled ROC-AUC, PR-AUC, KS and Gini (scores in one bin count as tied: within the bin width of
the exact values), and the pooled Brier score is exact (the summed squared errors over the
summed count).

What this discloses, said in every evaluation ledger as a hazard: the pooled histogram of the
test records' scores, which DP does not cover (DP-SGD protects the training records; the test
split is never trained on, and this release is not noised).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from securefed.models.credit import ScoreHistogram, metrics_from_histogram
from securefed.runtime.config import RunConfig
from securefed.runtime.preprocess import secure_sum
from securefed.secagg.federation import Federation

if TYPE_CHECKING:
    from securefed.runtime.nodes import ClientNode

__all__ = ["EVALUATION_DIR", "HISTOGRAM_BINS", "pooled_credit"]

EVALUATION_DIR = "evaluation"
#: Score bins of the pooled histograms (the AUC from them is within about 1/bins of exact).
HISTOGRAM_BINS = 1000
_NOTE = (
    "pooled evaluation: the server learns the sum over the institutions of their test splits' "
    f"score histograms ({HISTOGRAM_BINS} bins per class), squared errors and test-record "
    "counts; no institution's own. Not covered by DP (the test records are not trained on; "
    "this release is not noised)"
)


def _finite(value: float | None) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


def pooled_credit(
    config: RunConfig, run_dir: Path, federation: Federation, clients: Sequence[ClientNode]
) -> dict[str, Any] | None:
    """The pooled credit metrics of the clients' current models (module docstring), or None
    when a client's model is not binary or it has no test records. Writes the evaluation's
    ledgers under ``run_dir/evaluation``. Raises ConfigError as
    :func:`~securefed.runtime.preprocess.secure_sum` does."""
    vectors = [client.evaluation_vector(HISTOGRAM_BINS) for client in clients]
    if any(v is None for v in vectors):
        return None
    received, contributors = secure_sum(
        config,
        run_dir / EVALUATION_DIR,
        federation,
        [v for v in vectors if v is not None],
        note=_NOTE,
    )
    average = next((total for total in received if total is not None), None)
    if average is None or contributors < 2:
        return None
    total = average * contributors
    bins = HISTOGRAM_BINS
    negatives = np.maximum(np.rint(total[:bins]), 0).astype(np.int64)
    positives = np.maximum(np.rint(total[bins : 2 * bins]), 0).astype(np.int64)
    squared_errors, count = float(total[2 * bins]), float(total[2 * bins + 1])
    histogram = ScoreHistogram(tuple(int(c) for c in negatives), tuple(int(c) for c in positives))
    metrics = metrics_from_histogram(histogram)
    return {
        "roc_auc": _finite(metrics.roc_auc),
        "pr_auc": _finite(metrics.pr_auc),
        "ks": _finite(metrics.ks),
        "gini": _finite(metrics.gini),
        "brier": _finite(squared_errors / count) if count >= 1 else None,
        "positives": metrics.positives,
        "negatives": metrics.negatives,
        "contributors": [
            federation.roster.client(i).party_id
            for i, got in enumerate(received)
            if got is not None
        ],
        "bins": bins,
        "histogram": {"negatives": negatives.tolist(), "positives": positives.tolist()},
    }
