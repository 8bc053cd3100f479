"""In-memory harnesses for running protocol objects in one process (tests, benchmarks, demos)."""

from securefed.testing.harness import (
    Federation,
    RoundOutcome,
    make_federation,
    resign,
    run_round,
)
from securefed.testing.session import run_session_setup

__all__ = [
    "Federation",
    "RoundOutcome",
    "make_federation",
    "resign",
    "run_round",
    "run_session_setup",
]
