"""Pooled credit metrics from securely aggregated score histograms (issue 22 item 4).

After the last round every institution's test-score histogram per class, squared errors and
count are added by a secure-aggregation run of the engine (``RUN/evaluation/``); the pooled
ROC-AUC from the histograms must be within 0.005 of the exact pooled AUC (every institution's
final model on its own test split, all scores together), and the pooled Brier score exact.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from securefed.audit import verify_run
from securefed.models import load_saved_model
from securefed.models.credit import credit_metrics
from securefed.models.metrics import positive_scores
from securefed.runtime.evaluation import EVALUATION_DIR, HISTOGRAM_BINS
from securefed.runtime.federated import run_federation
from tests.runtime.test_preprocess import BANKS, _config, _tables


def _exact_pooled(run_dir: Path, data: Path) -> tuple[np.ndarray, np.ndarray]:
    scores, labels = [], []
    for bank in range(BANKS):
        model = load_saved_model(run_dir / "models" / f"bank-{bank}.safetensors").model
        x = torch.from_numpy(
            np.ascontiguousarray(np.load(data / f"client_test_samples_{bank}.npy"))
        )
        scores.append(positive_scores(model, x))
        labels.append(np.load(data / f"client_test_labels_{bank}.npy"))
    return np.concatenate(scores), np.concatenate(labels)


@pytest.mark.parametrize("dp", [False, True])
def test_the_pooled_metrics_from_histograms_match_the_exact_ones(tmp_path: Path, dp: bool) -> None:
    data, _ = _tables(tmp_path)
    run_dir = tmp_path / "run"
    summary = run_federation(_config(data, dp=dp), run_dir)
    pooled = summary.metrics["pooled_credit"]
    scores, labels = _exact_pooled(run_dir, data)
    exact = credit_metrics(scores, labels)
    assert pooled["roc_auc"] == pytest.approx(exact.roc_auc, abs=0.005)
    assert pooled["ks"] == pytest.approx(exact.ks, abs=0.02)
    assert pooled["pr_auc"] == pytest.approx(exact.pr_auc, abs=0.02)
    assert pooled["brier"] == pytest.approx(exact.brier, rel=1e-3)
    assert (pooled["positives"], pooled["negatives"]) == (exact.positives, exact.negatives)
    assert pooled["bins"] == HISTOGRAM_BINS
    assert sorted(pooled["contributors"]) == [f"bank-{b}" for b in range(BANKS)]
    for client in summary.metrics["clients"]:  # per institution, exact, next to the pooled
        assert set(client["credit"]) >= {"roc_auc", "pr_auc", "ks", "brier"}
    checked = verify_run(run_dir / EVALUATION_DIR)
    assert checked.ok, checked.problems
