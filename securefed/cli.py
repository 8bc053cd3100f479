"""The ``securefed`` command line. Thin: parse arguments, call a library function, print.

Output convention: machine-readable results (``--json``) are one JSON object on one line of
stdout; progress and diagnostics go to stderr. Exit status 0 on success, 2 on a usage or
configuration error (a :class:`~securefed.errors.ConfigError`), 1 on any other securefed error.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from securefed import __version__
from securefed.bench import run_prg_benchmark
from securefed.errors import ConfigError, SecureFedError

__all__ = ["main"]


def _bench_prg(args: argparse.Namespace) -> int:
    print(f"bench prg: {args.mib} MiB x {args.repeats} repeats ...", file=sys.stderr)
    result = run_prg_benchmark(mib=args.mib, repeats=args.repeats).to_dict()
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        width = max(len(k) for k in result)
        for key, value in result.items():
            print(f"{key:<{width}}  {value}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="securefed", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"securefed {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    bench = commands.add_parser("bench", help="measure performance against same-run baselines")
    benches = bench.add_subparsers(dest="benchmark", required=True)
    prg = benches.add_parser("prg", help="mask generation vs the raw AES-256-CTR keystream limit")
    prg.add_argument("--mib", type=int, default=256, help="mask size in MiB (default 256)")
    prg.add_argument("--repeats", type=int, default=3, help="interleaved repeats, best kept")
    prg.add_argument("--json", action="store_true", help="one JSON object on stdout")
    prg.set_defaults(handler=_bench_prg)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``securefed`` console script."""
    args = _parser().parse_args(argv)
    try:
        status: int = args.handler(args)
    except ConfigError as exc:
        print(f"securefed: configuration error: {exc}", file=sys.stderr)
        return 2
    except SecureFedError as exc:
        print(f"securefed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return status


if __name__ == "__main__":
    sys.exit(main())
