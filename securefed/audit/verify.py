"""Verifying ledgers: one file (:func:`verify_ledger`) or a whole run (:func:`verify_run`);
:func:`verify_path` picks one of the two for a path, as ``securefed audit verify`` does.

:func:`verify_run` checks every ``*.jsonl`` under ``<run_dir>/ledgers/`` against the roster
(``<run_dir>/roster.toml`` unless one is given): the file ``<actor>.jsonl`` must belong to a
roster party (else UNKNOWN_ACTOR) and every entry is checked as in :mod:`securefed.audit.chain`
under that party's identity key. Then the ledgers are checked against each other: for every
checkpoint entry in any ledger, every party it lists must have an entry with that seq and that
hash -- TRUNCATED if its ledger ends before (or is missing), EDITED if the hash differs -- and for
a *final* checkpoint the listed party's next entry must be the same final checkpoint, and its last.
So deleting the tail of any ledger (its final checkpoint included) is detected, as long as one
other party's ledger with the final checkpoint is present (see ``docs/audit.md`` for the limits).

Completeness: every roster party must have a non-empty ledger whose intact chain holds its
genesis entry (seq 0), a ``run.configured`` entry and, as its last entry, a final checkpoint.
A missing piece is an INCOMPLETE problem in :attr:`VerifyResult.missing`, naming the party and
the piece (and, when the ledger ends with ``run.finished`` of a status other than ``completed``,
that status), so an emptied, cut or deleted set of ledgers, or a crashed run, is never INTACT.
:func:`verify_ledger` applies the same rules to its one party.

Independent ε: every intact client ledger's signed ``round.spend`` parameters (sigma, q, steps) are
composed again with Google's ``dp-accounting`` PLD accountant (:mod:`securefed.audit.epsilon_check`)
and compared with the ε the party recorded: recorded more than 2 % below the recomputed value is
EPSILON_UNDERSTATED, above the party's ``target_epsilon`` (recomputed: by more than 2 %) is
OVER_BUDGET. For a run directory with comparison runs (``baselines/<mode>/``, each verified under
its own roster) the ε of every training of the same records is also composed and reported
(:attr:`VerifyResult.composed`), without a verdict: such a simulation is over budget by design.

Roster: when not one entry of any ledger verifies under the roster's keys and the ledgers'
``run.configured`` entries name another roster digest, the roster is not the one the run was
written under: ROSTER_MISMATCH, not TAMPERED (:attr:`VerifyResult.roster_mismatch`).

Sub-runs: a simulation's run directory may hold one-round secure sums of the same engine, each
with its own ``roster.toml`` and ``ledgers/`` (:data:`SUBRUN_DIRS`): ``preprocessing/`` (the
federation-wide statistics), ``preprocessing.interrupted-<k>/`` (an interrupted earlier attempt
of it, kept as evidence) and ``evaluation/`` (the pooled test-score histograms). Each is verified
with the run (:attr:`VerifyResult.subruns`) under the run's roster -- the sub-runs are signed by
the same identities -- and its own ``roster.toml`` must be that roster (another one, e.g. a
substituted sub-run with fresh keys that would verify on its own, is an ``edited`` problem of
that file: TAMPERED). A run whose ledgers record ``preprocessing.applied`` but that has no
``preprocessing/`` is INCOMPLETE there. The exit status is the worst of the run's own verdict and
each sub-run's (:attr:`VerifyResult.overall`), except that an interrupted attempt is expected to
be INCOMPLETE (that is not counted) and that the sub-runs of a baseline, like the baseline
itself, are listed without changing the verdict.

Results carry paths relative to the run directory only, so a copied run directory verifies the
same way. Exit codes for a command line (:attr:`VerifyResult.exit_code`): 0 INTACT, 1 TAMPERED,
3 INCOMPLETE, 4 EQUIVOCATED, 5 ROSTER_MISMATCH, 6 EPSILON_UNDERSTATED, 7 OVER_BUDGET (the first
that applies in the order ROSTER_MISMATCH, TAMPERED, EQUIVOCATED, EPSILON_UNDERSTATED,
OVER_BUDGET, INCOMPLETE, over the run and its counted sub-runs); usage errors raise
:class:`~securefed.errors.ConfigError` (exit 2).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from securefed.audit.chain import Problem, ProblemKind, ScanResult, scan_ledger
from securefed.audit.checkpoint import Checkpoint, Head
from securefed.audit.entry import GENESIS_HASH, LedgerEntry, parse_entry
from securefed.audit.epsilon_check import (
    TOLERANCE,
    ComposedEpsilon,
    PartyEpsilon,
    accountant_name,
    check_party,
    compose,
)
from securefed.audit.events import EventType
from securefed.audit.ledger import LEDGER_DIR
from securefed.crypto import VerifyKey
from securefed.errors import ConfigError
from securefed.secagg.roster import Roster, load_roster

__all__ = [
    "BASELINES_DIR",
    "EVALUATION_DIR",
    "EXIT_EPSILON_UNDERSTATED",
    "EXIT_EQUIVOCATED",
    "EXIT_INCOMPLETE",
    "EXIT_INTACT",
    "EXIT_OVER_BUDGET",
    "EXIT_ROSTER_MISMATCH",
    "EXIT_TAMPERED",
    "PREPROCESSING_DIR",
    "ROSTER_FILE",
    "SUBRUN_DIRS",
    "SubRun",
    "VerifyResult",
    "VerifyStatus",
    "subrun_directories",
    "verify_ledger",
    "verify_path",
    "verify_run",
]

ROSTER_FILE = "roster.toml"
#: Where a simulation keeps its comparison runs, each a run directory of its own.
BASELINES_DIR = "baselines"
StrPath = str | os.PathLike[str]

EXIT_INTACT = 0
EXIT_TAMPERED = 1
EXIT_INCOMPLETE = 3  # 2 is a usage or I/O error (ConfigError)
EXIT_EQUIVOCATED = 4
EXIT_ROSTER_MISMATCH = 5
EXIT_EPSILON_UNDERSTATED = 6
EXIT_OVER_BUDGET = 7
_COMPLETED = "completed"
_THIS_RUN = "this run"
#: The sub-runs of a run directory (module docstring), as the runtime names them
#: (``securefed/runtime/preprocess.py``, ``securefed/runtime/evaluation.py``).
PREPROCESSING_DIR = "preprocessing"
EVALUATION_DIR = "evaluation"
SUBRUN_DIRS = (PREPROCESSING_DIR, EVALUATION_DIR)
_INTERRUPTED = re.compile(rf"{PREPROCESSING_DIR}\.interrupted-([0-9]{{1,6}})")


class VerifyStatus(Enum):
    """The verdict: INTACT (nothing wrong, nothing missing), TAMPERED (a chain, signature or
    cross-ledger problem), EQUIVOCATED (every chain intact, but a party recorded that the
    coordinator sent it heads inconsistent with its transcript), INCOMPLETE (intact chains, but
    a required piece is missing), ROSTER_MISMATCH (the roster is not the one the ledgers were
    written under: nothing could be checked), EPSILON_UNDERSTATED (a party recorded an ε more
    than 2 % below what its own signed sigma, q and steps give), OVER_BUDGET (a party's ε is above
    its signed budget)."""

    INTACT = "INTACT"
    TAMPERED = "TAMPERED"
    EQUIVOCATED = "EQUIVOCATED"
    INCOMPLETE = "INCOMPLETE"
    ROSTER_MISMATCH = "ROSTER_MISMATCH"
    EPSILON_UNDERSTATED = "EPSILON_UNDERSTATED"
    OVER_BUDGET = "OVER_BUDGET"

    @property
    def exit_code(self) -> int:
        """0, 1, 3, 4, 5, 6 or 7 (2 is reserved for usage and I/O errors)."""
        return {
            VerifyStatus.INTACT: EXIT_INTACT,
            VerifyStatus.TAMPERED: EXIT_TAMPERED,
            VerifyStatus.EQUIVOCATED: EXIT_EQUIVOCATED,
            VerifyStatus.INCOMPLETE: EXIT_INCOMPLETE,
            VerifyStatus.ROSTER_MISMATCH: EXIT_ROSTER_MISMATCH,
            VerifyStatus.EPSILON_UNDERSTATED: EXIT_EPSILON_UNDERSTATED,
            VerifyStatus.OVER_BUDGET: EXIT_OVER_BUDGET,
        }[self]


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """The outcome of a verification.

    ``ok`` is true iff no tampering was found (the chains, signatures and cross-ledger checks
    hold); it says nothing about completeness: gate on :attr:`status` / :attr:`exit_code`
    (INTACT only when ``ok`` and nothing is ``missing``). ``entries`` counts the entries found
    intact, ``ledgers`` the ledger files checked. ``problem`` is the first problem (None when
    ok); ``problems`` lists the first problem of each ledger and then every cross-ledger
    problem. ``missing`` lists one INCOMPLETE problem per roster party whose ledger is absent,
    empty, without ``run.configured`` or without its final checkpoint (a party whose ledger
    already has a problem is not listed again).
    ``notes`` say what the check could *not* establish (e.g. tail truncation of a single file).
    ``heads`` are the heads of the intact part of each ledger, by actor.
    ``epsilon`` holds the independent ε check of every intact ledger with a ``round.spend``
    (:mod:`securefed.audit.epsilon_check`); ``unchecked`` the parties whose ε was not checked
    because their ledger has a problem; ``composed`` the ε of every training of the same
    records in this run directory (this run and its baselines), ``baselines`` each baseline
    directory with its verdict. ``roster_mismatch`` says why the roster is not the one the
    ledgers were written under (None when it is, or when that cannot be told). ``subruns`` holds
    the verdict of each sub-run of the run directory (and of its baselines), in the order they
    ran (:class:`SubRun`); :attr:`status` is this directory's own ledgers' verdict and
    :attr:`overall` (what :attr:`exit_code` and ``--json``'s ``status`` give) the worst of it and
    each counted sub-run's.
    """

    ok: bool
    entries: int
    ledgers: int
    problem: Problem | None
    problems: tuple[Problem, ...] = ()
    notes: tuple[str, ...] = ()
    heads: tuple[Head, ...] = field(default=())
    missing: tuple[Problem, ...] = ()
    equivocations: tuple[Problem, ...] = ()
    epsilon: tuple[PartyEpsilon, ...] = ()
    unchecked: tuple[str, ...] = ()
    composed: tuple[ComposedEpsilon, ...] = ()
    baselines: tuple[tuple[str, str], ...] = ()
    roster_mismatch: str | None = None
    subruns: tuple[SubRun, ...] = ()

    @property
    def understated(self) -> tuple[PartyEpsilon, ...]:
        """The parties whose recorded ε is more than 2 % below the recomputed one."""
        return tuple(check for check in self.epsilon if check.understated)

    @property
    def over_budget(self) -> tuple[PartyEpsilon, ...]:
        """The parties (not understated) whose ε is above their budget."""
        return tuple(c for c in self.epsilon if c.over_budget and not c.understated)

    @property
    def note(self) -> str | None:
        """All notes in one string, or None."""
        return " ".join(self.notes) if self.notes else None

    @property
    def status(self) -> VerifyStatus:
        """ROSTER_MISMATCH if the roster is not the ledgers', else TAMPERED if a problem was
        found, else EQUIVOCATED if an intact ledger records the coordinator's inconsistent heads,
        else EPSILON_UNDERSTATED or OVER_BUDGET (the independent ε check), else INCOMPLETE if a
        piece is missing, else INTACT."""
        found = (
            (self.roster_mismatch is not None, VerifyStatus.ROSTER_MISMATCH),
            (self.problem is not None, VerifyStatus.TAMPERED),
            (bool(self.equivocations), VerifyStatus.EQUIVOCATED),
            (bool(self.understated), VerifyStatus.EPSILON_UNDERSTATED),
            (bool(self.over_budget), VerifyStatus.OVER_BUDGET),
            (bool(self.missing), VerifyStatus.INCOMPLETE),
        )
        return next((status for applies, status in found if applies), VerifyStatus.INTACT)

    @property
    def overall(self) -> VerifyStatus:
        """The worst of :attr:`status` and each sub-run's :attr:`SubRun.counted_status`, in the
        order of :attr:`status` (ROSTER_MISMATCH first, INTACT last)."""
        statuses = [self.status, *(sub.counted_status for sub in self.subruns)]
        return min(statuses, key=_SEVERITY.index)

    @property
    def exit_code(self) -> int:
        """0 intact, 1 tampered, 3 incomplete, 4 equivocated, 5 roster mismatch, 6 ε understated,
        7 over budget (usage errors are 2): of :attr:`overall`, the run and its sub-runs."""
        return self.overall.exit_code

    def summary(self) -> str:
        """One line: ``INTACT: 4 ledgers, 53 entries verified``, ``TAMPERED: <first problem>``
        (the file, line and seq of the first bad entry, the kind of problem and why),
        ``ROSTER_MISMATCH: <why>``, ``EPSILON_UNDERSTATED: <first party>`` or ``OVER_BUDGET:
        <first party>`` (its entry, recorded and recomputed ε, the parameters), or
        ``INCOMPLETE: <first missing piece>`` (the party and what its ledger lacks)."""
        status = self.status
        first: str | None = {
            VerifyStatus.ROSTER_MISMATCH: self.roster_mismatch,
            VerifyStatus.TAMPERED: self.problem.describe() if self.problem else None,
            VerifyStatus.EQUIVOCATED: self.equivocations[0].describe()
            if self.equivocations
            else None,
            VerifyStatus.EPSILON_UNDERSTATED: self.understated[0].describe()
            if self.understated
            else None,
            VerifyStatus.OVER_BUDGET: self.over_budget[0].describe() if self.over_budget else None,
            VerifyStatus.INCOMPLETE: self.missing[0].describe() if self.missing else None,
        }.get(status)
        if first is not None:
            return f"{status.value}: {first}"
        plural = "" if self.ledgers == 1 else "s"
        return f"INTACT: {self.ledgers} ledger{plural}, {self.entries} entries verified"

    def describe(self) -> str:
        """What ``securefed audit verify`` prints: :meth:`summary`, then one ``problem:`` line per
        further problem (none under a roster mismatch: they only repeat it), ``equivocation:``,
        ``understated:`` and ``over-budget:`` lines for further findings, ``incomplete:`` for a
        missing piece, one ``epsilon:`` line summing up the independent ε check, a
        ``composed:`` line for the ε of every training of the same records (baselines), one
        ``sub-run <directory>:`` line per sub-run (:meth:`SubRun.summary`, each followed by a
        ``problem:`` line per further problem), an ``overall:`` line when a sub-run makes the
        verdict worse than this run's own, and one ``note:`` line per note."""
        lines = [self.summary()]
        if self.roster_mismatch is None:
            lines += [f"problem: {problem.describe()}" for problem in self.problems[1:]]
        shown = 1 if self.problem is None and self.roster_mismatch is None else 0
        lines += [f"equivocation: {e.describe()}" for e in self.equivocations[shown:]]
        status = self.status
        first = status is VerifyStatus.EPSILON_UNDERSTATED
        lines += [f"understated: {c.describe()}" for c in self.understated[1 if first else 0 :]]
        first = status is VerifyStatus.OVER_BUDGET
        lines += [f"over-budget: {c.describe()}" for c in self.over_budget[1 if first else 0 :]]
        first = status is VerifyStatus.INCOMPLETE
        lines += [f"incomplete: {gap.describe()}" for gap in self.missing[1 if first else 0 :]]
        if self.roster_mismatch is None:
            lines += [f"epsilon: {text}" for text in _epsilon_lines(self)]
            lines += [f"composed: {text}" for text in _composed_lines(self)]
        for sub in self.subruns:
            lines.append(sub.summary())
            lines += [f"problem: {problem.describe()}" for problem in sub.result.problems[1:]]
        overall = self.overall
        if overall is not self.status:
            worse = [s.directory for s in self.subruns if s.counted_status is overall]
            lines.append(
                f"overall: {overall.value} (exit status {overall.exit_code}): the sub-run "
                f"{', '.join(worse)} is {overall.value}"
            )
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, object]:
        """What ``securefed audit verify --json`` prints: the verdict (``status``: the run's and
        its sub-runs', :attr:`overall`; ``run_status``: this directory's own ledgers'), its exit
        code, the counts, every problem, missing piece and equivocation, the heads, the notes,
        each party's ε check, the composition over baselines and each sub-run
        (:meth:`SubRun.to_dict`)."""
        return {
            "status": self.overall.value,
            "run_status": self.status.value,
            "exit_code": self.exit_code,
            "summary": self.summary(),
            "ledgers": self.ledgers,
            "entries": self.entries,
            "roster_mismatch": self.roster_mismatch,
            "problems": [_problem_dict(p) for p in self.problems],
            "missing": [_problem_dict(p) for p in self.missing],
            "equivocations": [_problem_dict(p) for p in self.equivocations],
            "heads": {h.actor: {"seq": h.seq, "hash": h.hash} for h in self.heads},
            "notes": list(self.notes),
            "epsilon": {
                "accountant": accountant_name(),
                "tolerance": TOLERANCE,
                "parties": [check.to_dict() for check in self.epsilon],
                "not_checked": list(self.unchecked),
            },
            "composed": [c.to_dict() for c in self.composed],
            "baselines": dict(self.baselines),
            "subruns": [sub.to_dict() for sub in self.subruns],
        }


