"""verify_ledger / verify_run: every kind of tampering is found, with the right kind and place."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from securefed.audit import (
    EventType,
    Hazard,
    Head,
    Ledger,
    LedgerEntry,
    Problem,
    ProblemKind,
    RunFinished,
    record_checkpoint,
    verify_ledger,
    verify_path,
    verify_run,
)
from securefed.audit.canonical import encode_canonical
from securefed.audit.verify import VerifyStatus
from securefed.crypto import SigningKey, get_suite
from securefed.errors import ConfigError
from securefed.testing import make_federation
from tests.audit import Run, build_run, fixed_clock, open_ledgers


@pytest.fixture
def run(tmp_path: Path) -> Run:
    return build_run(tmp_path)


def _edit(line: bytes, change: Callable[[dict[str, object]], None]) -> bytes:
    entry = json.loads(line)
    change(entry)
    return encode_canonical(entry) + b"\n"


def _rehash(entry: dict[str, object]) -> None:
    body = {k: v for k, v in entry.items() if k not in ("hash", "signature")}
    entry["hash"] = hashlib.sha256(encode_canonical(body)).hexdigest()  # type: ignore[arg-type]


def _only(run: Run) -> Problem:
    result = verify_run(run.run_dir)
    assert not result.ok
    assert result.exit_code == 1
    assert result.problem is not None
    assert result.problem == result.problems[0]
    return result.problem


def test_a_clean_run_verifies(run: Run) -> None:
    result = verify_run(run.run_dir)
    assert result.ok, result.describe()
    assert result.exit_code == 0
    assert result.ledgers == 4
    assert result.entries == sum(len(run.lines(a)) for a in run.keys)
    assert result.problem is None
    assert result.notes == ()
    assert [h.actor for h in result.heads] == ["bank-0", "bank-1", "bank-2", "server"]
    summary, epsilon = result.describe().splitlines()
    assert summary == f"INTACT: 4 ledgers, {result.entries} entries verified"
    assert epsilon.startswith("epsilon: 3 parties' ε recomputed from the signed sigma, q ")
    assert [check.party for check in result.epsilon] == ["bank-0", "bank-1", "bank-2"]


def test_payload_edit_is_edited(run: Run) -> None:
    lines = run.lines("bank-1")
    assert json.loads(lines[4])["event"] == "round.spend"
    lines[4] = _edit(lines[4], lambda e: e["payload"].update(epsilon=0.01))  # type: ignore[attr-defined]
    run.write_lines("bank-1", lines)
    problem = _only(run)
    assert (problem.file, problem.kind, problem.seq, problem.line) == (
        "ledgers/bank-1.jsonl",
        ProblemKind.EDITED,
        4,
        5,
    )


def test_hash_field_edit_is_edited(run: Run) -> None:
    lines = run.lines("server")
    lines[2] = _edit(lines[2], lambda e: e.update(hash="ab" * 32))
    run.write_lines("server", lines)
    problem = _only(run)
    assert (problem.file, problem.kind, problem.seq) == (
        "ledgers/server.jsonl",
        ProblemKind.EDITED,
        2,
    )


def test_content_and_hash_edited_together_is_a_bad_signature(run: Run) -> None:
    def change(entry: dict[str, object]) -> None:
        entry["payload"]["epsilon"] = 0.01  # type: ignore[index]
        _rehash(entry)

    lines = run.lines("bank-0")
    lines[4] = _edit(lines[4], change)
    run.write_lines("bank-0", lines)
    problem = _only(run)
    assert (problem.kind, problem.seq) == (ProblemKind.BAD_SIGNATURE, 4)


def test_swapped_entries_are_reordered(run: Run) -> None:
    lines = run.lines("bank-2")
    lines[3], lines[4] = lines[4], lines[3]
    run.write_lines("bank-2", lines)
    problem = _only(run)
    assert (problem.file, problem.kind, problem.line, problem.seq) == (
        "ledgers/bank-2.jsonl",
        ProblemKind.REORDERED,
        4,
        4,
    )


def test_duplicated_entry_is_reordered(run: Run) -> None:
    lines = run.lines("bank-2")
    lines.insert(4, lines[3])
    run.write_lines("bank-2", lines)
    problem = _only(run)
    assert (problem.kind, problem.line) == (ProblemKind.REORDERED, 5)
    assert "twice" in problem.detail


def test_deleted_middle_entry_is_deleted(run: Run) -> None:
    lines = run.lines("server")
    del lines[3]
    run.write_lines("server", lines)
    problem = _only(run)
    assert (problem.file, problem.kind, problem.seq, problem.line) == (
        "ledgers/server.jsonl",
        ProblemKind.DELETED,
        4,
        4,
    )
    assert "seq 3 missing" in problem.detail


@pytest.mark.parametrize("actor", ["bank-0", "server"])
@pytest.mark.parametrize("cut", [1, 2, 5])
def test_truncated_tail_is_found_through_the_other_parties(run: Run, actor: str, cut: int) -> None:
    lines = run.lines(actor)
    run.write_lines(actor, lines[:-cut])
    problem = _only(run)
    assert (problem.file, problem.kind) == (f"ledgers/{actor}.jsonl", ProblemKind.TRUNCATED)
    # ...while the file checked on its own shows no tampering, but it is INCOMPLETE: its final
    # checkpoint is gone (and the note says what a single file cannot show):
    alone = verify_ledger(run.path(actor), run.keys[actor].verify_key())
    assert alone.status is VerifyStatus.INCOMPLETE
    assert alone.exit_code == 3
    assert alone.note is not None
    assert "truncation is only detectable up to the last signed checkpoint" in alone.note


def test_a_deleted_ledger_file_is_truncated(run: Run) -> None:
    run.path("bank-1").unlink()
    problem = _only(run)
    assert (problem.file, problem.kind) == ("ledgers/bank-1.jsonl", ProblemKind.TRUNCATED)


def test_cutting_every_final_checkpoint_is_the_documented_residual(run: Run) -> None:
    """Formerly INTACT with a note (the residual); now INCOMPLETE, every party named."""
    for actor in run.keys:
        run.write_lines(actor, run.lines(actor)[:-1])
    result = verify_run(run.run_dir)
    assert result.ok  # nothing tampered with ...
    assert result.status is VerifyStatus.INCOMPLETE  # ... but nothing is sealed
    assert result.exit_code == 3
    assert {p.kind for p in result.missing} == {ProblemKind.INCOMPLETE}
    assert sorted(p.file for p in result.missing) == sorted(f"ledgers/{a}.jsonl" for a in run.keys)
    assert all("no final checkpoint" in p.detail for p in result.missing)
    assert result.note is not None
    assert "No final checkpoint" in result.note


def test_a_rewritten_history_contradicts_the_others_checkpoints(run: Run) -> None:
    """bank-1 re-signs a different history of the same length with its own key (a fork)."""
    length = len(run.lines("bank-1")) - 1  # its head, as recorded by the others
    run.path("bank-1").unlink()
    with Ledger.open(run.path("bank-1"), "bank-1", run.keys["bank-1"], clock=fixed_clock()) as led:
        for i in range(length):
            led.record(Hazard(text=f"rewritten {i}"))
    result = verify_run(run.run_dir)
    assert not result.ok
    assert result.problem is not None
    assert (result.problem.file, result.problem.kind) == (
        "ledgers/bank-1.jsonl",
        ProblemKind.EDITED,
    )


def test_a_mid_run_checkpoint_covers_a_truncated_unfinished_run(tmp_path: Path) -> None:
    run = build_run(tmp_path, final=False)
    ledgers = open_ledgers(run)
    record_checkpoint(ledgers["bank-0"], [ledgers["bank-1"].head], final=False)
    for ledger in ledgers.values():
        ledger.close()
    assert verify_run(run.run_dir).status is VerifyStatus.INCOMPLETE  # not sealed
    run.write_lines("bank-1", run.lines("bank-1")[:3])
    problem = _only(run)
    assert (problem.file, problem.kind, problem.seq) == (
        "ledgers/bank-1.jsonl",
        ProblemKind.TRUNCATED,
        3,
    )


def test_another_actors_key_is_a_bad_signature(run: Run) -> None:
    run.path("bank-0").unlink()
    with Ledger.open(run.path("bank-0"), "bank-0", run.keys["bank-1"]) as ledger:
        ledger.record(Hazard(text="signed by bank-1"))
    problem = _only(run)
    assert (problem.file, problem.kind, problem.seq, problem.line) == (
        "ledgers/bank-0.jsonl",
        ProblemKind.BAD_SIGNATURE,
        0,
        1,
    )


def test_a_ledger_of_a_party_outside_the_roster_is_an_unknown_actor(run: Run) -> None:
    mallory = get_suite("default").generate_signing_key()
    with Ledger.open(run.run_dir / "ledgers" / "mallory.jsonl", "mallory", mallory) as ledger:
        ledger.record(Hazard(text="hello"))
    problem = _only(run)
    assert (problem.file, problem.kind, problem.seq) == (
        "ledgers/mallory.jsonl",
        ProblemKind.UNKNOWN_ACTOR,
        None,
    )


def test_a_whole_run_against_the_wrong_roster_fails(run: Run) -> None:
    other = make_federation(3).roster
    result = verify_run(run.run_dir, other)
    assert not result.ok
    assert result.problem is not None
    assert result.problem.kind is ProblemKind.BAD_SIGNATURE
    assert verify_run(run.run_dir, run.federation.roster).ok


def test_the_wrong_roster_is_a_roster_mismatch_not_tampering(run: Run) -> None:
    """Another roster's keys (same party names): not one entry verifies, and the ledgers'
    run.configured entries name another roster digest -- ROSTER_MISMATCH (exit 5), naming both
    digests, with no bad-signature line per ledger and no note that would not apply."""
    other = make_federation(3).roster
    result = verify_run(run.run_dir, other)
    assert result.status is VerifyStatus.ROSTER_MISMATCH
    assert result.exit_code == 5
    ours, theirs = other.digest().hex()[:16], run.federation.roster.digest().hex()[:16]
    (line,) = result.describe().splitlines()
    assert line.startswith(f"ROSTER_MISMATCH: the roster used (digest {ours}...) is not the one")
    assert f"name roster digest {theirs}..." in line
    assert "not one entry of all 4 ledger files verifies under its keys" in line
    assert result.epsilon == ()  # nothing was checked
    single = verify_path(run.path("bank-1"), other)
    assert single.status is VerifyStatus.ROSTER_MISMATCH
    assert "not one entry of 1 ledger file verifies" in single.summary()


def test_a_roster_of_other_parties_is_a_roster_mismatch(run: Run) -> None:
    other = make_federation(3, party_ids=("alice", "bob", "carol")).roster
    result = verify_run(run.run_dir, other)
    assert result.status is VerifyStatus.ROSTER_MISMATCH
    assert "its parties: alice, bob, carol, server; the ledgers': bank-0, bank-1" in (
        result.summary()
    )
    assert verify_path(run.path("bank-0"), other).status is VerifyStatus.ROSTER_MISMATCH


def test_forged_ledgers_that_name_the_roster_stay_tampered(run: Run) -> None:
    """Every ledger re-signed by other keys but still naming the right roster's digest: that is
    a forgery under this roster, not a roster mismatch."""
    forger = make_federation(3)
    keys = {"server": forger.server_key, **dict(zip(run.clients, forger.client_keys, strict=True))}
    for actor, key in keys.items():
        lines = run.lines(actor)
        run.write_lines(actor, [_resign(lines[0], key), *lines[1:]])
    result = verify_run(run.run_dir)
    assert result.status is VerifyStatus.TAMPERED
    assert result.roster_mismatch is None


def test_one_foreign_ledger_is_tampered_not_a_roster_mismatch(run: Run) -> None:
    stranger = make_federation(2).client_keys[0]
    lines = run.lines("bank-2")
    run.write_lines("bank-2", [_resign(lines[0], stranger), *lines[1:]])
    assert verify_run(run.run_dir).status is VerifyStatus.TAMPERED


@pytest.mark.parametrize(
    "bad",
    [
        b"garbage\n",
        b"{}\n",
        b'{"actor": "bank-0"}\n',
        b"\n",
    ],
)
def test_malformed_lines(run: Run, bad: bytes) -> None:
    lines = run.lines("bank-0")
    lines[2] = bad
    run.write_lines("bank-0", lines)
    problem = _only(run)
    assert (problem.kind, problem.line) == (ProblemKind.MALFORMED, 3)


def test_non_canonical_spacing_is_malformed(run: Run) -> None:
    lines = run.lines("bank-0")
    lines[2] = json.dumps(json.loads(lines[2]), sort_keys=True).encode() + b"\n"
    run.write_lines("bank-0", lines)
    problem = _only(run)
    assert problem.kind is ProblemKind.MALFORMED
    assert "canonical" in problem.detail


def test_unknown_event_is_malformed(run: Run) -> None:
    lines = run.lines("bank-0")
    lines[1] = _edit(lines[1], lambda e: e.update(event="made.up"))
    run.write_lines("bank-0", lines)
    problem = _only(run)
    assert (problem.kind, problem.line) == (ProblemKind.MALFORMED, 2)


def test_a_half_written_last_line_is_truncated(run: Run) -> None:
    data = run.path("bank-2").read_bytes()
    run.path("bank-2").write_bytes(data[:-40])
    problem = _only(run)
    assert (problem.file, problem.kind, problem.line) == (
        "ledgers/bank-2.jsonl",
        ProblemKind.TRUNCATED,
        len(data.splitlines()),
    )


def test_an_entry_after_the_final_checkpoint_is_malformed(run: Run) -> None:
    lines = run.lines("bank-0")
    last = json.loads(lines[-1])
    extra = LedgerEntry.create(
        seq=last["seq"] + 1,
        time="2025-01-02T00:00:00.000Z",
        actor="bank-0",
        event=EventType.RUN_FINISHED,
        payload=RunFinished(rounds=9, status="completed").to_payload(),  # type: ignore[arg-type]
        prev_hash=last["hash"],
        signing_key=run.keys["bank-0"],
    )
    run.write_lines("bank-0", [*lines, extra.to_line()])
    problem = _only(run)
    assert (problem.file, problem.kind) == ("ledgers/bank-0.jsonl", ProblemKind.MALFORMED)
    assert "after the final checkpoint" in problem.detail


def test_a_copied_run_directory_still_verifies(run: Run, tmp_path: Path) -> None:
    copy = tmp_path / "elsewhere" / "copied-run"
    shutil.copytree(run.run_dir, copy)
    assert verify_run(copy).ok
    lines = (copy / "ledgers" / "bank-1.jsonl").read_bytes().splitlines(keepends=True)
    del lines[2]
    (copy / "ledgers" / "bank-1.jsonl").write_bytes(b"".join(lines))
    result = verify_run(copy)
    assert result.problem is not None
    assert result.problem.file == "ledgers/bank-1.jsonl"
    assert str(tmp_path) not in result.describe()


def test_usage_errors(tmp_path: Path, run: Run) -> None:
    with pytest.raises(ConfigError, match="roster"):
        verify_run(tmp_path / "nothing-here")
    empty = tmp_path / "empty"
    empty.mkdir()
    shutil.copy(run.run_dir / "roster.toml", empty / "roster.toml")
    with pytest.raises(ConfigError, match="not a directory"):
        verify_run(empty)
    (empty / "ledgers").mkdir()  # every ledger deleted: INCOMPLETE, every party named
    result = verify_run(empty)
    assert (result.status, result.exit_code, result.ledgers) == (VerifyStatus.INCOMPLETE, 3, 0)
    assert sorted(p.file for p in result.missing) == [
        f"ledgers/{a}.jsonl" for a in sorted(run.keys)
    ]
    with pytest.raises(ConfigError, match="cannot read"):
        verify_ledger(empty / "ledgers" / "x.jsonl", run.keys["server"].verify_key())


def test_problem_describe(run: Run) -> None:
    lines = run.lines("server")
    del lines[1]
    run.write_lines("server", lines)
    result = verify_run(run.run_dir)
    assert result.summary() == (
        "TAMPERED: ledgers/server.jsonl line 2 (seq 2): deleted: seq 1 missing before seq 2"
    )
    assert result.describe().splitlines()[0] == result.summary()


def _resign(line: bytes, key: SigningKey, **changes: object) -> bytes:
    """The entry of ``line`` with ``changes``, hashed and signed afresh by ``key``."""
    entry = json.loads(line)
    entry.update(changes)
    return LedgerEntry.create(
        seq=entry["seq"],
        time=entry["time"],
        actor=entry["actor"],
        event=EventType(entry["event"]),
        payload=entry["payload"],
        prev_hash=entry["prev_hash"],
        signing_key=key,
    ).to_line()


def test_a_middle_entry_signed_by_another_actor_is_a_bad_signature(run: Run) -> None:
    lines = run.lines("bank-0")
    lines[3] = _resign(lines[3], run.keys["bank-1"])  # same content, so the same hash
    assert json.loads(lines[3])["hash"] == json.loads(run.lines("bank-0")[3])["hash"]
    run.write_lines("bank-0", lines)
    problem = _only(run)
    assert (problem.file, problem.kind, problem.seq, problem.line) == (
        "ledgers/bank-0.jsonl",
        ProblemKind.BAD_SIGNATURE,
        3,
        4,
    )


def test_an_entry_claiming_another_actor_is_malformed(run: Run) -> None:
    lines = run.lines("bank-0")
    lines[3] = _resign(lines[3], run.keys["bank-0"], actor="bank-1")
    run.write_lines("bank-0", lines)
    problem = _only(run)
    assert (problem.kind, problem.seq) == (ProblemKind.MALFORMED, 3)
    assert "'bank-1' in the ledger of 'bank-0'" in problem.detail


def test_a_checkpoint_naming_a_party_outside_the_roster_is_an_unknown_actor(tmp_path: Path) -> None:
    run = build_run(tmp_path, final=False)
    with Ledger.open(run.path("bank-0"), "bank-0", run.keys["bank-0"]) as ledger:
        entry = record_checkpoint(ledger, [Head("mallory", 0, "ab" * 32)], final=False)
    problem = _only(run)
    assert (problem.file, problem.kind, problem.seq) == (
        "ledgers/bank-0.jsonl",
        ProblemKind.UNKNOWN_ACTOR,
        entry.seq,
    )
    assert "mallory" in problem.detail


def test_verify_path_checks_a_run_directory_like_verify_run(run: Run) -> None:
    assert verify_path(run.run_dir) == verify_run(run.run_dir)
    run.write_lines("server", run.lines("server")[:-1])
    assert verify_path(run.run_dir) == verify_run(run.run_dir)
    assert not verify_path(run.run_dir).ok


def test_verify_path_checks_one_ledger_under_its_run_directorys_roster(run: Run) -> None:
    result = verify_path(run.path("bank-2"))
    assert result.ok, result.describe()
    assert (result.ledgers, result.entries) == (1, len(run.lines("bank-2")))
    assert result.summary() == f"INTACT: 1 ledger, {result.entries} entries verified"
    assert result.note is not None
    assert "truncation is only detectable up to the last signed checkpoint" in result.note
    assert result.note.endswith(f"ends with its final checkpoint (seq {result.entries - 1}).")
    # a truncated tail shows no tampering alone, but the final checkpoint is missing ...
    run.write_lines("bank-2", run.lines("bank-2")[:-3])
    alone = verify_path(run.path("bank-2"))
    assert alone.status is VerifyStatus.INCOMPLETE
    assert alone.summary().startswith("INCOMPLETE: bank-2.jsonl (seq ")
    assert alone.note is not None
    assert alone.note.endswith("This file has no signed checkpoint.")
    # ... but an edit is not
    lines = run.lines("bank-2")
    lines[1] = _edit(lines[1], lambda e: e["payload"].update(delta=0.5))  # type: ignore[attr-defined]
    run.write_lines("bank-2", lines)
    edited = verify_path(run.path("bank-2"))
    assert edited.problem is not None
    assert (edited.problem.file, edited.problem.kind, edited.problem.seq) == (
        "bank-2.jsonl",
        ProblemKind.EDITED,
        1,
    )


def test_verify_path_of_a_copied_ledger_needs_a_roster(run: Run, tmp_path: Path) -> None:
    loose = tmp_path / "loose" / "bank-1.jsonl"
    loose.parent.mkdir()
    shutil.copy(run.path("bank-1"), loose)
    with pytest.raises(ConfigError, match="--roster"):
        verify_path(loose)
    assert verify_path(loose, run.federation.roster).ok
    assert not verify_path(loose, make_federation(3).roster).ok


def test_verify_path_of_a_file_named_for_no_party_is_an_unknown_actor(
    run: Run, tmp_path: Path
) -> None:
    stray = run.run_dir / "ledgers" / "mallory.jsonl"
    shutil.copy(run.path("bank-1"), stray)
    result = verify_path(stray)
    assert result.problem is not None
    assert (result.problem.file, result.problem.kind) == (
        "mallory.jsonl",
        ProblemKind.UNKNOWN_ACTOR,
    )
    assert result.exit_code == 1


def test_verify_path_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="neither a run directory nor a ledger file"):
        verify_path(tmp_path / "missing")


def test_the_single_ledger_note_says_whether_it_ends_with_its_final_checkpoint(
    tmp_path: Path,
) -> None:
    run = build_run(tmp_path, final=False)
    with Ledger.open(run.path("bank-0"), "bank-0", run.keys["bank-0"]) as ledger:
        checkpoint = record_checkpoint(ledger, [ledger.head], final=False)
        ledger.record(Hazard(text="after the checkpoint"))
    note = verify_path(run.path("bank-0")).note
    assert note is not None
    assert note.endswith(
        f"last signed checkpoint is at seq {checkpoint.seq} and it does not end with a final "
        "checkpoint: the run was interrupted, or its end was cut."
    )
