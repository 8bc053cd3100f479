"""Completeness (issue 19, "Wiped ledgers verify as INTACT"): every roster party needs a
non-empty chain with its genesis entry, its ``run.configured`` entry and a final checkpoint;
a missing piece is INCOMPLETE (exit 3), never INTACT, and names the party."""

from __future__ import annotations

from pathlib import Path

import pytest

from securefed.audit import (
    Hazard,
    Ledger,
    ProblemKind,
    RunFinished,
    record_checkpoint,
    verify_ledger,
    verify_path,
    verify_run,
)
from securefed.audit.verify import EXIT_INCOMPLETE, EXIT_TAMPERED, VerifyResult, VerifyStatus
from securefed.secagg.roster import save_roster
from securefed.testing import make_federation
from tests.audit import Run, build_run, fixed_clock, run_configured


@pytest.fixture
def run(tmp_path: Path) -> Run:
    return build_run(tmp_path)


def _incomplete(result: VerifyResult) -> None:
    assert result.ok  # no tampering ...
    assert (result.problem, result.problems) == (None, ())
    assert result.missing  # ... but not complete
    assert result.status is VerifyStatus.INCOMPLETE
    assert result.exit_code == EXIT_INCOMPLETE == 3
    assert result.summary().startswith("INCOMPLETE: ")
    assert "INTACT" not in result.describe()
    assert all(p.kind is ProblemKind.INCOMPLETE for p in result.missing)


# --- the four findings, replayed --------------------------------------------------------------


def test_emptying_every_ledger_is_incomplete_naming_every_party(run: Run) -> None:
    for actor in run.keys:
        run.path(actor).write_bytes(b"")
    result = verify_path(run.run_dir)
    _incomplete(result)
    assert (result.ledgers, result.entries) == (4, 0)
    assert sorted(p.file for p in result.missing) == [
        f"ledgers/{actor}.jsonl" for actor in sorted(run.keys)
    ]
    for problem in result.missing:
        assert "is empty: no genesis entry, no run.configured entry, no final checkpoint" in (
            problem.detail
        )
    assert "'bank-0'" in result.describe()


def test_cutting_every_ledger_to_six_lines_is_incomplete(run: Run) -> None:
    for actor in run.keys:
        run.write_lines(actor, run.lines(actor)[:6])
    result = verify_path(run.run_dir)
    _incomplete(result)
    assert len(result.missing) == 4
    for problem in result.missing:
        assert problem.seq == 6
        assert "no final checkpoint" in problem.detail
        assert "without run.finished" in problem.detail


def test_one_emptied_ledger_checked_alone_is_incomplete(run: Run) -> None:
    run.path("bank-1").write_bytes(b"")
    alone = verify_path(run.path("bank-1"))
    _incomplete(alone)
    assert alone.missing[0].file == "bank-1.jsonl"
    assert "'bank-1'" in alone.missing[0].detail
    # the whole run directory still names it truncated, through the others' checkpoints
    whole = verify_path(run.run_dir)
    assert whole.status is VerifyStatus.TAMPERED
    assert whole.exit_code == EXIT_TAMPERED
    assert whole.problem is not None
    assert (whole.problem.file, whole.problem.kind) == (
        "ledgers/bank-1.jsonl",
        ProblemKind.TRUNCATED,
    )


def test_deleting_every_ledger_agrees_with_emptying_them(run: Run, tmp_path: Path) -> None:
    for actor in run.keys:
        run.path(actor).unlink()
    deleted = verify_path(run.run_dir)
    _incomplete(deleted)
    assert deleted.ledgers == 0
    assert sorted(p.file for p in deleted.missing) == [
        f"ledgers/{actor}.jsonl" for actor in sorted(run.keys)
    ]
    assert all("no ledger of roster party" in p.detail for p in deleted.missing)


# --- the rules, one by one --------------------------------------------------------------------


def test_a_complete_run_is_still_intact_as_a_directory_and_file_by_file(run: Run) -> None:
    result = verify_path(run.run_dir)
    assert (result.status, result.exit_code) == (VerifyStatus.INTACT, 0)
    for actor in run.keys:
        alone = verify_path(run.path(actor))
        assert (alone.status, alone.exit_code) == (VerifyStatus.INTACT, 0), alone.describe()


