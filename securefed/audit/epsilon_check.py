"""Each party's ε recomputed from its own signed ledger by an independent accountant.

A client's ``round.spend`` entries carry what each release cost -- sigma (``noise_multiplier``), q
(``sample_rate``) and the number of Poisson-sampled Gaussian steps (``steps``; the one release of
a similarity statistic is ``steps`` 1, ``sample_rate`` 1) -- and the cumulative ε the party
claims after it, computed by its own accountant (Opacus PRV or RDP). :func:`check_party`
composes those signed parameters, in ledger order, with Google's ``dp-accounting`` privacy-loss
distribution (PLD) accountant -- another code base and another method than Opacus -- and
compares the result with the ε the party recorded last:

* **understated**: the recorded ε is below the recomputed one by more than :data:`TOLERANCE`
  (2 %): the party claims less privacy loss than its own signed parameters give. The accountants
  differ by less than that on honest histories (Opacus PRV is within about 1 % of PLD, RDP is
  10-15 % above it);
* **over budget**: the recomputed ε exceeds the ``target_epsilon`` of the party's last
  ``budget.configured`` by more than :data:`TOLERANCE`, or the recorded ε itself exceeds it.

What is covered, and what is not:

* The recomputation is a LOWER bound on what the records spent, never an overstatement: it
  composes only what this ledger records. A party's recorded ε may be higher and still honest:
  it also counts earlier participations on the same records (``prior_epsilon`` of its
  ``budget.configured``, whose histories are in those runs' ledgers, not here) and a charge made
  durable just before a crash that its ledger never recorded. So a recorded ε above the
  recomputed one is never flagged.
* Only the last recorded ε is compared (it bounds everything the party released); an
  intermediate round's claim is not recomputed.
* Comparison runs of a simulation (``baselines/<mode>/``, each under its own roster) train the
  same records again: :func:`compose` composes the histories of every training of the same
  records (same party id and ``records_sha256``) with the same accountant. That composed ε is
  reported, not judged: a simulation with baselines exceeds its budget by design, and its ledgers
  carry a hazard saying so.

PLD settings: add-or-remove-one neighbouring relation (as Opacus's Poisson sampling), pessimistic
estimate (an upper bound on the true ε of each history), value discretisation interval
:data:`DISCRETIZATION` (within 0.01 % of the library default 10^-4 on the demo's histories, about
eight times faster). ``dp_accounting`` is imported on first use only.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata

from securefed.audit.entry import LedgerEntry
from securefed.audit.events import EventType

__all__ = [
    "DISCRETIZATION",
    "TOLERANCE",
    "ComposedEpsilon",
    "History",
    "PartyEpsilon",
    "accountant_name",
    "check_party",
    "compose",
    "pld_epsilon",
]

#: Relative difference allowed between the party's accountant and the independent one.
TOLERANCE = 0.02
#: Value discretisation interval of the PLD accountant (pessimistic: an upper bound).
DISCRETIZATION = 1e-3
#: Above this the trainer would have refused: the tolerance it allows over a budget.
_BUDGET_SLACK = 1e-9

#: ``((noise_multiplier, sample_rate, steps), ...)``, consecutive equal (sigma, q) merged.
History = tuple[tuple[float, float, int], ...]

_TRAINING = "dp-sgd"
_STATISTIC = "gaussian-statistic"


def accountant_name() -> str:
    """``dp-accounting <version> PLD``: the independent accountant, as reports name it."""
    try:
        version = metadata.version("dp-accounting")
    except metadata.PackageNotFoundError:  # pragma: no cover -- a runtime dependency
        version = "(version unknown)"
    return f"dp-accounting {version} PLD"


@lru_cache(maxsize=1024)
def pld_epsilon(history: History, delta: float) -> float:
    """ε at ``delta`` of ``history`` by Google's PLD accountant (0.0 for an empty history;
    ``math.inf`` when a sigma is 0). Memoised: parties with the same parameters share the work."""
    if not history:
        return 0.0
    if any(sigma <= 0 for sigma, _, _ in history):
        return math.inf
    from dp_accounting import dp_event  # noqa: PLC0415 -- lazy: scipy, mpmath on first use
    from dp_accounting.pld import pld_privacy_accountant  # noqa: PLC0415

    accountant = pld_privacy_accountant.PLDAccountant(value_discretization_interval=DISCRETIZATION)
    for sigma, q, steps in history:
        gaussian = dp_event.GaussianDpEvent(sigma)
        event = gaussian if q >= 1.0 else dp_event.PoissonSampledDpEvent(q, gaussian)
        accountant.compose(event, steps)
    return float(accountant.get_epsilon(delta))


@dataclass(frozen=True, slots=True)
class PartyEpsilon:
    """One party's recorded ε against the recomputed one.

    ``recorded`` is the ``epsilon`` of its last ``round.spend`` (entry ``seq``, after ``round``);
    ``recomputed`` the PLD ε of all its ``round.spend`` entries at that entry's ``delta`` (None
    when ``reason`` says why it could not be recomputed; ``math.inf`` for sigma = 0). ``budget`` is
    the ``target_epsilon`` and ``prior`` the ``prior_epsilon`` of its last ``budget.configured``
    (None / 0.0 when absent). ``history`` is what was composed, ``steps`` its total steps."""

    party: str
    file: str
    seq: int
    round: int | None
    recorded: float | None
    recomputed: float | None
    delta: float | None
    budget: float | None
    prior: float
    records_sha256: str
    history: History
    reason: str | None = None

    @property
    def steps(self) -> int:
        return sum(steps for _, _, steps in self.history)

    @property
    def understated(self) -> bool:
        """The recorded ε is below the recomputed one by more than :data:`TOLERANCE`."""
        if self.recorded is None or self.recomputed is None:
            return False
        return self.recorded < self.recomputed * (1 - TOLERANCE)

    @property
    def over_budget(self) -> bool:
        """The recomputed ε exceeds the budget by more than :data:`TOLERANCE`, or the recorded
        ε exceeds it at all."""
        if self.budget is None:
            return False
        if self.recorded is not None and self.recorded > self.budget + _BUDGET_SLACK:
            return True
        return self.recomputed is not None and self.recomputed > self.budget * (1 + TOLERANCE)

    @property
    def verdict(self) -> str:
        """``understated``, ``over-budget`` (both: understated), ``unchecked`` or ``consistent``."""
        if self.understated:
            return "understated"
        if self.over_budget:
            return "over-budget"
        if self.reason is not None:
            return "unchecked"
        return "consistent"

    def describe(self) -> str:
        """One line for a person, naming the entry, both values and the parameters."""
        where = f"{self.file} (seq {self.seq})"
        recorded = _number(self.recorded)
        after = f" after round {self.round}" if self.round is not None else ""
        if self.reason is not None and self.recomputed is None:
            return (
                f"{where}: {self.party} recorded ε {recorded}{after}; not recomputed: {self.reason}"
            )
        params = _params(self.history)
        recomputed = _number(self.recomputed)
        text = (
            f"{where}: {self.party} recorded ε {recorded}{after} at δ {_number(self.delta)}; its "
            f"signed {params} give ε {recomputed} ({accountant_name()})"
        )
        if self.understated:
            recorded_, recomputed_ = self.recorded or 0.0, self.recomputed or math.inf
            below = 1 - recorded_ / recomputed_ if math.isfinite(recomputed_) else 1
            text += f": {below:.0%} lower, more than the {TOLERANCE:.0%} allowed"
        if self.over_budget:
            text += f"; its budget is ε {_number(self.budget)}"
        if self.reason is not None:
            text += f" ({self.reason})"
        return text

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready summary (an infinite recomputed ε is the string ``"inf"``)."""
        return {
            "party": self.party,
            "file": self.file,
            "seq": self.seq,
            "round": self.round,
            "recorded": self.recorded,
            "recomputed": _json_number(self.recomputed),
            "delta": self.delta,
            "budget": self.budget,
            "prior_epsilon": self.prior,
            "steps": self.steps,
            "history": [list(item) for item in self.history],
            "understated": self.understated,
            "over_budget": self.over_budget,
            "verdict": self.verdict,
            "reason": self.reason,
        }


