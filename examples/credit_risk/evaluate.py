"""Score each bank's saved model on that bank's own test split: ROC AUC, accuracy, epsilon.

For every run directory given (``securefed run`` output), this loads each bank's final model
from ``models/bank-<i>.safetensors`` (safetensors only, never pickle), the bank's test split from
the run's seed-layout directory (``np.load(..., allow_pickle=False)`` via
:func:`securefed.data.load_tenants`), and computes

* **AUC**: ROC AUC of P(default) = softmax(logits)[:, 1], rank based (Mann-Whitney U with
  mid-ranks for ties), plain numpy -- :func:`roc_auc`; with its Hanley-McNeil (1982) standard
  error :func:`auc_standard_error`, a reminder of how few defaults a small bank's test split has;
* **accuracy** at the arg-max (P(default) > 0.5), checked against ``metrics.json``;
* **epsilon** per bank, read from ``metrics.json`` (the accountant's cumulative spend).

Usage::

    .venv/bin/python examples/credit_risk/evaluate.py RUN_DIR [RUN_DIR ...] [--json FILE]

Prints one Markdown table per data set. Publishing these numbers is itself a release that the
training's DP guarantee does not cover (they are computed on non-private test data).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tomllib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

from securefed.data import load_tenants
from securefed.models import build_model, load_model

__all__ = [
    "BankResult",
    "as_json",
    "auc_standard_error",
    "evaluate_run",
    "markdown_tables",
    "pooled",
    "roc_auc",
    "seed_summary",
]


def _midranks(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """1-based ranks; tied values share the mean of their ranks."""
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    ranks = np.empty(len(values), dtype=np.float64)
    start = 0
    while start < len(values):
        stop = start
        while stop + 1 < len(values) and ordered[stop + 1] == ordered[start]:
            stop += 1
        ranks[order[start : stop + 1]] = (start + stop) / 2.0 + 1.0
        start = stop + 1
    return ranks


def roc_auc(scores: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """ROC AUC = P(score of a random positive > score of a random negative), ties counting 1/2.

    Computed as the Mann-Whitney U statistic of the positives' mid-ranks,
    ``(R_pos - n_pos (n_pos + 1) / 2) / (n_pos n_neg)``. NaN when either class is absent.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel()
    if s.shape != y.shape:
        raise ValueError(f"{s.shape[0]} scores but {y.shape[0]} labels")
    positive = y == 1
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    rank_sum = float(_midranks(s)[positive].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def auc_standard_error(auc: float, n_pos: int, n_neg: int) -> float:
    """Hanley & McNeil (1982) standard error of an AUC estimate from n_pos and n_neg cases."""
    if n_pos == 0 or n_neg == 0 or math.isnan(auc):
        return math.nan
    q1 = auc / (2.0 - auc)
    q2 = 2.0 * auc * auc / (1.0 + auc)
    variance = (
        auc * (1.0 - auc) + (n_pos - 1) * (q1 - auc * auc) + (n_neg - 1) * (q2 - auc * auc)
    ) / (n_pos * n_neg)
    return math.sqrt(max(variance, 0.0))


@dataclass(frozen=True)
class BankResult:
    """One bank under one method."""

    run: str
    mode: str
    party: str
    tenant: int
    train: int
    test: int
    test_defaults: int
    auc: float
    auc_se: float
    accuracy: float
    majority_accuracy: float
    epsilon: float | None
    delta: float | None
    scores: tuple[float, ...]
    labels: tuple[int, ...]


def _probabilities(model: torch.nn.Module, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(x).reshape(len(x), -1))
        return torch.softmax(logits.double(), dim=1)[:, 1].numpy()


def evaluate_run(run_dir: Path) -> list[BankResult]:
    """Every bank of one run directory (see the module docstring)."""
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    config = tomllib.loads((run_dir / "config.toml").read_text(encoding="utf-8"))
    tenants = {t.index: t for t in load_tenants(metrics["data_directory"])}
    results = []
    for client in metrics["clients"]:
        tenant = tenants[client["tenant"]]
        model = build_model(
            config["data"]["model"],
            num_classes=2,
            in_features=int(np.prod(tenant.sample_shape)),
            hidden=config["data"].get("hidden"),
        )
        load_model(model, run_dir / "models" / f"{client['id']}.safetensors")
        p = _probabilities(model, tenant.test_x)
        y = tenant.test_y
        accuracy = float(np.mean((p > 0.5).astype(np.int64) == y))
        if not math.isclose(accuracy, client["test_accuracy"], abs_tol=1e-9):
            raise RuntimeError(
                f"{run_dir}: {client['id']} accuracy {accuracy} differs from metrics.json's "
                f"{client['test_accuracy']} (wrong model or data?)"
            )
        auc = roc_auc(p, y)
        n_pos = int(y.sum())
        results.append(
            BankResult(
                run=run_dir.name,
                mode=metrics["mode"],
                party=client["id"],
                tenant=client["tenant"],
                train=client["train_samples"],
                test=client["test_samples"],
                test_defaults=n_pos,
                auc=auc,
                auc_se=auc_standard_error(auc, n_pos, len(y) - n_pos),
                accuracy=accuracy,
                majority_accuracy=float(max(np.mean(y), 1.0 - np.mean(y))),
                epsilon=client["epsilon"],
                delta=client["delta"],
                scores=tuple(float(v) for v in p),
                labels=tuple(int(v) for v in y),
            )
        )
    return results


def pooled(results: Sequence[BankResult]) -> tuple[float, float, float]:
    """AUC, its standard error and accuracy over every bank's test rows together (each bank's
    rows scored by that bank's own model)."""
    scores = np.concatenate([r.scores for r in results])
    ys = np.concatenate([r.labels for r in results])
    auc = roc_auc(scores, ys)
    n_pos = int(ys.sum())
    se = auc_standard_error(auc, n_pos, len(ys) - n_pos)
    return auc, se, float(np.mean((scores > 0.5) == (ys == 1)))


def seed_summary(runs: Sequence[tuple[str, str, int, list[BankResult]]]) -> str:
    """(dataset, method, seed, results) over several training seeds: per data set and method,
    the pooled AUC and the mean per-bank AUC, each as mean and standard deviation over seeds."""
    cells: dict[tuple[str, str], list[tuple[float, float]]] = {}
    seeds: set[int] = set()
    for dataset, method, seed, results in runs:
        seeds.add(seed)
        cells.setdefault((dataset, method), []).append(
            (pooled(results)[0], float(np.mean([r.auc for r in results])))
        )
    out = [
        f"### Over training seeds {sorted(seeds)} (same split): AUC mean ± sd over seeds\n",
        "| data set | method | seeds | pooled AUC | mean per-bank AUC |",
        "|---|---|---|---|---|",
    ]
    for (dataset, method), values in cells.items():
        a = np.array(values)
        sd = a.std(axis=0, ddof=1) if len(a) > 1 else np.full(2, math.nan)
        out.append(
            f"| {dataset} | {method} | {len(a)} | {a[:, 0].mean():.3f} ± {_fmt(sd[0])} | "
            f"{a[:, 1].mean():.3f} ± {_fmt(sd[1])} |"
        )
    return "\n".join(out) + "\n"


def _segments(run_dir: Path) -> tuple[str, dict[int, str]]:
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    banks_file = Path(metrics["data_directory"]) / "banks.json"
    if not banks_file.is_file():
        return Path(metrics["data_directory"]).name, {}
    banks = json.loads(banks_file.read_text(encoding="utf-8"))
    return banks["dataset"], {b["tenant"]: b["segment_name"] for b in banks["banks"]}


def _fmt(value: float, digits: int = 3) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def markdown_tables(runs: Sequence[tuple[str, Path, list[BankResult]]]) -> str:
    """Per data set three tables -- AUC, accuracy, epsilon -- a row per bank (AUC and accuracy
    also for all banks' test rows pooled, and the mean over banks), a column per method.
    ``runs`` = (method label, run directory, results)."""
    by_dataset: dict[str, list[tuple[str, Path, list[BankResult]]]] = {}
    segments: dict[str, dict[int, str]] = {}
    for label, run_dir, results in runs:
        dataset, names = _segments(run_dir)
        by_dataset.setdefault(dataset, []).append((label, run_dir, results))
        segments[dataset] = names
    out: list[str] = []
    for dataset, items in by_dataset.items():
        labels = [label for label, _, _ in items]
        first = items[0][2]
        n_train = sum(b.train for b in first)
        n_test = sum(b.test for b in first)
        defaults = sum(b.test_defaults for b in first)

        out.append(f"#### {dataset}: ROC AUC on each bank's own test split\n")
        out.append(
            _row(["bank", "segment", "train / test", "positives in test", "SE at AUC 0.7", *labels])
        )
        out.append("|" + "---|" * (5 + len(labels)))
        for row, bank in enumerate(first):
            se = auc_standard_error(0.7, bank.test_defaults, bank.test - bank.test_defaults)
            cells = [
                bank.party,
                segments[dataset].get(bank.tenant, "?"),
                f"{bank.train} / {bank.test}",
                f"{bank.test_defaults} ({bank.test_defaults / bank.test:.1%})",
                f"{se:.2f}",
            ]
            cells += [_fmt(results[row].auc) for _, _, results in items]
            out.append(_row(cells))
        se = auc_standard_error(0.7, defaults, n_test - defaults)
        cells = [
            "**pooled**",
            "all banks",
            f"{n_train} / {n_test}",
            f"{defaults} ({defaults / n_test:.1%})",
            f"{se:.2f}",
        ]
        cells += [f"**{_fmt(pooled(results)[0])}**" for _, _, results in items]
        out.append(_row(cells))
        cells = ["mean", "over banks", "", "", ""]
        cells += [_fmt(float(np.mean([r.auc for r in results]))) for _, _, results in items]
        out.append(_row(cells))
        out.append("")

        out.append(f"#### {dataset}: accuracy (P(label 1) > 0.5) on each bank's own test split\n")
        out.append(_row(["bank", "majority class", *labels]))
        out.append("|" + "---|" * (2 + len(labels)))
        for row, bank in enumerate(first):
            cells = [bank.party, f"{bank.majority_accuracy:.3f}"]
            cells += [_fmt(results[row].accuracy) for _, _, results in items]
            out.append(_row(cells))
        cells = ["**pooled**", f"{max(defaults, n_test - defaults) / n_test:.3f}"]
        cells += [f"**{_fmt(pooled(results)[2])}**" for _, _, results in items]
        out.append(_row(cells))
        out.append("")

        delta = "no DP" if first[0].delta is None else f"δ = {first[0].delta:g}"
        out.append(f"#### {dataset}: ε spent per bank over the whole run ({delta})\n")
        out.append(_row(["bank", *labels]))
        out.append("|" + "---|" * (1 + len(labels)))
        for row, bank in enumerate(first):
            cells = [bank.party]
            for _, _, results in items:
                eps = results[row].epsilon
                cells.append("no DP" if eps is None else f"{eps:.2f}")
            out.append(_row(cells))
        out.append("")
    return "\n".join(out)


def as_json(result: BankResult) -> dict[str, object]:
    """A result as JSON-ready values: no score vectors, NaN as null."""
    return {
        k: None if isinstance(v, float) and math.isnan(v) else v
        for k, v in asdict(result).items()
        if k not in ("scores", "labels")
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "runs", nargs="+", help="run directories, optionally LABEL=DIR (default label: the mode)"
    )
    parser.add_argument("--json", type=Path, help="also write per-bank results as JSON here")
    parser.add_argument("--markdown", type=Path, help="also write the tables here")
    args = parser.parse_args(argv)
    runs = []
    for item in args.runs:
        label, _, path = item.rpartition("=")
        run_dir = Path(path)
        results = evaluate_run(run_dir)
        runs.append((label or results[0].mode, run_dir, results))
    text = markdown_tables(runs)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n", encoding="utf-8")
    if args.json:
        document = [
            {"label": label, "run": str(run_dir)}
            | {
                "banks": [
                    {k: v for k, v in asdict(r).items() if k not in ("scores", "labels")}
                    for r in results
                ]
            }
            for label, run_dir, results in runs
        ]
        args.json.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
