"""The credit-risk example end to end: prepare the banks, run every method, score, audit.

From the repository root (``make credit-example`` does the same after installing the two data
wheels)::

    .venv/bin/python examples/credit_risk/run.py --out runs/credit-risk

1. ``prepare.py`` cuts each real data set into six banks (two portfolio segments of three banks)
   under ``OUT/data/<dataset>/`` (seed layout + ``federation.json`` + ``banks.json``);
2. for each data set and each method config in ``examples/credit_risk/configs/`` it writes the
   resolved configuration (the data directory and seed filled in) to ``OUT/configs/`` and runs
   ``securefed run --config OUT/configs/<run>.toml --out OUT/runs/<run>``: DP-SGD at each bank,
   secure aggregation, one signed ledger per party, and the audit report ``report.html`` (with
   its Markdown twin ``report.md``) in every run directory;
3. ``securefed audit verify OUT/runs/<run>`` checks every run's ledgers once more;
4. ``evaluate.py`` scores each bank's saved model on its own test split (AUC, accuracy) and
   reads its epsilon; the tables go to ``OUT/results.md`` (and ``OUT/results.json``).

Each method is a separate federation here, so each spends each bank's budget on its own: a real
consortium runs one of them (see the README). Nothing is downloaded at run time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import evaluate  # noqa: E402 -- the example's own modules, next to this file
import prepare  # noqa: E402
import synthetic_fraud  # noqa: E402

from securefed.runtime.config import parse_run_config  # noqa: E402

METHODS = (
    "local",
    "fedavg",
    "group-declared",
    "group-learned",
    "fedamp",
    "heurfedamp",
    "fedavg-no-dp",
)
CONFIGS = HERE / "configs"


def _securefed() -> str:
    script = Path(sys.executable).parent / "securefed"
    return str(script) if script.is_file() else "securefed"


SYNTHETIC = "synthetic-fraud"
DATASETS = (*sorted(prepare.DATASETS), SYNTHETIC)


def resolved_config(method: str, data_dir: Path, name: str, seed: int) -> str:
    """The method's TOML with the data directory, run name and seed set (and, for learned
    segments, as many groups as the data set declares segments), validated."""
    raw = tomllib.loads((CONFIGS / f"{method}.toml").read_text(encoding="utf-8"))
    raw["name"] = name
    raw["seed"] = seed
    raw["data"]["directory"] = str(data_dir)
    personalize = raw.get("personalize", {})
    if personalize.get("segments") == "learned":
        declared = json.loads((data_dir / "federation.json").read_text(encoding="utf-8"))
        personalize["groups"] = declared["groups"]
    return parse_run_config(raw).to_toml()


def _run(command: list[str], log: Path) -> int:
    with log.open("a", encoding="utf-8") as handle:
        handle.write("$ " + " ".join(command) + "\n")
        handle.flush()
        done = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, check=False)  # noqa: S603
    return done.returncode


def _own_records(out: Path, dataset: str, run: str) -> Path:
    """A copy of ``dataset``'s banks for ``run`` alone. The privacy spend follows the records
    (docs/dp.md): methods compared on one copy would share, and exhaust, one budget. A bank runs
    one method on its own records."""
    return Path(
        shutil.copytree(
            out / "data" / dataset,
            out / "records" / run,
            ignore=shutil.ignore_patterns("securefed-spend"),
        )
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/credit-risk"))
    parser.add_argument(
        "--datasets",
        nargs="+",
        choices=DATASETS,
        default=["german", "taiwan"],
        help=f"{SYNTHETIC} is SYNTHETIC data (12 banks, 2-6%% fraud); not run by default",
    )
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="training seeds")
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the bank split")
    args = parser.parse_args(argv)
    out: Path = args.out
    if out.exists() and any(out.iterdir()):
        print(f"run.py: {out} is not empty (move it away first)", file=sys.stderr)
        return 2
    started = time.perf_counter()
    for sub in ("data", "configs", "runs", "logs"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    for name in args.datasets:
        if name == SYNTHETIC:
            banks = synthetic_fraud.generate(out / "data" / name, seed=args.split_seed)
            print(f"generated {name} (SYNTHETIC): {len(banks)} banks -> {out / 'data' / name}")
            continue
        try:
            prepared = prepare.prepare(
                prepare.DATASETS[name], out / "data" / name, seed=args.split_seed
            )
        except FileNotFoundError as exc:
            print(f"run.py: {exc}", file=sys.stderr)
            return 2
        print(f"prepared {name}: {len(prepared.banks)} banks -> {prepared.directory}")

    records: list[dict[str, object]] = []
    evaluated: list[tuple[str, str, int, list[evaluate.BankResult]]] = []
    for seed in args.seeds:
        for name in args.datasets:
            for method in args.methods:
                run = _name(name, method, seed, args.seeds)
                config = out / "configs" / f"{run}.toml"
                config.write_text(
                    resolved_config(method, _own_records(out, name, run), run, seed),
                    encoding="utf-8",
                )
                run_dir, log = out / "runs" / run, out / "logs" / f"{run}.log"
                t0 = time.perf_counter()
                code = _run(
                    [_securefed(), "run", "--config", str(config), "--out", str(run_dir)], log
                )
                seconds = time.perf_counter() - t0
                verified = (
                    _run([_securefed(), "audit", "verify", str(run_dir)], log)
                    if code == 0
                    else None
                )
                status = "ok" if code == 0 and verified == 0 else f"failed (exit {code})"
                print(f"{run:32s} {status:18s} {seconds:6.1f} s  (log: {log})")
                records.append(
                    {
                        "run": run,
                        "dataset": name,
                        "method": method,
                        "seed": seed,
                        "exit": code,
                        "verify_exit": verified,
                        "seconds": round(seconds, 1),
                    }
                )
                if code == 0:
                    evaluated.append((name, method, seed, evaluate.evaluate_run(run_dir)))

    first = args.seeds[0]
    tables = evaluate.markdown_tables(
        [
            (m, out / "runs" / _name(d, m, s, args.seeds), r)
            for d, m, s, r in evaluated
            if s == first
        ]
    )
    if len(args.seeds) > 1:
        tables += "\n" + evaluate.seed_summary(evaluated)
    total = time.perf_counter() - started
    footer = (
        f"\nMeasured by `examples/credit_risk/run.py` (split seed {args.split_seed}, training "
        f"seed(s) {args.seeds}; tables above: seed {first}) in {total:.0f} s on "
        f"{platform.machine()} with {os.cpu_count()} CPU(s), OMP_NUM_THREADS="
        f"{os.environ.get('OMP_NUM_THREADS', 'unset')}.\n"
    )
    (out / "results.md").write_text(tables + footer, encoding="utf-8")
    (out / "results.json").write_text(
        json.dumps(
            {
                "runs": records,
                "seconds": round(total, 1),
                "banks": {
                    f"{d}-{m}-s{s}": [evaluate.as_json(r) for r in results]
                    for d, m, s, results in evaluated
                },
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
    print()
    print(tables + footer)
    print(f"results: {out / 'results.md'}; audit reports: {out / 'runs'}/<run>/report.html")
    failed = [r["run"] for r in records if r["exit"] != 0 or r["verify_exit"] != 0]
    if failed:
        print(f"failed runs: {', '.join(map(str, failed))}", file=sys.stderr)
    return 1 if failed else 0


def _name(dataset: str, method: str, seed: int, seeds: Sequence[int]) -> str:
    return f"{dataset}-{method}" + (f"-s{seed}" if len(seeds) > 1 else "")


if __name__ == "__main__":
    sys.exit(main())
