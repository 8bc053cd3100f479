"""Attack tests (DESIGN §4, issue 5 item 7); each file states adversary, assumptions and outcome.

Test data (the models) come from :func:`seeded_rng`, a seeded numpy generator: it only draws
plaintext models, never anything the protocol uses as randomness.
"""

from __future__ import annotations

import numpy as np


def seeded_rng(seed: int) -> np.random.Generator:  # noqa: TID251 - test data only
    """A seeded generator for test models (reproducible measurements)."""
    return np.random.default_rng(seed)  # noqa: TID251 - test data only
