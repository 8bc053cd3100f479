"""Cell formatting shared by the report's sections: missing values read "not recorded", never a
guess; disputed ledger values are :class:`~securefed.audit.document.Flagged` in place."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from securefed.audit.document import Cell, Flagged
from securefed.audit.entry import LedgerEntry
from securefed.audit.rundata import RunData

__all__ = [
    "MISSING",
    "NOT_RECORDED",
    "cell",
    "fmt",
    "last_payload",
    "number",
    "parties",
    "plain",
    "records",
]

NOT_RECORDED = "not recorded"
MISSING = object()


def fmt(value: object) -> str:
    """A value for a table cell; missing and null values read "not recorded"."""
    if value is MISSING or value is None:
        return NOT_RECORDED
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | tuple):
        return ", ".join(fmt(v) for v in value) or "none"
    if isinstance(value, Mapping):  # e.g. a per-institution value: "bank-0: 0.01, bank-1: 0.02"
        return ", ".join(f"{k}: {fmt(v)}" for k, v in value.items()) or "none"
    return str(value)


def cell(data: RunData, entry: LedgerEntry | None, value: object) -> Cell:
    """``fmt(value)``, flagged ``TAMPERED: <why>`` when verification disputes ``entry``."""
    text = fmt(value)
    if entry is None:
        return text
    why = data.disputed(entry)
    return text if why is None else Flagged(text, f"TAMPERED: {why}")


def number(value: object) -> float | None:
    """``value`` as a float if it is a finite int or float (not a bool), else None."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def parties(data: RunData, value: object) -> str:
    """Roster indices as ``bank-0 (#0), ...``; "none" for an empty list."""
    if value is MISSING:
        return NOT_RECORDED
    if isinstance(value, list):
        return ", ".join(data.party(v) for v in value) or "none"
    return fmt(value)


def records(metrics: Mapping[str, object] | None, key: str) -> list[Mapping[str, object]]:
    """The mappings in the list ``metrics[key]`` (others skipped); [] when absent."""
    value = (metrics or {}).get(key)
    return [item for item in value if isinstance(item, Mapping)] if isinstance(value, list) else []


def last_payload(entries: Sequence[LedgerEntry]) -> Mapping[str, object]:
    """The payload of the last of ``entries``, or {}."""
    return entries[-1].payload if entries else {}


def plain(text: str) -> str:
    """Mapping text without its Markdown code marks (the report escapes everything)."""
    return text.replace("`", "")
