"""``securefed bench scale``: how one secure-aggregation round grows with the number of parties.

For every N in ``sizes`` (default 10, 20, 50, 100, 200) one round of the real protocol runs in
memory, as in ``securefed bench secagg`` (:func:`securefed.bench.secagg.secagg_round`: real keys,
signatures, AEAD, Feldman-verified shares, AES-CTR masks, wire encoding), with ``d`` = ``dim``
words and ``round(dropout_fraction * N)`` clients (the highest indices) lost after sharing keys.
The masking graph is the complete graph up to N = 62 (:data:`COMPLETE_GRAPH_MAX`) and the
SecAgg+ graph above, of the degree :func:`securefed.secagg.graph.secagg_plus_degree` gives for
the colluder fraction ``collusion`` and the dropout fraction (privacy 2^-40, correctness 2^-30;
the table in docs/protocol.md); when no degree below N - 1 qualifies, the row runs the complete
graph and its ``graph`` column says so.

Each row reports ``client_s`` (median over surviving clients of one client's work in the round),
``server_s``, ``upload_bytes_per_client`` (median bytes a surviving client sends) and ``correct``
(the decoded sum matches the plaintext sum within the codec bound); with ``repeats > 1`` each time
is the best of the repeats. With ``flower=True`` the same N, d, dropouts and threshold run on
Flower's SecAgg+ primitives (:mod:`securefed.bench.flower_baseline`, complete graph) in a child
process that is killed after ``flower_timeout_s`` (the row then says ``"timeout"``).

``server_exponent`` is the least-squares slope of log(server_s) on log(N) over all rows, and
``server_exponent_50_200`` the slope over the rows with 50 <= N <= 200 (target <= 2.2; None when
fewer than two such rows ran). They describe this run on this machine, nothing more.

Failure modes: :class:`~securefed.errors.ConfigError` for sizes below 3, a dimension below 1, a
dropout fraction outside [0, 1/3) or a round that aborts.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any

from securefed.bench.flower_baseline import flower_available
from securefed.bench.secagg import benchmark_inputs, round_summary, secagg_round
from securefed.errors import ConfigError
from securefed.secagg.graph import secagg_plus_degree

__all__ = [
    "COMPLETE_GRAPH_MAX",
    "DEFAULT_SIZES",
    "TARGET_SERVER_EXPONENT",
    "FlowerStatus",
    "ScaleRow",
    "growth_exponent",
    "run_scale_benchmark",
]

DEFAULT_SIZES = (10, 20, 50, 100, 200)
COMPLETE_GRAPH_MAX = 62
TARGET_SERVER_EXPONENT = 2.2
_EXPONENT_RANGE = (50, 200)


class FlowerStatus(Enum):
    """What became of the Flower baseline for one N."""

    OK = "ok"
    SKIPPED = "skipped"  # not asked for
    UNAVAILABLE = "unavailable"  # flwr is not installed
    TIMEOUT = "timeout"  # did not finish within the per-N limit
    FAILED = "failed"  # the child process exited with an error


@dataclass(frozen=True, slots=True)
class ScaleRow:
    """One N of the table (times in seconds; Flower's fields None unless ``flower == "ok"``)."""

    clients: int
    dim: int
    dropouts: int
    graph: str
    degree: int
    threshold: int
    client_s: float
    server_s: float
    upload_bytes_per_client: int
    correct: bool
    flower: str
    flower_client_s: float | None = None
    flower_server_s: float | None = None
    flower_total_s: float | None = None
    flower_correct: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def growth_exponent(sizes: Sequence[int], seconds: Sequence[float]) -> float | None:
    """Least-squares slope of log(seconds) on log(size): ``seconds ~ size ** slope``.

    None when fewer than two distinct sizes are given. Raises ConfigError for a non-positive
    size or time (no logarithm).
    """
    if len(sizes) != len(seconds):
        raise ConfigError("one time per size")
    if any(s <= 0 for s in sizes) or any(t <= 0 for t in seconds):
        raise ConfigError("sizes and times must be positive to fit a growth exponent")
    if len(set(sizes)) < 2:
        return None
    xs = [math.log(s) for s in sizes]
    ys = [math.log(t) for t in seconds]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    covariance = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
    variance = sum((x - mean_x) ** 2 for x in xs)
    return covariance / variance


def _graph_degree(clients: int, collusion: float, dropout_fraction: float) -> int | None:
    """The SecAgg+ degree for this N; None for the complete graph (N <= 62, or no degree below
    N - 1 meets the bounds)."""
    if clients <= COMPLETE_GRAPH_MAX:
        return None
    degree = secagg_plus_degree(clients, collusion, dropout_fraction)
    return degree if degree is not None and degree < clients - 1 else None


def _flower_row(
    *, clients: int, dim: int, dropouts: int, threshold: int, timeout_s: float
) -> dict[str, Any]:
    """Flower's round in a child process, killed after ``timeout_s`` seconds."""
    if not flower_available():
        return {"flower": FlowerStatus.UNAVAILABLE.value}
    command = [
        sys.executable,
        "-m",
        "securefed.bench.flower_worker",
        f"--clients={clients}",
        f"--dim={dim}",
        f"--dropouts={dropouts}",
        f"--threshold={threshold}",
    ]
    try:
        done = subprocess.run(  # noqa: S603 - our own module, fixed arguments
            command, capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired:
        return {"flower": FlowerStatus.TIMEOUT.value}
    if done.returncode != 0:
        return {"flower": FlowerStatus.FAILED.value}
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {
        "flower": FlowerStatus.OK.value,
        "flower_client_s": float(result["client_s"]),
        "flower_server_s": float(result["server_s"]),
        "flower_total_s": float(result["total_s"]),
        "flower_correct": bool(result["correct"]),
    }


def _row(
    clients: int,
    *,
    dim: int,
    dropout_fraction: float,
    collusion: float,
    repeats: int,
    flower: bool,
    flower_timeout_s: float,
) -> ScaleRow:
    dropouts = round(dropout_fraction * clients)
    sparse = _graph_degree(clients, collusion, dropout_fraction)
    inputs = benchmark_inputs(clients, dim)
    runs = []
    for _ in range(repeats):
        outcome, config = secagg_round(clients, dim, dropouts, inputs, degree=sparse)
        if outcome.result is None:
            raise ConfigError(f"the round aborted at N = {clients} with {dropouts} dropouts")
        runs.append(round_summary(outcome, inputs))
    extra: dict[str, Any] = {"flower": FlowerStatus.SKIPPED.value}
    if flower:
        extra = _flower_row(
            clients=clients,
            dim=dim,
            dropouts=dropouts,
            threshold=config.threshold,
            timeout_s=flower_timeout_s,
        )
    return ScaleRow(
        clients=clients,
        dim=dim,
        dropouts=dropouts,
        graph=config.graph.kind.value,
        degree=sparse if sparse is not None else clients - 1,
        threshold=config.threshold,
        client_s=min(r["client_s"] for r in runs),
        server_s=min(r["server_s"] for r in runs),
        upload_bytes_per_client=int(runs[0]["upload_bytes_per_client"]),
        correct=all(r["correct"] for r in runs),
        **extra,
    )


def run_scale_benchmark(
    *,
    sizes: Sequence[int] = DEFAULT_SIZES,
    dim: int = 100_000,
    dropout_fraction: float = 0.1,
    collusion: float = 0.05,
    repeats: int = 1,
    flower: bool = True,
    flower_timeout_s: float = 600.0,
) -> dict[str, Any]:
    """Run one row per N (ascending) and fit the server's growth exponent; JSON-ready result.

    Raises:
        ConfigError: a size below 3, ``dim < 1``, ``repeats < 1``, a dropout fraction outside
            [0, 1/3), a collusion fraction outside [0, 1), or a round that aborts.
    """
    ordered = sorted(set(sizes))
    if not ordered or ordered[0] < 3 or dim < 1 or repeats < 1 or flower_timeout_s <= 0:
        raise ConfigError("need sizes >= 3, dim >= 1, repeats >= 1 and a positive time limit")
    if not 0.0 <= dropout_fraction < 1 / 3 or not 0.0 <= collusion < 1.0:
        raise ConfigError("need 0 <= dropout fraction < 1/3 and 0 <= collusion < 1")
    small = min(dim, 1000)  # warm-up: imports and first-call costs
    secagg_round(ordered[0], small, 0, benchmark_inputs(ordered[0], small))
    rows = []
    for n in ordered:
        row = _row(
            n,
            dim=dim,
            dropout_fraction=dropout_fraction,
            collusion=collusion,
            repeats=repeats,
            flower=flower,
            flower_timeout_s=flower_timeout_s,
        )
        print(f"bench scale: {json.dumps(row.to_dict(), sort_keys=True)}", file=sys.stderr)
        rows.append(row)
    low, high = _EXPONENT_RANGE
    ranged = [r for r in rows if low <= r.clients <= high]
    exponent = growth_exponent([r.clients for r in rows], [r.server_s for r in rows])
    ranged_exponent = growth_exponent([r.clients for r in ranged], [r.server_s for r in ranged])
    return {
        "benchmark": "scale",
        "dim": dim,
        "dropout_fraction": dropout_fraction,
        "collusion": collusion,
        "repeats": repeats,
        "flower_timeout_s": flower_timeout_s,
        "rows": [r.to_dict() for r in rows],
        "server_exponent": exponent,
        "server_exponent_50_200": ranged_exponent,
        "client_exponent": growth_exponent([r.clients for r in rows], [r.client_s for r in rows]),
        "target_server_exponent": TARGET_SERVER_EXPONENT,
        "server_exponent_target_met": (
            None if ranged_exponent is None else ranged_exponent <= TARGET_SERVER_EXPONENT
        ),
    }
