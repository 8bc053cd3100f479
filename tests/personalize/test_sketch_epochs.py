"""Sketch epochs: a bounded number of sketch rounds under one S_0 (docs/fedamp.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from securefed.audit import EventType
from securefed.personalize.modes import PersonalizationMode
from securefed.personalize.rounds import (
    NO_ROTATION,
    RoundParams,
    make_sketcher,
    sketch_epoch,
    sketches_per_seed,
)
from securefed.runtime.engine.settings import EngineSettings
from securefed.testing.rounds import VectorFederation
from tests.runtime.engine import clustered, entries

SEED = bytes(range(32))


def test_the_default_bound_is_d_over_k_rounded_up() -> None:
    params = RoundParams(sketch_dim=256)
    assert sketches_per_seed(params, model_dim=100_000) == 391  # ceil(100000 / 256)
    assert sketches_per_seed(params, model_dim=257) == 2
    assert sketches_per_seed(params, model_dim=256) == NO_ROTATION  # one sketch is the vector
    assert sketches_per_seed(RoundParams(sketches_per_seed=5), model_dim=100_000) == 5


@pytest.mark.parametrize(("round_", "epoch"), [(1, 0), (3, 0), (4, 1), (6, 1), (7, 2)])
def test_epochs_cover_consecutive_blocks_of_rounds(round_: int, epoch: int) -> None:
    assert sketch_epoch(round_, 3) == epoch


def test_epoch_zero_is_the_seeds_own_s0_and_later_epochs_are_new_ones() -> None:
    params = RoundParams(sketch_dim=8)
    vector = np.linspace(-1.0, 1.0, 64)
    zero = make_sketcher(SEED, params, model_dim=64)
    assert np.array_equal(
        zero.distance_sketch(vector, round_=2),
        make_sketcher(SEED, params, model_dim=64, epoch=0).distance_sketch(vector, round_=2),
    )
    one = make_sketcher(SEED, params, model_dim=64, epoch=1)
    two = make_sketcher(SEED, params, model_dim=64, epoch=2)
    sketches = [s.distance_sketch(vector, round_=2) for s in (zero, one, two)]
    assert not np.allclose(sketches[0], sketches[1])
    assert not np.allclose(sketches[1], sketches[2])
    # Same epoch, same round: every party gets the same sketch of the same vector.
    again = make_sketcher(SEED, params, model_dim=64, epoch=1).distance_sketch(vector, round_=2)
    assert np.array_equal(sketches[1], again)


def test_every_sketch_is_ledgered_with_its_epoch(tmp_path: Path) -> None:
    settings = EngineSettings(
        mode=PersonalizationMode.FEDAMP,
        rounds=3,
        params=RoundParams(sketch_dim=4, sketches_per_seed=2),
    )
    models = clustered(5, seed=5)
    with VectorFederation(list(models), settings, seed=3, workdir=tmp_path) as run:
        run.run()
        released = {
            party: [
                (e.payload["round"], e.payload["epoch"], e.payload["per_seed"])
                for e in entries(run, party)
                if e.event is EventType.SKETCH_RELEASED
            ]
            for party in (f"bank-{i}" for i in range(5))
        }
    for party, sketches in released.items():
        assert sketches == [(1, 0, 2), (2, 0, 2), (3, 1, 2)], party
