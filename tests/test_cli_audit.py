"""`securefed audit verify` and `securefed audit report`: output, exit codes, tampering, a wrong
roster, ``--json``, the report's default path.

The run directories are real: a roster and one signed ledger per party, written with the audit
API by :func:`tests.audit.build_run` (three clients, four rounds, a final checkpoint).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from securefed.audit import SECTION_IDS, Hazard, Ledger, verify_run
from securefed.audit.canonical import encode_canonical
from securefed.cli import main
from securefed.crypto import get_suite
from securefed.secagg.roster import save_roster
from securefed.testing import make_federation
from tests.audit import Run, build_run

Capture = pytest.CaptureFixture[str]


@pytest.fixture
def run(tmp_path: Path) -> Run:
    return build_run(tmp_path)


def _verify(capsys: Capture, *argv: str) -> tuple[int, list[str], str]:
    status = main(["audit", "verify", *argv])
    out, err = capsys.readouterr()
    return status, out.splitlines(), err


# --- tampering, each through the command line ------------------------------------------------


def _edit_payload(run: Run) -> None:
    lines = run.lines("bank-1")
    entry = json.loads(lines[4])
    assert entry["event"] == "round.spend"
    entry["payload"]["epsilon"] = 0.01
    lines[4] = encode_canonical(entry) + b"\n"
    run.write_lines("bank-1", lines)


def _edit_hash(run: Run) -> None:
    lines = run.lines("server")
    entry = json.loads(lines[2])
    entry["hash"] = "ab" * 32
    lines[2] = encode_canonical(entry) + b"\n"
    run.write_lines("server", lines)


def _swap(run: Run) -> None:
    lines = run.lines("bank-2")
    lines[3], lines[4] = lines[4], lines[3]
    run.write_lines("bank-2", lines)


def _delete_middle(run: Run) -> None:
    lines = run.lines("server")
    del lines[3]
    run.write_lines("server", lines)


def _truncate_tail(run: Run) -> None:
    run.write_lines("bank-0", run.lines("bank-0")[:-2])


def _another_actors_key(run: Run) -> None:
    run.path("bank-0").unlink()
    with Ledger.open(run.path("bank-0"), "bank-0", run.keys["bank-1"]) as ledger:
        ledger.record(Hazard(text="signed with bank-1's key"))


def _unknown_actor(run: Run) -> None:
    mallory = get_suite("default").generate_signing_key()
    with Ledger.open(run.run_dir / "ledgers" / "mallory.jsonl", "mallory", mallory) as ledger:
        ledger.record(Hazard(text="not in the roster"))


def _malformed_line(run: Run) -> None:
    lines = run.lines("bank-2")
    lines[2] = b"this is not an entry\n"
    run.write_lines("bank-2", lines)


TAMPERING: list[tuple[Callable[[Run], None], str]] = [
    (_edit_payload, "ledgers/bank-1.jsonl line 5 (seq 4): edited: "),
    (_edit_hash, "ledgers/server.jsonl line 3 (seq 2): edited: "),
    (_swap, "ledgers/bank-2.jsonl line 4 (seq 4): reordered: "),
    (_delete_middle, "ledgers/server.jsonl line 4 (seq 4): deleted: seq 3 missing"),
    (_truncate_tail, "ledgers/bank-0.jsonl line "),
    (_another_actors_key, "ledgers/bank-0.jsonl line 1 (seq 0): bad-signature: "),
    (_unknown_actor, "ledgers/mallory.jsonl: unknown-actor: "),
    (_malformed_line, "ledgers/bank-2.jsonl line 3 (seq 2): malformed: "),
]


@pytest.mark.parametrize(
    ("tamper", "expected"), TAMPERING, ids=lambda t: getattr(t, "__name__", "")
)
def test_tampering_exits_1_naming_the_first_bad_entry(
    run: Run, capsys: Capture, tamper: Callable[[Run], None], expected: str
) -> None:
    tamper(run)
    status, out, err = _verify(capsys, str(run.run_dir))
    assert status == 1
    assert out[0].startswith(f"TAMPERED: {expected}"), out
    assert out[0] == verify_run(run.run_dir).summary()
    assert err == ""


def test_a_truncated_tail_is_named_truncated_with_the_other_parties_record(
    run: Run, capsys: Capture
) -> None:
    _truncate_tail(run)
    status, out, _ = _verify(capsys, str(run.run_dir))
    assert status == 1
    assert re.fullmatch(
        r"TAMPERED: ledgers/bank-0\.jsonl line \d+ \(seq \d+\): truncated: .*'s checkpoint .*",
        out[0],
    ), out[0]


# --- intact runs, single ledgers, rosters ----------------------------------------------------


def test_an_intact_run_exits_0_with_its_verdict_and_the_epsilon_check(
    run: Run, capsys: Capture
) -> None:
    status, out, err = _verify(capsys, str(run.run_dir))
    entries = sum(len(run.lines(actor)) for actor in run.keys)
    assert (status, out[0], err) == (0, f"INTACT: 4 ledgers, {entries} entries verified", "")
    assert out[1:] == [
        "epsilon: 3 parties' ε recomputed from the signed sigma, q and steps with "
        "dp-accounting 0.6.0 PLD: none recorded more than 2% below it, none over budget "
        "(largest: bank-0 recomputed 0.9766, recorded 2, budget 8)"
    ]


def test_verify_json_is_one_object_with_the_recomputed_epsilon_per_party(
    run: Run, capsys: Capture
) -> None:
    status, out, err = _verify(capsys, str(run.run_dir), "--json")
    assert (status, len(out), err) == (0, 1, "")
    result = json.loads(out[0])
    assert (result["status"], result["exit_code"], result["ledgers"]) == ("INTACT", 0, 4)
    assert result["problems"] == []
    assert result["roster_mismatch"] is None
    assert result["epsilon"]["accountant"] == "dp-accounting 0.6.0 PLD"
    assert result["epsilon"]["tolerance"] == 0.02
    parties = {p["party"]: p for p in result["epsilon"]["parties"]}
    assert sorted(parties) == ["bank-0", "bank-1", "bank-2"]
    bank0 = parties["bank-0"]
    assert bank0["recorded"] == 2.0  # the fixture's synthetic claim: above the recomputed value
    assert bank0["recomputed"] == pytest.approx(0.9761, abs=2e-3)  # sigma 1.1, q 0.01, 400 steps
    assert (bank0["steps"], bank0["history"]) == (400, [[1.1, 0.01, 400]])
    assert (bank0["verdict"], bank0["understated"], bank0["over_budget"]) == (
        "consistent",
        False,
        False,
    )
    assert parties["bank-2"]["steps"] == 300  # it dropped out of round 2
    assert set(result["heads"]) == {"bank-0", "bank-1", "bank-2", "server"}


def test_a_copied_run_directory_verifies_by_a_relative_path(
    run: Run, tmp_path: Path, capsys: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(run.run_dir, tmp_path / "archive" / "copy")
    monkeypatch.chdir(tmp_path / "archive")
    status, out, _ = _verify(capsys, "copy")
    assert status == 0
    assert out[0].startswith("INTACT: 4 ledgers")


def test_one_ledger_file_says_what_it_cannot_show(run: Run, capsys: Capture) -> None:
    status, out, _ = _verify(capsys, str(run.path("server")))
    assert status == 0
    assert out[0] == f"INTACT: 1 ledger, {len(run.lines('server'))} entries verified"
    assert len(out) == 2
    assert out[1].startswith("note: ")
    assert "truncation is only detectable up to the last signed checkpoint" in out[1]


def test_one_tampered_ledger_file_exits_1(run: Run, capsys: Capture) -> None:
    _delete_middle(run)
    status, out, _ = _verify(capsys, str(run.path("server")))
    assert status == 1
    assert out[0].startswith("TAMPERED: server.jsonl line 4 (seq 4): deleted: ")


def test_a_ledger_outside_its_run_directory_needs_roster(
    run: Run, tmp_path: Path, capsys: Capture
) -> None:
    loose = tmp_path / "loose" / "bank-1.jsonl"
    loose.parent.mkdir()
    shutil.copy(run.path("bank-1"), loose)
    status, out, err = _verify(capsys, str(loose))
    assert (status, out) == (2, [])
    assert "--roster" in err
    status, out, _ = _verify(capsys, str(loose), "--roster", str(run.run_dir / "roster.toml"))
    assert status == 0
    assert out[0].startswith("INTACT: 1 ledger,")


def test_the_wrong_roster_exits_5_roster_mismatch_not_tampered(
    run: Run, tmp_path: Path, capsys: Capture
) -> None:
    other = tmp_path / "other-roster.toml"
    save_roster(make_federation(3).roster, other)
    status, out, _ = _verify(capsys, str(run.run_dir), "--roster", str(other))
    assert status == 5
    assert len(out) == 1
    assert out[0].startswith("ROSTER_MISMATCH: the roster used (digest ")
    assert "TAMPERED" not in out[0]
    assert "bad-signature" not in out[0]
    status, out, _ = _verify(capsys, str(run.run_dir), "--roster", str(other), "--json")
    result = json.loads(out[0])
    assert (status, result["status"], result["exit_code"]) == (5, "ROSTER_MISMATCH", 5)
    assert "is not the one these ledgers were written under" in result["roster_mismatch"]


# --- incomplete ledgers: exit 3 (issue 19, "Wiped ledgers verify as INTACT") -----------------


def _empty_all(run: Run) -> None:
    for actor in run.keys:
        run.path(actor).write_bytes(b"")


def _cut_all_to_six_lines(run: Run) -> None:
    for actor in run.keys:
        run.write_lines(actor, run.lines(actor)[:6])


def _delete_all(run: Run) -> None:
    for actor in run.keys:
        run.path(actor).unlink()


@pytest.mark.parametrize(
    "wipe", [_empty_all, _cut_all_to_six_lines, _delete_all], ids=lambda t: t.__name__
)
def test_wiped_ledgers_exit_3_incomplete_naming_each_party(
    run: Run, capsys: Capture, wipe: Callable[[Run], None]
) -> None:
    wipe(run)
    status, out, err = _verify(capsys, str(run.run_dir))
    assert status == 3
    assert out[0].startswith("INCOMPLETE: ledgers/"), out
    assert not any("INTACT" in line for line in out)
    named = [line for line in out if line.startswith(("INCOMPLETE: ", "incomplete: "))]
    assert len(named) == 4
    for actor in run.keys:
        assert any(f"'{actor}'" in line for line in named), (actor, out)
    assert err == ""


def test_one_emptied_ledger_checked_alone_exits_3(run: Run, capsys: Capture) -> None:
    run.path("bank-2").write_bytes(b"")
    status, out, _ = _verify(capsys, str(run.path("bank-2")))
    assert status == 3
    assert out[0].startswith(
        "INCOMPLETE: bank-2.jsonl: incomplete: the ledger of 'bank-2' is empty"
    )


def test_the_console_script_exits_3_for_an_incomplete_run(run: Run) -> None:
    _empty_all(run)
    result = subprocess.run(  # noqa: S603 -- fixed argv: this interpreter, a module, a tmp path
        [sys.executable, "-m", "securefed.cli", "audit", "verify", str(run.run_dir)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 3
    assert result.stdout.startswith("INCOMPLETE: ")


def test_a_complete_run_and_each_of_its_ledgers_exit_0(run: Run, capsys: Capture) -> None:
    status, out, _ = _verify(capsys, str(run.run_dir))
    assert (status, out[0][:8]) == (0, "INTACT: ")
    for actor in run.keys:
        status, out, _ = _verify(capsys, str(run.path(actor)))
        assert (status, out[0][:8]) == (0, "INTACT: "), out


# --- usage and I/O errors: exit 2 ------------------------------------------------------------


def test_verify_usage_and_io_errors_exit_2(run: Run, tmp_path: Path, capsys: Capture) -> None:
    cases = [
        [str(tmp_path / "missing")],
        [str(run.run_dir), "--roster", str(tmp_path / "no-roster.toml")],
    ]
    (tmp_path / "not-a-run").mkdir()
    cases.append([str(tmp_path / "not-a-run")])  # no roster.toml
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(run.run_dir / "roster.toml", bare / "roster.toml")
    cases.append([str(bare)])  # no ledgers/
    for argv in cases:
        status, out, err = _verify(capsys, *argv)
        assert (status, out) == (2, []), argv
        assert err.startswith("securefed: configuration error: "), argv
    with pytest.raises(SystemExit) as info:
        main(["audit", "verify"])
    assert info.value.code == 2


def test_the_console_script_exits_with_the_status(run: Run) -> None:
    _truncate_tail(run)
    result = subprocess.run(  # noqa: S603 -- fixed argv: this interpreter, a module, a tmp path
        [sys.executable, "-m", "securefed.cli", "audit", "verify", str(run.run_dir)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert result.stdout.startswith("TAMPERED: ledgers/bank-0.jsonl")


# --- report ----------------------------------------------------------------------------------


def test_report_writes_html_and_markdown_and_prints_both_paths(
    run: Run, tmp_path: Path, capsys: Capture
) -> None:
    out_html = tmp_path / "out" / "report.html"
    out_html.parent.mkdir()
    assert main(["audit", "report", str(run.run_dir), "-o", str(out_html)]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [str(out_html), str(out_html.with_suffix(".md"))]
    assert "ledgers INTACT" in err
    assert "3 institution(s) over 4 round(s)" in err
    page = out_html.read_text(encoding="utf-8")
    markdown = out_html.with_suffix(".md").read_text(encoding="utf-8")
    for section_id in SECTION_IDS:
        assert page.count(f'<section id="{section_id}">') == 1
        assert f'<a id="{section_id}"></a>' in markdown
    assert '<svg id="epsilon-plot"' in page
    assert "<script" not in page
    assert "src=" not in page  # images are inline SVG, nothing is loaded


def test_report_markdown_path_and_roster_options(run: Run, tmp_path: Path, capsys: Capture) -> None:
    roster = tmp_path / "elsewhere.toml"
    shutil.move(run.run_dir / "roster.toml", roster)
    out_html, out_md = tmp_path / "r.html", tmp_path / "twin.md"
    argv = ["audit", "report", str(run.run_dir), "-o", str(out_html), "--markdown", str(out_md)]
    assert main([*argv, "--roster", str(roster)]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [str(out_html), str(out_md)]
    assert "ledgers INTACT" in err
    assert main(argv) == 0  # without any roster the report renders but cannot verify
    assert "ledgers NOT VERIFIED" in capsys.readouterr().err
    assert "could not be verified" in out_html.read_text(encoding="utf-8")


def test_report_of_a_tampered_run_is_written_and_says_so(
    run: Run, tmp_path: Path, capsys: Capture
) -> None:
    _edit_payload(run)
    assert main(["audit", "report", str(run.run_dir), "-o", str(tmp_path / "r.html")]) == 0
    assert "ledgers TAMPERED" in capsys.readouterr().err
    assert "TAMPERED" in (tmp_path / "r.html").read_text(encoding="utf-8")


def test_report_usage_and_io_errors_exit_2(run: Run, tmp_path: Path, capsys: Capture) -> None:
    cases = [
        [str(tmp_path / "missing"), "-o", str(tmp_path / "r.html")],
        [str(run.run_dir), "-o", str(tmp_path / "no" / "dir" / "r.html")],
        [str(run.run_dir), "-o", str(tmp_path / "same.md")],  # the twin would overwrite it
        [str(run.run_dir), "-o", str(tmp_path / "r.html"), "--roster", str(tmp_path / "x.toml")],
    ]
    for argv in cases:
        assert main(["audit", "report", *argv]) == 2, argv
        out, err = capsys.readouterr()
        assert out == ""
        assert err.startswith("securefed: configuration error: "), argv
    assert main(["audit", "report", str(tmp_path / "missing")]) == 2  # no -o, no run directory
    assert "is not a run directory" in capsys.readouterr().err


def test_report_writes_next_to_the_ledgers_by_default(run: Run, capsys: Capture) -> None:
    assert main(["audit", "report", str(run.run_dir)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [str(run.run_dir / "report.html"), str(run.run_dir / "report.md")]
    assert (run.run_dir / "report.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert (run.run_dir / "report.md").is_file()


# --- audit anchor and verify --anchor (issue 19: every ledger cut to a common prefix) ---------


def _anchor(capsys: Capture, run_dir: Path, out: Path, *argv: str) -> tuple[int, list[str], str]:
    status = main(["audit", "anchor", str(run_dir), "--out", str(out), *argv])
    stdout, err = capsys.readouterr()
    return status, stdout.splitlines(), err


def _kept_anchor(run: Run, tmp_path: Path, capsys: Capture) -> Path:
    out = tmp_path / "kept" / "run.anchor"
    out.parent.mkdir()
    status, lines, err = _anchor(capsys, run.run_dir, out)
    assert (status, len(lines), err) == (0, 1, "")
    return out


def test_anchor_writes_the_final_heads_and_verify_anchor_exits_0(
    run: Run, tmp_path: Path, capsys: Capture
) -> None:
    out = tmp_path / "kept" / "run.anchor"
    out.parent.mkdir()
    status, lines, err = _anchor(capsys, run.run_dir, out)
    assert (status, err) == (0, "")
    assert len(lines) == 1
    assert lines[0].startswith(f"anchor: wrote {out} (the final heads of 4 parties of ")
    assert "keep it outside the run directory" in lines[0]
    assert lines[0].endswith(f"securefed audit verify {run.run_dir} --anchor {out}")
    assert out.stat().st_mode & 0o777 == 0o644
    anchored = json.loads(out.read_bytes())
    assert (anchored["format"], anchored["version"]) == ("securefed-audit-anchor", 1)
    assert sorted(anchored["heads"]) == sorted(run.keys)
    for actor in run.keys:
        last = json.loads(run.lines(actor)[-1])
        assert anchored["heads"][actor] == {
            "hash": last["hash"],
            "seq": last["seq"],
            "signature": last["signature"],
        }
    status, out_lines, err = _verify(capsys, str(run.run_dir), "--anchor", str(out))
    assert (status, err) == (0, "")
    assert out_lines[0] == verify_run(run.run_dir).summary()
    assert out_lines[0].startswith("INTACT: 4 ledgers, ")
    assert out_lines[-1].startswith("note: Checked against an anchor of the final heads of 4 ")


def test_anchor_usage_errors_exit_2_and_write_nothing(
    run: Run, tmp_path: Path, capsys: Capture
) -> None:
    existing = tmp_path / "existing.anchor"
    existing.write_bytes(b"keep me\n")
    status, lines, err = _anchor(capsys, run.run_dir, existing)
    assert (status, lines) == (2, [])
    assert (
        err == f"securefed: configuration error: refusing to overwrite existing file {existing}\n"
    )
    assert existing.read_bytes() == b"keep me\n"
    inside = run.run_dir / "run.anchor"
    status, lines, err = _anchor(capsys, run.run_dir, inside)
    assert (status, lines) == (2, [])
    assert "is inside the run directory" in err
    assert not inside.exists()
    for argv in (
        [str(tmp_path / "missing"), "--out", str(tmp_path / "a.anchor")],
        [str(run.run_dir), "--out", str(tmp_path / "no" / "dir" / "a.anchor")],
        [str(run.run_dir), "--out", str(tmp_path / "a.anchor"), "--roster", str(tmp_path / "x")],
    ):
        assert main(["audit", "anchor", *argv]) == 2, argv
        stdout, err = capsys.readouterr()
        assert stdout == ""
        assert err.startswith("securefed: configuration error: "), argv
    assert not (tmp_path / "a.anchor").exists()
    with pytest.raises(SystemExit) as info:
        main(["audit", "anchor", str(run.run_dir)])  # --out is required
    assert info.value.code == 2


def test_anchor_refuses_an_unsealed_or_tampered_run_with_the_verify_status(
    tmp_path: Path, capsys: Capture
) -> None:
    unsealed = build_run(tmp_path / "unsealed", final=False)
    out = tmp_path / "unsealed.anchor"
    status, lines, err = _anchor(capsys, unsealed.run_dir, out)
    assert status == 3
    assert lines[0].startswith("INCOMPLETE: ")
    assert err.startswith(f"securefed: refusing to anchor {unsealed.run_dir}: ")
    assert "only a sealed run that verifies INTACT can be anchored" in err
    assert not out.exists()
    tampered = build_run(tmp_path / "tampered")
    _edit_payload(tampered)
    status, lines, err = _anchor(capsys, tampered.run_dir, out)
    assert status == 1
    assert lines[0].startswith("TAMPERED: ledgers/bank-1.jsonl line 5 (seq 4): edited: ")
    assert "its ledgers are TAMPERED" in err
    assert not out.exists()


def _drop_final_checkpoints(run: Run) -> None:
    for actor in run.keys:
        run.write_lines(actor, run.lines(actor)[:-1])


@pytest.mark.parametrize(
    "cut", [_drop_final_checkpoints, _cut_all_to_six_lines, _empty_all, _delete_all]
)
def test_verify_anchor_catches_every_ledger_cut_to_a_common_prefix(
    run: Run, tmp_path: Path, capsys: Capture, cut: Callable[[Run], None]
) -> None:
    anchor = _kept_anchor(run, tmp_path, capsys)
    final = {actor: len(run.lines(actor)) - 1 for actor in run.keys}
    cut(run)
    status, lines, _ = _verify(capsys, str(run.run_dir))
    assert status == 3  # without the anchor: a run that never finished
    assert lines[0].startswith("INCOMPLETE: ")
    status, lines, err = _verify(capsys, str(run.run_dir), "--anchor", str(anchor))
    assert (status, err) == (1, "")
    assert lines[0].startswith("TAMPERED: ledgers/bank-0.jsonl")
    assert not any(line.startswith("incomplete: ") for line in lines)
    named = [line for line in lines if line.startswith(("TAMPERED: ", "problem: "))]
    assert len(named) == 4
    for actor in run.keys:
        (line,) = [line for line in named if f"ledgers/{actor}.jsonl" in line]
        assert ": truncated: " in line
        assert f"the anchor records its final head at seq {final[actor]} (hash " in line


def test_verify_anchor_names_the_cut_ledger_with_anchored_and_found_heads(
    run: Run, tmp_path: Path, capsys: Capture
) -> None:
    anchor = _kept_anchor(run, tmp_path, capsys)
    _cut_all_to_six_lines(run)
    status, lines, _ = _verify(capsys, str(run.run_dir), "--anchor", str(anchor))
    assert status == 1
    assert re.fullmatch(
        r"TAMPERED: ledgers/bank-0\.jsonl line 7 \(seq 6\): truncated: the ledger of 'bank-0' "
        r"ends at seq 5, but the anchor records its final head at seq 11 \(hash [0-9a-f]{16}"
        r"\.\.\.\): cut",
        lines[0],
    ), lines[0]


def _anchor_edit(path: Path, field: str, new: object, *, actor: str | None = None) -> None:
    """Set ``field`` of the anchor file (of ``actor``'s head if given), in canonical form."""
    value = json.loads(path.read_bytes())
    target = value if actor is None else value["heads"][actor]
    target[field] = new
    path.write_bytes(encode_canonical(value) + b"\n")


def test_verify_with_a_bad_anchor_exits_2_in_one_line(
    run: Run, tmp_path: Path, capsys: Capture
) -> None:
    good = _kept_anchor(run, tmp_path, capsys)
    malformed = tmp_path / "malformed.anchor"
    malformed.write_bytes(b"not an anchor\n")
    oversized = tmp_path / "oversized.anchor"
    oversized.write_bytes(b" " * (2 << 20))
    tampered = tmp_path / "tampered.anchor"
    shutil.copy(good, tampered)
    _anchor_edit(tampered, "hash", "ab" * 32, actor="bank-1")
    other_version = tmp_path / "v2.anchor"
    shutil.copy(good, other_version)
    _anchor_edit(other_version, "version", 2)
    cases = {
        malformed: "is not a securefed anchor: not JSON",
        oversized: "is not a securefed anchor: larger than 1048576 bytes",
        tampered: "does not match the roster it names, so it was altered: the head of 'bank-1'",
        other_version: "is not a securefed anchor: version 2 is not supported",
        tmp_path / "nowhere.anchor": "is not a file",
    }
    for path, why in cases.items():
        status, lines, err = _verify(capsys, str(run.run_dir), "--anchor", str(path))
        assert (status, lines) == (2, []), path
        assert err.startswith(f"securefed: configuration error: anchor {path} "), err
        assert why in err, err
        assert err.count("\n") == 1, err
    status, lines, err = _verify(capsys, str(run.path("bank-0")), "--anchor", str(good))
    assert (status, lines) == (2, [])
    assert "--anchor checks a whole run directory" in err


def test_the_console_script_anchors_and_exits_1_for_a_cut_run(run: Run, tmp_path: Path) -> None:
    anchor = tmp_path / "run.anchor"
    command = [sys.executable, "-m", "securefed.cli", "audit"]
    made = subprocess.run(  # noqa: S603 -- fixed argv: this interpreter, a module, tmp paths
        [*command, "anchor", str(run.run_dir), "--out", str(anchor)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (made.returncode, made.stderr) == (0, "")
    _drop_final_checkpoints(run)
    checked = subprocess.run(  # noqa: S603 -- fixed argv: this interpreter, a module, tmp paths
        [*command, "verify", str(run.run_dir), "--anchor", str(anchor)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 1
    assert checked.stdout.startswith("TAMPERED: ledgers/bank-0.jsonl line 12 (seq 11): truncated")
