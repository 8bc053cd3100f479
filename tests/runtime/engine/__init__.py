"""Engine tests: small runs over fixed vectors (securefed.testing.rounds), stepped by hand."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import numpy.typing as npt

from securefed.audit.entry import LedgerEntry, parse_entry
from securefed.audit.ledger import ledger_path
from securefed.runtime.engine.coordinator import Outbox
from securefed.testing.rounds import VectorFederation

Vector = npt.NDArray[np.float64]


def clustered(n: int, dim: int = 16, seed: int = 0) -> list[Vector]:
    """Models in two clusters (even and odd indices), |w| well inside the codec range."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-2.0, 2.0, (2, dim))
    return [centres[i % 2] + rng.normal(0.0, 0.1, dim) for i in range(n)]


def exchanges(run: VectorFederation) -> Iterator[int]:
    """Drive ``run`` one exchange at a time, yielding the number of exchanges made so far
    before each one and once after the last (``memory.drive`` without its wind-down)."""
    coordinator, transport = run.coordinator, run.transport
    outbox: Outbox | None = coordinator.start(transport.nodes())
    count = 0
    while outbox is not None:
        yield count
        replies = transport.exchange(outbox.requests, timeout=0.0)
        outbox = coordinator.receive(replies, transport.nodes())
        count += 1
    yield count


def entries(run: VectorFederation, actor: str) -> list[LedgerEntry]:
    lines = ledger_path(run.workdir, actor).read_bytes().splitlines()
    return [parse_entry(line) for line in lines]