def check_party(party: str, file: str, entries: Sequence[LedgerEntry]) -> PartyEpsilon | None:
    """The ε check of ``party``'s intact ledger ``entries`` (None: it records no spend)."""
    spends = [e for e in entries if e.event is EventType.ROUND_SPEND]
    if not spends:
        return None
    budgets = [e for e in entries if e.event is EventType.BUDGET_CONFIGURED]
    budget = budgets[-1].payload if budgets else {}
    last = spends[-1].payload
    history: History = ()
    reason = None
    for entry in spends:
        item, why = _spend(entry)
        if item is None:
            reason = reason or why
            continue
        history = _extend(history, item)
    delta = _float(last.get("delta"))
    if delta is None or not 0 < delta < 1:
        reason = reason or f"the last round.spend has no valid delta ({last.get('delta')!r})"
    recomputed = None if reason is not None or delta is None else pld_epsilon(history, delta)
    round_ = last.get("round")
    return PartyEpsilon(
        party=party,
        file=file,
        seq=spends[-1].seq,
        round=round_ if isinstance(round_, int) and not isinstance(round_, bool) else None,
        recorded=_float(last.get("epsilon")),
        recomputed=recomputed,
        delta=delta,
        budget=_float(budget.get("target_epsilon")),
        prior=_float(budget.get("prior_epsilon")) or 0.0,
        records_sha256=str(budget.get("records_sha256", "")),
        history=history,
        reason=reason if recomputed is None else _noted(history),
    )


