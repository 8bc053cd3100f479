"""Deterministic randomness for simulations ONLY (``simulate_round(seed=...)``).

A simulation must be reproducible: the same seed gives the same result. The only randomness that
reaches a result is the encoder's dither (masks cancel exactly in the ring), so a simulation draws
seeds from an AES-256-CTR stream keyed by SHA-256 of its integer seed instead of from
``os.urandom``. Key pairs still come from the operating system (they cancel out too).

WARNING: never use this in a deployment -- anyone who knows the seed knows every self-mask seed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import numpy as np

from securefed.crypto import DerivedKey, KeyPurpose, KeyStream, get_suite

__all__ = ["seeded_random_bytes_unsafe"]


def seeded_random_bytes_unsafe(seed: int) -> Callable[[int], bytes]:
    """A ``random_bytes`` replacement whose output is a fixed function of ``seed``."""
    material = hashlib.sha256(
        b"securefed/v1/simulation-seed" + seed.to_bytes(16, "big", signed=True)
    ).digest()
    stream = KeyStream(
        DerivedKey(get_suite("default"), KeyPurpose.DITHER, material), parallel=False
    )

    def random_bytes(count: int) -> bytes:
        return stream.words(count, np.uint8).tobytes()

    return random_bytes
