"""Drivers that move protocol messages: the in-memory simulation (``simulate_round``,
:mod:`securefed.runtime.federated`) and the deployment on Flower (:mod:`.flower`).

The names below are imported lazily, so that a light module of this package (the Flower
ClientApp relay, started once per message) does not pay for the simulation's imports.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from securefed.runtime.simulate import (
        Mode,
        RoundResult,
        ServerView,
        SimulationParams,
        simulate_round,
    )

__all__ = ["Mode", "RoundResult", "ServerView", "SimulationParams", "simulate_round"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from securefed.runtime import simulate  # noqa: PLC0415 - lazy, see the module docstring

        return getattr(simulate, name)
    raise AttributeError(f"module 'securefed.runtime' has no attribute {name!r}")
