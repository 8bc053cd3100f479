"""Anchoring a run (issue 19): what ``verify`` catches from the ledgers alone, and what only an
anchor kept outside the run directory catches (every ledger cut to a common prefix, or a whole
run put in the place of another under the same roster)."""

from __future__ import annotations

import json
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from securefed.audit import (
    Hazard,
    ProblemKind,
    RunFinished,
    record_final_checkpoint,
    verify_run,
)
from securefed.audit.anchor import (
    ANCHOR_FORMAT,
    MAX_ANCHOR_BYTES,
    Anchor,
    AnchoredHead,
    AnchorFormatError,
    AnchorRefused,
    check_anchor,
    load_anchor,
    make_anchor,
    verify_anchored,
    write_anchor,
)
from securefed.audit.canonical import encode_canonical
from securefed.audit.checkpoint import Head
from securefed.audit.verify import EXIT_INCOMPLETE, EXIT_TAMPERED, VerifyResult, VerifyStatus
from securefed.errors import ConfigError, LedgerIntegrityError
from securefed.secagg.roster import load_roster, save_roster
from securefed.testing import make_federation
from tests.audit import Run, build_run, open_ledgers, run_configured

Cut = Callable[[list[bytes]], list[bytes]]


@pytest.fixture
def run(tmp_path: Path) -> Run:
    return build_run(tmp_path)


@pytest.fixture
def anchor(run: Run) -> Anchor:
    return make_anchor(run.run_dir)


def _file(actor: str) -> str:
    return f"ledgers/{actor}.jsonl"


def _last(run: Run, actor: str) -> dict[str, object]:
    entry = json.loads(run.lines(actor)[-1])
    assert isinstance(entry, dict)
    return entry


def _substitute(run: Run, actors: list[str], *, hazards: int) -> None:
    """Put in place of ``actors``' ledgers a complete run sealed under the same roster and keys
    (what only whoever holds those parties' identity keys can do): run.configured, ``hazards``
    hazards, run.finished and a final checkpoint of these ledgers' heads."""
    for actor in actors:
        run.path(actor).unlink()
    ledgers = {actor: ledger for actor, ledger in open_ledgers(run).items() if actor in actors}
    for ledger in ledgers.values():
        ledger.record(run_configured(run.federation, {}, "ef" * 32))
        for i in range(hazards):
            ledger.record(Hazard(text=f"another run, entry {i}"))
        ledger.record(RunFinished(rounds=1, status="completed"))
    record_final_checkpoint(ledgers.values())
    for ledger in ledgers.values():
        ledger.close()


# --- what verify already catches: one ledger cut (the other parties' final checkpoints) -------

SINGLE_CUTS: list[tuple[str, Cut]] = [
    ("last-3-lines-dropped", lambda lines: lines[:-3]),
    ("cut-to-6-lines", lambda lines: lines[:6]),
    ("final-checkpoint-dropped", lambda lines: lines[:-1]),
    ("emptied", lambda lines: []),
]


@pytest.mark.parametrize("actor", ["server", "bank-0", "bank-2"])
@pytest.mark.parametrize(("name", "cut"), SINGLE_CUTS, ids=[name for name, _ in SINGLE_CUTS])
def test_one_cut_ledger_is_tampered_and_named_without_an_anchor(
    run: Run, actor: str, name: str, cut: Cut
) -> None:
    lines = run.lines(actor)
    run.write_lines(actor, cut(lines))
    result = verify_run(run.run_dir)
    assert (result.status, result.exit_code) == (VerifyStatus.TAMPERED, EXIT_TAMPERED)
    assert (EXIT_TAMPERED, EXIT_INCOMPLETE) == (1, 3)
    assert result.problem is not None
    assert (result.problem.file, result.problem.kind) == (_file(actor), ProblemKind.TRUNCATED)
    assert {problem.file for problem in result.problems} == {_file(actor)}  # nobody else blamed
    kept = len(cut(lines))
    assert result.problem.seq == kept  # the first entry that is gone
    assert "checkpoint" in result.problem.detail  # named through another party's checkpoint
    assert result.missing == ()  # the three intact parties are complete


