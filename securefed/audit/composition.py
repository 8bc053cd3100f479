"""The composed ε of each institution's records over this run and every baseline trained on them.

A simulation with comparison methods (``baselines = [...]``) trains every institution's records
once per method; each method's ledgers (``baselines/<mode>/ledgers/``, under their own roster)
record a ``budget.configured`` (target, ``prior_epsilon``, ``records_sha256``) and cumulative
``round.spend`` entries of their own. Each participation's own spend is its last signed ε minus
the ``prior_epsilon`` it started from (what other runs had spent on the same records: the
budget follows the records, docs/dp.md). The composed ε is, by basic (sequential) composition,

    composed = max(prior_epsilon) + sum over participations of (final ε - prior_epsilon)

at δ summed the same way. This is an upper bound: the records' accountant, composing the
concatenated histories, gives a smaller ε (``securefed audit verify`` recomputes it). It is
compared with the budget of this run's ``budget.configured`` (its ``target_epsilon``).
Participations are matched by party id; a baseline whose ``records_sha256`` differs from this
run's is listed with ``same_records`` False (its records are other records: not composed).
Nothing here is guessed: a party without a ``round.spend`` has no final ε and is not composed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from securefed.audit.entry import LedgerEntry
from securefed.audit.events import EventType
from securefed.audit.rundata import RunData

__all__ = ["Composed", "Participation", "compose"]

MAIN = "this run"


@dataclass(frozen=True, slots=True)
class Participation:
    """One training of one institution's records: ``run`` is ``this run`` or the baseline's
    mode; ``final`` is the last signed ε (``final_entry`` the entry), ``prior`` the
    ``prior_epsilon`` it started from; ``released`` whether it sent any update
    (``update.released``); ``disputed`` why verification disputes an entry used, else None."""

    run: str
    final: float | None
    final_entry: LedgerEntry | None
    delta: float | None
    prior: float
    target: float | None
    records_sha256: str
    released: bool
    disputed: str | None

    @property
    def own(self) -> float | None:
        """The ε this participation added: final ε minus its prior."""
        return None if self.final is None else max(self.final - self.prior, 0.0)


@dataclass(frozen=True, slots=True)
class Composed:
    """An institution's participations (this run first, then baselines by name) and their
    composition. ``budget`` is this run's target ε; ``composed`` None when no participation on
    the same records has a final ε."""

    party: str
    participations: tuple[Participation, ...]
    budget: float | None
    composed: float | None
    composed_delta: float | None
    same_records: bool

    @property
    def held(self) -> bool | None:
        """Whether the composed ε stays within the budget (None: either is unknown)."""
        if self.composed is None or self.budget is None:
            return None
        return self.composed <= self.budget + 1e-9

    @property
    def held_this_run(self) -> bool | None:
        """Whether this run alone stayed within the budget."""
        main = self.participations[0] if self.participations else None
        if main is None or main.run != MAIN or main.final is None or self.budget is None:
            return None
        return main.final <= self.budget + 1e-9


def compose(data: RunData) -> tuple[Composed, ...]:
    """The composition per institution of ``data`` (every party with a ``budget.configured``
    or ``round.spend`` in this run or a baseline), sorted by party id in natural order."""
    runs: dict[str, RunData] = {MAIN: data, **dict(sorted(data.baselines.items()))}
    found: dict[str, list[Participation]] = {}
    for name, run in runs.items():
        for party, participation in _participations(name, run).items():
            found.setdefault(party, []).append(participation)
    return tuple(_compose(party, found[party]) for party in sorted(found, key=natural_key))


def natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key that orders ``bank-2`` before ``bank-10``."""
    parts: list[tuple[int, int | str]] = []
    for chunk in _chunks(name):
        parts.append((0, int(chunk)) if chunk.isdigit() else (1, chunk))
    return tuple(parts)


def _chunks(name: str) -> list[str]:
    out: list[str] = []
    for char in name:
        if out and out[-1][-1].isdigit() == char.isdigit():
            out[-1] += char
        else:
            out.append(char)
    return out


def _participations(name: str, run: RunData) -> dict[str, Participation]:
    budgets: dict[str, LedgerEntry] = {e.actor: e for e in run.events(EventType.BUDGET_CONFIGURED)}
    spends: dict[str, LedgerEntry] = {}
    for entry in run.events(EventType.ROUND_SPEND):
        spends[entry.actor] = entry  # ordered by round: the last one wins
    released = {e.actor for e in run.events(EventType.UPDATE_RELEASED)}
    out: dict[str, Participation] = {}
    for party in set(budgets) | set(spends):
        budget = budgets.get(party)
        spend = spends.get(party)
        payload: Mapping[str, object] = budget.payload if budget is not None else {}
        disputes = [run.disputed(e) for e in (budget, spend) if e is not None]
        out[party] = Participation(
            run=name,
            final=_float(spend.payload.get("epsilon")) if spend is not None else None,
            final_entry=spend,
            delta=_float((spend.payload if spend is not None else payload).get("delta")),
            prior=_float(payload.get("prior_epsilon")) or 0.0,
            target=_float(payload.get("target_epsilon")),
            records_sha256=str(payload.get("records_sha256", "")),
            released=party in released,
            disputed=next((d for d in disputes if d is not None), None),
        )
    return out


def _compose(party: str, participations: list[Participation]) -> Composed:
    main = next((p for p in participations if p.run == MAIN), None)
    reference = main.records_sha256 if main is not None else ""
    same = [
        p
        for p in participations
        if not reference or not p.records_sha256 or p.records_sha256 == reference
    ]
    counted = [p for p in same if p.own is not None]
    composed = (
        max(p.prior for p in counted) + sum(p.own or 0.0 for p in counted) if counted else None
    )
    deltas = [p.delta for p in counted if p.delta is not None]
    return Composed(
        party=party,
        participations=tuple(participations),
        budget=main.target if main is not None else None,
        composed=composed,
        composed_delta=sum(deltas) if deltas else None,
        same_records=len(same) == len(participations),
    )


def _float(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None
