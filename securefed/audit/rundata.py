"""Everything the report reads from a run directory, read once and never trusted blindly.

A run directory holds ``roster.toml``, ``ledgers/<actor>.jsonl``, ``metrics.json`` (written by
the runtime, unsigned), ``config.toml`` (unsigned; its digest is compared with the signed
``config_sha256``), optionally ``canary.json`` (an empirical privacy audit, unsigned) and, for a
simulation with comparison methods, ``baselines/<mode>/`` (each a run directory of its own, under
its own roster: loaded one level deep into :attr:`RunData.baselines`), and its sub-runs
(``preprocessing/``, ``preprocessing.interrupted-<k>/``, ``evaluation/``: one-round secure sums
with their own ledgers, verified with the run; their ledgers are read into
:attr:`RunData.subrun_ledgers`).
:func:`load_run_data` reads them leniently -- a missing or unreadable file becomes a note, never
an exception -- and runs :func:`~securefed.audit.verify.verify_run`, so the report can show both
what the files say and whether the ledgers are intact. Ledger lines that do not parse are
skipped here (verification reports them).
"""

from __future__ import annotations

import hashlib
import json
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from securefed.audit.chain import ProblemKind
from securefed.audit.entry import LedgerEntry, parse_entry
from securefed.audit.events import EventType
from securefed.audit.ledger import LEDGER_DIR
from securefed.audit.verify import (
    ROSTER_FILE,
    SubRun,
    VerifyResult,
    subrun_directories,
    verify_run,
)
from securefed.errors import ConfigError
from securefed.secagg.roster import Roster, load_roster

__all__ = [
    "BASELINES_DIR",
    "CANARY_FILE",
    "CONFIG_FILE",
    "METRICS_FILE",
    "RunData",
    "load_run_data",
]

METRICS_FILE = "metrics.json"
CANARY_FILE = "canary.json"
CONFIG_FILE = "config.toml"
BASELINES_DIR = "baselines"
_NOT_TAMPERING = frozenset({ProblemKind.INCOMPLETE, ProblemKind.EQUIVOCATION})
StrPath = str | os.PathLike[str]


@dataclass(frozen=True, slots=True)
class RunData:
    """The parsed contents of a run directory (see the module docstring).

    ``metrics`` / ``canary`` are None when the file is absent or unreadable (then ``*_error``
    says why, for unreadable files). ``verification`` is None when verification could not run
    (``verification_error`` says why, e.g. no roster). ``subrun_ledgers`` holds the ledgers of
    each sub-run present, by directory name, in the order they ran.
    """

    name: str
    ledgers: Mapping[str, tuple[LedgerEntry, ...]]
    metrics: Mapping[str, object] | None
    metrics_error: str | None
    canary: Mapping[str, object] | None
    canary_error: str | None
    roster: Roster | None
    verification: VerifyResult | None
    verification_error: str | None
    config: Mapping[str, object] | None = None
    config_sha256: str | None = None  # of config.toml, computed as the runtime's config_sha256
    baselines: Mapping[str, RunData] = field(default_factory=dict)
    subrun_ledgers: Mapping[str, Mapping[str, tuple[LedgerEntry, ...]]] = field(
        default_factory=dict
    )

    @property
    def subruns(self) -> tuple[SubRun, ...]:
        """The verdict of every sub-run (this run's and its baselines'), or () when the
        ledgers could not be verified."""
        return () if self.verification is None else self.verification.subruns

    def disputed(self, entry: LedgerEntry) -> str | None:
        """Why verification cannot vouch for ``entry``, or None when it can (or did not run).

        An entry is disputed when its ledger has a tampering problem (any kind but
        ``incomplete`` and ``equivocation``) at its seq or earlier -- past the first break the
        chain vouches for nothing -- or one that concerns the whole file (no seq)."""
        result = self.verification
        if result is None:
            return None
        for problem in result.problems:
            if problem.kind in _NOT_TAMPERING or Path(problem.file).stem != entry.actor:
                continue
            if problem.seq is None or problem.seq <= entry.seq:
                return f"{problem.kind.value} (ledgers/{entry.actor}.jsonl seq {problem.seq})"
        return None

    def events(self, event: EventType) -> list[LedgerEntry]:
        """Every entry of type ``event``, ordered by round (when present), actor and seq."""
        found = [e for entries in self.ledgers.values() for e in entries if e.event is event]
        return sorted(found, key=lambda e: (_round_key(e), e.actor, e.seq))

    def party(self, index: object) -> str:
        """A roster index as ``bank-a (#0)`` when the roster names it, else ``#0``."""
        if self.roster is not None and isinstance(index, int) and self.roster.is_member(index):
            return f"{self.roster.client(index).party_id} (#{index})"
        return f"#{index}"


