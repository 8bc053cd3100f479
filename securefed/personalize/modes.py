"""The personalization modes by name (DESIGN §4g): the one spelling used by the API, the CLI,
benchmarks and metrics."""

from __future__ import annotations

from enum import Enum

__all__ = ["PersonalizationMode"]


class PersonalizationMode(Enum):
    """How the weights ξ are chosen and what the server may learn.

    ``value`` is the public name (``PersonalizationMode("fedamp")`` parses it).
    """

    LOCAL = "local"  # ξ = I: no aggregation
    FEDAVG = "fedavg"  # one output, the average, visible to the server
    FEDAMP = "fedamp"  # attention mode, distance-based weights (target-blinded outputs)
    HEURFEDAMP = "heurfedamp"  # attention mode, cosine-softmax weights (target-blinded outputs)
    GROUP = "group"  # one secure sum per group of a session-fixed partition

    @property
    def is_attention(self) -> bool:
        """Whether this mode needs one target-blinded output per client (DESIGN §4c)."""
        return self in (PersonalizationMode.FEDAMP, PersonalizationMode.HEURFEDAMP)