#: The verdicts from worst to best: the order in which :attr:`VerifyResult.status` picks one.
_SEVERITY = (
    VerifyStatus.ROSTER_MISMATCH,
    VerifyStatus.TAMPERED,
    VerifyStatus.EQUIVOCATED,
    VerifyStatus.EPSILON_UNDERSTATED,
    VerifyStatus.OVER_BUDGET,
    VerifyStatus.INCOMPLETE,
    VerifyStatus.INTACT,
)


@dataclass(frozen=True, slots=True)
class SubRun:
    """One sub-run of a run directory (module docstring) and its verdict.

    ``directory`` is its path relative to the verified run directory (``preprocessing``,
    ``evaluation``, ``baselines/local/evaluation``), and every problem of ``result`` names its
    file relative to that run directory too (``evaluation/ledgers/bank-1.jsonl``), so a line
    says which sub-run it is about. ``counted``: whether its verdict counts in the run's (a
    baseline's sub-runs do not, as the baseline's own verdict does not); ``interrupted``: an
    interrupted attempt (``preprocessing.interrupted-<k>``), whose ledgers are expected to end
    before their final checkpoint.
    """

    directory: str
    result: VerifyResult
    counted: bool = True
    interrupted: bool = False

    @property
    def status(self) -> VerifyStatus:
        """Its own verdict."""
        return self.result.status

    @property
    def counted_status(self) -> VerifyStatus:
        """What it adds to the run's verdict: its own, but INTACT for a sub-run that is not
        counted and for an interrupted attempt that is (only) INCOMPLETE."""
        status = self.status
        if not self.counted or (self.interrupted and status is VerifyStatus.INCOMPLETE):
            return VerifyStatus.INTACT
        return status

    def remark(self) -> str:
        """Why its verdict does not count, or an empty string."""
        if not self.counted:
            return " (a baseline's sub-run: listed, it does not change the verdict)"
        if self.interrupted and self.status is VerifyStatus.INCOMPLETE:
            return " (an interrupted attempt kept as evidence: expected, not counted)"
        return ""

    def summary(self) -> str:
        """``sub-run <directory>: `` and the result's :meth:`VerifyResult.summary`."""
        return f"sub-run {self.directory}: {self.result.summary()}{self.remark()}"

    def to_dict(self) -> dict[str, object]:
        """Its entry in ``--json``'s ``subruns``."""
        result = self.result
        return {
            "directory": self.directory,
            "status": result.status.value,
            "ok": result.ok,
            "counted": self.counted,
            "interrupted": self.interrupted,
            "summary": result.summary(),
            "ledgers": result.ledgers,
            "entries": result.entries,
            "problems": [_problem_dict(p) for p in result.problems],
            "missing": [_problem_dict(p) for p in result.missing],
            "equivocations": [_problem_dict(p) for p in result.equivocations],
        }

    def under(self, prefix: str) -> SubRun:
        """The same sub-run seen from the directory that holds ``prefix`` (a baseline's),
        not counted there."""
        return SubRun(
            f"{prefix}/{self.directory}",
            _prefixed(self.result, prefix),
            counted=False,
            interrupted=self.interrupted,
        )


