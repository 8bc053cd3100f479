"""Benchmarks behind ``securefed bench``: each returns one JSON-ready dict.

Convention (DESIGN §7): rates in bytes per second (gbps = 10**9 B/s), baselines measured in the
same run, the target and whether it was met included; a missed target is data, not an error.
"""

from securefed.bench.prg import PrgBenchmark, run_prg_benchmark

__all__ = ["PrgBenchmark", "run_prg_benchmark"]
