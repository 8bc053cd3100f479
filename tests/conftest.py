"""Shared test set-up: every test gets its own data home, so that sources prepared by a run
(and the spend records next to them, docs/dp.md) never leak between tests or into ~/.local."""

from __future__ import annotations

from pathlib import Path

import pytest

from securefed.runtime.tenants import HOME_VARIABLE


@pytest.fixture(autouse=True)
def _isolated_data_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    home = tmp_path_factory.mktemp("securefed-home")
    monkeypatch.setenv(HOME_VARIABLE, str(home))
    return home