def _problem_dict(problem: Problem) -> dict[str, object]:
    return {
        "file": problem.file,
        "kind": problem.kind.value,
        "detail": problem.detail,
        "seq": problem.seq,
        "line": problem.line,
    }


def _epsilon_lines(result: VerifyResult) -> list[str]:
    """The ``epsilon:`` line: how many parties' ε was recomputed, and what was found."""
    checks = result.epsilon
    skipped = ""
    if result.unchecked:
        skipped = f"; not checked (their ledger has a problem): {', '.join(result.unchecked)}"
    if not checks:
        return [f"no intact ledger records a round.spend{skipped}"] if result.unchecked else []
    parties = "1 party's ε" if len(checks) == 1 else f"{len(checks)} parties' ε"
    text = f"{parties} recomputed from the signed sigma, q and steps with {accountant_name()}: "
    understated, over = len(result.understated), len(result.over_budget)
    if not understated and not over:
        text += f"none recorded more than {TOLERANCE:.0%} below it, none over budget"
    else:
        text += (
            f"{understated} recorded more than {TOLERANCE:.0%} below it, {over} more over budget"
        )
    finite = [c for c in checks if c.recomputed is not None and math.isfinite(c.recomputed)]
    if finite:
        top = max(finite, key=lambda c: c.recomputed or 0.0)
        budget = "" if top.budget is None else f", budget {top.budget:.4g}"
        recorded = "not recorded" if top.recorded is None else f"{top.recorded:.4g}"
        text += (
            f" (largest: {top.party} recomputed {top.recomputed or 0.0:.4g}, recorded "
            f"{recorded}{budget})"
        )
    not_recomputed = [c for c in checks if c.recomputed is None]
    if not_recomputed:
        text += "; not recomputed: " + ", ".join(f"{c.party} ({c.reason})" for c in not_recomputed)
    return [text + skipped]


