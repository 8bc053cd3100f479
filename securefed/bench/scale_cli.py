"""The ``securefed bench scale`` subcommand: its arguments and its output (docs/benchmarks.md).

Without ``--json`` it prints a table, one line per N, then the fitted growth exponents; with
``--json`` one JSON object (:func:`securefed.bench.scale.run_scale_benchmark`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from securefed.bench.scale import DEFAULT_SIZES, run_scale_benchmark
from securefed.bench.scale_plot import write_plot

__all__ = ["add_scale_parser", "format_table"]

_COLUMNS = (
    ("clients", "N"),
    ("degree", "degree"),
    ("dropouts", "dropped"),
    ("client_s", "client s"),
    ("server_s", "server s"),
    ("upload_bytes_per_client", "bytes/client"),
    ("flower_client_s", "Flower client s"),
    ("flower_server_s", "Flower server s"),
    ("flower", "Flower"),
)


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError("sizes are comma-separated integers") from exc
    if not sizes:
        raise argparse.ArgumentTypeError("give at least one size")
    return sizes


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def format_table(result: dict[str, Any]) -> str:
    """The human-readable table of a :func:`run_scale_benchmark` result."""
    lines = [" | ".join(title for _, title in _COLUMNS)]
    for row in result["rows"]:
        lines.append(" | ".join(_cell(row[key]) for key, _ in _COLUMNS))
    for key in ("server_exponent", "server_exponent_50_200", "client_exponent"):
        lines.append(f"{key}: {_cell(result[key])}")
    return "\n".join(lines)


def _run(args: argparse.Namespace) -> int:
    print(
        f"bench scale: N in {list(args.sizes)}, d={args.dim}, dropouts {args.dropout_fraction:.0%}"
        f", Flower {'off' if args.no_flower else f'on (limit {args.flower_timeout:.0f} s per N)'}"
        " ...",
        file=sys.stderr,
    )
    result = run_scale_benchmark(
        sizes=args.sizes,
        dim=args.dim,
        dropout_fraction=args.dropout_fraction,
        collusion=args.collusion,
        repeats=args.repeats,
        flower=not args.no_flower,
        flower_timeout_s=args.flower_timeout,
    )
    if args.plot is not None:
        write_plot(result, args.plot)
    print(json.dumps(result, sort_keys=True) if args.json else format_table(result))
    return 0


def add_scale_parser(benches: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``bench scale`` on the ``bench`` subcommands."""
    scale = benches.add_parser("scale", help="one round per N: client and server time vs N")
    scale.add_argument(
        "--sizes",
        type=_sizes,
        default=DEFAULT_SIZES,
        help="comma-separated N (default " + ",".join(map(str, DEFAULT_SIZES)) + ")",
    )
    scale.add_argument("--dim", type=int, default=100_000, help="vector length d (default 10^5)")
    scale.add_argument(
        "--dropout-fraction", type=float, default=0.1, help="clients lost (default 0.1)"
    )
    scale.add_argument(
        "--collusion",
        type=float,
        default=0.05,
        help="colluder fraction the SecAgg+ degree is chosen for above N = 62 (default 0.05)",
    )
    scale.add_argument("--repeats", type=int, default=1, help="rounds per N, best kept")
    scale.add_argument("--no-flower", action="store_true", help="skip the Flower baseline")
    scale.add_argument(
        "--flower-timeout",
        type=float,
        default=600.0,
        help="seconds Flower may take per N before it is skipped (default 600)",
    )
    scale.add_argument(
        "--plot", type=Path, metavar="SVG", help="also draw the times against N (needs matplotlib)"
    )
    scale.add_argument("--json", action="store_true", help="one JSON object on stdout")
    scale.set_defaults(handler=_run)