def load_run_data(
    run_dir: StrPath, roster: Roster | None = None, *, baselines: bool = True
) -> RunData:
    """Read a run directory for the report (and, if ``baselines``, every
    ``baselines/<mode>/`` holding a ``ledgers/`` directory, each under its own roster).

    Raises:
        ConfigError: ``run_dir`` is not a directory.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir} is not a directory")
    if roster is None and (run_dir / ROSTER_FILE).is_file():
        try:
            roster = load_roster(run_dir / ROSTER_FILE)
        except ConfigError:
            roster = None  # verification below reports the reason
    try:
        verification, verification_error = verify_run(run_dir, roster), None
    except ConfigError as exc:
        verification, verification_error = None, str(exc).replace(str(run_dir), run_dir.name)
    metrics, metrics_error = _read_json(run_dir / METRICS_FILE)
    canary, canary_error = _read_json(run_dir / CANARY_FILE)
    config, config_sha256 = _read_config(run_dir / CONFIG_FILE)
    return RunData(
        name=run_dir.resolve().name,
        ledgers=_read_ledgers(run_dir / LEDGER_DIR),
        metrics=metrics,
        metrics_error=metrics_error,
        canary=canary,
        canary_error=canary_error,
        roster=roster,
        verification=verification,
        verification_error=verification_error,
        config=config,
        config_sha256=config_sha256,
        baselines=_read_baselines(run_dir / BASELINES_DIR) if baselines else {},
        subrun_ledgers=_read_subruns(run_dir),
    )


def _read_subruns(run_dir: Path) -> dict[str, dict[str, tuple[LedgerEntry, ...]]]:
    try:
        names = subrun_directories(run_dir)
    except ConfigError:
        return {}
    return {name: _read_ledgers(run_dir / name / LEDGER_DIR) for name in names}


def _read_baselines(directory: Path) -> dict[str, RunData]:
    if not directory.is_dir():
        return {}
    return {
        sub.name: load_run_data(sub, baselines=False)
        for sub in sorted(directory.iterdir())
        if (sub / LEDGER_DIR).is_dir()
    }


def _read_config(path: Path) -> tuple[Mapping[str, object] | None, str | None]:
    """``config.toml`` as a table and the SHA-256 of its canonical JSON -- the digest the
    runtime records as ``config_sha256`` -- or (None, None) if absent or unreadable."""
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None, None
    canonical = json.dumps(table, sort_keys=True, separators=(",", ":"))
    return table, hashlib.sha256(canonical.encode()).hexdigest()


def _read_ledgers(directory: Path) -> dict[str, tuple[LedgerEntry, ...]]:
    ledgers: dict[str, tuple[LedgerEntry, ...]] = {}
    if not directory.is_dir():
        return ledgers
    for path in sorted(directory.rglob("*.jsonl")):
        try:
            lines = path.read_bytes().split(b"\n")
        except OSError:
            continue
        entries = []
        for line in lines:
            try:
                entries.append(parse_entry(line))
            except ValueError:
                continue
        ledgers.setdefault(path.stem, tuple(entries))
    return ledgers


def _read_json(path: Path) -> tuple[Mapping[str, object] | None, str | None]:
    if not path.is_file():
        return None, None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return None, f"{path.name} could not be read: {type(exc).__name__}"
    if not isinstance(value, dict):
        return None, f"{path.name} is not a JSON object"
    return value, None


def _round_key(entry: LedgerEntry) -> int:
    value = entry.payload.get("round")
    return value if isinstance(value, int) and not isinstance(value, bool) else -1