def _composed_lines(result: VerifyResult) -> list[str]:
    """The ``composed:`` line: the ε of every training of the same records (baselines)."""
    lines = []
    if result.composed:
        values = [c.epsilon for c in result.composed]
        runs = sorted({run for c in result.composed for run in c.runs[1:]})
        above = [c for c in result.composed if c.above_budget]
        span = (
            f"{min(values):.4g}"
            if min(values) == max(values)
            else (f"{min(values):.4g} to {max(values):.4g}")
        )
        text = (
            f"{len(result.composed)} institutions' records were also trained by the baselines "
            f"in {BASELINES_DIR}/ ({', '.join(runs)}): their ε composed over every training "
            f"({accountant_name()}, at this run's δ) is {span}"
        )
        if above:
            text += (
                f", above this run's budget for {len(above)}: comparison runs train the same "
                "records again by design (their hazard says so); a real federation runs one "
                "method. Not a verdict"
            )
        lines.append(text)
    uncomposed = {VerifyStatus.TAMPERED.value, VerifyStatus.ROSTER_MISMATCH.value}
    for name, status in result.baselines:
        if status == VerifyStatus.INTACT.value:
            continue
        composed = status in {s.value for s in VerifyStatus} and status not in uncomposed
        lines.append(
            f"{BASELINES_DIR}/{name} is {status}"
            + ("" if composed else ": its trainings are not composed")
            + f" (securefed audit verify <run>/{BASELINES_DIR}/{name})"
        )
    return lines


def verify_ledger(
    path: StrPath, verify_key: VerifyKey, *, actor: str | None = None
) -> VerifyResult:
    """Verify one ledger file on its own (its actor is the file's stem unless given).

    Detects edits, reorders, deletions in the middle, bad signatures and malformed lines, and
    (INCOMPLETE) an empty file or a chain without ``run.configured`` or a final checkpoint, so
    a file cut anywhere before its final checkpoint is never INTACT. What it cannot show is
    whether the final checkpoint it ends with is the one the other parties sealed, i.e. whether
    a shorter chain was re-sealed: that needs the other parties' ledgers (:func:`verify_run`);
    the result's note says up to which checkpoint the file is covered.

    Raises:
        ConfigError: the file cannot be read.
    """
    path = Path(path)
    scan_actor = actor or path.stem
    scan = scan_ledger(_read(path), actor=scan_actor, verify_key=verify_key, file=path.name)
    problems = [] if scan.problem is None else [scan.problem]
    gap = _gap(scan_actor, scan, path.name)
    missing = [] if gap is None else [gap]
    note = (_single_ledger_note(scan),)
    result = _result({scan_actor: scan}, problems, note, ledgers=1, missing=missing)
    return _with_epsilon(result, {scan_actor: scan}, {scan_actor: path.name})


