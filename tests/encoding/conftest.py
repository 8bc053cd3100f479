"""Shared fixtures of the encoding tests: deterministic dither streams."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from securefed.crypto import CipherSuite, KdfContext, get_suite
from securefed.encoding import DitherStream, dither_stream

SESSION_ID = bytes(range(32))


@pytest.fixture(scope="session")
def suite() -> CipherSuite:
    return get_suite("default")


@pytest.fixture(scope="session")
def context() -> KdfContext:
    return KdfContext(SESSION_ID, 0)


@pytest.fixture(scope="session")
def make_dither(suite: CipherSuite) -> Callable[..., DitherStream]:
    """``make_dither(seed=0, *, round_number=0, target=None)``: a fresh, reproducible stream.

    Session-scoped (it is a pure factory) so that Hypothesis tests may use it.
    """

    def make(seed: int = 0, *, round_number: int = 0, target: int | None = None) -> DitherStream:
        context = KdfContext(SESSION_ID, round_number)
        return dither_stream(suite, seed.to_bytes(32, "big"), context=context, target=target)

    return make
