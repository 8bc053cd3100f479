"""Hazard entries grouped for the report: one group per distinct text, with a count and the
parties that recorded it, each group given a severity.

A severity is a reading aid, assigned from the fixed hazard texts the runtime writes
(:data:`RULES`, first match wins, case-insensitive): HIGH where a guarantee does not hold (DP or
secure aggregation off, unencrypted keys, a seed that makes the noise predictable, a budget
reset, a run that could not go on), MEDIUM where the guarantee holds but is weakened or its
evidence is narrower (Opacus secure_mode off, composition over baselines, parties left out),
LOW for notes about the setting (a simulation, a comparison run). A text no rule knows is
MEDIUM: an unknown hazard is never ranked as harmless. Texts that differ only in their numbers
(e.g. each party's simulation seed) form one group, shown with its first text. Grouping never
drops an entry: the counts add up to the number of hazard entries.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from securefed.audit.composition import natural_key
from securefed.audit.entry import LedgerEntry
from securefed.audit.events import EventType
from securefed.audit.rundata import RunData

__all__ = ["RULES", "HazardGroup", "Severity", "group_hazards", "severity_of"]


class Severity(Enum):
    """How much a hazard weakens the run's guarantees (see the module docstring)."""

    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


RULES: tuple[tuple[str, Severity], ...] = (
    ("simulation: identity keys were generated", Severity.MEDIUM),
    ("differential privacy is off", Severity.HIGH),
    ("secure aggregation is off", Severity.HIGH),
    ("unencrypted", Severity.HIGH),
    ("not private", Severity.HIGH),
    ("budget of these records was reset", Severity.HIGH),
    ("cannot go on", Severity.HIGH),
    ("no party got an aggregate", Severity.HIGH),
    ("secure_mode is off", Severity.MEDIUM),
    ("bounded only by composition", Severity.MEDIUM),
    ("left out", Severity.MEDIUM),
    ("aborted", Severity.MEDIUM),
    ("run resumed", Severity.MEDIUM),
    ("simulation:", Severity.LOW),
    ("comparison run (", Severity.LOW),
    ("ghost clipping is unavailable", Severity.LOW),
)
_DIGITS = re.compile(r"\d+")
_ORDER = {Severity.HIGH: 0, Severity.MEDIUM: 1, Severity.LOW: 2}


def severity_of(text: str) -> Severity:
    """The severity of a hazard text: the first rule of :data:`RULES` it contains, else
    MEDIUM."""
    lowered = text.lower()
    return next((severity for needle, severity in RULES if needle in lowered), Severity.MEDIUM)


@dataclass(frozen=True, slots=True)
class HazardGroup:
    """Every hazard entry with one text: how many, by which parties, the first entry (for its
    seq and time), and the entries verification disputes. ``varies`` is True when the texts
    differ in their numbers (``text`` is the first one)."""

    severity: Severity
    text: str
    entries: tuple[LedgerEntry, ...]
    disputed: tuple[str, ...]
    varies: bool = False

    @property
    def count(self) -> int:
        """The number of entries with this text."""
        return len(self.entries)

    @property
    def parties(self) -> tuple[str, ...]:
        """The parties that recorded it, each once, in natural order (bank-2 before bank-10)."""
        return tuple(sorted({e.actor for e in self.entries}, key=natural_key))


def group_hazards(data: RunData) -> tuple[HazardGroup, ...]:
    """The hazard entries of ``data`` grouped by text, highest severity first, then by count
    (largest first) and text."""
    by_text: dict[str, list[LedgerEntry]] = {}
    for entry in data.events(EventType.HAZARD):
        text = str(entry.payload.get("text", ""))
        by_text.setdefault(_DIGITS.sub("#", text), []).append(entry)
    groups = []
    for entries in by_text.values():
        texts = {str(e.payload.get("text", "")) for e in entries}
        text = str(entries[0].payload.get("text", ""))
        groups.append(
            HazardGroup(
                severity=severity_of(text),
                text=text,
                entries=tuple(entries),
                disputed=tuple(d for e in entries if (d := data.disputed(e)) is not None),
                varies=len(texts) > 1,
            )
        )
    return tuple(sorted(groups, key=lambda g: (_ORDER[g.severity], -g.count, g.text)))