def _single_ledger_note(scan: ScanResult) -> str:
    checkpoints = [e for e in scan.entries if e.event is EventType.CHECKPOINT]
    last = checkpoints[-1] if checkpoints else None
    if last is None:
        status = "This file has no signed checkpoint."
    elif Checkpoint.from_payload(last.payload).final and last is scan.entries[-1]:
        status = f"This file ends with its final checkpoint (seq {last.seq})."
    else:
        status = (
            f"This file's last signed checkpoint is at seq {last.seq} and it does not end with "
            "a final checkpoint: the run was interrupted, or its end was cut."
        )
    return (
        "Single ledger checked alone: truncation is only detectable up to the last signed "
        "checkpoint, and a tail cut together with its checkpoints shows only as a missing final "
        "checkpoint (INCOMPLETE); the checkpoints in the other parties' ledgers show where it was "
        f"cut (verify the whole run directory). {status}"
    )


def verify_path(path: StrPath, roster: Roster | None = None) -> VerifyResult:
    """What ``securefed audit verify PATH`` checks: a run directory or a single ledger file.

    A directory is checked with :func:`verify_run`. A file is checked with :func:`verify_ledger`
    under the identity key of the roster party its file name names (``<actor>.jsonl``; a name
    that is not a roster party is UNKNOWN_ACTOR). Its roster is ``roster`` or else the
    ``roster.toml`` of the run directory it sits in (``<run_dir>/ledgers/.../<actor>.jsonl``).

    Raises:
        ConfigError: ``path`` does not exist or is not a directory or regular file; no roster is
            given and none is found; a file cannot be read.
    """
    path = Path(path)
    try:
        if path.is_dir():
            return verify_run(path, roster)
        if not path.is_file():
            raise ConfigError(f"{path} is neither a run directory nor a ledger file")
        roster = roster if roster is not None else load_roster(_roster_of_ledger(path))
    except OSError as exc:  # e.g. a directory that cannot be listed
        raise ConfigError(f"cannot read {exc.filename or path}: {exc.strerror}") from None
    keys = _roster_keys(roster)
    actor = path.stem
    if actor not in keys:
        detail = f"{actor!r} (the file name) is not a party of the roster"
        problem = Problem(path.name, ProblemKind.UNKNOWN_ACTOR, detail)
        result = _result({}, [problem], (), ledgers=1)
    else:
        result = verify_ledger(path, keys[actor], actor=actor)
    return _with_roster_check(result, roster, {path.name: path})


def _roster_of_ledger(path: Path) -> Path:
    """The roster of the run directory that holds ledger ``path`` (ConfigError if none)."""
    for directory in path.resolve().parents:
        if directory.name == LEDGER_DIR and (directory.parent / ROSTER_FILE).is_file():
            return directory.parent / ROSTER_FILE
    raise ConfigError(
        f"no {ROSTER_FILE} found for {path.name} (it is not under <run_dir>/{LEDGER_DIR}/): "
        "give the roster with --roster FILE"
    )


def verify_run(
    run_dir: StrPath, roster: Roster | None = None, *, baselines: bool = True
) -> VerifyResult:
    """Verify every ledger of a run directory, alone and against each other, and check every
    party's ε independently (module docstring). Each sub-run of the directory
    (:func:`subrun_directories`) is verified too, under the same roster
    (:attr:`VerifyResult.subruns`). With ``baselines``, each comparison run in
    ``<run_dir>/baselines/<mode>/`` is verified too (under its own ``roster.toml``, its sub-runs
    listed as well) and the ε of every training of the same records is composed
    (:attr:`VerifyResult.composed`); a baseline's own verdict does not change this run's.

    Raises:
        ConfigError: no roster given and ``<run_dir>/roster.toml`` is missing or invalid; no
            ``ledgers/`` directory or no ``*.jsonl`` file in it; a file cannot be read (in the
            run directory or a sub-run's).
    """
    run_dir = Path(run_dir)
    if roster is None:
        roster = load_roster(run_dir / ROSTER_FILE)
    directory = run_dir / LEDGER_DIR
    if not directory.is_dir():
        raise ConfigError(f"{directory} is not a directory: is {run_dir} a run directory?")
    checked = _Scanned.of(run_dir, roster)
    result = _with_roster_check(checked.result, roster, checked.files)
    if result.roster_mismatch is not None:
        return result
    result = _with_epsilon(result, checked.scans, checked.files_of)
    result = dataclasses.replace(result, subruns=_subruns(run_dir, roster, checked.scans))
    return _with_baselines(result, run_dir) if baselines else result


@dataclass(frozen=True, slots=True)
class _Scanned:
    """The ledgers of one directory checked alone, against each other and for completeness
    (no roster-mismatch, ε or baseline check yet)."""

    result: VerifyResult
    scans: Mapping[str, ScanResult]
    files_of: Mapping[str, str]  # actor -> its ledger file, relative to the directory
    files: Mapping[str, Path]  # every ledger file, by its relative path

    @classmethod
    def of(cls, run_dir: Path, roster: Roster) -> _Scanned:
        keys = _roster_keys(roster)
        directory = run_dir / LEDGER_DIR
        found = directory.rglob("*.jsonl") if directory.is_dir() else ()
        files = sorted(p for p in found if p.is_file())
        scans: dict[str, ScanResult] = {}
        files_of: dict[str, str] = {}
        problems: list[Problem] = []
        for path in files:
            relative = path.relative_to(run_dir).as_posix()
            actor = path.stem
            if actor not in keys:
                detail = f"{actor!r} is not a party of the roster"
                problems.append(Problem(relative, ProblemKind.UNKNOWN_ACTOR, detail))
                continue
            if actor in scans:
                detail = f"second ledger of {actor!r}"
                problems.append(Problem(relative, ProblemKind.MALFORMED, detail))
                continue
            scan = scan_ledger(_read(path), actor=actor, verify_key=keys[actor], file=relative)
            scans[actor] = scan
            files_of[actor] = relative
            if scan.problem is not None:
                problems.append(scan.problem)
        cross = _CrossCheck(scans, keys, files_of)
        problems += cross.run()
        notes = cross.notes(roster_parties=list(keys))
        # a party whose ledger already has a problem is not also named incomplete
        damaged = {problem.file for problem in problems}
        missing = []
        for party in keys:
            file = files_of.get(party, _default_file(party))
            gap = None if file in damaged else _gap(party, scans.get(party), file)
            if gap is not None:
                missing.append(gap)
        unique = _unique(problems)
        result = _result(scans, unique, tuple(notes), ledgers=len(files), missing=missing)
        relative_files = {p.relative_to(run_dir).as_posix(): p for p in files}
        return cls(result, scans, files_of, relative_files)


