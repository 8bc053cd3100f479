"""What the engine needs from an institution's local model: the :class:`Learner` protocol.

:class:`~securefed.runtime.nodes.ClientNode` (a DP trainer on the institution's records, with its
ledger) is the learner of every real run; tests plug in learners that hold a fixed vector.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

from securefed.runtime.engine.messages import ClientInfo

__all__ = ["Learner", "Trained"]

Vector = npt.NDArray[np.float64]


class Trained(Protocol):
    """The outcome of one local round: ``trained``, or ``refused`` with the reason."""

    @property
    def trained(self) -> bool: ...

    @property
    def refused(self) -> str | None: ...


class Learner(Protocol):
    """One institution's local model and its privacy accounting."""

    def train(self, round_: int) -> Trained:
        """One local round (its DP spend durable and ledgered before the first step); a budget
        refusal is returned, never raised."""
        ...

    def budget_refusal(self, round_: int) -> str | None:
        """Why this party cannot train round ``round_`` (ledgered), or None if it can."""
        ...

    def parameters(self) -> Vector:
        """The current model as one float64 vector."""
        ...

    def receive(self, personalized: Vector, *, anchor: bool) -> None:
        """Replace the model by its personalized aggregate (``anchor``: also the next round's
        proximal anchor)."""
        ...

    def similarity_input(self) -> Vector | None:
        """The DP similarity statistic, if this party released one."""
        ...

    def accuracy(self) -> float | None:
        """Test accuracy of the current model on the party's own test split (None without
        test records)."""
        ...

    def epsilon(self) -> float | None:
        """Epsilon spent so far (None without DP)."""
        ...

    def info(self) -> ClientInfo:
        """Record counts and DP settings, for the run's metrics."""
        ...

    def record_release(self, round_: int, masked: Sequence[npt.NDArray[np.generic]]) -> None:
        """Ledger that a masked update left the party (a digest only)."""
        ...

    def record_refusals(self, round_: int, refusals: Sequence[tuple[int, str]]) -> None:
        """Ledger the weight-policy refusals of this party's protocol."""
        ...
