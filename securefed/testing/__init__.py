"""In-memory harnesses for running protocol objects in one process (tests, benchmarks, demos)."""

from securefed.testing.harness import (
    Federation,
    RoundOutcome,
    make_federation,
    resign,
    run_round,
)

__all__ = ["Federation", "RoundOutcome", "make_federation", "resign", "run_round"]