def subrun_directories(run_dir: StrPath) -> list[str]:
    """The sub-run directories present in ``run_dir`` (module docstring), in the order they
    ran: the interrupted attempts (``preprocessing.interrupted-<k>``, by k), ``preprocessing``,
    ``evaluation``."""
    run_dir = Path(run_dir)
    try:
        names = [p.name for p in run_dir.iterdir() if p.is_dir()]
    except OSError as exc:
        raise ConfigError(f"cannot read {run_dir}: {exc.strerror}") from None
    interrupted = sorted(
        (int(match.group(1)), name) for name in names if (match := _INTERRUPTED.fullmatch(name))
    )
    return [name for _, name in interrupted] + [name for name in SUBRUN_DIRS if name in names]


def _subruns(run_dir: Path, roster: Roster, scans: Mapping[str, ScanResult]) -> tuple[SubRun, ...]:
    """Each sub-run of ``run_dir`` verified under the run's ``roster``, and an INCOMPLETE one
    for a ``preprocessing/`` that the run's intact ledgers say was applied but that is absent."""
    names = subrun_directories(run_dir)
    found = [_verify_subrun(run_dir, name, roster) for name in names]
    applied = sorted(
        actor
        for actor, scan in scans.items()
        if any(entry.event is EventType.PREPROCESSING_APPLIED for entry in scan.entries)
    )
    if applied and PREPROCESSING_DIR not in names:
        detail = (
            f"the ledgers of {_listed(applied)} record preprocessing.applied, but there is no "
            f"{PREPROCESSING_DIR}/ directory: the ledgers of the secure sum they applied are "
            "missing"
        )
        gap = Problem(PREPROCESSING_DIR, ProblemKind.INCOMPLETE, detail)
        absent = VerifyResult(ok=True, entries=0, ledgers=0, problem=None, missing=(gap,))
        found.insert(len(names) - (EVALUATION_DIR in names), SubRun(PREPROCESSING_DIR, absent))
    return tuple(found)


def _verify_subrun(run_dir: Path, name: str, roster: Roster) -> SubRun:
    """The sub-run ``run_dir/name`` verified under the run's ``roster`` (a sub-run without a
    ``ledgers/`` directory is INCOMPLETE for every party); its own ``roster.toml`` must be that
    roster (else an ``edited`` or ``malformed`` problem of that file, listed first)."""
    directory = run_dir / name
    checked = _Scanned.of(directory, roster)
    result = _with_epsilon(checked.result, checked.scans, checked.files_of)
    found, note = _subrun_roster(directory, roster)
    if found is not None:
        problems = (found, *result.problems)
        result = dataclasses.replace(result, ok=False, problem=found, problems=problems)
    if note is not None:
        result = dataclasses.replace(result, notes=(*result.notes, note))
    interrupted = _INTERRUPTED.fullmatch(name) is not None
    return SubRun(name, _prefixed(result, name), interrupted=interrupted)


def _subrun_roster(directory: Path, roster: Roster) -> tuple[Problem | None, str | None]:
    """The problem of a sub-run's ``roster.toml`` that is not the run's roster (its parties or
    identity keys differ, or it does not parse), or a note when it is absent."""
    path = directory / ROSTER_FILE
    if not path.is_file():
        return None, f"no {ROSTER_FILE} in {directory.name}/: verified under the run's roster"
    try:
        own = load_roster(path)
    except ConfigError as exc:
        detail = f"not a valid roster ({exc}): the sub-run must be under the run's roster"
        return Problem(ROSTER_FILE, ProblemKind.MALFORMED, detail), None
    if own.digest() == roster.digest():
        return None, None
    theirs, ours = _roster_keys(own), _roster_keys(roster)
    differences = []
    if set(theirs) != set(ours):
        added, absent = sorted(set(theirs) - set(ours)), sorted(set(ours) - set(theirs))
        differences.append(
            f"its parties differ (not the run's: {_listed(added) or 'none'}; "
            f"the run's missing: {_listed(absent) or 'none'})"
        )
    other_keys = sorted(p for p in set(theirs) & set(ours) if theirs[p] != ours[p])
    if other_keys:
        differences.append(f"another identity key for {_listed(other_keys)}")
    if not differences:
        differences.append("the same parties and keys in another order or suite")
    detail = (
        f"not the run's roster (digest {own.digest().hex()[:16]}..., the run's "
        f"{roster.digest().hex()[:16]}...): {'; '.join(differences)}. A sub-run is signed by "
        "the run's identities: its ledgers were checked under the run's roster"
    )
    return Problem(ROSTER_FILE, ProblemKind.EDITED, detail), None


def _prefixed(result: VerifyResult, prefix: str) -> VerifyResult:
    """``result`` with every problem's file under ``prefix`` (relative to the run directory
    that holds the sub-run or baseline ``prefix``), its sub-runs' too."""

    def moved(problems: tuple[Problem, ...]) -> tuple[Problem, ...]:
        return tuple(dataclasses.replace(p, file=f"{prefix}/{p.file}") for p in problems)

    problems = moved(result.problems)
    return dataclasses.replace(
        result,
        problem=problems[0] if problems else None,
        problems=problems,
        missing=moved(result.missing),
        equivocations=moved(result.equivocations),
        subruns=tuple(sub.under(prefix) for sub in result.subruns),
    )


