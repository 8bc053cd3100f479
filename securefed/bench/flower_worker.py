"""One Flower SecAgg+ baseline round in a child process, so that ``bench scale`` can bound its time.

``python -m securefed.bench.flower_worker --clients N --dim D --dropouts K --threshold T`` runs
:func:`securefed.bench.flower_baseline.run_flower_round` on the inputs of
:func:`securefed.bench.secagg.benchmark_inputs` (the ones securefed's round sums) after a small
warm-up, and prints its result as one JSON object on stdout. The parent kills the process when its
time limit passes (a thread cannot be stopped), and reads nothing but that JSON line: no pickle,
no shared state.

Exit status 0 with the JSON line; 2 with a message on stderr when flwr is missing or an argument
is refused (:class:`~securefed.errors.ConfigError`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from securefed.bench.flower_baseline import run_flower_round
from securefed.bench.secagg import benchmark_inputs
from securefed.errors import ConfigError

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the arguments, run the round, print its JSON. Returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m securefed.bench.flower_worker")
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--dim", type=int, required=True)
    parser.add_argument("--dropouts", type=int, required=True)
    parser.add_argument("--threshold", type=int, required=True)
    args = parser.parse_args(argv)
    try:
        run_flower_round(  # warm-up: imports, first-call costs
            n_clients=args.clients,
            dim=min(args.dim, 1000),
            dropouts=args.dropouts,
            threshold=args.threshold,
        )
        result = run_flower_round(
            n_clients=args.clients,
            dim=args.dim,
            dropouts=args.dropouts,
            inputs=benchmark_inputs(args.clients, args.dim),
            threshold=args.threshold,
        )
    except ConfigError as exc:
        print(f"flower baseline: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result.to_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
