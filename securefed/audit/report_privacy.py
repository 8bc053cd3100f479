"""The report's privacy figures: the composed ε per institution against its budget (this run
and every baseline on the same records), ε per round (plot and table) and the DP parameters
per institution.

Every figure comes from signed ledger entries (``budget.configured``, ``round.spend``) unless
its table says ``metrics.json (unsigned)``. A value read from an entry that verification
disputes is flagged in place. Rounds are numbers and sorted as numbers.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence

from securefed.audit.composition import MAIN, Composed, compose, natural_key
from securefed.audit.document import Block, Cell, Flagged, Para, Plot, Section, Table
from securefed.audit.entry import LedgerEntry
from securefed.audit.events import EventType
from securefed.audit.plots import MAX_LINES, Series, epsilon_plot
from securefed.audit.report_format import MISSING, NOT_RECORDED, cell, fmt, number, records
from securefed.audit.rundata import RunData

__all__ = [
    "composed_section",
    "dp_parameters_section",
    "epsilon_section",
    "spend_entries",
]

_SIGMA = "\N{GREEK SMALL LETTER SIGMA}"


def spend_entries(data: RunData) -> dict[str, dict[int, LedgerEntry]]:
    """The signed ``round.spend`` entries by party (natural order) and round (the last entry
    of a round wins)."""
    found: dict[str, dict[int, LedgerEntry]] = {}
    for entry in data.events(EventType.ROUND_SPEND):
        r, eps = entry.payload.get("round"), number(entry.payload.get("epsilon"))
        if isinstance(r, int) and not isinstance(r, bool) and eps is not None:
            found.setdefault(entry.actor, {})[r] = entry
    return {party: found[party] for party in sorted(found, key=natural_key)}


def _series(spends: Mapping[str, Mapping[int, LedgerEntry]]) -> list[Series]:
    return [
        Series(
            party,
            tuple(
                (float(r), float(number(e.payload["epsilon"]) or 0.0))
                for r, e in sorted(rounds.items())
            ),
        )
        for party, rounds in spends.items()
    ]


def _budget(data: RunData) -> float | None:
    """The budget for the plot's line: the one target ε all institutions share, else the
    smallest (the line then marks the tightest budget, and the caption says so)."""
    targets = {
        t
        for e in data.events(EventType.BUDGET_CONFIGURED)
        if (t := number(e.payload.get("target_epsilon"))) is not None
    }
    return min(targets) if targets else None


def composed_section(data: RunData) -> Section:
    """The composed ε per institution over this run and every baseline on its records."""
    composed = compose(data)
    runs = [MAIN, *sorted(data.baselines)]
    headers = (
        "institution",
        *(f"ε {run}" if run == MAIN else f"ε baseline {run}" for run in runs),
        "composed ε (upper bound)",
        "composed δ",
        "budget ε",
        "held",
    )
    rows = tuple(_composed_row(data, c, runs) for c in composed)
    blocks: list[Block] = [
        Para(
            "Each institution's records were trained by this run and by every baseline "
            "listed (simulation comparison methods: baselines/<mode>/, each under its own "
            "roster). Their privacy losses add up. Composed ε = the largest prior_epsilon "
            "(what other runs had spent) + the sum of what each participation added (its last "
            "signed ε minus its prior_epsilon): basic composition, an upper bound; the "
            "accountant composing the histories gives less. Budget: this run's target ε."
        ),
        Table(headers, rows, empty="No budget.configured or round.spend entries.", id="composed"),
    ]
    if not data.baselines:
        blocks.append(Para("No baseline ledgers (baselines/<mode>/ledgers/) in this run."))
    local = [run for run in runs[1:] if _unreleased(data.baselines[run])]
    if local:
        blocks.append(
            Para(
                f"The {', '.join(local)} baseline released no update (no update.released in "
                "its ledgers): its models stayed inside each institution. It is counted "
                "anyway: its trained models exist and could be released."
            )
        )
    different = [c.party for c in composed if not c.same_records]
    if different:
        text = (
            "A baseline trained other records than this run for "
            f"{', '.join(different)} (records_sha256 differs): not composed."
        )
        blocks.append(Para(text, strong=True))
    over = [c.party for c in composed if c.held is False]
    if over:
        blocks.append(
            Para(
                f"{len(over)} of {len(composed)} institutions exceed their budget once the "
                "baselines are counted. A real federation trains one method.",
                strong=True,
            )
        )
    return Section("composed-epsilon", "Composed ε per institution", tuple(blocks))


def _unreleased(run: RunData) -> bool:
    return bool(run.events(EventType.ROUND_SPEND)) and not run.events(EventType.UPDATE_RELEASED)


def _composed_row(data: RunData, composed: Composed, runs: Sequence[str]) -> tuple[Cell, ...]:
    by_run = {p.run: p for p in composed.participations}
    cells: list[Cell] = [composed.party]
    for run in runs:
        p = by_run.get(run)
        if p is None:
            cells.append(NOT_RECORDED)
        elif p.disputed is not None:
            cells.append(Flagged(fmt(p.final), f"TAMPERED: {p.disputed}"))
        else:
            cells.append(fmt(p.final))
    disputed = [p.disputed for p in composed.participations if p.disputed is not None]
    total = fmt(composed.composed)
    cells.append(Flagged(total, f"TAMPERED: {disputed[0]}") if disputed else total)
    cells += [fmt(composed.composed_delta), fmt(composed.budget)]
    held = {True: "yes", False: "NO: over budget", None: NOT_RECORDED}[composed.held]
    cells.append(held)
    return tuple(cells)


def epsilon_section(data: RunData) -> Section:
    """ε per round: a plot (lines, or a band for many institutions) with the budget line, and
    a table (per institution when few, a per-round summary when many)."""
    spends = spend_entries(data)
    series = _series(spends)
    budget = _budget(data)
    many = len(series) > MAX_LINES
    caption = (
        "Cumulative ε after each round (round.spend, signed), in round order; dashed: the "
        + ("budget" if budget is not None else "budget (not recorded: no line)")
        + (
            f". {len(series)} institutions: the band spans the least to the greatest ε of "
            "each round, the line is the median."
            if many
            else ", one line per institution."
        )
    )
    blocks: list[Block] = [
        Plot(
            epsilon_plot(
                series,
                budget=budget,
                title="Cumulative ε per round",
                element_id="epsilon-plot",
            ),
            caption,
        ),
        _summary_table(spends, budget) if many else _wide_table(data, spends),
    ]
    clients = records(data.metrics, "clients")
    if clients:
        blocks.append(Para("Final privacy per institution (metrics.json, unsigned):"))
        blocks.append(
            Table(
                ("institution", "ε", "δ", "test accuracy"),
                tuple(
                    (
                        fmt(c.get("id", MISSING)),
                        fmt(c.get("epsilon", MISSING)),
                        fmt(c.get("delta", MISSING)),
                        fmt(c.get("test_accuracy", MISSING)),
                    )
                    for c in clients
                ),
            )
        )
        blocks.append(_epsilon_agreement(series, clients))
    return Section("epsilon", "ε per institution per round", tuple(blocks))


def _wide_table(data: RunData, spends: Mapping[str, Mapping[int, LedgerEntry]]) -> Table:
    rounds = sorted({r for by_round in spends.values() for r in by_round})
    rows = tuple(
        (
            str(r),
            *(
                cell(data, e, e.payload.get("epsilon")) if (e := spends[p].get(r)) else NOT_RECORDED
                for p in spends
            ),
        )
        for r in rounds
    )
    return Table(("round", *spends), rows, empty="No round.spend entries.", id="epsilon-table")


def _summary_table(spends: Mapping[str, Mapping[int, LedgerEntry]], budget: float | None) -> Table:
    rounds = sorted({r for by_round in spends.values() for r in by_round})
    rows = []
    for r in rounds:
        values = [
            float(number(by_round[r].payload.get("epsilon")) or 0.0)
            for by_round in spends.values()
            if r in by_round
        ]
        over = sum(1 for v in values if budget is not None and v > budget + 1e-9)
        rows.append(
            (
                str(r),
                str(len(values)),
                fmt(min(values)),
                fmt(statistics.median(values)),
                fmt(max(values)),
                str(over) if budget is not None else NOT_RECORDED,
            )
        )
    return Table(
        ("round", "institutions", "least ε", "median ε", "greatest ε", "over budget"),
        tuple(rows),
        empty="No round.spend entries.",
        id="epsilon-table",
    )


def _epsilon_agreement(series: Sequence[Series], clients: Sequence[Mapping[str, object]]) -> Para:
    """Whether metrics.json's final ε of each institution equals its last signed round.spend
    (to 1e-9 relative): an unsigned file that understates ε must not go unnoticed."""
    signed = {s.name: max(s.points)[1] for s in series if s.points}
    differ = []
    for client in clients:
        party, claimed = client.get("id"), number(client.get("epsilon"))
        if not isinstance(party, str) or party not in signed or claimed is None:
            continue
        if not math.isclose(claimed, signed[party], rel_tol=1e-9, abs_tol=1e-12):
            differ.append(f"{party}: metrics.json {fmt(claimed)}, ledger {fmt(signed[party])}")
    if differ:
        text = (
            "metrics.json disagrees with the signed ledgers on the final ε of "
            + "; ".join(differ)
            + ". The signed round.spend entries are the record; treat metrics.json as suspect."
        )
        return Para(text, strong=True)
    return Para(
        "Every final ε in metrics.json that has a signed round.spend equals the last one "
        "(institutions without either are not compared)."
    )


def dp_parameters_section(data: RunData) -> Section:
    """Per institution: target ε, δ, accountant, sigma, C, q, steps (signed), then what metrics.json
    (unsigned) says, run-wide values and per-institution values in separate tables."""
    blocks: list[Block] = [_dp_ledger_table(data), *_dp_metrics(data)]
    blocks.append(
        Para(
            f"{_SIGMA}: noise multiplier; C: per-example clipping norm; q: sampling rate; "
            "steps: DP-SGD steps over all rounds. δ is the probability allowance of the "
            "(ε, δ) guarantee. A value that changed during the run is shown as 'a → b'."
        )
    )
    return Section("dp-parameters", "Differential-privacy parameters", tuple(blocks))


def _dp_ledger_table(data: RunData) -> Table:
    """One row per institution from its signed budget.configured and round.spend entries."""
    budgets = {e.actor: e for e in data.events(EventType.BUDGET_CONFIGURED)}
    spends: dict[str, list[LedgerEntry]] = {}
    for entry in data.events(EventType.ROUND_SPEND):
        spends.setdefault(entry.actor, []).append(entry)
    rows = tuple(
        _dp_row(data, actor, budgets.get(actor), spends.get(actor, []))
        for actor in sorted(set(budgets) | set(spends), key=natural_key)
    )
    headers = ("institution", "target ε", "δ", "accountant", "version", _SIGMA, "C", "q", "steps")
    return Table(headers, rows, empty="No budget.configured or round.spend entries.", id="dp-table")


def _dp_row(
    data: RunData, actor: str, budget: LedgerEntry | None, spends: Sequence[LedgerEntry]
) -> tuple[Cell, ...]:
    entries = [e for e in (budget, *spends) if e is not None]
    disputed = next((d for e in entries if (d := data.disputed(e)) is not None), None)

    def flag(text: str) -> Cell:
        return text if disputed is None else Flagged(text, f"TAMPERED: {disputed}")

    def values(key: str) -> Cell:
        """Every distinct value of ``key`` in the budget and then the spends, in order."""
        seen: list[object] = []
        for entry in entries:
            value = entry.payload.get(key, MISSING)
            if value is not MISSING and value not in seen:
                seen.append(value)
        return flag(" → ".join(fmt(v) for v in seen) if seen else NOT_RECORDED)

    payload: Mapping[str, object] = budget.payload if budget is not None else {}
    steps = [e.payload.get("steps") for e in spends]
    total = sum(s for s in steps if isinstance(s, int)) if steps else MISSING
    return (
        actor,
        flag(fmt(payload.get("target_epsilon", MISSING))),
        values("delta"),
        values("accountant"),
        values("accountant_version"),
        values("noise_multiplier"),
        flag(fmt(payload.get("max_grad_norm", MISSING))),
        values("sample_rate"),
        flag(fmt(total)),
    )


_RUN_WIDE = ("target_epsilon", "delta", "accountant", "accountant_version", "max_grad_norm")
_PER_INSTITUTION = ("noise_multiplier", "sample_rate")


def _dp_metrics(data: RunData) -> list[Block]:
    """The DP configuration as metrics.json (unsigned) states it: run-wide values in one table;
    sigma and q, which differ per institution, only in the per-institution table."""
    dp = (data.metrics or {}).get("dp", MISSING)
    if dp is None:
        return [Para("metrics.json records that DP was off in this run.", strong=True)]
    if not isinstance(dp, Mapping):
        return [Para(f"DP configuration in metrics.json: {NOT_RECORDED}.")]
    run_wide = [(k, dp.get(k, MISSING)) for k in _RUN_WIDE]
    # a per-institution key stated once for the run (not as a mapping) is run-wide too
    run_wide += [(k, dp[k]) for k in _PER_INSTITUTION if k in dp and not isinstance(dp[k], Mapping)]
    blocks: list[Block] = [
        Para("Configured for the whole run in metrics.json (unsigned):"),
        Table(("parameter", "value"), tuple((k, fmt(v)) for k, v in run_wide)),
    ]
    by_client = dp.get("by_client")
    if isinstance(by_client, Mapping) and by_client:
        columns = ("noise_multiplier", "sample_rate", "steps_per_round")
        rows = tuple(
            (str(party), *(fmt(by_client[party].get(c, MISSING)) for c in columns))
            for party in sorted(by_client, key=lambda p: natural_key(str(p)))
            if isinstance(by_client[party], Mapping)
        )
        blocks.append(Para("Configured per institution in metrics.json (unsigned):"))
        blocks.append(Table(("institution", _SIGMA, "q", "steps per round"), rows))
    return blocks