def _with_epsilon(
    result: VerifyResult, scans: Mapping[str, ScanResult], files: Mapping[str, str]
) -> VerifyResult:
    """``result`` with the independent ε check of every intact ledger (a damaged ledger's
    intact prefix is not checked: the claim it would be checked against may be in the part
    that was changed)."""
    checks, unchecked = [], []
    for actor, scan in sorted(scans.items()):
        if scan.problem is not None:
            unchecked.append(actor)
            continue
        check = check_party(actor, files[actor], scan.entries)
        if check is not None:
            checks.append(check)
    return dataclasses.replace(result, epsilon=tuple(checks), unchecked=tuple(unchecked))


def _with_baselines(result: VerifyResult, run_dir: Path) -> VerifyResult:
    """``result`` with each baseline's verdict and the ε composed over every training of the
    same records (this run's and those of every baseline whose chains verify)."""
    directory = run_dir / BASELINES_DIR
    if not directory.is_dir():
        return result
    trainings: dict[str, Sequence[PartyEpsilon]] = {_THIS_RUN: result.epsilon}
    verdicts = []
    subruns = list(result.subruns)
    for baseline in sorted(p for p in directory.iterdir() if (p / LEDGER_DIR).is_dir()):
        try:
            found = verify_run(baseline, baselines=False)
        except ConfigError as exc:
            verdicts.append((baseline.name, f"not verified ({exc})"))
            continue
        verdicts.append((baseline.name, found.status.value))
        subruns += [sub.under(f"{BASELINES_DIR}/{baseline.name}") for sub in found.subruns]
        if found.ok and found.roster_mismatch is None:
            trainings[baseline.name] = found.epsilon
    return dataclasses.replace(
        result,
        composed=compose(trainings),
        baselines=tuple(verdicts),
        subruns=tuple(subruns),
    )


def _with_roster_check(
    result: VerifyResult, roster: Roster, files: Mapping[str, Path]
) -> VerifyResult:
    """``result`` with :attr:`VerifyResult.roster_mismatch` set when the roster cannot be the
    one the ledgers were written under: not one entry of any ledger verifies under its keys
    (each file fails at its first entry with a bad signature, or is not a roster party's), and
    the ledgers' own ``run.configured`` entries (read without verifying them) name another
    roster digest. Ledgers that name this roster's digest but do not verify are forged:
    TAMPERED, as before."""
    if not files or result.entries or not result.problems:
        return result
    failed = {
        p.file
        for p in result.problems
        if (p.kind is ProblemKind.BAD_SIGNATURE and p.seq == 0)
        or (p.kind is ProblemKind.UNKNOWN_ACTOR and p.seq is None)
    }
    if set(files) - failed:
        return result
    recorded: dict[str, set[str]] = {}
    for path in files.values():
        configured = _first_configured(path)
        if configured is not None:
            digest, actor = configured
            recorded.setdefault(digest, set()).add(actor)
    digest = roster.digest().hex()
    if not recorded or digest in recorded:
        return result
    ledger_parties = sorted({actor for actors in recorded.values() for actor in actors})
    roster_parties = sorted(_roster_keys(roster))
    names = ""
    if set(ledger_parties) != set(roster_parties):
        names = (
            f" (its parties: {_listed(roster_parties)}; the ledgers': {_listed(ledger_parties)})"
        )
    theirs = ", ".join(f"{d[:16]}..." for d in sorted(recorded))
    files_text = "1 ledger file" if len(files) == 1 else f"all {len(files)} ledger files"
    detail = (
        f"the roster used (digest {digest[:16]}...) is not the one these ledgers were written "
        f"under{names}: not one entry of {files_text} verifies under its keys, and their "
        f"run.configured entries (unverified) name roster digest {theirs}. Nothing was "
        "checked: verify under the roster the run was written with, its fingerprints confirmed "
        "with every institution (securefed keys show-roster FILE)"
    )
    return dataclasses.replace(result, roster_mismatch=detail, notes=())


def _first_configured(path: Path) -> tuple[str, str] | None:
    """The roster digest and actor the first entry of ``path`` names, if it is a parseable
    ``run.configured`` entry (its signature is not checked)."""
    try:
        with path.open("rb") as handle:
            first = handle.readline(1 << 20)
        entry = parse_entry(first.rstrip(b"\n"))
    except (OSError, ValueError):
        return None
    digest = entry.payload.get("roster_digest")
    if entry.event is not EventType.RUN_CONFIGURED or not isinstance(digest, str):
        return None
    return digest, entry.actor


def _listed(names: Sequence[str], limit: int = 4) -> str:
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown}, ... ({len(names)} in all)"


def _gap(party: str, scan: ScanResult | None, file: str) -> Problem | None:
    """The INCOMPLETE problem of ``party``'s ledger (None when complete, or when its scan found
    tampering: the intact prefix of a tampered chain says nothing about what follows)."""
    if scan is None:
        detail = (
            f"no ledger of roster party {party!r}: no genesis entry, no run.configured entry, "
            "no final checkpoint"
        )
        return Problem(file, ProblemKind.INCOMPLETE, detail)
    if scan.problem is not None:
        return None
    entries = scan.entries
    if not entries:
        detail = (
            f"the ledger of {party!r} is empty: no genesis entry, no run.configured entry, "
            "no final checkpoint"
        )
        return Problem(file, ProblemKind.INCOMPLETE, detail)
    missing = []
    if not any(entry.event is EventType.RUN_CONFIGURED for entry in entries):
        missing.append("no run.configured entry")
    last = entries[-1]
    if not (last.event is EventType.CHECKPOINT and Checkpoint.from_payload(last.payload).final):
        missing.append(f"no final checkpoint ({_why_unfinished(entries)})")
    if not missing:
        return None
    detail = f"the ledger of {party!r} has {' and '.join(missing)}"
    return Problem(file, ProblemKind.INCOMPLETE, detail, seq=len(entries))


def _why_unfinished(entries: tuple[LedgerEntry, ...]) -> str:
    finished = [e for e in entries if e.event is EventType.RUN_FINISHED]
    if not finished:
        return (
            f"it ends at seq {entries[-1].seq} without run.finished: the run was interrupted, "
            "or its end was cut"
        )
    status = finished[-1].payload.get("status")
    if status != _COMPLETED:
        return f"the run ended {status!r} (run.finished at seq {finished[-1].seq})"
    return (
        f"run.finished {_COMPLETED!r} at seq {finished[-1].seq}, but the run was not sealed, or "
        "its end was cut"
    )


