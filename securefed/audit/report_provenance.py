"""The report's provenance section: which code ran and rendered, which configuration, which data,
and when.

* the software version each party recorded (``run.configured``, signed) and the version and
  source hash of the securefed package rendering the report (:func:`source_sha256`: SHA-256
  over the sorted relative paths and contents of the installed package's ``.py`` files; it
  identifies the *renderer*: the run records only its version string);
* the configuration digest (signed ``config_sha256``; whether ``config.toml`` and
  ``metrics.json`` match it);
* a data fingerprint per party: ``records_sha256`` of its ``budget.configured`` (signed; the
  SHA-256 of the training records the budget protects). The server holds no records; a client
  without it is shown as not recorded;
* start and end in UTC: the earliest and latest entry time over every ledger, and per party its
  first and last entry. Times are the parties' own clocks (signed, not trusted timestamps).
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import securefed
from securefed.audit.composition import natural_key
from securefed.audit.document import Block, Cell, Para, Section, Table
from securefed.audit.events import EventType
from securefed.audit.report_format import NOT_RECORDED, cell, fmt, last_payload
from securefed.audit.rundata import RunData

__all__ = ["provenance_section", "run_times", "source_sha256"]


@functools.cache
def source_sha256() -> str:
    """SHA-256 over the installed securefed package's ``.py`` files: for each, sorted by its
    POSIX path relative to the package, the path, a NUL, the content's SHA-256 and a newline."""
    root = Path(securefed.__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py"), key=lambda p: p.relative_to(root).as_posix()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).hexdigest().encode() + b"\n")
    return digest.hexdigest()


def run_times(data: RunData) -> tuple[str, str] | None:
    """The earliest and latest entry time over every ledger (ISO 8601, UTC), or None."""
    times = sorted(e.time for entries in data.ledgers.values() for e in entries)
    return (times[0], times[-1]) if times else None


def provenance_section(data: RunData) -> Section:
    """Code, configuration, data fingerprints and times (see the module docstring)."""
    configured = data.events(EventType.RUN_CONFIGURED)
    versions = sorted({str(e.payload.get("software_version")) for e in configured})
    signed = last_payload(configured).get("config_sha256")
    span = run_times(data)
    rows: tuple[tuple[Cell, ...], ...] = (
        ("software version (run.configured, signed)", ", ".join(versions) or NOT_RECORDED),
        ("renderer: securefed version", securefed.__version__),
        ("renderer: source SHA-256 (installed .py files, sorted)", source_sha256()),
        ("configuration SHA-256 (run.configured, signed)", fmt(signed)),
        ("config.toml", _config_match(data, signed)),
        ("metrics.json config_sha256", _metrics_match(data, signed)),
        ("run start (UTC, earliest ledger entry)", span[0] if span else NOT_RECORDED),
        ("run end (UTC, latest ledger entry)", span[1] if span else NOT_RECORDED),
    )
    blocks: list[Block] = [
        Table(("item", "value"), rows, id="provenance-table"),
        Para("Per party (data fingerprint: records_sha256 of its budget.configured, signed):"),
        _per_party(data),
    ]
    if len(versions) > 1:
        blocks.append(Para("The parties recorded different software versions.", strong=True))
    return Section("provenance", "Provenance", tuple(blocks))


def _config_match(data: RunData, signed: object) -> str:
    if data.config_sha256 is None:
        return f"{NOT_RECORDED} (absent or unreadable)"
    if signed is None:
        return f"SHA-256 {data.config_sha256}; no signed digest to compare"
    return "matches the signed digest" if data.config_sha256 == signed else "DOES NOT MATCH"


def _metrics_match(data: RunData, signed: object) -> str:
    value = (data.metrics or {}).get("config_sha256")
    if value is None:
        return NOT_RECORDED
    return "matches the signed digest" if value == signed else f"{value}: DOES NOT MATCH"


def _per_party(data: RunData) -> Table:
    budgets = {e.actor: e for e in data.events(EventType.BUDGET_CONFIGURED)}
    rows = []
    for actor in sorted(data.ledgers, key=natural_key):
        entries = data.ledgers[actor]
        budget = budgets.get(actor)
        fingerprint: Cell = (
            cell(data, budget, budget.payload.get("records_sha256") or None)
            if budget is not None
            else f"{NOT_RECORDED} (no budget.configured: the coordinator, or DP off)"
        )
        rows.append(
            (
                actor,
                fingerprint,
                entries[0].time if entries else NOT_RECORDED,
                entries[-1].time if entries else NOT_RECORDED,
            )
        )
    return Table(
        ("party", "data fingerprint (records SHA-256)", "first entry (UTC)", "last entry (UTC)"),
        tuple(rows),
        empty="No ledgers.",
        id="provenance-parties",
    )
