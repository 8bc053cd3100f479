"""The weight policy: a protocol rule on the personalization weights ξ (docs/fedamp.md, issue 21).

In attention mode (``fedamp``, ``heurfedamp``) target ``i`` learns ``Σ_{u∈C_i} ξ_iu·w_u`` and knows
its own model, so the *magnitude* of its off-diagonal weight protects nothing: what protects each
contributor ``u`` is that its model is mixed with enough others. Two kinds of rule:

**The exposure rule** (issue 21; :mod:`securefed.secagg.exposure`). For every party v, the
least distance from ``e_v`` to what a coalition of the server and at most ``colluders`` clients
learns (the released rows of its targets, its own models) must be at least ``min_exposure`` = rho:
the coalition's best linear estimate of ``w_v`` then has relative error >= rho. This is what stops
the weight-shape attack (a row with cap weight on a victim and the rest spread thin, which the
shape rules accept; ``threat_model/attacks/test_exposure.py``). It judges all rows together, so
with ``colluders >= 2`` it also sees two targets whose rows differ in one contributor. Refusals
carry :attr:`PolicyRule.EXPOSURE` and blame the targets whose rows the exposing coalition needs
(:func:`exposure_violations`).

**The shape rules** on each row's off-diagonal part ``x = (ξ_iu)_{u≠i}``, ``S = Σ x``:

* every row sums to 1 (``ROW_SUM_TOLERANCE``) and every entry is finite and in ``[0, 1]``;
* ``N_eff(x) = S² / Σ x² >= k_min``: the weight is spread over at least ``k_min`` *effective*
  contributors (``N_eff`` is scale-free; it equals m for m equal weights);
* ``max x <= cap·S``: no single contributor carries more than the share ``cap`` of it.

They are kept beside the exposure rule, not as a pre-check (they are not implied by it and do
not imply it): with one colluder a row on two contributors has exposure 0.71 and passes the
exposure rule, but N_eff = 2 < k_min, and once one of the two colludes the other is exposed;
``k_min`` and ``cap`` bound that beyond the declared ``colluders``. Their cost is small (1.9 ms
for the whole check at N = 62, against 3.4 ms with the exposure rule at one colluder and 12 ms
at two; ``tests/secagg/test_policy.py::test_the_exposure_check_costs_little_at_62_clients``).

A row whose off-diagonal entries are all exactly zero (``ξ_ii = 1``, "local") passes trivially:
its target receives nothing, so there is nothing to protect. Any positive off-diagonal weight, no
matter how small, is checked in full (the target could divide it back out).

Every contributor checks the broadcast ξ (:func:`check_weights`) and, after dropouts, the weights
its target will actually use: restricted to the surviving contributors ``C_i`` and rescaled by
``(1 - ξ_ii)/Σ_{u∈C_i} ξ_iu``. Every rule is scale-free, so that is the check on ``x`` restricted
to ``C_i`` (for exposure: on the rows restricted to the survivors, the outputs of targets that
get none counting as nothing). A row whose surviving contributors carry no weight at all cannot
be renormalised and is refused too. The server applies :func:`enforce_policy` when it computes
ξ, so an honest server's broadcast never trips the check; a check after dropouts can still trip
when too many of a target's weighted contributors drop (for the exposure rule with one colluder
the server can rule that out exactly: ``enforce_policy(..., dropouts=D)``).

**Feasibility.** For a row with ``m`` possible contributors, ``N_eff <= m`` (equality only for
equal weights) and ``max x >= S/m``; the uniform row meets both rules whenever they can be met at
all. Uniform rows also give every party the largest exposure any ξ can give everyone,
``sqrt(1 - 1/(m + 1 - n_C))``. So a row is satisfiable iff ``m >= k_min``, ``m·cap >= 1`` and
that exposure reaches rho, i.e. iff ``m >=`` :attr:`WeightPolicy.min_contributors`. No relation
between ``cap`` and ``k_min`` is needed: the cap alone implies ``N_eff >= 1/cap``
(``Σ x² <= max x · S <= cap·S²``), so with ``cap <= 1/k_min`` the ``k_min`` rule is implied and
with ``cap > 1/k_min`` it is the binding one. The defaults (``k_min = 3``, ``cap = 0.5``, rho = 0.5,
one colluder) need 3 contributors per target, i.e. ``N >= 4`` clients.

**Comparisons** allow a relative slack of ``RULE_TOLERANCE`` (1e-9) on ``k_min``, ``cap`` and rho
so that rounding in the server's float64 arithmetic never makes an honest row fail; it buys an
adversary nothing measurable.

**Encoding.** :func:`encode_weights` is the one canonical byte form of ξ: what the server
broadcasts and what is bound into the transcript hash. :func:`decode_weights` accepts exactly the
encodings it produces (no ``-0.0``, no NaN payloads, no trailing bytes) and raises
:class:`~securefed.errors.RemoteProtocolError` on anything else.

This module imports only numpy, :mod:`securefed.errors`, :mod:`securefed.secagg.exposure` and the
standard library.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

import numpy as np
import numpy.typing as npt

from securefed.errors import (
    ConfigError,
    RemoteProtocolError,
    WeightPolicyViolation,
)
from securefed.secagg.exposure import (
    attention_releases,
    coalition_distance,
    exposure_report,
    party_index,
    row_exposure,
    uniform_exposure,
)

__all__ = [
    "ENCODING_VERSION",
    "MAX_HISTORY_ROUNDS",
    "MAX_WEIGHT_CLIENTS",
    "ROW_SUM_TOLERANCE",
    "RULE_TOLERANCE",
    "PolicyRule",
    "WeightPolicy",
    "check_weights",
    "decode_weights",
    "effective_contributors",
    "encode_weights",
    "enforce_policy",
    "exposure_violations",
]

FloatArray = npt.NDArray[np.float64]

ROW_SUM_TOLERANCE: Final = 1e-9  # |Σ_j ξ_ij - 1| allowed for every row
MAX_HISTORY_ROUNDS: Final = 16  # the release history's window (and its size) is bounded
RULE_TOLERANCE: Final = 1e-9  # relative slack on k_min and on cap
ENCODING_VERSION: Final = 1
# 256² float64 = 512 KiB: fits the transcript's 1 MiB context limit. Attention mode is for N <= 62.
MAX_WEIGHT_CLIENTS: Final = 256
_HEADER = struct.Struct(">BII")  # version, rows, columns
_MIX_MARGIN = 1e-12  # enforce_policy aims this far (relative) inside k_min
_BISECTION_STEPS = 60  # mixing factors to within 2^-60: far below RULE_TOLERANCE


class PolicyRule(StrEnum):
    """Which rule a row broke (the ``rule`` of each :class:`WeightPolicyViolation` entry)."""

    ENTRY_RANGE = "entry-range"  # an entry is not finite or lies outside [0, 1]
    ROW_SUM = "row-sum"  # the row does not sum to 1
    NO_SURVIVING_WEIGHT = "no-surviving-weight"  # after dropouts no contributor carries weight
    EFFECTIVE_CONTRIBUTORS = "effective-contributors"  # N_eff < k_min
    CONTRIBUTOR_CAP = "contributor-cap"  # one contributor above cap x off-diagonal sum
    EXPOSURE = "exposure"  # with up to n_C colluders the row exposes a party below min_exposure


_RULE_TEXT: Final = {
    PolicyRule.ENTRY_RANGE: "an entry is not a finite number in [0, 1]",
    PolicyRule.ROW_SUM: "the row does not sum to 1",
    PolicyRule.NO_SURVIVING_WEIGHT: "no surviving contributor carries weight",
    PolicyRule.EFFECTIVE_CONTRIBUTORS: "fewer than k_min effective contributors",
    PolicyRule.CONTRIBUTOR_CAP: "one contributor above the cap",
    PolicyRule.EXPOSURE: "exposes a party below min_exposure",
}


def _is_real(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True)
class WeightPolicy:
    """What the personalization weights must satisfy before any contributor sends anything.

    Attributes:
        k_min: the least effective number of contributors ``N_eff = (Σ ξ)² / Σ ξ²`` of a row's
            off-diagonal weights; at least 1 (1 disables the rule).
        cap: the largest share of a row's off-diagonal weight one contributor may carry, in
            ``(0, 1]`` (1 disables the rule).
        min_exposure: rho, the least exposure (:mod:`securefed.secagg.exposure`) every party must
            keep against any coalition of the server and ``colluders`` clients, in ``[0, 1)``
            (0 disables the rule). The default 0.5 makes the coalition's best estimate of any
            model at least 50 % wrong (relative error), i.e. it explains at most 75 % of it;
            the weight-shape attack of issue 21 (``threat_model/attacks/test_exposure.py``)
            reaches 0.38, 0.23, 0.16 at N = 8, 20, 40 under k_min and cap alone.
        colluders: n_C of the exposure rule, an int >= 0 (default 1: the server plus one
            target). Cost grows as ``C(N, n_C)``; see the module docstring.
        history_rounds: W, how many earlier rounds' releases count as combinations of the
            current models (:mod:`securefed.secagg.history`): a round is judged with what
            rounds r - W to r - 1 released. An int >= 1 (default 3).

    Raises:
        ConfigError: ``k_min`` not a finite number >= 1, ``cap`` not in ``(0, 1]``,
            ``min_exposure`` not in ``[0, 1)``, ``colluders`` not an int >= 0 or
            ``history_rounds`` not an int >= 1.
    """

    k_min: float = 3.0
    cap: float = 0.5
    min_exposure: float = 0.5
    colluders: int = 1
    history_rounds: int = 3

    def __post_init__(self) -> None:
        if not _is_real(self.k_min) or not math.isfinite(self.k_min) or self.k_min < 1:
            raise ConfigError("k_min must be a finite number >= 1")
        if not _is_real(self.cap) or not 0 < self.cap <= 1:
            raise ConfigError("cap must be a number in (0, 1]")
        if not _is_real(self.min_exposure) or not 0 <= self.min_exposure < 1:
            raise ConfigError("min_exposure must be a number in [0, 1)")
        if (
            isinstance(self.colluders, bool)
            or not isinstance(self.colluders, int)
            or self.colluders < 0
        ):
            raise ConfigError("colluders must be an int >= 0")
        if (
            isinstance(self.history_rounds, bool)
            or not isinstance(self.history_rounds, int)
            or not 1 <= self.history_rounds <= MAX_HISTORY_ROUNDS
        ):
            raise ConfigError(f"history_rounds must be an int in [1, {MAX_HISTORY_ROUNDS}]")

    def feasible(self, contributors: int) -> bool:
        """Whether a row with this many possible contributors can satisfy the policy.

        True iff ``contributors >= k_min``, ``contributors·cap >= 1`` and the uniform rows of a
        round with ``contributors + 1`` parties keep ``min_exposure``
        (``sqrt(1 - 1/(contributors + 1 - n_C)) >= rho``), all within ``RULE_TOLERANCE``; the
        uniform row is then compliant.
        """
        return (
            contributors >= self.k_min * (1 - RULE_TOLERANCE)
            and contributors * self.cap >= 1 - RULE_TOLERANCE
            and uniform_exposure(contributors + 1, self.colluders)
            >= self.min_exposure * (1 - RULE_TOLERANCE)
        )

    @property
    def min_contributors(self) -> int:
        """The least number of contributors a target needs:
        ``ceil(max(k_min, 1/cap, n_C - 1 + 1/(1 - rho²)))``."""
        count = max(
            1,
            math.ceil(self.k_min * (1 - RULE_TOLERANCE)),
            math.ceil((1 - RULE_TOLERANCE) / self.cap),
        )
        while not self.feasible(count):  # a step or two of rounding, or the exposure rule
            count += 1
        return count

    def describe(self) -> str:
        """The public thresholds, as refusal messages name them."""
        return (
            f"k_min={self.k_min:g}, cap={self.cap:g}, min_exposure={self.min_exposure:g}, "
            f"colluders={self.colluders}"
        )


def _as_vector(values: npt.ArrayLike, name: str) -> FloatArray:
    try:
        vector = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name} must be an array of numbers") from exc
    if vector.ndim != 1:
        raise ConfigError(f"{name} must be 1-D")
    return vector


def _as_square(weights: npt.ArrayLike) -> FloatArray:
    try:
        matrix = np.asarray(weights, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigError("weights must be an array of numbers") from exc
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] < 2:
        raise ConfigError("weights must be an N x N matrix with N >= 2")
    return matrix


def effective_contributors(off_diagonal: npt.ArrayLike) -> float:
    """``N_eff = (Σ ξ)² / Σ ξ²`` of a row's off-diagonal weights; 0.0 for an all-zero row.

    Scale-free: it is computed on ``ξ / max ξ``, so tiny or large weights neither underflow nor
    overflow. Lies in ``[1, m]`` for ``m`` entries, not all zero.

    Raises:
        ConfigError: not a 1-D array of finite, non-negative numbers.
    """
    x = _as_vector(off_diagonal, "off_diagonal")
    if not np.isfinite(x).all() or (x < 0).any():
        raise ConfigError("off-diagonal weights must be finite and non-negative")
    top = float(x.max(initial=0.0))
    if top == 0:
        return 0.0
    scaled = x / top
    return math.fsum(scaled.tolist()) ** 2 / math.fsum((scaled * scaled).tolist())


def _spread_violation(off: FloatArray, policy: WeightPolicy) -> PolicyRule | None:
    """The k_min and cap rules on a non-zero off-diagonal vector."""
    if effective_contributors(off) < policy.k_min * (1 - RULE_TOLERANCE):
        return PolicyRule.EFFECTIVE_CONTRIBUTORS
    if float(off.max()) > policy.cap * math.fsum(off.tolist()) * (1 + RULE_TOLERANCE):
        return PolicyRule.CONTRIBUTOR_CAP
    return None


def _row_violation(
    row: FloatArray, target: int, policy: WeightPolicy, survivors: Sequence[int] | None
) -> PolicyRule | None:
    """The first rule that row ``target`` breaks, or None. ``survivors``: after dropouts."""
    if not np.isfinite(row).all() or (row < 0).any() or (row > 1).any():
        return PolicyRule.ENTRY_RANGE
    if abs(math.fsum(row.tolist()) - 1) > ROW_SUM_TOLERANCE:
        return PolicyRule.ROW_SUM
    if not np.delete(row, target).any():
        return None  # local row: the target receives nothing
    if survivors is None:
        off = np.delete(row, target)
    else:
        off = row[list(survivors)]
        if not off.any():
            return PolicyRule.NO_SURVIVING_WEIGHT
    return _spread_violation(off, policy)


def client_index(value: object, n: int, name: str) -> int:
    """``value`` as a client index in [0, n); ConfigError naming ``name`` otherwise."""
    return party_index(value, n, name, noun="client")


def _targets(
    n: int, targets: Sequence[int] | None, contributors: Mapping[int, Sequence[int]] | None
) -> list[int]:
    if targets is None:
        chosen = list(range(n)) if contributors is None else list(contributors)
    else:
        chosen = list(targets)
    indices = [client_index(t, n, "targets") for t in chosen]
    if len(set(indices)) != len(indices):
        raise ConfigError("targets must not repeat")
    return indices


def _survivors(target: int, members: Sequence[int], n: int) -> list[int]:
    indices = [client_index(u, n, f"contributors of target {target}") for u in members]
    if len(set(indices)) != len(indices) or target in indices:
        raise ConfigError(f"contributors of target {target} must be distinct and exclude it")
    return indices


def check_weights(
    weights: npt.ArrayLike,
    policy: WeightPolicy,
    *,
    targets: Sequence[int] | None = None,
    contributors: Mapping[int, Sequence[int]] | None = None,
) -> None:
    """Refuse ``weights`` unless every checked row satisfies ``policy`` (see the module docstring).

    Args:
        weights: the N x N matrix ξ (row ``i``: target ``i``), e.g. from :func:`decode_weights`.
        policy: the pinned policy.
        targets: the rows to check, i.e. the targets whose outputs will be released; default
            every row (or every key of ``contributors``). For the exposure rule a party that is
            not among them receives nothing (it knows only its own model).
        contributors: after dropouts, target → its surviving contributors ``C_i`` (excluding the
            target). Rows must still sum to 1 as broadcast; ``k_min`` and ``cap`` are checked on
            the weights renormalised over ``C_i`` (equivalently on ``ξ_iu``, ``u ∈ C_i``: both
            rules are scale-free), the exposure rule on the rows restricted to ``C_i``.

    Raises:
        WeightPolicyViolation: one or more rows break the policy; ``violations`` lists one
            ``(target, PolicyRule)`` per refused row (every row is checked before raising; a
            row that breaks a shape rule is reported with that rule, the exposure rule's blame
            goes to the remaining rows), sorted by target.
        ConfigError: malformed arguments (not a square matrix with N >= 2, bad or repeated
            indices, a target missing from ``contributors`` or among its own contributors).
    """
    if not isinstance(policy, WeightPolicy):
        raise ConfigError("policy must be a WeightPolicy")
    matrix = _as_square(weights)
    n = matrix.shape[0]
    found: list[tuple[int, PolicyRule]] = []
    released: dict[int, list[int]] = {}  # target -> the contributors its output mixes
    for target in _targets(n, targets, contributors):
        survivors = None
        if contributors is not None:
            if target not in contributors:
                raise ConfigError(f"no contributor set given for target {target}")
            survivors = _survivors(target, contributors[target], n)
        rule = _row_violation(matrix[target], target, policy, survivors)
        if rule is not None:
            found.append((target, rule))
        if rule is not PolicyRule.ENTRY_RANGE:
            released[target] = (
                survivors if survivors is not None else [u for u in range(n) if u != target]
            )
    details = {t: _RULE_TEXT[r] for t, r in found}
    for target, victim in exposure_violations(matrix, policy, released).items():
        if target not in details:
            found.append((target, PolicyRule.EXPOSURE))
            details[target] = (
                f"with up to {policy.colluders} colluding client(s) its output exposes "
                f"client {victim} below min_exposure"
            )
    if found:
        found.sort()
        described = "; ".join(f"target {t}: {details[t]}" for t, _ in found)
        raise WeightPolicyViolation(
            f"weights refused under {policy.describe()}: {described}", tuple(found)
        )


def exposure_violations(
    weights: npt.ArrayLike,
    policy: WeightPolicy,
    released: Mapping[int, Sequence[int]] | None = None,
) -> dict[int, int]:
    """The exposure rule alone: target → a party its output exposes below ``min_exposure``.

    Computes :func:`~securefed.secagg.exposure.exposure_report` on the combinations the round
    releases (:func:`~securefed.secagg.exposure.attention_releases`: the row of each target in
    ``released``, restricted to itself and ``released[target]``; default every row, in full) with
    ``collusion_bound = policy.colluders``. For each party v below ``min_exposure`` (less
    ``RULE_TOLERANCE``), the coalition that attains v's exposure is found, and its members whose
    released row it needs are blamed: leaving out that row alone
    (:func:`~securefed.secagg.exposure.coalition_distance`) lifts v to ``min_exposure``. If no
    single row is needed (the violation is redundant), every member whose row puts weight on v
    is blamed (every member, if none does). Empty when the rule holds or is disabled
    (``min_exposure = 0``). ``weights`` must be finite where ``released`` reads it.

    Raises:
        ConfigError: malformed arguments.
    """
    if not isinstance(policy, WeightPolicy):
        raise ConfigError("policy must be a WeightPolicy")
    if policy.min_exposure == 0:
        return {}
    matrix = _as_square(weights)
    n = matrix.shape[0]
    if released is None:
        released = {t: [u for u in range(n) if u != t] for t in range(n)}
    readable = np.zeros((n, n), dtype=np.float64)  # rows that are not released are never read
    for target in released:
        readable[target] = matrix[client_index(target, n, "targets")]
    rows = attention_releases(readable, contributors=released)
    report = exposure_report(rows, collusion_bound=policy.colluders)
    limit = policy.min_exposure * (1 - RULE_TOLERANCE)
    blamed: dict[int, int] = {}
    for victim in np.flatnonzero(report.values < limit).tolist():
        coalition = report.coalitions[victim]
        culprits = [
            c for c in coalition if coalition_distance(rows, coalition, victim, without=c) >= limit
        ]
        culprits = culprits or [c for c in coalition if rows[c, victim] != 0] or list(coalition)
        for target in culprits:
            blamed.setdefault(target, victim)
    return blamed


def _water_fill(off: FloatArray, limit: float, total: float) -> FloatArray:
    """Cap every entry at ``limit``; the excess goes to the uncapped entries in proportion to
    their weight, repeated until no entry exceeds the cap (each pass caps at least one more entry,
    so at most ``len(off)`` passes). If every positive entry ends up capped, the remainder is
    spread evenly over the zero entries. Needs ``limit·len(off) >= total``."""
    capped = np.zeros(off.shape, dtype=bool)
    out = off.copy()
    while (over := out > limit).any():
        capped |= over
        free = ~capped
        remaining = total - limit * int(capped.sum())
        free_mass = math.fsum(off[free].tolist())
        if free_mass > 0:
            share = np.zeros(off.shape, dtype=np.float64)
            share[free] = off[free] / free_mass  # each <= 1: no overflow for tiny masses
            out = np.where(capped, limit, share * remaining)
        elif free.any():
            return np.where(capped, limit, remaining / int(free.sum()))
        else:  # only reachable through rounding when limit·len(off) == total
            return np.full(off.shape, total / off.size)
    return out


def _mix_toward_uniform(off: FloatArray, k_min: float, total: float) -> FloatArray:
    """The smallest mix ``(1 - λ)·off + λ·(total/m)`` whose N_eff reaches ``k_min`` (or m).

    With ``D = off - total/m``: ``Σ x(λ)² = total²/m + (1 - λ)²·Σ D²``, which falls monotonically
    in λ, so the smallest λ has a closed form (no bisection needed).
    """
    m = off.size
    if effective_contributors(off) >= k_min:
        return off
    want = min(k_min * (1 + _MIX_MARGIN), float(m))
    deviation = off - total / m
    spread = math.fsum((deviation * deviation).tolist())
    allowed = max(0.0, total * total * (1 / want - 1 / m))
    keep = min(1.0, math.sqrt(allowed / spread)) if spread > 0 else 1.0  # keep = 1 - λ
    return total / m + keep * deviation


def _bound_dropouts(dropouts: object) -> int:
    if isinstance(dropouts, bool) or not isinstance(dropouts, int) or dropouts < 0:
        raise ConfigError(f"dropouts must be an int >= 0, got {dropouts!r}")
    return dropouts


def enforce_policy(
    weights: npt.ArrayLike, policy: WeightPolicy, *, dropouts: int = 0
) -> FloatArray:
    """The server's side of the policy: a compliant ξ that changes only the rows that need it,
    as little as the three steps below allow, so an honest server's broadcast never trips
    :func:`check_weights`.

    Rows that do not need fixing (and local rows) are returned unchanged, bit for bit; with
    ``colluders = 1`` those are exactly the rows :func:`check_weights` accepts on their own
    (``targets=[i]``), with more colluders a row that passes alone can still be blamed with
    another. For any other row ``i``, with off-diagonal part ``x`` and ``S = Σ x`` (``ξ_ii``
    and ``S`` are kept):

    1. *cap* by water-filling: every entry is cut to ``cap·S`` and the excess is redistributed to
       the uncapped entries in proportion to their weight, repeatedly, until none exceeds the cap
       (if all positive entries are capped, the rest is spread evenly over the zero ones);
    2. *spread*: if ``N_eff < k_min``, mix toward uniform, ``x ← (1 - λ)·x + λ·S/(N - 1)``, with
       the smallest ``λ ∈ [0, 1]`` that reaches ``k_min`` (closed form: ``Σ x²`` is a quadratic
       in λ, decreasing on [0, 1]). Mixing keeps the cap because the uniform entry ``S/(N - 1)``
       is itself within it.
    3. *exposure*: mix rows toward uniform in the same way (``ξ_ii`` and ``S`` kept, so steps 1
       and 2 still hold). First every row on its own: a row whose one-colluder exposure
       (:func:`~securefed.secagg.exposure.row_exposure`, closed form) is below ``min_exposure``
       after any ``dropouts`` of its contributors drop gets its own smallest factor, by
       bisection with the passing end as the invariant (the uniform row passes; ``dropouts`` is
       lowered to what the uniform row can absorb if it cannot absorb them all). With
       ``colluders = 1`` that is the whole rule (a coalition is one target), and robust to the
       dropouts exactly. With more colluders a violation can belong to a coalition, so the rows
       :func:`exposure_violations` blames are then mixed by one common factor, found by
       bisection once mixing them fully passes; if it does not, the rows blamed then are added,
       and in the end every row with off-diagonal weight, whose uniform rows pass whenever the
       policy is feasible. For this step ``dropouts`` are covered only by the margin of
       :func:`securefed.personalize.rounds.server_policy`. Bisection does not need monotonicity to
       return a compliant matrix, only to return the smallest factor.

    Args:
        weights: the server's row-stochastic N x N ξ.
        policy: the policy to enforce (the server's: the contributors' with margins).
        dropouts: D, how many of a row's contributors may drop before the target's output is
            formed; the exposure step keeps every row compliant after any D of them drop
            (exactly for one colluder). 0: the broadcast matrix only.

    Returns:
        A new N x N array; the input is not modified.

    Raises:
        ConfigError: ``weights`` is not a row-stochastic N x N matrix (finite entries in [0, 1],
            rows summing to 1 within ``ROW_SUM_TOLERANCE``), or a row needs fixing but the policy
            is infeasible with ``N - 1`` contributors (``N - 1 < k_min``, ``cap·(N - 1) < 1``
            or uniform rows below ``min_exposure``); ``dropouts`` not an int >= 0.
    """
    if not isinstance(policy, WeightPolicy):
        raise ConfigError("policy must be a WeightPolicy")
    drop = _bound_dropouts(dropouts)
    out = _as_square(weights).copy()
    n = out.shape[0]
    for i in range(n):
        rule = _row_violation(out[i], i, policy, None)
        if rule is None:
            continue
        if rule in (PolicyRule.ENTRY_RANGE, PolicyRule.ROW_SUM):
            raise ConfigError(f"row {i} of the weights is not a probability row ({rule.value})")
        if not policy.feasible(n - 1):
            raise _infeasible(policy, n)
        others = np.arange(n) != i
        off = out[i, others]
        total = math.fsum(off.tolist())
        capped = _water_fill(off, policy.cap * total, total)
        out[i, others] = _mix_toward_uniform(capped, policy.k_min, total)
    return _project_exposure(out, policy, drop)


def _infeasible(policy: WeightPolicy, n: int) -> ConfigError:
    return ConfigError(
        f"the policy needs {policy.min_contributors} contributors per target; "
        f"{n} clients give {n - 1}"
    )


def _mix_rows(base: FloatArray, rows: Sequence[int], amounts: FloatArray) -> FloatArray:
    """``base`` with each row ``rows[k]``'s off-diagonal part mixed toward uniform over the
    other N - 1 parties by ``amounts[k]``: ``x ← (1 - a)·x + a·S/(N - 1)``, ``S = Σ x`` and
    ``ξ_ii`` kept (so the row still sums to 1, and the cap and k_min still hold)."""
    out = base.copy()
    if not rows:
        return out
    n = base.shape[0]
    index = np.asarray(rows, dtype=np.intp)
    here = np.arange(index.size)
    off = base[index].copy()
    diagonal = off[here, index].copy()
    off[here, index] = 0.0
    uniform = np.repeat((off.sum(axis=1) / (n - 1))[:, None], n, axis=1)
    uniform[here, index] = 0.0
    mixed = (1.0 - amounts)[:, None] * off + amounts[:, None] * uniform
    mixed[here, index] = diagonal
    out[index] = mixed
    return out


def _robust_dropouts(policy: WeightPolicy, n: int, dropouts: int) -> int:
    """The most dropouts, up to ``dropouts``, after which a uniform row over the N - 1 others
    still keeps ``min_exposure`` against one colluder (``sqrt(1 - 1/(N - 1 - D)) >= rho``)."""
    allowed = max(0, min(dropouts, n - 2))
    while allowed > 0 and 1.0 - 1.0 / (n - 1 - allowed) < policy.min_exposure**2:
        allowed -= 1
    return allowed


def _project_exposure(weights: FloatArray, policy: WeightPolicy, dropouts: int) -> FloatArray:
    """The exposure step of :func:`enforce_policy` (see there)."""
    if policy.min_exposure == 0 or policy.colluders == 0:  # the server alone learns no row
        return weights
    n = weights.shape[0]
    robust = _robust_dropouts(policy, n, dropouts)
    bad = np.flatnonzero(row_exposure(weights, dropouts=robust) < policy.min_exposure).tolist()
    if not bad and not exposure_violations(weights, policy):
        return weights
    if not policy.feasible(n - 1):
        raise _infeasible(policy, n)
    # Every single row must pass on its own (a coalition of n_C >= 1 clients includes the
    # coalitions of one), after any ``robust`` dropouts: judged in closed form (row_exposure),
    # each bad row gets its own smallest mixing factor, found by bisection with "the factor
    # passes" as the invariant (factor 1, the uniform row, passes by the choice of ``robust``).
    out = weights
    if bad:
        low, high = np.zeros(len(bad)), np.ones(len(bad))
        for _ in range(_BISECTION_STEPS):
            middle = (low + high) / 2
            mixed = _mix_rows(out, bad, middle)
            passes = row_exposure(mixed, dropouts=robust)[bad] >= policy.min_exposure
            high = np.where(passes, middle, high)
            low = np.where(passes, low, middle)
        out = _mix_rows(out, bad, high)
    # General n_C (and a safety net for the above): one common factor for a growing set of
    # culprit rows, until mixing them all fully would pass; then bisection on that factor.
    culprits: set[int] = set()
    current = out
    while blamed := exposure_violations(current, policy):
        fresh = set(blamed) - culprits
        if not fresh:
            fresh = {i for i in range(n) if np.delete(out[i], i).any()} - culprits
        if not fresh:  # every released row is already uniform: cannot happen when feasible
            raise _infeasible(policy, n)
        culprits |= fresh
        rows = sorted(culprits)
        current = _mix_rows(out, rows, np.ones(len(rows)))
        if exposure_violations(current, policy):
            continue
        low_t, high_t = 0.0, 1.0
        for _ in range(_BISECTION_STEPS // 2):
            middle_t = (low_t + high_t) / 2
            if exposure_violations(_mix_rows(out, rows, np.full(len(rows), middle_t)), policy):
                low_t = middle_t
            else:
                high_t = middle_t
        current = _mix_rows(out, rows, np.full(len(rows), high_t))
    return current


def _client_count(n: object) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or not 2 <= n <= MAX_WEIGHT_CLIENTS:
        raise ConfigError(f"the number of clients must be an int in [2, {MAX_WEIGHT_CLIENTS}]")
    return n


def encode_weights(weights: npt.ArrayLike) -> bytes:
    """The canonical encoding of ξ: ``version (u8) ‖ N (u32) ‖ N (u32)`` big-endian, then the N²
    entries row by row as big-endian IEEE-754 float64. ``-0.0`` is written as ``0.0``, so equal
    matrices have equal encodings (and equal transcript hashes).

    Raises:
        ConfigError: not an N x N matrix with ``2 <= N <= MAX_WEIGHT_CLIENTS``, or an entry that
            is not finite or is negative.
    """
    matrix = _as_square(weights)
    n = _client_count(matrix.shape[0])
    if not np.isfinite(matrix).all() or (matrix < 0).any():
        raise ConfigError("weights to encode must be finite and non-negative")
    canonical = matrix + 0.0  # turns -0.0 into +0.0
    return _HEADER.pack(ENCODING_VERSION, n, n) + canonical.astype(">f8").tobytes()


def decode_weights(data: bytes | bytearray | memoryview, n: int) -> FloatArray:
    """Decode ξ for a federation of ``n`` clients; the inverse of :func:`encode_weights`.

    Accepts exactly the canonical encodings: every accepted input re-encodes to itself.
    Structural checks only; the policy is :func:`check_weights`'s job.

    Returns:
        A read-only N x N float64 array.

    Raises:
        RemoteProtocolError: not bytes, wrong length or version, a shape other than n x n, or an
            entry that is NaN, infinite, negative or ``-0.0``.
        ConfigError: ``n`` is not an int in ``[2, MAX_WEIGHT_CLIENTS]``.
    """
    n = _client_count(n)
    if not isinstance(data, bytes | bytearray | memoryview):
        raise RemoteProtocolError("weights must be bytes")
    raw = bytes(data)
    if len(raw) != _HEADER.size + 8 * n * n:
        raise RemoteProtocolError("weights encoding has the wrong length")
    version, rows, columns = _HEADER.unpack_from(raw)
    if version != ENCODING_VERSION or rows != n or columns != n:
        raise RemoteProtocolError("weights encoding has a bad header")
    values = np.frombuffer(raw, dtype=">f8", offset=_HEADER.size)
    if not np.isfinite(values).all() or np.signbit(values).any():
        raise RemoteProtocolError("weights must be finite and non-negative")
    matrix: FloatArray = values.astype(np.float64).reshape(n, n)
    matrix.flags.writeable = False
    return matrix
