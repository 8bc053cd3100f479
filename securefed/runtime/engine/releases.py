"""Keeping a party's release history (securefed/secagg/history.py) across rounds and restarts.

The coordinator and every institution keep the history of what attention rounds released, so
that the next round is judged against it (docs/fedamp.md, "Across rounds"). It survives a
restart in ``release-history.bin`` in the party's state directory (written atomically, mode
0600): a resumed run, or a restarted agent, keeps judging against it, and a coordinator that lost
its file is refused by every institution that kept its own (it claims no history).
"""

from __future__ import annotations

import os
from pathlib import Path

from securefed.errors import ConfigError, RemoteProtocolError
from securefed.files import PRIVATE_FILE_MODE, write_atomic
from securefed.secagg.history import ReleaseHistory

__all__ = ["HISTORY_FILE", "ReleaseBook"]

HISTORY_FILE = "release-history.bin"


class ReleaseBook:
    """One party's release history, optionally persisted in ``path``.

    Raises (at construction): ConfigError if ``path`` exists and does not hold a release history
    for ``n_clients`` parties.
    """

    def __init__(self, n_clients: int, path: os.PathLike[str] | None = None) -> None:
        self._n_clients = n_clients
        self._path = Path(path) if path is not None else None
        self._history: ReleaseHistory | None = None
        if self._path is not None and self._path.exists():
            try:
                self._history = ReleaseHistory.from_bytes(self._path.read_bytes(), n_clients)
            except (RemoteProtocolError, OSError) as exc:
                raise ConfigError(f"{self._path} does not hold a release history: {exc}") from exc

    @property
    def history(self) -> ReleaseHistory | None:
        """The history as of the last release this party saw (None before the first)."""
        return self._history

    def before(self, round_: int) -> ReleaseHistory | None:
        """The history to judge ``round_`` against (None before the first release).

        Raises:
            ConfigError: the kept history records a release of ``round_`` or a later round: the
                file is from another run or was altered (failing closed: judging against
                nothing would turn the check off).
        """
        history = self._history
        if history is not None and history.round >= round_:
            where = f" in {self._path}" if self._path is not None else ""
            raise ConfigError(
                f"the release history{where} records round {history.round}, not before round "
                f"{round_}: it is from another run or was altered"
            )
        return history

    def update(self, history: ReleaseHistory | None) -> bool:
        """Keep ``history`` if it is newer than the one kept (persisting it first); whether it
        was."""
        if history is None or history.n_clients != self._n_clients:
            return False
        if self._history is not None and history.round <= self._history.round:
            return False
        if self._path is not None:
            write_atomic(
                os.fspath(self._path), history.to_bytes(), overwrite=True, mode=PRIVATE_FILE_MODE
            )
        self._history = history
        return True
