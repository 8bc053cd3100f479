"""The report's verdict block, first on the page: one line per question an auditor asks first.

* Ledgers: the verification status of this run's ledgers and of each baseline's (INTACT,
  TAMPERED, EQUIVOCATED, INCOMPLETE, or NOT VERIFIED when verification could not run), and of
  each sub-run present (``preprocessing/``, ``preprocessing.interrupted-<k>/``, ``evaluation/``,
  also a baseline's), each verified under the run's roster; an interrupted attempt that is only
  INCOMPLETE is not a failure (it is expected to end before its final checkpoint).
* Budgets held: in this run alone, and composed with every baseline on the same records
  (:mod:`securefed.audit.composition`).
* The canary audit (``canary.json``, unsigned): not run, consistent, or VIOLATION.
* Policy and budget refusals: how many.
* Hazards by severity (:mod:`securefed.audit.hazards`).

Each line is ok (True), a failure (False) or not established (None); nothing missing is
counted as ok.
"""

from __future__ import annotations

from securefed.audit.composition import Composed
from securefed.audit.document import Para, Section, Verdict
from securefed.audit.events import EventType
from securefed.audit.hazards import HazardGroup, Severity
from securefed.audit.report_format import number
from securefed.audit.report_sections import outcome
from securefed.audit.rundata import RunData
from securefed.audit.verify import SubRun, VerifyStatus

__all__ = ["VerdictLine", "verdict_lines", "verdict_section"]

VerdictLine = tuple[str, str, bool | None]


def verdict_lines(
    data: RunData, composed: tuple[Composed, ...], hazards: tuple[HazardGroup, ...]
) -> tuple[VerdictLine, ...]:
    """The verdict's lines (check, result, ok), in display order."""
    return (
        _ledgers(data),
        *(_ledgers(run, f"ledgers of baseline {name}") for name, run in data.baselines.items()),
        *(_subrun(sub) for sub in data.subruns),
        ("run outcome", outcome(data), outcome(data) == "completed"),
        _budgets(composed, alone=True),
        _budgets(composed, alone=False),
        _canary(data),
        _refusals(data),
        _hazards(hazards),
    )


def verdict_section(
    data: RunData, composed: tuple[Composed, ...], hazards: tuple[HazardGroup, ...]
) -> Section:
    """The verdict block (see the module docstring)."""
    lines = verdict_lines(data, composed, hazards)
    failed = [check for check, _, ok in lines if ok is False]
    summary = (
        f"Attention: {', '.join(failed)}." if failed else "No check failed (see each section)."
    )
    return Section(
        "verdict",
        "Verdict",
        (Verdict(lines), Para(summary, strong=bool(failed))),
    )


def _ledgers(data: RunData, label: str = "ledgers (this run)") -> VerdictLine:
    result = data.verification
    if result is None:
        return (label, f"NOT VERIFIED: {data.verification_error}", None)
    text = result.summary()
    return (label, text, result.status is VerifyStatus.INTACT)


def _subrun(sub: SubRun) -> VerdictLine:
    label = f"ledgers of sub-run {sub.directory}/"
    text = sub.result.summary() + sub.remark()
    if sub.status is VerifyStatus.INTACT:
        return (label, text, True)
    expected = sub.interrupted and sub.status is VerifyStatus.INCOMPLETE
    return (label, text, None if expected else False)


def _budgets(composed: tuple[Composed, ...], *, alone: bool) -> VerdictLine:
    label = "budget held (this run)" if alone else "budget held (with every baseline)"
    held = [c.held_this_run if alone else c.held for c in composed]
    known = [h for h in held if h is not None]
    if not known:
        return (label, "not recorded (no budget.configured and round.spend)", None)
    over = [c.party for c, h in zip(composed, held, strict=True) if h is False]
    worst = max((c.composed or 0.0) for c in composed) if not alone else None
    if over:
        text = f"NO: {len(over)} of {len(known)} institutions over budget"
        if worst is not None:
            text += f" (composed ε up to {worst:.4g})"
        return (label, text, False)
    return (label, f"yes: all {len(known)} institutions within budget", True)


def _canary(data: RunData) -> VerdictLine:
    label = "canary audit (canary.json, unsigned)"
    canary = data.canary
    if canary is None:
        return (label, "not run", None)
    low, claim = number(canary.get("epsilon_lower_bound")), number(canary.get("claimed_epsilon"))
    if low is None or claim is None:
        return (label, "incomplete: no lower bound or claimed ε", None)
    if low > claim:
        return (label, f"VIOLATION: lower bound {low:.4g} > claimed ε {claim:.4g}", False)
    return (label, f"consistent: lower bound {low:.4g} ≤ claimed ε {claim:.4g}", True)


def _refusals(data: RunData) -> VerdictLine:
    policy = len(data.events(EventType.POLICY_REFUSAL))
    budget = len(data.events(EventType.BUDGET_REFUSED))
    text = f"{policy} policy refusals, {budget} budget refusals"
    return ("refusals", text, True if policy + budget == 0 else None)


def _hazards(groups: tuple[HazardGroup, ...]) -> VerdictLine:
    counts = {s: sum(g.count for g in groups if g.severity is s) for s in Severity}
    distinct = {s: sum(1 for g in groups if g.severity is s) for s in Severity}
    text = ", ".join(f"{s.value} {counts[s]} ({distinct[s]} distinct)" for s in Severity)
    ok: bool | None = (
        False if counts[Severity.HIGH] else (None if counts[Severity.MEDIUM] else True)
    )
    return ("hazards by severity", text, ok)
