"""The compliance mapping (``securefed/audit/compliance.toml``) and its Markdown rendering.

:func:`load_compliance_mapping` reads the mapping shipped with the package (or a given text) into
frozen dataclasses; :func:`render_compliance_markdown` renders it as the page ``docs/compliance.md``
(``python -m securefed.audit.compliance -o docs/compliance.md``; a test checks the two agree).

The mapping has four parts: the standards it cites (abbreviation and full title), one row per
mechanism (what it protects, the clauses it helps with, the evidence, the limits), the
requirements securefed does not address, and free-standing notes. Every clause must start with
the abbreviation of a listed standard, and every listed standard must be cited.

The mapping says which requirement each mechanism *helps* with, what an auditor can check, and
where it stops. It never says that a deployment is compliant: that depends on the institutions'
legal arrangements, processes and assessments, listed under "not addressed".
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from securefed.errors import ConfigError

__all__ = [
    "COMPLIANCE_FORMAT",
    "ComplianceMapping",
    "Gap",
    "Mechanism",
    "Note",
    "Standard",
    "load_compliance_mapping",
    "main",
    "render_compliance_markdown",
]

COMPLIANCE_FORMAT = "securefed/compliance/v1"
_STANDARD_KEYS = ("abbreviation", "title", "kind")
_MECHANISM_KEYS = ("id", "mechanism", "protects", "clauses", "evidence", "limits")
_GAP_KEYS = ("clauses", "note")
_NOTE_KEYS = ("title", "text")
_TOP_LEVEL = {"format", "standard", "mechanism", "not_addressed", "note"}


@dataclass(frozen=True, slots=True)
class Standard:
    """A law, regulation, standard or guideline that the mapping cites."""

    abbreviation: str
    title: str
    kind: str

    def cites(self, clause: str) -> bool:
        """Whether ``clause`` refers to this standard (its abbreviation, then nothing, a space or
        a comma)."""
        rest = clause.removeprefix(self.abbreviation)
        return rest != clause and (rest == "" or rest[0] in " ,")


@dataclass(frozen=True, slots=True)
class Mechanism:
    """One securefed mechanism and the requirements it helps meet."""

    id: str
    mechanism: str
    protects: str
    clauses: tuple[str, ...]
    evidence: str
    limits: str


@dataclass(frozen=True, slots=True)
class Gap:
    """Requirements that securefed does not address, and why."""

    clauses: tuple[str, ...]
    note: str


@dataclass(frozen=True, slots=True)
class Note:
    """A short section of the page (for example a distinction a table cannot carry)."""

    title: str
    text: str


@dataclass(frozen=True, slots=True)
class ComplianceMapping:
    """The whole mapping: mechanisms, the requirements left to the deployer, the standards cited
    and the notes."""

    mechanisms: tuple[Mechanism, ...]
    not_addressed: tuple[Gap, ...]
    standards: tuple[Standard, ...] = ()
    notes: tuple[Note, ...] = ()

    def standard_of(self, clause: str) -> Standard | None:
        """The standard ``clause`` cites (the longest matching abbreviation), or None."""
        matches = [s for s in self.standards if s.cites(clause)]
        return max(matches, key=lambda s: len(s.abbreviation)) if matches else None

    def by_requirement(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        """Every clause a mechanism cites, with the ids of those mechanisms, ordered by standard
        (as listed) and then by clause number."""
        index: dict[str, list[str]] = {}
        for mechanism in self.mechanisms:
            for clause in mechanism.clauses:
                index.setdefault(clause, []).append(mechanism.id)
        order = {s.abbreviation: position for position, s in enumerate(self.standards)}

        def key(clause: str) -> tuple[int, tuple[tuple[int, str], ...]]:
            standard = self.standard_of(clause)
            position = order[standard.abbreviation] if standard else len(order)
            return position, _natural(clause)

        return tuple((clause, tuple(index[clause])) for clause in sorted(index, key=key))


def load_compliance_mapping(text: str | None = None) -> ComplianceMapping:
    """Parse ``text`` (default: the packaged ``compliance.toml``) and validate it.

    Raises:
        ConfigError: listing every problem (syntax, format, unknown or missing keys, wrong types,
            duplicate ids, empty clause lists).
    """
    if text is None:
        text = resources.files("securefed.audit").joinpath("compliance.toml").read_text("utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"compliance mapping is not valid TOML: {exc}") from None
    problems: list[str] = []
    if data.get("format") != COMPLIANCE_FORMAT:
        problems.append(f"format must be {COMPLIANCE_FORMAT!r}")
    unknown = sorted(set(data) - _TOP_LEVEL)
    if unknown:
        problems.append(f"unknown top-level key(s): {', '.join(unknown)}")
    standards = _tables(data, "standard", _STANDARD_KEYS, problems)
    rows = _tables(data, "mechanism", _MECHANISM_KEYS, problems)
    gaps = _tables(data, "not_addressed", _GAP_KEYS, problems)
    notes = _tables(data, "note", _NOTE_KEYS, problems, required=False)
    ids = [row.get("id") for row in rows]
    if len(set(map(str, ids))) != len(ids):
        problems.append("mechanism ids must be unique")
    mapping = ComplianceMapping(
        mechanisms=tuple(
            Mechanism(
                id=str(row["id"]),
                mechanism=str(row["mechanism"]),
                protects=str(row["protects"]),
                clauses=_strings(row["clauses"]),
                evidence=str(row["evidence"]),
                limits=str(row["limits"]),
            )
            for row in rows
        ),
        not_addressed=tuple(Gap(_strings(g["clauses"]), str(g["note"])) for g in gaps),
        standards=tuple(
            Standard(str(s["abbreviation"]), str(s["title"]), str(s["kind"])) for s in standards
        ),
        notes=tuple(Note(str(n["title"]), str(n["text"])) for n in notes),
    )
    _check_citations(mapping, problems)
    if problems:
        raise ConfigError("invalid compliance mapping: " + "; ".join(problems))
    return mapping


def _check_citations(mapping: ComplianceMapping, problems: list[str]) -> None:
    """Every clause cites a listed standard; every standard is cited; abbreviations are unique."""
    abbreviations = [s.abbreviation for s in mapping.standards]
    if len(set(abbreviations)) != len(abbreviations):
        problems.append("standard abbreviations must be unique")
    clauses = [c for m in mapping.mechanisms for c in m.clauses]
    clauses += [c for gap in mapping.not_addressed for c in gap.clauses]
    unlisted = sorted({c for c in clauses if mapping.standard_of(c) is None})
    if unlisted and mapping.standards:
        problems.append(f"clause(s) citing no listed standard: {', '.join(unlisted)}")
    cited = {standard.abbreviation for c in clauses if (standard := mapping.standard_of(c))}
    uncited = [a for a in abbreviations if a not in cited]
    if uncited:
        problems.append(f"standard(s) listed but never cited: {', '.join(uncited)}")


def _strings(value: object) -> tuple[str, ...]:
    return tuple(item for item in value if isinstance(item, str)) if isinstance(value, list) else ()


def _natural(text: str) -> tuple[tuple[int, str], ...]:
    """Sort key that orders embedded numbers by value (Art. 6 before Art. 13)."""
    parts = re.split(r"(\d+)", text)
    return tuple((int(p), "") if p.isdigit() else (-1, p) for p in parts if p)


def _is_clause_list(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(c, str) and c for c in value)


def _tables(
    data: dict[str, object],
    name: str,
    keys: tuple[str, ...],
    problems: list[str],
    *,
    required: bool = True,
) -> list[dict[str, object]]:
    value = data.get(name, [])
    if not isinstance(value, list) or (required and not value):
        problems.append(f"{name} must be a non-empty array of tables ([[{name}]])")
        return []
    rows: list[dict[str, object]] = []
    for position, row in enumerate(value):
        where = f"{name}[{position}]"
        if not isinstance(row, dict) or set(row) != set(keys):
            problems.append(f"{where} must have exactly the keys {', '.join(keys)}")
            continue
        if "clauses" in keys and not _is_clause_list(row["clauses"]):
            problems.append(f"{where}.clauses must be a non-empty list of strings")
            continue
        if not all(isinstance(row[k], str) and row[k] for k in keys if k != "clauses"):
            problems.append(f"{where}: every field but clauses must be a non-empty string")
            continue
        rows.append(row)
    return rows


_HEADER = """\
# Compliance mapping