def test_one_cut_ledger_stays_tampered_with_an_anchor(run: Run, anchor: Anchor) -> None:
    run.write_lines("bank-1", run.lines("bank-1")[:-3])
    result = verify_anchored(run.run_dir, anchor)
    assert result.exit_code == 1
    assert {problem.file for problem in result.problems} == {_file("bank-1")}
    anchored = check_anchor(anchor, run.run_dir)
    assert [(p.file, p.kind, p.seq) for p in anchored] == [
        (_file("bank-1"), ProblemKind.TRUNCATED, 9)
    ]
    assert "ends at seq 8, but the anchor records its final head at seq 11" in anchored[0].detail


# --- making an anchor -------------------------------------------------------------------------


def test_the_anchor_of_a_sealed_run_holds_every_partys_signed_last_entry(
    run: Run, anchor: Anchor
) -> None:
    roster = load_roster(run.run_dir / "roster.toml")
    assert anchor.roster_digest == roster.digest().hex()
    assert anchor.parties == tuple(sorted(run.keys))
    for actor in run.keys:
        last = _last(run, actor)
        anchored = anchor.head_of(actor)
        assert anchored is not None
        assert last["event"] == "ledger.checkpoint"
        assert anchored.head == Head(actor, len(run.lines(actor)) - 1, str(last["hash"]))
        assert anchored.signature == last["signature"]
        anchored.verify(run.keys[actor].verify_key())
    assert anchor.head_of("mallory") is None


def test_an_anchor_round_trips_through_its_file(run: Run, anchor: Anchor, tmp_path: Path) -> None:
    data = anchor.to_bytes()
    assert data.endswith(b"\n")
    assert data.count(b"\n") == 1
    assert json.loads(data)["format"] == ANCHOR_FORMAT == "securefed-audit-anchor"
    assert json.loads(data)["version"] == 1
    assert Anchor.from_bytes(data) == anchor
    path = tmp_path / "keep" / "run.anchor"
    path.parent.mkdir()
    write_anchor(anchor, path)
    assert path.read_bytes() == data
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert load_anchor(path) == anchor
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        write_anchor(anchor, path)
    assert path.read_bytes() == data


def test_an_intact_run_matches_its_anchor(run: Run, anchor: Anchor) -> None:
    assert check_anchor(anchor, run.run_dir) == ()
    result = verify_anchored(run.run_dir, anchor)
    assert (result.status, result.exit_code) == (VerifyStatus.INTACT, 0)
    assert result.summary() == verify_run(run.run_dir).summary()
    assert result.notes[-1].startswith("Checked against an anchor of the final heads of 4 parties")
    assert result.notes[-1].endswith("every ledger ends at its anchored head.")


def test_an_unsealed_run_is_not_anchored(tmp_path: Path) -> None:
    unsealed = build_run(tmp_path, final=False)
    with pytest.raises(AnchorRefused) as info:
        make_anchor(unsealed.run_dir)
    assert isinstance(info.value, LedgerIntegrityError)
    assert info.value.result.status is VerifyStatus.INCOMPLETE
    assert "only a sealed run whose ledgers verify INTACT can be anchored" in str(info.value)
    assert "INCOMPLETE" in str(info.value)


def test_a_tampered_run_is_not_anchored(run: Run) -> None:
    lines = run.lines("bank-1")
    entry = json.loads(lines[4])
    entry["payload"]["epsilon"] = 0.01
    lines[4] = encode_canonical(entry) + b"\n"
    run.write_lines("bank-1", lines)
    with pytest.raises(AnchorRefused) as info:
        make_anchor(run.run_dir)
    assert info.value.result.status is VerifyStatus.TAMPERED
    assert "ledgers/bank-1.jsonl line 5 (seq 4): edited" in str(info.value)


def test_a_run_with_one_cut_ledger_is_not_anchored(run: Run) -> None:
    run.write_lines("server", run.lines("server")[:-1])
    with pytest.raises(AnchorRefused, match=r"TAMPERED: ledgers/server\.jsonl"):
        make_anchor(run.run_dir)


# --- what only the anchor catches: every ledger cut to a common prefix --------------------------

COMMON_CUTS: list[tuple[str, Cut]] = [
    ("final-checkpoints-dropped", lambda lines: lines[:-1]),
    ("run-finished-and-final-checkpoints-dropped", lambda lines: lines[:-2]),
    ("cut-to-6-lines", lambda lines: lines[:6]),
    ("cut-to-1-line", lambda lines: lines[:1]),
    ("emptied", lambda lines: []),
]