@dataclass
class _CrossCheck:
    scans: Mapping[str, ScanResult]
    keys: Mapping[str, VerifyKey]
    files: Mapping[str, str]
    finals: list[str] = field(default_factory=list)

    def run(self) -> list[Problem]:
        problems: list[Problem] = []
        for actor, scan in self.scans.items():
            for entry in scan.entries:
                if entry.event is EventType.CHECKPOINT:
                    problems += self._checkpoint(actor, entry)
        return problems

    def _checkpoint(self, actor: str, entry: LedgerEntry) -> list[Problem]:
        checkpoint = Checkpoint.from_payload(entry.payload)  # format checked by the scan
        if checkpoint.final:
            self.finals.append(actor)
        where = f"{actor}'s checkpoint (seq {entry.seq})"
        problems: list[Problem] = []
        for head in checkpoint.heads:
            if head.actor == actor:
                continue  # checked within the ledger
            if head.actor not in self.keys:
                detail = f"the checkpoint names {head.actor!r}, not a party of the roster"
                file = self.files[actor]
                problems.append(
                    Problem(file, ProblemKind.UNKNOWN_ACTOR, detail, entry.seq, entry.seq + 1)
                )
                continue
            found = self._head(head, checkpoint, where)
            if found is not None:
                problems.append(found)
        return problems

    def _head(self, head: Head, checkpoint: Checkpoint, where: str) -> Problem | None:
        scan = self.scans.get(head.actor)
        file = self.files.get(head.actor, _default_file(head.actor))
        if scan is None:
            detail = f"ledger missing; {where} records its head at seq {head.seq}"
            return (
                None if head.seq == -1 else Problem(file, ProblemKind.TRUNCATED, detail, head.seq)
            )
        if scan.problem is not None:
            return None  # already reported; the intact prefix says nothing about the rest
        found = _recorded(file, head, scan.entries, where)
        if found is None and checkpoint.final:
            found = _final(file, head, scan.entries, checkpoint, where)
        return found

    def notes(self, *, roster_parties: list[str]) -> list[str]:
        notes: list[str] = []
        if not self.finals:
            notes.append(
                "No final checkpoint in any ledger: the run did not finish, or every ledger's end "
                "was cut; entries after the last checkpoint are not covered."
            )
        absent = [party for party in roster_parties if party not in self.scans]
        if absent:
            notes.append(f"Roster parties without a ledger here: {', '.join(absent)}.")
        return notes


def _recorded(
    file: str, head: Head, entries: tuple[LedgerEntry, ...], where: str
) -> Problem | None:
    """The entry ``head`` names exists in ``entries`` with that hash."""
    if head.seq >= len(entries):
        detail = f"ends at seq {len(entries) - 1}, but {where} records seq {head.seq}"
        return Problem(file, ProblemKind.TRUNCATED, detail, len(entries), len(entries) + 1)
    actual = entries[head.seq].hash if head.seq >= 0 else GENESIS_HASH
    if actual != head.hash:
        detail = f"hash differs from the one {where} records for this seq"
        return Problem(file, ProblemKind.EDITED, detail, head.seq, head.seq + 1)
    return None


def _final(
    file: str, head: Head, entries: tuple[LedgerEntry, ...], checkpoint: Checkpoint, where: str
) -> Problem | None:
    """The entry after ``head`` is the same final checkpoint, and the last of ``entries``."""
    following = head.seq + 1
    if following >= len(entries):
        detail = f"its final checkpoint is missing; {where} implies one at seq {following}"
        return Problem(file, ProblemKind.TRUNCATED, detail, following, following + 1)
    if not _same_final(entries[following], checkpoint) or following != len(entries) - 1:
        detail = f"does not end with the final checkpoint that {where} implies"
        return Problem(file, ProblemKind.EDITED, detail, following, following + 1)
    return None


def _same_final(entry: LedgerEntry, checkpoint: Checkpoint) -> bool:
    if entry.event is not EventType.CHECKPOINT:
        return False
    try:
        return Checkpoint.from_payload(entry.payload) == checkpoint
    except ValueError:
        return False


def _roster_keys(roster: Roster) -> dict[str, VerifyKey]:
    keys = {roster.server.party_id: roster.server.identity}
    keys.update({client.party_id: client.identity for client in roster.clients})
    return keys


def _default_file(actor: str) -> str:
    return f"{LEDGER_DIR}/{actor}.jsonl"


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read ledger {path}: {exc.strerror}") from None


def _unique(problems: list[Problem]) -> list[Problem]:
    seen: set[tuple[str, ProblemKind, int | None]] = set()
    result = []
    for problem in problems:
        key = (problem.file, problem.kind, problem.seq)
        if key not in seen:
            seen.add(key)
            result.append(problem)
    return result


def _result(
    scans: Mapping[str, ScanResult],
    problems: list[Problem],
    notes: tuple[str, ...],
    *,
    ledgers: int,
    missing: list[Problem] | None = None,
) -> VerifyResult:
    heads = []
    equivocations = []
    for actor, scan in sorted(scans.items()):
        last = scan.entries[-1] if scan.entries else None
        heads.append(Head(actor, last.seq, last.hash) if last else Head(actor, -1, GENESIS_HASH))
        file = _default_file(actor)
        for entry in scan.entries:  # the intact part only: a claim in a damaged tail is void
            if entry.event is EventType.INCONSISTENT_HEADS:
                detail = (
                    f"{actor} records that the coordinator sent it heads for round "
                    f"{entry.payload.get('round')} that do not match its transcript "
                    f"({str(entry.payload.get('reason', ''))[:200]}); it checkpointed none"
                )
                equivocations.append(
                    Problem(
                        file, ProblemKind.EQUIVOCATION, detail, seq=entry.seq, line=entry.seq + 1
                    )
                )
    return VerifyResult(
        ok=not problems,
        entries=sum(len(scan.entries) for scan in scans.values()),
        ledgers=ledgers,
        problem=problems[0] if problems else None,
        problems=tuple(problems),
        notes=notes,
        heads=tuple(heads),
        missing=tuple(missing or ()),
        equivocations=tuple(equivocations),
    )
