"""What ``metrics.json`` does not give: the pooled non-private upper bound, and decisions at a
threshold.

``securefed run`` already reports, for a binary target, every bank's exact ROC-AUC, PR-AUC, KS,
Gini and Brier score on its own test split (``clients[i].credit``) and the pooled ones over all
banks' test records from securely aggregated score histograms (``pooled_credit``). This module
adds two things:

* :func:`pooled_upper_bound` -- a **non-private, pooled** logistic regression: all banks'
  training records in one place, exact standardisation, no DP, no federation; scored on all
  banks' test records. No bank could do this (it needs everyone's records in one place): it is
  the ceiling the federated models are compared against.
* :func:`decisions_at` -- recall and precision at a score threshold, pooled over the banks: each
  bank's final model (``models/<party>.safetensors``, safetensors only) scores that bank's own
  test split, and the true / false positives are added up. Shows what class weights do to the
  decisions, which the rank metrics above do not show.

Both read the imported arrays with :func:`securefed.data.load_tenants` (``np.load`` without
pickle) and the import record ``tabular_<i>.json`` for the feature names.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

from securefed.data import load_tenants
from securefed.models import load_saved_model, positive_scores
from securefed.models.credit import CreditMetrics, credit_metrics

__all__ = [
    "Decisions",
    "decisions_at",
    "numeric_features",
    "pooled_upper_bound",
    "train_logistic",
    "upper_bound_scores",
]

#: L2 penalty of the pooled upper bound (on the weights, not the intercept): fixed, not tuned.
L2 = 1e-4


def numeric_features(prepared: Path) -> list[int]:
    """Indices of the numeric features (the ones a run standardises), from the import record."""
    record = json.loads((prepared / "tabular_0.json").read_text(encoding="utf-8"))
    numeric = {c["name"] for c in record["schema"]["columns"] if c["type"] == "numeric"}
    return [i for i, name in enumerate(record["features"]) if name in numeric]


def _indicator_of(prepared: Path) -> dict[int, int]:
    """numeric feature index -> index of its ``<name>:missing`` indicator (when it has one)."""
    record = json.loads((prepared / "tabular_0.json").read_text(encoding="utf-8"))
    features: list[str] = record["features"]
    return {
        i: features.index(f"{name}:missing")
        for i, name in enumerate(features)
        if f"{name}:missing" in features
    }


def train_logistic(
    x: npt.NDArray[np.float32],
    y: npt.NDArray[np.int64],
    *,
    class_weights: Sequence[float] | None = None,
    iterations: int = 200,
) -> torch.nn.Linear:
    """Plain logistic regression, full-batch L-BFGS with a small fixed L2 penalty :data:`L2`.

    Convex, so the result does not depend on a seed (the weights start at zero)."""
    features = torch.as_tensor(x, dtype=torch.float64)
    labels = torch.as_tensor(y, dtype=torch.float64)
    weights = torch.ones_like(labels)
    if class_weights is not None:
        weights = torch.as_tensor(np.asarray(class_weights, dtype=np.float64)[y])
    model = torch.nn.Linear(features.shape[1], 1, dtype=torch.float64)
    torch.nn.init.zeros_(model.weight)
    torch.nn.init.zeros_(model.bias)
    optimizer = torch.optim.LBFGS(
        model.parameters(), max_iter=iterations, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        logits = model(features).squeeze(1)
        loss = (
            torch.nn.functional.binary_cross_entropy_with_logits(
                logits, labels, weight=weights, reduction="sum"
            )
            / weights.sum()
            + L2 * (model.weight**2).sum()
        )
        loss.backward()
        return loss

    optimizer.step(closure)
    return model


def pooled_upper_bound(
    prepared: Path, *, class_weights: Sequence[float] | None = None
) -> CreditMetrics:
    """Exact metrics of a non-private logistic regression trained on every bank's training
    records together (numeric features standardised with the pooled training mean and standard
    deviation, a missing cell set to the mean) and scored on every bank's test records."""
    return upper_bound_scores(prepared, class_weights=class_weights)[0]


def upper_bound_scores(
    prepared: Path, *, class_weights: Sequence[float] | None = None, threshold: float = 0.5
) -> tuple[CreditMetrics, list[float], Decisions]:
    """:func:`pooled_upper_bound`'s pooled metrics, the pooled model's ROC-AUC on each bank's
    own test split, and its pooled decisions at ``threshold``."""
    tenants = load_tenants(prepared)
    train_x = np.concatenate([t.train_x for t in tenants]).astype(np.float64)
    train_y = np.concatenate([t.train_y for t in tenants])
    tests = [t.test_x.astype(np.float64) for t in tenants]
    indicators = _indicator_of(prepared)
    for column in numeric_features(prepared):
        present = np.ones(len(train_x), dtype=bool)
        if column in indicators:
            present = train_x[:, indicators[column]] == 0.0
        values = train_x[present, column]
        mean, std = float(values.mean()), float(values.std())
        std = std if std > 1e-12 else 1.0
        for x in (train_x, *tests):
            missing = (
                x[:, indicators[column]] == 1.0
                if column in indicators
                else np.zeros(len(x), dtype=bool)
            )
            x[:, column] = np.where(missing, 0.0, (x[:, column] - mean) / std)
    model = train_logistic(train_x.astype(np.float32), train_y, class_weights=class_weights)
    with torch.no_grad():
        scores = [
            torch.sigmoid(model(torch.as_tensor(x, dtype=torch.float64)).squeeze(1)).numpy()
            for x in tests
        ]
    labels = [t.test_y for t in tenants]
    pooled = credit_metrics(np.concatenate(scores), np.concatenate(labels))
    banks = [credit_metrics(s, y).roc_auc for s, y in zip(scores, labels, strict=True)]
    flags = np.concatenate(scores) >= threshold
    y = np.concatenate(labels)
    decisions = Decisions(threshold, int(y.sum()), int(flags.sum()), int((flags & (y == 1)).sum()))
    return pooled, banks, decisions


@dataclass(frozen=True)
class Decisions:
    """Pooled decisions at ``threshold``: flag a record when its score is >= the threshold."""

    threshold: float
    positives: int
    flagged: int
    true_positives: int

    @property
    def recall(self) -> float:
        return self.true_positives / self.positives if self.positives else float("nan")

    @property
    def precision(self) -> float:
        return self.true_positives / self.flagged if self.flagged else float("nan")

    def as_json(self) -> dict[str, float | int | None]:
        """Plain JSON values; a recall or precision without a denominator is None."""
        return {
            **asdict(self),
            "recall": None if math.isnan(self.recall) else self.recall,
            "precision": None if math.isnan(self.precision) else self.precision,
        }


def decisions_at(run_dir: Path, prepared: Path, threshold: float = 0.5) -> Decisions:
    """Each bank's final model of ``run_dir`` scores its own test split in ``prepared``; the
    flags at ``threshold`` are added up over the banks."""
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    tenants = {t.index: t for t in load_tenants(prepared)}
    positives = flagged = hits = 0
    for client in metrics["clients"]:
        tenant = tenants[int(client["tenant"])]
        saved = load_saved_model(run_dir / "models" / f"{client['id']}.safetensors")
        scores = positive_scores(saved.model, torch.as_tensor(tenant.test_x))
        flags = scores >= threshold
        positives += int(tenant.test_y.sum())
        flagged += int(flags.sum())
        hits += int((flags & (tenant.test_y == 1)).sum())
    return Decisions(threshold, positives, flagged, hits)