def _incomplete_naming_everyone(result: VerifyResult, run: Run) -> None:
    assert (result.status, result.exit_code) == (VerifyStatus.INCOMPLETE, EXIT_INCOMPLETE)
    assert result.problems == ()
    assert sorted(gap.file for gap in result.missing) == sorted(_file(a) for a in run.keys)
    assert all(
        "no final checkpoint" in gap.detail or "empty" in gap.detail for gap in result.missing
    )


@pytest.mark.parametrize(("name", "cut"), COMMON_CUTS, ids=[name for name, _ in COMMON_CUTS])
def test_every_ledger_cut_to_a_common_prefix_is_incomplete_without_and_tampered_with_an_anchor(
    run: Run, anchor: Anchor, name: str, cut: Cut
) -> None:
    anchored_seq = {actor: len(run.lines(actor)) - 1 for actor in run.keys}
    for actor in run.keys:
        run.write_lines(actor, cut(run.lines(actor)))
    # from the ledgers alone this is a run that never finished: INCOMPLETE, not tampered
    _incomplete_naming_everyone(verify_run(run.run_dir), run)
    result = verify_anchored(run.run_dir, anchor)
    assert (result.status, result.exit_code) == (VerifyStatus.TAMPERED, 1)
    assert result.missing == ()  # each party is named truncated instead
    assert sorted(p.file for p in result.problems) == sorted(_file(a) for a in run.keys)
    for problem in result.problems:
        actor = problem.file.removeprefix("ledgers/").removesuffix(".jsonl")
        kept = len(run.lines(actor))
        assert problem.kind is ProblemKind.TRUNCATED
        assert problem.seq == kept
        assert problem.detail.startswith(f"the ledger of {actor!r} ends at seq {kept - 1}, ")
        assert f"the anchor records its final head at seq {anchored_seq[actor]} " in problem.detail
    assert result.notes[-1].endswith("they do not all match.")
    assert check_anchor(anchor, run.run_dir) == result.problems


def test_deleted_ledgers_are_named_against_the_anchor(run: Run, anchor: Anchor) -> None:
    for actor in run.keys:
        run.path(actor).unlink()
    assert verify_run(run.run_dir).status is VerifyStatus.INCOMPLETE
    result = verify_anchored(run.run_dir, anchor)
    assert result.exit_code == 1
    assert sorted(p.file for p in result.problems) == sorted(_file(a) for a in run.keys)
    assert all(p.kind is ProblemKind.TRUNCATED for p in result.problems)
    assert all(p.detail.startswith("no ledger of ") for p in result.problems)


# --- rewriting ----------------------------------------------------------------------------------


def test_another_complete_run_in_its_place_is_intact_without_and_caught_with_an_anchor(
    run: Run, anchor: Anchor
) -> None:
    seqs = {actor: len(run.lines(actor)) - 1 for actor in run.keys}
    assert seqs == {"server": 10, "bank-0": 11, "bank-1": 11, "bank-2": 9}
    _substitute(run, list(run.keys), hazards=8)  # every new ledger ends at seq 10
    assert verify_run(run.run_dir).status is VerifyStatus.INTACT  # the limit of the ledgers
    result = verify_anchored(run.run_dir, anchor)
    assert (result.status, result.exit_code) == (VerifyStatus.TAMPERED, 1)
    found = {p.file: p for p in result.problems}
    assert set(found) == {_file(a) for a in run.keys}
    server, bank0, bank2 = found[_file("server")], found[_file("bank-0")], found[_file("bank-2")]
    assert (server.kind, server.seq) == (ProblemKind.EDITED, 10)
    assert "ends at seq 10 with hash " in server.detail
    assert server.detail.endswith(": rewritten")
    assert (bank0.kind, bank0.seq) == (ProblemKind.TRUNCATED, 11)
    assert (bank2.kind, bank2.seq) == (ProblemKind.EDITED, 9)
    assert "goes on to seq 10, but the anchor records its final head at seq 9" in bank2.detail


