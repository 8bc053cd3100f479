"""Drivers that move protocol messages. Today: the in-memory simulation (``simulate_round``)."""

from securefed.runtime.simulate import (
    Mode,
    RoundResult,
    ServerView,
    SimulationParams,
    simulate_round,
)

__all__ = ["Mode", "RoundResult", "ServerView", "SimulationParams", "simulate_round"]
