"""Durable, atomic file writes: one implementation for every file securefed writes whole
(roster, key files, accountant state, models, metrics, ``federation.json``, ``canary.json``).

:func:`write_atomic` guarantees that a reader sees either the old file or the complete new one,
and that the new one is on stable storage when it returns (file and directory fsynced). It never
leaves a temporary file behind.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from securefed.errors import ConfigError

__all__ = [
    "PRIVATE_DIRECTORY_MODE",
    "PRIVATE_FILE_MODE",
    "fsync_directory",
    "private_directory",
    "write_atomic",
]

#: A party's state directory, and every secret-bearing file in it (models, accountant state,
#: statistic, seeds, round guard, keys): readable by its owner only.
PRIVATE_DIRECTORY_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def write_atomic(
    path: str | os.PathLike[str], data: bytes, *, mode: int = 0o644, overwrite: bool = True
) -> None:
    """Write ``data`` to ``path`` atomically and durably.

    A temporary file in the same directory (created 0o600 by mkstemp) is written, fsynced and
    given ``mode``; then it is renamed over ``path`` (``overwrite``) or hard-linked to it, which
    fails if ``path`` exists; finally the directory is fsynced.

    Raises:
        ConfigError: ``path`` exists and ``overwrite`` is false, or it cannot be written (the
            message names the file and the operating system's reason).
    """
    target = Path(path)
    if not overwrite and target.exists():
        raise ConfigError(f"refusing to overwrite existing file {target}")
    try:
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as exc:
        raise ConfigError(f"cannot write {target}: {exc.strerror}") from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.chmod(mode)
        _publish(tmp, target, overwrite=overwrite)
    except OSError as exc:
        raise ConfigError(f"cannot write {target}: {exc.strerror}") from None
    finally:
        tmp.unlink(missing_ok=True)
    fsync_directory(target.parent)


def _publish(tmp: Path, path: Path, *, overwrite: bool) -> None:
    if overwrite:
        tmp.replace(path)
        return
    try:
        os.link(tmp, path)  # atomic and exclusive: fails if path exists
    except FileExistsError:
        raise ConfigError(f"refusing to overwrite existing file {path}") from None
    except OSError:  # a file system without hard links: check, then rename
        if path.exists():
            raise ConfigError(f"refusing to overwrite existing file {path}") from None
        tmp.replace(path)


def fsync_directory(directory: str | os.PathLike[str]) -> None:
    """Make a rename or a new file in ``directory`` durable (no-op where directories cannot be
    opened, i.e. not POSIX)."""
    if os.name != "posix":  # pragma: no cover -- directories cannot be opened for fsync
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def private_directory(path: str | os.PathLike[str]) -> str | None:
    """Create ``path`` (and its parents) as a private directory (0700), or tighten an existing
    one that others can read, write or enter. Returns a one-line warning naming the old mode
    when it had to tighten (the caller ledgers it), else None.

    Raises:
        ConfigError: ``path`` is not a directory, or cannot be created or tightened (the message
            names the operating system's reason).
    """
    directory = Path(path)
    try:
        directory.mkdir(mode=PRIVATE_DIRECTORY_MODE, parents=True, exist_ok=True)
        mode = directory.stat().st_mode & 0o777
        if mode & 0o077 == 0:
            return None
        directory.chmod(mode & 0o700 | PRIVATE_DIRECTORY_MODE)
    except FileExistsError:
        raise ConfigError(f"{directory} exists and is not a directory") from None
    except OSError as exc:
        raise ConfigError(f"cannot make {directory} private: {exc.strerror}") from None
    return (
        f"the state directory {directory} had mode {mode:04o} (others could read it); it was "
        f"tightened to {PRIVATE_DIRECTORY_MODE:04o}"
    )