def test_one_ledger_rewritten_by_its_owner(run: Run, anchor: Anchor) -> None:
    _substitute(run, ["bank-1"], hazards=9)  # re-sealed alone, ends at seq 11 like the original
    plain = verify_run(run.run_dir)
    assert plain.exit_code == 1  # the others' final checkpoints record another head
    assert plain.problem is not None
    assert (plain.problem.file, plain.problem.kind) == (_file("bank-1"), ProblemKind.EDITED)
    anchored = check_anchor(anchor, run.run_dir)
    assert [(p.file, p.kind, p.seq) for p in anchored] == [
        (_file("bank-1"), ProblemKind.EDITED, 11)
    ]
    assert "with hash " in anchored[0].detail
    assert "the anchor records its final head at seq 11" in anchored[0].detail
    result = verify_anchored(run.run_dir, anchor)
    assert result.exit_code == 1
    assert result.problems == (*plain.problems, *anchored)


def test_a_run_under_another_roster_is_named_against_the_anchor(
    run: Run, anchor: Anchor, tmp_path: Path
) -> None:
    other = make_federation(3).roster
    save_roster(other, run.run_dir / "roster.toml", overwrite=True)
    problems = check_anchor(anchor, run.run_dir)
    assert problems[0].file == "roster.toml"
    assert problems[0].kind is ProblemKind.EDITED
    assert "not the anchored" in problems[0].detail
    # the ledgers name the anchored roster, not this one: a roster mismatch (exit 5), with the
    # anchor's problem still listed
    result = verify_anchored(run.run_dir, anchor)
    assert result.exit_code == 5
    assert result.status.value == "ROSTER_MISMATCH"
    assert any(p.file == "roster.toml" for p in result.problems)
    given = check_anchor(anchor, run.run_dir, other)
    assert given[0].file == "the given roster"


# --- a bad anchor is a usage error (ConfigError, one line) --------------------------------------


def _edit(anchor: Anchor, change: Callable[[dict[str, object]], object]) -> bytes:
    value = json.loads(anchor.to_bytes())
    change(value)
    return encode_canonical(value) + b"\n"


def _head(value: dict[str, object], actor: str) -> dict[str, object]:
    heads = value["heads"]
    assert isinstance(heads, dict)
    head = heads[actor]
    assert isinstance(head, dict)
    return head


MALFORMED: list[tuple[str, Callable[[Anchor], bytes], str]] = [
    ("empty", lambda a: b"", "one line of canonical JSON"),
    ("no-newline", lambda a: a.to_bytes()[:-1], "one line of canonical JSON"),
    ("two-lines", lambda a: a.to_bytes() * 2, "one line of canonical JSON"),
    ("not-json", lambda a: b"anchor\n", "not JSON"),
    ("not-utf8", lambda a: b"\xff\xfe\n", "not UTF-8"),
    ("array", lambda a: b"[]\n", "not a JSON object"),
    (
        "pretty-printed",
        lambda a: (json.dumps(json.loads(a.to_bytes()), indent=None) + "\n").encode(),
        "not in canonical form",
    ),
    ("other-format", lambda a: _edit(a, lambda v: v.update(format="x")), "format is 'x'"),
    ("version-2", lambda a: _edit(a, lambda v: v.update(version=2)), "version 2"),
    ("version-str", lambda a: _edit(a, lambda v: v.update(version="1")), "version '1'"),
    ("extra-field", lambda a: _edit(a, lambda v: v.update(note="x")), "fields must be exactly"),
    ("no-digest", lambda a: _edit(a, lambda v: v.pop("roster_digest")), "fields must be exactly"),
    ("no-heads", lambda a: _edit(a, lambda v: v.update(heads={})), "non-empty object"),
    ("digest", lambda a: _edit(a, lambda v: v.update(roster_digest="AB" * 32)), "roster digest"),
    ("seq-minus-1", lambda a: _edit(a, lambda v: _head(v, "server").update(seq=-1)), "seq"),
    ("seq-bool", lambda a: _edit(a, lambda v: _head(v, "server").update(seq=True)), "seq"),
    ("seq-float", lambda a: _edit(a, lambda v: _head(v, "server").update(seq=1.0)), "seq"),
    ("hash", lambda a: _edit(a, lambda v: _head(v, "server").update(hash="ab")), "hash"),
    (
        "signature",
        lambda a: _edit(a, lambda v: _head(v, "server").update(signature="xyz")),
        "signature",
    ),
    ("head-field", lambda a: _edit(a, lambda v: _head(v, "server").pop("signature")), "exactly"),
    (
        "actor",
        lambda a: _edit(a, lambda v: v.update(heads={"bad actor": _head(v, "server")})),
        "is not a party id",
    ),
]


