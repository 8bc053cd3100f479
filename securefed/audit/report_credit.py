"""The report's credit section (``credit``, after ``accuracy``), from ``metrics.json``
(unsigned); present only when it records credit metrics (a run with a binary target).

One table row per institution with the exact figures it computed on its own test split with
its final model (``clients[i].credit``) and, when the run pooled them (``pooled_credit``), a row
for the federation: figures from the per-class score histograms that the institutions added by
secure aggregation after the last round (``RUN/evaluation/``, its own signed ledgers;
docs/tabular.md). The pooled ROC curve is drawn from that histogram, with the diagonal, and a
table gives the true-positive rate at a few false-positive rates (the Markdown twin's data for
the plot). Two consistency checks on the unsigned file: the area under the drawn curve against
the recorded pooled ROC-AUC, and the histogram's counts against the recorded positives and
negatives; a mismatch is said in bold. A missing or malformed histogram draws no curve and says
so. Pure Python: no numpy, nothing imported until a plot is drawn.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise

from securefed.audit.document import Block, Cell, Para, Plot, Section, Table
from securefed.audit.plots import Series, roc_plot
from securefed.audit.report_format import MISSING, fmt, number, records
from securefed.audit.rundata import RunData

__all__ = ["CREDIT_SECTION_ID", "POOLED_LABEL", "RocCurve", "credit_section", "roc_curve"]

CREDIT_SECTION_ID = "credit"
POOLED_LABEL = "pooled (secure histograms)"
_COLUMNS = (
    ("roc_auc", "ROC-AUC"),
    ("pr_auc", "PR-AUC"),
    ("ks", "KS"),
    ("gini", "Gini"),
    ("brier", "Brier"),
    ("positives", "positives"),
    ("negatives", "negatives"),
)
#: The false-positive rates the ROC table reads the curve at.
_FPR_AT = (0.01, 0.05, 0.1, 0.2, 0.5)
_AUC_TOLERANCE = 1e-6


@dataclass(frozen=True, slots=True)
class RocCurve:
    """A pooled histogram's ROC curve (:func:`roc_curve`): ``points`` (FPR, TPR) from (0, 0) to
    (1, 1) with collinear ones dropped; ``steps`` (bins flagged, FPR, TPR) for every threshold
    at a bin edge, from the top bin down; the histogram's class totals."""

    points: tuple[tuple[float, float], ...]
    steps: tuple[tuple[int, float, float], ...]
    positives: int
    negatives: int


def credit_section(data: RunData) -> Section | None:
    """The credit section, or None when ``metrics.json`` records no credit metrics."""
    metrics = data.metrics or {}
    found = metrics.get("pooled_credit")
    pooled = found if isinstance(found, Mapping) else None
    clients = records(metrics, "clients")
    if pooled is None and not any(isinstance(c.get("credit"), Mapping) for c in clients):
        return None
    rows: list[tuple[Cell, ...]] = []
    for client in clients:
        credit = client.get("credit")
        values = credit if isinstance(credit, Mapping) else {}
        rows.append(
            (fmt(client.get("id", MISSING)), *(fmt(values.get(k, MISSING)) for k, _ in _COLUMNS))
        )
    if pooled is not None:
        rows.append((POOLED_LABEL, *(fmt(pooled.get(k, MISSING)) for k, _ in _COLUMNS)))
    blocks: list[Block] = [
        Table(
            ("institution", *(label for _, label in _COLUMNS)),
            tuple(rows),
            id="credit-table",
        ),
        Para(
            "Per institution: exact figures, computed by each institution with its final model "
            "on its own test split (never trained on). Publishing them is a release that the "
            "differential privacy of training does not cover."
        ),
    ]
    if pooled is None:
        blocks.append(Para("metrics.json records no pooled figures (no pooled_credit)."))
    else:
        blocks += _pooled_blocks(pooled)
    return Section(CREDIT_SECTION_ID, "Credit metrics (metrics.json, unsigned)", tuple(blocks))


def _pooled_blocks(pooled: Mapping[str, object]) -> list[Block]:
    contributors = pooled.get("contributors", MISSING)
    blocks: list[Block] = [
        Para(
            f"Pooled: from every institution's per-class histograms of its test scores "
            f"({fmt(pooled.get('bins', MISSING))} bins on [0, 1]) and sums of squared errors, "
            f"added by secure aggregation after the last round (evaluation/ in the run "
            f"directory, with its own signed ledgers; contributors: {fmt(contributors)}), so the "
            "server learned the federation's histogram and no institution's own; ROC-AUC, "
            "PR-AUC, KS and Gini count the scores in one bin as tied (close to, not exactly, "
            "the values from the scores themselves), Brier is from the summed squared errors "
            "(not binned), and this histogram release is NOT covered by differential privacy."
        )
    ]
    curve = roc_curve(pooled.get("histogram"))
    if curve is None:
        text = "Pooled ROC curve: not recorded (metrics.json has no usable pooled histogram)."
        blocks.append(Para(text))
        return blocks
    blocks += _checks(pooled, curve)
    title = "Pooled ROC curve (secure histograms)"
    svg = roc_plot(Series(POOLED_LABEL, curve.points), title=title, element_id="credit-roc-plot")
    blocks.append(
        Plot(
            svg,
            "The pooled ROC curve, drawn from metrics.json's pooled histogram (thresholds from "
            "the highest score bin down), and the diagonal of a model that guesses.",
        )
    )
    blocks.append(
        Table(
            ("false-positive rate at most", "true-positive rate", "false-positive rate", "flag"),
            tuple(_read_at(curve.steps, limit) for limit in _FPR_AT),
            id="credit-roc-table",
        )
    )
    blocks.append(
        Para(
            "Each row: the best point of the pooled curve whose false-positive rate is within "
            "the limit, and the threshold that reaches it (each institution flags the records "
            "its own model scores at or above it)."
        )
    )
    return blocks