*Generated by `python -m securefed.audit.compliance` from `securefed/audit/compliance.toml`;
`tests/audit/test_compliance.py` checks that this file matches. Edit the TOML, not this file.
The audit report's compliance section (`securefed/audit/report.py`) reads the same TOML.*

Which requirement each securefed mechanism **helps** meet, the evidence an auditor can check, and
its limits. No mechanism makes a deployment compliant by itself: that depends on the
institutions' legal arrangements, assessments and processes (see
[Not addressed](#not-addressed-by-securefed)). Clauses are cited as precisely as the project's
reference list supports, and without a clause number where it gives none; check them against the
official texts before relying on them.

How to read the evidence column: a path is code in this repository; `file.py::test_name` is a test
you can run (`.venv/bin/pytest -q` followed by the id); a dotted name such as `round.spend` is an
event in the signed audit ledgers ([audit.md](audit.md#event-types-and-payload-keys)); `#anchor`
is a section of the audit report (`report.html#epsilon`, [audit.md](audit.md#reading-the-report)).

Contents: [standards cited](#standards-cited) (abbreviations written out),
[mechanisms](#mechanisms) (one row each), [by requirement](#by-requirement) (the same mapping
from the clause side), [not addressed](#not-addressed-by-securefed), then notes.
"""


def render_compliance_markdown(mapping: ComplianceMapping | None = None) -> str:
    """``docs/compliance.md``: the standards cited, a table of the mechanisms, the same mapping by
    requirement, the requirements not addressed, and the notes."""
    mapping = mapping or load_compliance_mapping()
    lines = [
        _HEADER,
        "## Standards cited",
        "",
        "| abbreviation | full title | kind |",
        "|---|---|---|",
    ]
    for standard in mapping.standards:
        row = (standard.abbreviation, standard.title, standard.kind)
        lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
    lines += [
        "",
        "## Mechanisms",
        "",
        "| mechanism | what it protects | requirement (clause) | evidence in securefed "
        "| limits / residual risk |",
        "|---|---|---|---|---|",
    ]
    for m in mapping.mechanisms:
        cells = [f"**{m.mechanism}** (`{m.id}`)", m.protects, "; ".join(m.clauses), m.evidence]
        lines.append("| " + " | ".join(_cell(c) for c in [*cells, m.limits]) + " |")
    lines += [
        "",
        "## By requirement",
        "",
        "Each clause cited above, with the mechanisms that help with it (ids as in the first "
        "table). A clause listed here is helped, not met: read each mechanism's limits.",
        "",
        "| requirement (clause) | mechanisms |",
        "|---|---|",
    ]
    for clause, ids in mapping.by_requirement():
        lines.append(f"| {_cell(clause)} | {', '.join(f'`{i}`' for i in ids)} |")
    lines += [
        "",
        "## Not addressed by securefed",
        "",
        "| requirement (clause) | why |",
        "|---|---|",
    ]
    for gap in mapping.not_addressed:
        lines.append(f"| {_cell('; '.join(gap.clauses))} | {_cell(gap.note)} |")
    for note in mapping.notes:
        lines += ["", f"## {note.title}", "", note.text.strip()]
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m securefed.audit.compliance [-o FILE]``: print (or write) the Markdown page."""
    parser = argparse.ArgumentParser(prog="python -m securefed.audit.compliance")
    parser.add_argument("-o", "--output", type=Path, help="write here instead of stdout")
    args = parser.parse_args(argv)
    page = render_compliance_markdown()
    if args.output is None:
        sys.stdout.write(page)
    else:
        args.output.write_text(page, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
