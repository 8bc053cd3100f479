"""Checking one ledger file on its own: format, hashes, signatures, sequence and chain.

:func:`scan_ledger` walks the lines in order and stops at the first bad one. Per entry, in this
order (the first failing check names the problem):

1. the line parses as a canonical entry (:func:`~securefed.audit.entry.parse_entry`), else
   MALFORMED; a last line without its newline is TRUNCATED (the file was cut mid-entry);
2. ``hash`` equals the recomputed hash of the content, else EDITED (a field, or ``hash`` itself,
   was changed);
3. ``signature`` verifies under the actor's key over ``hash``, else BAD_SIGNATURE (signed by
   another key, or content *and* hash were changed consistently by someone without the key);
4. ``actor`` is the ledger's actor, else MALFORMED;
5. ``seq`` equals the line's position: a smaller or repeated seq, or a missing seq that appears
   later in the file, is REORDERED; a gap whose seqs appear nowhere is DELETED;
6. ``prev_hash`` equals the previous entry's hash, else REORDERED (the chain was spliced);
7. a checkpoint entry has the checkpoint format, and the head it records for its own actor is one
   of the earlier entries of this ledger (a final checkpoint: the entry just before it), else
   MALFORMED or EDITED; nothing follows a final checkpoint, else MALFORMED.

What a single file cannot show is that entries were cut from its *end*: that needs the other
parties' checkpoints (:mod:`securefed.audit.checkpoint`, :func:`securefed.audit.verify.verify_run`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from securefed.audit.checkpoint import Checkpoint
from securefed.audit.entry import GENESIS_HASH, LedgerEntry, parse_entry
from securefed.audit.events import EventType
from securefed.crypto import VerifyKey
from securefed.errors import InvalidSignature

__all__ = ["Problem", "ProblemKind", "ScanResult", "scan_ledger"]


class ProblemKind(Enum):
    """What is wrong with a ledger. Every kind but INCOMPLETE and EQUIVOCATION is tampering (or
    damage); INCOMPLETE says that a required piece -- a party's ledger, its genesis entry, its
    ``run.configured`` entry or its final checkpoint -- is absent from an otherwise intact chain;
    EQUIVOCATION that an intact ledger records the coordinator sending it heads inconsistent
    with its transcript (``coordinator.inconsistent-heads``) (:mod:`securefed.audit.verify`;
    :func:`scan_ledger` reports neither)."""

    EDITED = "edited"
    REORDERED = "reordered"
    DELETED = "deleted"
    TRUNCATED = "truncated"
    BAD_SIGNATURE = "bad-signature"
    UNKNOWN_ACTOR = "unknown-actor"
    MALFORMED = "malformed"
    INCOMPLETE = "incomplete"
    EQUIVOCATION = "equivocation"  # an intact ledger records that the coordinator equivocated


@dataclass(frozen=True, slots=True)
class Problem:
    """The first bad entry of a ledger.

    ``file`` is the ledger's path relative to the run directory (``ledgers/bank-0.jsonl``; for a
    single ledger checked alone, its file name), in POSIX form, never absolute. ``line`` is the
    1-based line number in that file, ``seq`` the seq of the entry concerned (as the line claims
    it or, for a missing entry, the expected one); either is None when the problem concerns the
    whole file.
    """

    file: str
    kind: ProblemKind
    detail: str
    seq: int | None = None
    line: int | None = None

    def describe(self) -> str:
        """One line for a person: ``ledgers/bank-0.jsonl line 4 (seq 3): edited: ...``."""
        where = self.file
        if self.line is not None:
            where += f" line {self.line}"
        if self.seq is not None:
            where += f" (seq {self.seq})"
        return f"{where}: {self.kind.value}: {self.detail}"


@dataclass(frozen=True, slots=True)
class ScanResult:
    """The result of scanning one file: the entries before the first problem, and the problem."""

    entries: tuple[LedgerEntry, ...]
    lines: int
    problem: Problem | None


@dataclass(frozen=True, slots=True)
class _Line:
    number: int
    entry: LedgerEntry | None
    error: str


def scan_ledger(data: bytes, *, actor: str, verify_key: VerifyKey, file: str) -> ScanResult:
    """Check the ledger file content ``data`` of ``actor`` (see the module docstring).

    Never raises for bad content: every defect is reported as the returned ``problem``.
    """
    return _Scanner(_split(data), actor, verify_key).run(
        file, complete=data.endswith(b"\n") or not data
    )


Finding = tuple[ProblemKind, str]


@dataclass
class _Scanner:
    lines: list[_Line]
    actor: str
    verify_key: VerifyKey

    def run(self, file: str, *, complete: bool) -> ScanResult:
        entries: list[LedgerEntry] = []
        sealed_at: int | None = None
        for position, line in enumerate(self.lines):
            if not complete and position == len(self.lines) - 1:
                detail = "the file ends in the middle of an entry (no final newline)"
                problem = Problem(
                    file, ProblemKind.TRUNCATED, detail, seq=position, line=line.number
                )
                return ScanResult(tuple(entries), len(self.lines), problem)
            if line.entry is None:
                problem = Problem(
                    file, ProblemKind.MALFORMED, line.error, seq=position, line=line.number
                )
                return ScanResult(tuple(entries), len(self.lines), problem)
            entry = line.entry
            found = self._integrity(entry) or self._order(entry, position, entries)
            if found is None and sealed_at is not None:
                found = (
                    ProblemKind.MALFORMED,
                    f"entry after the final checkpoint (seq {sealed_at})",
                )
            if found is not None:
                problem = Problem(file, found[0], found[1], seq=entry.seq, line=line.number)
                return ScanResult(tuple(entries), len(self.lines), problem)
            if entry.event is EventType.CHECKPOINT and Checkpoint.from_payload(entry.payload).final:
                sealed_at = entry.seq
            entries.append(entry)
        return ScanResult(tuple(entries), len(self.lines), None)

    def _integrity(self, entry: LedgerEntry) -> Finding | None:
        if entry.computed_hash() != entry.hash:
            return ProblemKind.EDITED, "the content does not match the entry's hash"
        try:
            entry.verify_signature(self.verify_key)
        except InvalidSignature:
            return ProblemKind.BAD_SIGNATURE, f"not signed by {self.actor!r} over the entry's hash"
        if entry.actor != self.actor:
            return (
                ProblemKind.MALFORMED,
                f"entry of {entry.actor!r} in the ledger of {self.actor!r}",
            )
        return None

    def _order(
        self, entry: LedgerEntry, position: int, previous: list[LedgerEntry]
    ) -> Finding | None:
        if entry.seq != position:
            return self._sequence_problem(entry.seq, position)
        expected = previous[-1].hash if previous else GENESIS_HASH
        if entry.prev_hash != expected:
            return ProblemKind.REORDERED, "prev_hash is not the previous entry's hash (spliced)"
        if entry.event is EventType.CHECKPOINT:
            return _check_own_checkpoint(entry, previous)
        return None

    def _sequence_problem(self, seq: int, position: int) -> Finding:
        lines = self.lines
        earlier = {line.entry.seq for line in lines[:position] if line.entry is not None}
        later = {line.entry.seq for line in lines[position + 1 :] if line.entry is not None}
        if seq in earlier:
            return ProblemKind.REORDERED, f"seq {seq} appears twice (expected {position})"
        if seq < position or position in later:
            return ProblemKind.REORDERED, f"seq {seq} where seq {position} was expected"
        missing = f"seq {position}" if seq == position + 1 else f"seqs {position}-{seq - 1}"
        return ProblemKind.DELETED, f"{missing} missing before seq {seq}"


def _split(data: bytes) -> list[_Line]:
    raw = data.split(b"\n")
    if raw and raw[-1] == b"":
        raw.pop()
    result = []
    for number, text in enumerate(raw, start=1):
        try:
            result.append(_Line(number, parse_entry(text), ""))
        except ValueError as exc:
            result.append(_Line(number, None, str(exc) or "unreadable line"))
    return result


def _check_own_checkpoint(entry: LedgerEntry, previous: list[LedgerEntry]) -> Finding | None:
    try:
        checkpoint = Checkpoint.from_payload(entry.payload)
    except ValueError as exc:
        return ProblemKind.MALFORMED, f"checkpoint payload: {exc}"
    own = checkpoint.head_of(entry.actor)
    problem: str | None = None
    if own is None:
        problem = (
            "a final checkpoint must record its own actor's head" if checkpoint.final else None
        )
    elif own.seq >= entry.seq:
        problem = f"checkpoint records its own head at seq {own.seq}, not before itself"
    elif checkpoint.final and own.seq != entry.seq - 1:
        problem = "a final checkpoint must directly follow the head it records"
    elif (previous[own.seq].hash if own.seq >= 0 else GENESIS_HASH) != own.hash:
        return ProblemKind.EDITED, f"checkpoint records another hash for its own seq {own.seq}"
    return None if problem is None else (ProblemKind.MALFORMED, problem)
