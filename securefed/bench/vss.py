"""Cost of verifiable secret sharing (:mod:`securefed.crypto.vss`) per client and per server.

Not yet wired into ``securefed bench`` (issue 20 integrates VSS into the protocol first). Run it
as ``python -m securefed.bench.vss`` (one JSON object on stdout) or call
:func:`run_vss_benchmark`.

What one client would add to a round, for each ``(N, t)`` (complete graph: every client deals to
all ``N`` clients and holds a share from each of the other ``N - 1``), as the protocol shares two
secrets per client (mask key and self-mask seed):

* ``deal_s``: dealing both secrets (``2 t`` fixed-base multiplications, ``2 N`` evaluations)
  and encoding both commitments;
* ``verify_s``: decoding the ``2 (N - 1)`` commitments received and verifying the client's
  ``2 (N - 1)`` shares against them (Horner's rule in the exponent: cost grows with the
  client's ``x = index + 1``), for the client in the middle of the roster (``index = N // 2``);
  ``verify_worst_s`` for the last client (``index = N - 1``);
* ``client_added_s = deal_s + verify_s``.

And what the server would add: ``server_per_secret_s``, one :func:`~securefed.crypto.vss.
reconstruct` from all ``N - 1`` returned shares (every share verified), and
``server_added_s = N x server_per_secret_s`` (one secret per client and round).

With ``round_dim``, the same run also measures one plain secure-aggregation round at ``N = 10``
(:func:`securefed.bench.secagg.run_secagg_benchmark`) and reports ``client_overhead`` =
``client_added_s / client_s`` against the target of issue 20 (at most 15% at N = 10, d = 10^6).
Each time is the best of ``repeats``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from securefed.bench.secagg import run_secagg_benchmark
from securefed.crypto.vss import Commitment, deal, reconstruct, verify_share
from securefed.errors import ConfigError

__all__ = ["TARGET_CLIENT_OVERHEAD", "main", "run_vss_benchmark"]

TARGET_CLIENT_OVERHEAD = 0.15
DEFAULT_SIZES: tuple[tuple[int, int], ...] = ((10, 7), (100, 67))
_SECRETS_PER_CLIENT = 2


def _best(repeats: int, work: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - start)
    return best


def _deal_both(n: int, t: int) -> None:
    for _ in range(_SECRETS_PER_CLIENT):
        commitment, _ = deal(os.urandom(32), threshold=t, holders=range(n))
        commitment.to_bytes()


def _measure_size(n: int, t: int, repeats: int) -> dict[str, Any]:
    holders = range(n)
    dealt = [
        deal(os.urandom(32), threshold=t, holders=holders)
        for _ in range(_SECRETS_PER_CLIENT * (n - 1))
    ]
    encoded = [commitment.to_bytes() for commitment, _ in dealt]

    def verify_as(index: int) -> None:
        for data, (_, shares) in zip(encoded, dealt, strict=True):
            verify_share(Commitment.from_bytes(data), shares[index], threshold=t, holder=index)

    commitment, shares = dealt[0]
    returned = {h: shares[h] for h in holders if h != 0}
    deal_s = _best(repeats, lambda: _deal_both(n, t))
    verify_s = _best(repeats, lambda: verify_as(n // 2))
    verify_worst_s = _best(repeats, lambda: verify_as(n - 1))
    per_secret = _best(repeats, lambda: reconstruct(commitment, returned, threshold=t))
    return {
        "clients": n,
        "threshold": t,
        "deal_s": deal_s,
        "verify_s": verify_s,
        "verify_worst_s": verify_worst_s,
        "client_added_s": deal_s + verify_s,
        "client_added_worst_s": deal_s + verify_worst_s,
        "server_per_secret_s": per_secret,
        "server_added_s": n * per_secret,
        "commitment_bytes": len(encoded[0]),
    }


def run_vss_benchmark(
    *,
    sizes: Sequence[tuple[int, int]] = DEFAULT_SIZES,
    repeats: int = 3,
    round_dim: int | None = 1_000_000,
) -> dict[str, Any]:
    """Measure VSS costs for each ``(N, t)`` in ``sizes``; the JSON-ready result.

    Raises:
        ConfigError: ``repeats < 1``, or a size with ``N < 2`` or ``t`` outside ``1..N``.
    """
    if repeats < 1 or any(n < 2 or not 1 <= t <= n for n, t in sizes):
        raise ConfigError("need repeats >= 1 and sizes (N, t) with N >= 2, 1 <= t <= N")
    report: dict[str, Any] = {
        "benchmark": "vss",
        "group": "P-256",
        "repeats": repeats,
        "sizes": [_measure_size(n, t, repeats) for n, t in sizes],
    }
    if round_dim is not None:
        plain = run_secagg_benchmark(clients=10, dim=round_dim, repeats=repeats)
        added = next((s["client_added_s"] for s in report["sizes"] if s["clients"] == 10), None)
        report["round"] = {"clients": 10, "dim": round_dim, "client_s": plain["client_s"]}
        if added is not None:
            overhead = added / plain["client_s"]
            report["client_overhead"] = overhead
            report["target_client_overhead"] = TARGET_CLIENT_OVERHEAD
            report["client_target_met"] = overhead <= TARGET_CLIENT_OVERHEAD
    return report


def main() -> None:
    """Print :func:`run_vss_benchmark` with its defaults as one line of JSON."""
    print(json.dumps(run_vss_benchmark(), sort_keys=True))


if __name__ == "__main__":
    main()
