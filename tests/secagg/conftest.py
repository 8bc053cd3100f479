"""Shared fixtures for the protocol tests: small federations and round configs."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from securefed.encoding import CodecConfig
from securefed.secagg import RoundConfig
from securefed.testing import Federation, make_federation

SESSION = bytes(range(32))
DIM = 64


def config_for(
    federation: Federation,
    *,
    round_: int = 1,
    dim: int = DIM,
    codec: CodecConfig | None = None,
    **changes: object,
) -> RoundConfig:
    return RoundConfig(
        roster=federation.roster,
        session_id=SESSION,
        round=round_,
        vector_length=dim,
        codec=codec or CodecConfig.default(),
        **changes,  # type: ignore[arg-type]
    )


def inputs_for(n: int, dim: int = DIM, seed: int = 0) -> dict[int, npt.NDArray[np.float64]]:
    rng = np.random.default_rng(seed)
    return {i: rng.uniform(-4.0, 4.0, dim) for i in range(n)}


_FEDERATIONS: dict[tuple[int, str], Federation] = {}


def federation(n: int, suite: str = "default") -> Federation:
    """Cached per test session: key generation is cheap but not free."""
    if (n, suite) not in _FEDERATIONS:
        _FEDERATIONS[(n, suite)] = make_federation(n, suite=suite)
    return _FEDERATIONS[(n, suite)]
