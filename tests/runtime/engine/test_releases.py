"""Each party's release history on disk (securefed/runtime/engine/releases.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from securefed.errors import ConfigError
from securefed.personalize.modes import PersonalizationMode
from securefed.personalize.rounds import RoundParams
from securefed.runtime.engine.releases import HISTORY_FILE, ReleaseBook
from securefed.runtime.engine.settings import EngineSettings
from securefed.secagg.history import ReleaseHistory
from securefed.testing.rounds import VectorFederation
from tests.runtime.engine import clustered

N = 5


def released(round_: int) -> ReleaseHistory:
    weights = np.full((N, N), 0.5 / (N - 1))
    np.fill_diagonal(weights, 0.5)
    return ReleaseHistory.empty(N).after(round_, weights, survivors=range(N), rounds=3)


def test_a_newer_history_is_kept_on_disk_private_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / HISTORY_FILE
    book = ReleaseBook(N, path)
    assert book.history is None
    assert book.before(1) is None
    assert book.update(released(2))
    assert not book.update(released(1))  # older: ignored
    assert path.stat().st_mode & 0o777 == 0o600
    again = ReleaseBook(N, path)
    assert again.history == released(2)
    assert again.before(3) == released(2)


def test_a_history_from_this_round_or_later_fails_closed(tmp_path: Path) -> None:
    book = ReleaseBook(N, tmp_path / HISTORY_FILE)
    book.update(released(7))
    with pytest.raises(ConfigError, match="records round 7, not before round 7"):
        book.before(7)


def test_a_file_that_is_not_a_history_is_refused(tmp_path: Path) -> None:
    path = tmp_path / HISTORY_FILE
    path.write_bytes(b"not a history")
    with pytest.raises(ConfigError, match="does not hold a release history"):
        ReleaseBook(N, path)
    path.write_bytes(released(1).to_bytes())
    with pytest.raises(ConfigError):
        ReleaseBook(N + 1, path)  # another federation's


def test_the_coordinator_and_every_institution_keep_the_same_history(tmp_path: Path) -> None:
    settings = EngineSettings(
        mode=PersonalizationMode.FEDAMP, rounds=2, params=RoundParams(sketch_dim=16)
    )
    models = clustered(N, seed=5)
    with VectorFederation(list(models), settings, seed=3, workdir=tmp_path) as run:
        run.run()
        books = [run.coordinator._releases, *(i._releases for i in run.institutions.values())]
    histories = [b.history for b in books]
    assert histories[0] is not None
    assert histories[0].round == 2
    assert all(h == histories[0] for h in histories)
