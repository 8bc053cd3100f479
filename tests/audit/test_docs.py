"""docs/audit.md shows real behaviour: its event table, its independent check, its example
session and its report excerpt are checked against the code here."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import tomllib
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature

from securefed.audit import Checkpoint, EventRecord, EventType, Head, render_report
from securefed.audit.canonical import encode_canonical
from securefed.cli import main
from tests.audit import Run, build_documented_run, build_run

DOC = Path(__file__).resolve().parents[2] / "docs" / "audit.md"
_HEX = re.compile(r"\b[0-9a-f]{64}\b")


def _doc() -> str:
    return DOC.read_text(encoding="utf-8")


def _after(marker: str) -> str:
    """The text of docs/audit.md after ``<!-- marker -->``."""
    text = _doc()
    assert f"<!-- {marker} -->" in text, marker
    return text.split(f"<!-- {marker} -->", 1)[1]


def _fenced(marker: str) -> str:
    """The first fenced code block after ``<!-- marker -->``."""
    match = re.search(r"```[a-z]*\n(.*?)```", _after(marker), re.DOTALL)
    assert match is not None, marker
    return match.group(1)


def _record_classes() -> dict[EventType, list[str]]:
    fields = {
        cls.event_type: [f.name for f in dataclasses.fields(cls)]
        for cls in EventRecord.__subclasses__()
    }
    checkpoint = Checkpoint(final=True, heads=(Head("x", -1, "0" * 64),))
    fields[EventType.CHECKPOINT] = list(checkpoint.to_payload())
    return fields


def test_the_event_table_matches_events_py() -> None:
    rows = []
    for line in _after("event-table").strip().splitlines():
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    table = {
        row[0].strip("`"): re.findall(r"`([^`]+)`", row[2]) for row in rows[2:]
    }  # header and rule first
    expected = {event.value: keys for event, keys in _record_classes().items()}
    assert set(expected) == {event.value for event in EventType}
    assert table == expected


def _roster_key(run: Run, actor: str) -> str:
    roster = tomllib.loads((run.run_dir / "roster.toml").read_text(encoding="utf-8"))
    parties = [roster["server"], *roster["clients"]]
    return str(next(p["identity_key"] for p in parties if p["id"] == actor))


def test_the_independent_check_accepts_a_run_and_catches_tampering(tmp_path: Path) -> None:
    namespace: dict[str, object] = {}
    exec(_fenced("independent-check"), namespace)  # noqa: S102 -- our own documentation's code
    check_ledger = namespace["check_ledger"]
    assert callable(check_ledger)
    run = build_run(tmp_path)
    for actor in run.keys:
        assert check_ledger(str(run.path(actor)), _roster_key(run, actor)) == len(run.lines(actor))
    lines = run.lines("bank-1")
    entry = json.loads(lines[4])
    entry["payload"]["epsilon"] = 0.01
    run.write_lines("bank-1", [*lines[:4], encode_canonical(entry) + b"\n", *lines[5:]])
    with pytest.raises(ValueError, match="line 5: edited"):
        check_ledger(str(run.path("bank-1")), _roster_key(run, "bank-1"))
    with pytest.raises(InvalidSignature):
        check_ledger(str(run.path("bank-0")), _roster_key(run, "bank-2"))
    swapped = run.lines("bank-2")
    swapped[3], swapped[4] = swapped[4], swapped[3]
    run.write_lines("bank-2", swapped)
    with pytest.raises(ValueError, match="line 4: reordered or deleted"):
        check_ledger(str(run.path("bank-2")), _roster_key(run, "bank-2"))


def _session() -> list[tuple[list[str], list[str]]]:
    commands: list[tuple[list[str], list[str]]] = []
    for line in _fenced("cli-session").splitlines():
        if line.startswith("$ securefed "):
            commands.append((line.removeprefix("$ securefed ").split(), []))
        else:
            commands[-1][1].append(line)
    return commands


def test_the_example_session_is_what_the_cli_prints(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run = build_documented_run(tmp_path)
    tampered = shutil.copytree(run.run_dir, tmp_path / "tampered") / "ledgers" / "bank-1.jsonl"
    lines = tampered.read_bytes().splitlines(keepends=True)
    entry = json.loads(lines[4])
    assert (entry["event"], entry["payload"]["round"]) == ("round.spend", 2)
    entry["payload"]["epsilon"] = 0.01
    lines[4] = encode_canonical(entry) + b"\n"
    tampered.write_bytes(b"".join(lines))
    truncated = shutil.copytree(run.run_dir, tmp_path / "truncated") / "ledgers" / "bank-0.jsonl"
    truncated.write_bytes(b"".join(truncated.read_bytes().splitlines(keepends=True)[:-2]))
    wiped = shutil.copytree(run.run_dir, tmp_path / "wiped") / "ledgers"
    for ledger in wiped.glob("*.jsonl"):
        ledger.write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    statuses = []
    session = _session()
    assert len(session) == 7
    for argv, expected in session:
        statuses.append(main(argv))
        out, err = capsys.readouterr()
        assert (out + err).splitlines() == expected, argv
    stated = ", ".join(map(str, statuses[:-1])) + f" and {statuses[-1]}"
    assert f"The exit statuses were {stated}." in _doc()


def _normalise(line: str) -> str:
    return _HEX.sub("<hex>", line)


def test_the_report_excerpt_is_what_the_report_renders(tmp_path: Path) -> None:
    run = build_documented_run(tmp_path)
    render_report(run.run_dir, out_html=tmp_path / "r.html", out_md=tmp_path / "r.md")
    rendered = [_normalise(line) for line in (tmp_path / "r.md").read_text().splitlines()]
    excerpt = _after("report-excerpt:begin").split("<!-- report-excerpt:end -->", 1)[0]
    quoted = [line.removeprefix(">").removeprefix(" ") for line in excerpt.strip().splitlines()]
    assert len(quoted) > 50
    position = 0
    for line in map(_normalise, quoted):
        if not line:
            continue
        assert line in rendered[position:], line  # in the same order as the report
        position = rendered.index(line, position) + 1