@pytest.mark.parametrize(("name", "make", "why"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_a_malformed_anchor_is_refused_in_one_line(
    anchor: Anchor, tmp_path: Path, name: str, make: Callable[[Anchor], bytes], why: str
) -> None:
    path = tmp_path / f"{name}.anchor"
    path.write_bytes(make(anchor))
    with pytest.raises(AnchorFormatError) as info:
        load_anchor(path)
    message = str(info.value)
    assert isinstance(info.value, ConfigError)
    assert "\n" not in message
    assert message.startswith(f"anchor {path} is not a securefed anchor: ")
    assert why in message
    assert len(message) < 300 + len(str(path))


def test_an_oversized_anchor_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    path = tmp_path / "big.anchor"
    path.write_bytes(b"{" + b" " * (4 * MAX_ANCHOR_BYTES) + b"}\n")
    with pytest.raises(AnchorFormatError, match=f"larger than {MAX_ANCHOR_BYTES} bytes"):
        load_anchor(path)


def test_a_missing_or_unreadable_anchor_is_refused(tmp_path: Path) -> None:
    with pytest.raises(AnchorFormatError, match="is not a file"):
        load_anchor(tmp_path / "nowhere.anchor")
    with pytest.raises(AnchorFormatError, match="is not a file"):
        load_anchor(tmp_path)


def _swap_signatures(value: dict[str, object]) -> None:
    a, b = _head(value, "bank-0"), _head(value, "bank-1")
    a["signature"], b["signature"] = b["signature"], a["signature"]


def test_an_altered_anchor_is_refused_before_verifying(run: Run, anchor: Anchor) -> None:
    def check(change: Callable[[dict[str, object]], object]) -> str:
        altered = Anchor.from_bytes(_edit(anchor, change))
        with pytest.raises(AnchorFormatError) as info:
            verify_anchored(run.run_dir, altered, source="anchor keep/run.anchor")
        message = str(info.value)
        assert message.startswith("anchor keep/run.anchor does not match the roster it names")
        assert "\n" not in message
        return message

    assert "the head of 'bank-0' is not signed by 'bank-0'" in check(
        lambda v: _head(v, "bank-0").update(hash="ab" * 32)
    )
    assert "not signed by 'bank-0'" in check(_swap_signatures)

    def drop_server(value: dict[str, object]) -> None:
        heads = value["heads"]
        assert isinstance(heads, dict)
        del heads["server"]

    assert "roster parties absent ['server']" in check(drop_server)

    def add_mallory(value: dict[str, object]) -> None:
        heads = value["heads"]
        assert isinstance(heads, dict)
        heads["mallory"] = dict(_head(value, "server"))

    assert "parties not in the roster ['mallory']" in check(add_mallory)
    # a seq moved: the signature covers the hash only, so the anchor still verifies, and the
    # ledger does not end where the altered anchor says
    moved = Anchor.from_bytes(_edit(anchor, lambda v: _head(v, "bank-2").update(seq=3)))
    problems = check_anchor(moved, run.run_dir)
    assert [(p.file, p.kind) for p in problems] == [(_file("bank-2"), ProblemKind.EDITED)]


def test_anchor_values_are_validated(anchor: Anchor) -> None:
    head = anchor.heads[0]
    with pytest.raises(ConfigError, match="not an entry"):
        AnchoredHead(Head("bank-0", -1, "0" * 64), head.signature)
    with pytest.raises(ConfigError, match="lowercase hex"):
        AnchoredHead(head.head, "AB")
    with pytest.raises(ConfigError, match="at least one head"):
        Anchor(anchor.roster_digest, ())
    with pytest.raises(ConfigError, match="one head per party"):
        Anchor(anchor.roster_digest, (head, head))
    with pytest.raises(ConfigError, match="roster digest"):
        Anchor("00", anchor.heads)
    assert Anchor(anchor.roster_digest, tuple(reversed(anchor.heads))) == anchor  # sorted
