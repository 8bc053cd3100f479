"""The writer of one party's ledger: ``<run_dir>/ledgers/<actor>.jsonl``, append-only, signed.

Guarantees of :class:`Ledger`:

* **Durable before acted on.** :meth:`Ledger.append` returns only after the entry's line is
  written and ``os.fsync``'ed; the caller performs the action it records (spend a budget, send an
  update, use an unmasked result) only after ``append`` returns. If writing fails the ledger
  refuses every further append (:class:`~securefed.errors.LedgerIntegrityError`) and the caller
  must not act.
* **Continues only an intact chain.** :meth:`Ledger.open` re-reads an existing file and verifies
  every entry (format, hashes, signatures with the writer's own key, seq, chain). A ledger with any
  problem -- a malformed or half-written last line, an edited entry -- is refused with
  ``LedgerIntegrityError`` naming the line; it is never silently repaired. Move the file aside and
  investigate it with ``securefed audit verify``.
* **One writer.** The file is locked (``flock``, POSIX) while open; a second writer is refused with
  :class:`~securefed.errors.ConfigError`. A change of the file by anyone else between two appends
  is detected (its size changed) and turns into ``LedgerIntegrityError``.
* **No personal data.** Every payload passes :func:`securefed.audit.payload.check_payload`.
* **Sealed at the end.** After a *final* checkpoint (:mod:`securefed.audit.checkpoint`) nothing
  more is appended (``ConfigError``).

The signing key is used only to sign entries; it is never written, logged or repr'ed.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from securefed.audit.canonical import JsonValue
from securefed.audit.chain import scan_ledger
from securefed.audit.checkpoint import Checkpoint, Head
from securefed.audit.entry import GENESIS_HASH, LedgerEntry, format_time
from securefed.audit.events import EventRecord, EventType
from securefed.audit.payload import check_payload
from securefed.crypto import SigningKey, VerifyKey
from securefed.errors import ConfigError, LedgerIntegrityError
from securefed.files import fsync_directory

if sys.platform != "win32":
    import fcntl

__all__ = ["LEDGER_DIR", "Clock", "Ledger", "ledger_path"]

LEDGER_DIR = "ledgers"
_ACTOR = re.compile(r"[A-Za-z0-9._-]{1,64}")
_FILE_MODE = 0o640

Clock = Callable[[], datetime]
StrPath = str | os.PathLike[str]


def _utc_now() -> datetime:
    return datetime.now(UTC)


def ledger_path(run_dir: StrPath, actor: str) -> Path:
    """Where ``actor``'s ledger lives in a run directory: ``<run_dir>/ledgers/<actor>.jsonl``.

    Raises:
        ConfigError: ``actor`` is not a party id.
    """
    _check_actor(actor)
    return Path(run_dir) / LEDGER_DIR / f"{actor}.jsonl"


class Ledger:
    """One party's open, append-only ledger. Create with :meth:`open`; close when done."""

    def __init__(
        self,
        *,
        path: Path,
        actor: str,
        signing_key: SigningKey,
        fd: int,
        entries: tuple[LedgerEntry, ...],
        size: int,
        clock: Clock,
    ) -> None:
        """Internal: use :meth:`open`."""
        self._path = path
        self._actor = actor
        self._key = signing_key
        self._fd: int | None = fd
        self._hashes = [entry.hash for entry in entries]
        self._size = size
        self._clock = clock
        self._broken: str | None = None
        self._sealed = bool(entries) and _is_final_checkpoint(entries[-1])

    @classmethod
    def open(
        cls, path: StrPath, actor: str, signing_key: SigningKey, *, clock: Clock | None = None
    ) -> Ledger:
        """Create the ledger at ``path`` (and its directory), or re-open it and verify it.

        ``clock`` (default: the system clock) gives the entries' times; it must return
        timezone-aware datetimes.

        Raises:
            ConfigError: ``actor`` is not a party id, the file cannot be opened, or another
                writer holds it.
            LedgerIntegrityError: the existing file fails verification under
                ``signing_key.verify_key()`` (the message names the first bad line).
        """
        _check_actor(actor)
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            created = not path.exists()
            flags = os.O_RDWR | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
            fd = os.open(path, flags, _FILE_MODE)
        except OSError as exc:
            raise ConfigError(f"cannot open ledger {path}: {exc.strerror}") from None
        try:
            _lock(fd, path)
            data = _read_all(fd)
            scan = scan_ledger(
                data, actor=actor, verify_key=signing_key.verify_key(), file=path.name
            )
            if scan.problem is not None:
                raise LedgerIntegrityError(
                    f"ledger {path} is damaged, refusing to append: {scan.problem.describe()}. "
                    "Move it aside and inspect it with `securefed audit verify`."
                )
            if created:
                fsync_directory(path.parent)
        except BaseException:
            os.close(fd)
            raise
        return cls(
            path=path,
            actor=actor,
            signing_key=signing_key,
            fd=fd,
            entries=scan.entries,
            size=len(data),
            clock=clock or _utc_now,
        )

    # --- state ------------------------------------------------------------------------------

    @property
    def path(self) -> Path:
        """The ledger file."""
        return self._path

    @property
    def actor(self) -> str:
        """The party whose ledger this is."""
        return self._actor

    @property
    def verify_key(self) -> VerifyKey:
        """The public key that verifies this ledger's signatures."""
        return self._key.verify_key()

    @property
    def next_seq(self) -> int:
        """The seq the next entry will get (the number of entries so far)."""
        return len(self._hashes)

    @property
    def head_hash(self) -> str:
        """Hex hash of the last entry, or :data:`~securefed.audit.entry.GENESIS_HASH`."""
        return self._hashes[-1] if self._hashes else GENESIS_HASH

    @property
    def head(self) -> Head:
        """This ledger's head ``(actor, seq of the last entry or -1, head_hash)``."""
        return Head(self._actor, len(self._hashes) - 1, self.head_hash)

    @property
    def sealed(self) -> bool:
        """Whether the last entry is a final checkpoint (no more appends)."""
        return self._sealed

    # --- appending --------------------------------------------------------------------------

    def record(self, record: EventRecord) -> LedgerEntry:
        """Append a typed event record (:mod:`securefed.audit.events`); see :meth:`append`."""
        return self.append(record.event_type, record.to_payload())

    def append(self, event: EventType, payload: Mapping[str, object]) -> LedgerEntry:
        """Sign and durably append one entry; return it once it is on disk (fsync'ed).

        Raises:
            ConfigError: ``event`` is not an :class:`EventType`; the payload fails the guard
                (:mod:`securefed.audit.payload`); a checkpoint payload is malformed or records a
                head of this ledger that it does not have; the ledger is closed or sealed.
            LedgerIntegrityError: the file was changed by someone else since the last append,
                or writing failed (then this ledger refuses all further appends).
        """
        if self._fd is None:
            raise ConfigError(f"ledger {self._path} is closed")
        if self._broken is not None:
            raise LedgerIntegrityError(self._broken)
        if self._sealed:
            raise ConfigError(f"ledger {self._path} is sealed by its final checkpoint")
        if not isinstance(event, EventType):
            raise ConfigError(f"event must be an EventType, not {type(event).__name__}")
        clean = check_payload(payload)
        if event is EventType.CHECKPOINT:
            self._check_checkpoint(clean)
        entry = LedgerEntry.create(
            seq=self.next_seq,
            time=format_time(self._clock()),
            actor=self._actor,
            event=event,
            payload=clean,
            prev_hash=self.head_hash,
            signing_key=self._key,
        )
        self._write(self._fd, entry.to_line())
        self._hashes.append(entry.hash)
        self._sealed = _is_final_checkpoint(entry)
        return entry

    def _check_checkpoint(self, payload: Mapping[str, JsonValue]) -> None:
        try:
            checkpoint = Checkpoint.from_payload(payload)
        except ValueError as exc:
            raise ConfigError(f"malformed checkpoint: {exc}") from None
        own = checkpoint.head_of(self._actor)
        if checkpoint.final and own != self.head:
            raise ConfigError("a final checkpoint must record this ledger's current head")
        if own is not None and not self._has(own):
            raise ConfigError(f"the checkpoint records a head of {self._actor!r} it does not have")

    def _has(self, head: Head) -> bool:
        if head.seq == -1:
            return True  # Head guarantees the genesis hash
        return head.seq < len(self._hashes) and self._hashes[head.seq] == head.hash

    def _write(self, fd: int, line: bytes) -> None:
        try:
            if os.fstat(fd).st_size != self._size:
                self._broken = f"ledger {self._path} was changed by another writer"
                raise LedgerIntegrityError(self._broken)
            written = 0
            while written < len(line):
                written += os.write(fd, line[written:])
            os.fsync(fd)
        except OSError as exc:
            self._broken = f"could not durably append to ledger {self._path}: {exc.strerror}"
            with contextlib.suppress(OSError):  # best effort: remove a partial line
                os.ftruncate(fd, self._size)
            raise LedgerIntegrityError(self._broken) from None
        self._size += len(line)

    # --- closing ----------------------------------------------------------------------------

    def close(self) -> None:
        """Release the file and its lock (idempotent)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def __enter__(self) -> Ledger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Ledger {self._actor} entries={self.next_seq} path={self._path}>"


def _check_actor(actor: str) -> None:
    if not isinstance(actor, str) or not _ACTOR.fullmatch(actor):
        raise ConfigError(f"actor {actor!r} is not a party id (1-64 of [A-Za-z0-9._-])")


def _is_final_checkpoint(entry: LedgerEntry) -> bool:
    if entry.event is not EventType.CHECKPOINT:
        return False
    try:
        return Checkpoint.from_payload(entry.payload).final
    except ValueError:
        return False


def _lock(fd: int, path: Path) -> None:
    if sys.platform == "win32":  # pragma: no cover -- no flock; single writer by convention
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise ConfigError(f"ledger {path} is already open by another writer") from None


def _read_all(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    chunks: list[bytes] = []
    offset = 0
    while offset < size:
        chunk = os.pread(fd, size - offset, offset)
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)