def roc_curve(histogram: object) -> RocCurve | None:
    """The ROC curve of a pooled histogram ``{"negatives": [...], "positives": [...]}`` (counts
    per score bin, lowest bin first): thresholds from the top bin down, FPR = negatives at or
    above over all negatives, TPR likewise for positives. None when the histogram is malformed
    (counts not integers >= 0, lists of different or zero length) or a class has no record."""
    if not isinstance(histogram, Mapping):
        return None
    negatives, positives = _counts(histogram.get("negatives")), _counts(histogram.get("positives"))
    if negatives is None or positives is None or len(negatives) != len(positives):
        return None
    n, p = sum(negatives), sum(positives)
    if not negatives or n == 0 or p == 0:
        return None
    corners = [(0, 0)]
    steps = [(0, 0.0, 0.0)]
    fp = tp = 0
    from_top = zip(reversed(negatives), reversed(positives), strict=True)
    for flagged, (neg, pos) in enumerate(from_top, 1):
        fp, tp = fp + neg, tp + pos
        steps.append((flagged, fp / n, tp / p))
        if neg or pos:
            corners.append((fp, tp))
    kept = [corners[0]]
    for here, after in zip(corners[1:], [*corners[2:], None], strict=True):
        before = kept[-1]
        if after is not None and _collinear(before, here, after):
            continue
        kept.append(here)
    return RocCurve(tuple((x / n, y / p) for x, y in kept), tuple(steps), p, n)


def _counts(value: object) -> list[int] | None:
    if not isinstance(value, list):
        return None
    counts = [v for v in value if isinstance(v, int) and not isinstance(v, bool) and v >= 0]
    return counts if len(counts) == len(value) else None


def _collinear(a: tuple[int, int], b: tuple[int, int], c: tuple[int, int]) -> bool:
    """Whether b lies on the segment from a to c (exact, in counts)."""
    return (b[0] - a[0]) * (c[1] - b[1]) == (b[1] - a[1]) * (c[0] - b[0])


def _area(points: Sequence[tuple[float, float]]) -> float:
    """The area under the curve through ``points`` (trapezoids): with ties in a bin counted
    half, the ROC-AUC of the histogram."""
    return sum((x1 - x0) * (y0 + y1) / 2 for (x0, y0), (x1, y1) in pairwise(points))


def _checks(pooled: Mapping[str, object], curve: RocCurve) -> list[Block]:
    """Bold notes where the recorded pooled figures disagree with the recorded histogram."""
    notes: list[Block] = []
    area, recorded = _area(curve.points), number(pooled.get("roc_auc"))
    if recorded is not None and abs(area - recorded) > _AUC_TOLERANCE:
        notes.append(
            Para(
                f"metrics.json disagrees with itself: its pooled ROC-AUC is {recorded:.6g}, the "
                f"area under the curve of its pooled histogram {area:.6g}.",
                strong=True,
            )
        )
    for key, counted in (("positives", curve.positives), ("negatives", curve.negatives)):
        recorded_count = pooled.get(key, MISSING)
        if recorded_count is not MISSING and recorded_count != counted:
            notes.append(
                Para(
                    f"metrics.json disagrees with itself: pooled {key} {fmt(recorded_count)}, "
                    f"its histogram counts {counted}.",
                    strong=True,
                )
            )
    return notes


def _read_at(steps: Sequence[tuple[int, float, float]], limit: float) -> tuple[Cell, ...]:
    """The row of the ROC table for ``limit``: the first step reaching the largest TPR among
    the steps whose FPR is at most ``limit``."""
    within = [s for s in steps if s[1] <= limit]
    best = max(tpr for _, _, tpr in within)
    flagged, fpr, tpr = next(s for s in within if s[2] == best)
    bins = len(steps) - 1
    if flagged == 0:
        flag = "no record"
    else:
        flag = f"score ≥ {fmt((bins - flagged) / bins)} (top {flagged} of {bins} bins)"
    return (fmt(limit), fmt(tpr), fmt(fpr), flag)