def _noted(history: History) -> str | None:
    if any(sigma <= 0 for sigma, _, _ in history):
        return "sigma = 0: no noise, ε is unbounded"
    return None


def _spend(entry: LedgerEntry) -> tuple[tuple[float, float, int] | None, str]:
    payload = entry.payload
    mechanism = payload.get("mechanism", _TRAINING)
    where = f"round.spend at seq {entry.seq}"
    if mechanism not in (_TRAINING, _STATISTIC):
        return None, f"{where} has mechanism {mechanism!r}, which this check cannot recompute"
    sigma = _float(payload.get("noise_multiplier"))
    q = _float(payload.get("sample_rate"))
    steps = payload.get("steps")
    if sigma is None or sigma < 0:
        return None, f"{where} has no valid noise_multiplier"
    if q is None or not 0 < q <= 1:
        return None, f"{where} has no valid sample_rate in (0, 1]"
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        return None, f"{where} has no valid number of steps"
    return (sigma, q, steps), ""


def _extend(history: History, item: tuple[float, float, int]) -> History:
    sigma, q, steps = item
    if history and history[-1][:2] == (sigma, q):
        return (*history[:-1], (sigma, q, history[-1][2] + steps))
    return (*history, item)


@dataclass(frozen=True, slots=True)
class ComposedEpsilon:
    """Every training of one institution's records found in a run directory, composed.

    ``runs`` names them (``this run``, then each baseline's mode); ``epsilon`` is the PLD ε of
    their histories concatenated, at this run's ``delta``; ``budget`` this run's target ε;
    ``prior`` the largest ``prior_epsilon`` any of them started from (earlier runs on the same
    records, whose histories are not in this run directory and not composed here)."""

    party: str
    records_sha256: str
    runs: tuple[str, ...]
    epsilon: float
    delta: float
    budget: float | None
    prior: float

    @property
    def above_budget(self) -> bool:
        return self.budget is not None and self.epsilon > self.budget * (1 + TOLERANCE)

    def to_dict(self) -> dict[str, object]:
        return {
            "party": self.party,
            "records_sha256": self.records_sha256,
            "runs": list(self.runs),
            "epsilon": _json_number(self.epsilon),
            "delta": self.delta,
            "budget": self.budget,
            "prior_epsilon": self.prior,
            "above_budget": self.above_budget,
        }


def compose(trainings: Mapping[str, Iterable[PartyEpsilon]]) -> tuple[ComposedEpsilon, ...]:
    """Compose, per party of the first run in ``trainings`` (``{run name: checks}``, this run
    first), the histories of every run whose check names the same party and the same
    ``records_sha256``. Only parties trained more than once are listed, and only checks that
    were recomputed are composed."""
    runs = {name: {c.party: c for c in checks} for name, checks in trainings.items()}
    if not runs:
        return ()
    main_name, main = next(iter(runs.items()))
    composed = []
    for party, own in main.items():
        if own.recomputed is None or own.delta is None:
            continue
        found = [(main_name, own)]
        for name, checks in runs.items():
            other = checks.get(party)
            if name == main_name or other is None or other.recomputed is None:
                continue
            if other.records_sha256 != own.records_sha256:
                continue
            found.append((name, other))
        if len(found) < 2:
            continue
        history = tuple(item for _, check in found for item in check.history)
        composed.append(
            ComposedEpsilon(
                party=party,
                records_sha256=own.records_sha256,
                runs=tuple(name for name, _ in found),
                epsilon=pld_epsilon(_merged(history), own.delta),
                delta=own.delta,
                budget=own.budget,
                prior=max(check.prior for _, check in found),
            )
        )
    return tuple(composed)


def _merged(history: History) -> History:
    merged: History = ()
    for item in history:
        merged = _extend(merged, item)
    return merged


def _params(history: History) -> str:
    if len(history) == 1:
        sigma, q, steps = history[0]
        return f"sigma {sigma:.6g}, q {q:.6g} and {steps} steps"
    parts = "; ".join(f"sigma {s:.6g}, q {q:.6g}, {n} steps" for s, q, n in history)
    return f"spends ({parts})"


def _float(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _number(value: float | None) -> str:
    if value is None:
        return "not recorded"
    if math.isinf(value):
        return "unbounded"
    return f"{value:.4g}"


def _json_number(value: float | None) -> float | str | None:
    if value is not None and math.isinf(value):
        return "inf"
    return value