def test_a_missing_ledger_of_one_party_without_any_seal_is_incomplete(tmp_path: Path) -> None:
    run = build_run(tmp_path, final=False)
    run.path("bank-2").unlink()
    result = verify_run(run.run_dir)
    _incomplete(result)
    files = [p.file for p in result.missing]
    assert "ledgers/bank-2.jsonl" in files
    assert len(files) == 4  # bank-2 missing; the three others are not sealed


def _tiny_run(root: Path, *, status: str, final: bool, configured: bool = True) -> Path:
    """A two-client run: server, bank-0 and bank-1, ``run.finished`` with ``status``."""
    federation = make_federation(2)
    run_dir = root / "tiny"
    (run_dir / "ledgers").mkdir(parents=True)
    save_roster(federation.roster, run_dir / "roster.toml")
    keys = {"server": federation.server_key}
    keys.update({f"bank-{i}": key for i, key in enumerate(federation.client_keys)})
    ledgers = {
        actor: Ledger.open(run_dir / "ledgers" / f"{actor}.jsonl", actor, key, clock=fixed_clock())
        for actor, key in keys.items()
    }
    for ledger in ledgers.values():
        if configured:
            ledger.record(run_configured(federation, {}, "ab" * 32))
        else:
            ledger.record(Hazard(text="no configuration entry"))
        ledger.record(RunFinished(rounds=1, status=status))
    if final:
        heads = [ledger.head for ledger in ledgers.values()]
        for ledger in ledgers.values():
            record_checkpoint(ledger, heads, final=True)
    for ledger in ledgers.values():
        ledger.close()
    return run_dir


@pytest.mark.parametrize("status", ["interrupted", "failed", "degraded"])
def test_a_run_that_ended_badly_without_a_seal_is_incomplete_with_the_reason(
    tmp_path: Path, status: str
) -> None:
    run_dir = _tiny_run(tmp_path, status=status, final=False)
    result = verify_run(run_dir)
    _incomplete(result)
    assert len(result.missing) == 3
    for problem in result.missing:
        assert f"the run ended {status!r}" in problem.detail
    alone = verify_path(run_dir / "ledgers" / "bank-0.jsonl")
    _incomplete(alone)
    assert f"the run ended {status!r}" in alone.summary()


def test_a_completed_but_unsealed_run_is_incomplete(tmp_path: Path) -> None:
    run_dir = _tiny_run(tmp_path, status="completed", final=False)
    result = verify_run(run_dir)
    _incomplete(result)
    assert "not sealed" in result.summary()


def test_a_sealed_tiny_run_is_intact(tmp_path: Path) -> None:
    run_dir = _tiny_run(tmp_path, status="completed", final=True)
    assert verify_run(run_dir).status is VerifyStatus.INTACT


def test_a_chain_without_run_configured_is_incomplete(tmp_path: Path) -> None:
    run_dir = _tiny_run(tmp_path, status="completed", final=True, configured=False)
    result = verify_run(run_dir)
    _incomplete(result)
    assert all(p.detail.endswith("has no run.configured entry") for p in result.missing)
    # under another key the same file is TAMPERED (bad signature), not INCOMPLETE
    other = make_federation(2).server_key.verify_key()
    assert verify_ledger(run_dir / "ledgers" / "server.jsonl", other).status is (
        VerifyStatus.TAMPERED
    )


def test_tampering_wins_over_incompleteness_and_both_are_listed(tmp_path: Path) -> None:
    run = build_run(tmp_path, final=False)  # nobody sealed: all four are incomplete ...
    lines = run.lines("bank-1")
    lines[2] = b"not an entry\n"  # ... and bank-1 is tampered with
    run.write_lines("bank-1", lines)
    result = verify_run(run.run_dir)
    assert result.status is VerifyStatus.TAMPERED
    assert result.exit_code == EXIT_TAMPERED
    assert result.problem is not None
    assert (result.problem.file, result.problem.kind) == (
        "ledgers/bank-1.jsonl",
        ProblemKind.MALFORMED,
    )
    assert [p.kind for p in result.problems] == [ProblemKind.MALFORMED]
    incomplete = [p.file for p in result.missing]
    assert sorted(incomplete) == [
        "ledgers/bank-0.jsonl",
        "ledgers/bank-2.jsonl",
        "ledgers/server.jsonl",
    ]
    described = result.describe().splitlines()
    assert described[0].startswith("TAMPERED: ledgers/bank-1.jsonl")
    assert sum(line.startswith("incomplete: ") for line in described) == 3
