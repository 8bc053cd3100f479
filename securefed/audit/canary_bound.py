"""The statistics of the one-run canary audit (Steinke, Nasr, Jagielski, NeurIPS 2023).

An auditor inserts ``m`` canaries into one training run, each included independently with
probability 1/2, scores every canary after training, guesses "in" for the ``k+`` highest
scores and "out" for the ``k-`` lowest (abstaining on the rest: ``r = k+ + k-`` guesses) and
counts the ``v`` correct guesses. This module turns ``(m, r, v)`` into a lower bound on epsilon.

The bound (the paper's Theorem 5.2 and its numerical procedure): if the training run is
(epsilon, delta)-DP with respect to each canary, then for every ``v``

    P[correct >= v] <= f(v) + 2 m delta * max_{1 <= i <= v} (f(v - i) - f(v)) / i,

where ``f(v) = P[Binomial(r, e^eps / (1 + e^eps)) >= v]``; for pure DP (delta = 0) only the
first term remains: the number of correct guesses is stochastically dominated by
``Binomial(r, e^eps / (1 + e^eps))`` (Theorem 3.1). :func:`p_value` computes the right-hand side;
:func:`epsilon_lower_bound` finds, by bisection, the largest epsilon whose p-value is still at
most ``beta``. The audit therefore rejects "the run is (eps_lb, delta)-DP" at level ``beta``:

**Guarantee.** If the run really is (epsilon, delta)-DP, the reported bound exceeds epsilon with
probability at most ``beta`` (over the canary inclusion bits and the run's own randomness),
PROVIDED that ``k+`` and ``k-`` were fixed before the scores were seen. Choosing them after
looking at the scores (trying several and keeping the best) is multiple testing and voids the
guarantee. A bound below the claimed epsilon is **not** evidence that the claim holds: it is a
lower bound, not a proof of privacy.

Numerics: binomial tails are summed in log space from ``math.lgamma`` (no scipy), relative error
about 1e-12. Everything here is the standard library only (no torch), so the audit report can
read and check results without the training stack.

Also here: :func:`score_guesses`, the guessing rule; :class:`CanaryObservation`, what a training
run hands over (scores and inclusion bits; :class:`securefed.dp.canary.CanaryRun` is one, matched
structurally because ``securefed.dp`` and ``securefed.audit`` are independent layers that must not
import each other); :func:`evaluate_canaries`, observation -> :class:`CanaryResult`; and
:func:`write_canary_result`, the JSON file ``canary.json`` that :mod:`securefed.audit.rundata`
reads for the report.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from securefed.audit.rundata import CANARY_FILE
from securefed.errors import ConfigError
from securefed.files import write_atomic

__all__ = [
    "CANARY_FILE",
    "LOWER_BOUND_NOTE",
    "CanaryObservation",
    "CanaryResult",
    "epsilon_lower_bound",
    "evaluate_canaries",
    "p_value",
    "score_guesses",
    "write_canary_result",
]

#: Written into every result: what the number is and is not.
LOWER_BOUND_NOTE = "a lower bound, not a proof of privacy"

_BISECTION_STEPS = 60
_EPSILON_CEILING = 1000.0  # far above any bound a finite number of guesses can certify


# -- the bound --------------------------------------------------------------------------------


def p_value(*, canaries: int, guesses: int, correct: int, epsilon: float, delta: float) -> float:
    """Upper bound on ``P[correct guesses >= correct]`` for an (epsilon, delta)-DP run.

    ``canaries`` is m (every canary, guessed or not), ``guesses`` r (abstentions excluded),
    ``correct`` v. Returns a probability in [0, 1] (clipped at 1). Raises :class:`ConfigError`
    for counts outside ``0 <= v <= r <= m``, a negative or non-finite epsilon, or delta outside
    [0, 1].
    """
    _check_counts(canaries, guesses, correct)
    if not (math.isfinite(epsilon) and epsilon >= 0):
        raise ConfigError(f"epsilon must be finite and >= 0, got {epsilon!r}")
    if not (math.isfinite(delta) and 0 <= delta <= 1):
        raise ConfigError(f"delta must be in [0, 1], got {delta!r}")
    return _p_value(_log_choose(guesses), canaries, correct, epsilon, delta)


def _p_value(
    log_choose: Sequence[float], canaries: int, correct: int, epsilon: float, delta: float
) -> float:
    """:func:`p_value` for validated inputs; ``log_choose[k] = log C(r, k)``, ``k = 0..r``."""
    guesses = len(log_choose) - 1
    log_q = -math.log1p(math.exp(-epsilon))  # q = e^eps / (1 + e^eps), P[a guess is right]
    log_1mq = -epsilon + log_q  # 1 - q = 1 / (1 + e^eps)
    first = 0 if delta > 0 else correct  # pure DP needs only the upper tail

    def log_pmf(k: int) -> float:
        return log_choose[k] + k * log_q + (guesses - k) * log_1mq

    logs = [log_pmf(k) for k in range(first, guesses + 1)]
    tail = _exp_log_sum(logs[correct - first :])  # f(v) = P[Binomial(r, q) >= v]
    if delta == 0 or correct == 0:
        return min(1.0, tail)
    alpha = 0.0  # max over i of P[v - i <= Binomial(r, q) < v] / i
    window = 0.0
    for i in range(1, correct + 1):
        window += math.exp(logs[correct - i])
        alpha = max(alpha, window / i)
    return min(1.0, tail + 2 * canaries * delta * alpha)


def epsilon_lower_bound(
    *, canaries: int, guesses: int, correct: int, beta: float = 0.05, delta: float = 0.0
) -> float:
    """The largest epsilon (to about 1e-12 relative) whose :func:`p_value` is at most ``beta``.

    The run is then not (epsilon, delta)-DP for any epsilon below the returned value, at
    confidence ``1 - beta`` (see the module docstring for the conditions). Returns 0.0 when even
    epsilon = 0 cannot be rejected (e.g. no correct guess, or accuracy at chance level).

    Bisection keeps the invariant ``p_value(lower end) <= beta``, so the returned epsilon is
    always one the test rejects. Raises :class:`ConfigError` for invalid counts, delta outside
    [0, 1] or beta outside (0, 1).
    """
    _check_counts(canaries, guesses, correct)
    if not (math.isfinite(beta) and 0 < beta < 1):
        raise ConfigError(f"beta (1 - confidence) must be in (0, 1), got {beta!r}")

    if not (math.isfinite(delta) and 0 <= delta <= 1):
        raise ConfigError(f"delta must be in [0, 1], got {delta!r}")
    log_choose = _log_choose(guesses)

    def rejected(epsilon: float) -> bool:
        return _p_value(log_choose, canaries, correct, epsilon, delta) <= beta

    if not rejected(0.0):
        return 0.0
    low, high = 0.0, 1.0
    while rejected(high):  # p -> 1 as epsilon grows, so this stops
        low, high = high, 2 * high
        if high > _EPSILON_CEILING:  # pragma: no cover -- needs ~10^400 correct guesses
            return low
    for _ in range(_BISECTION_STEPS):
        middle = (low + high) / 2
        if rejected(middle):
            low = middle
        else:
            high = middle
    return low


def score_guesses(
    scores: Sequence[float], included: Sequence[bool], *, k_plus: int, k_minus: int
) -> tuple[int, int]:
    """Guess "in" for the ``k_plus`` highest scores, "out" for the ``k_minus`` lowest.

    Returns ``(guesses, correct)`` with ``guesses = k_plus + k_minus``. Ties are broken by canary
    index (lower index counts as the lower score), a rule that does not depend on the inclusion
    bits, so the guarantee of :func:`epsilon_lower_bound` is kept. Raises :class:`ConfigError`
    when the lengths differ, a score is not finite, or ``k_plus + k_minus`` exceeds the number of
    canaries.
    """
    m = len(scores)
    if len(included) != m:
        raise ConfigError(f"{m} scores but {len(included)} inclusion bits")
    for name, k in (("k_plus", k_plus), ("k_minus", k_minus)):
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise ConfigError(f"{name} must be an integer >= 0, got {k!r}")
    if k_plus + k_minus > m:
        raise ConfigError(f"k_plus + k_minus = {k_plus + k_minus} exceeds the {m} canaries")
    values = [float(s) for s in scores]
    if not all(math.isfinite(s) for s in values):
        raise ConfigError("every canary score must be finite")
    order = sorted(range(m), key=lambda i: (values[i], i))  # ascending
    right_out = sum(1 for i in order[:k_minus] if not included[i])
    right_in = sum(1 for i in order[m - k_plus :] if included[i])
    return k_plus + k_minus, right_in + right_out


# -- the result and its file ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CanaryResult:
    """One canary audit: the bound, what it was computed from, and the claim it is compared to.

    ``canaries`` is m, ``guesses`` r, ``correct`` v; ``confidence`` is ``1 - beta``;
    ``claimed_epsilon`` is the epsilon the mechanism claims at ``delta`` (the accountant's, or the
    analytical one in a calibration). ``configuration`` says in words what was audited.
    Construction validates every field (:class:`ConfigError`), so an inconsistent result cannot
    exist.
    """

    method: str
    epsilon_lower_bound: float
    confidence: float
    claimed_epsilon: float
    delta: float
    canaries: int
    guesses: int
    correct: int
    configuration: str
    note: str = LOWER_BOUND_NOTE

    def __post_init__(self) -> None:
        _check_counts(self.canaries, self.guesses, self.correct)
        for name in ("epsilon_lower_bound", "claimed_epsilon"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"{name} must be a number, got {value!r}")
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{name} must be finite and >= 0, got {value!r}")
        if not (math.isfinite(self.confidence) and 0 < self.confidence < 1):
            raise ConfigError(f"confidence must be in (0, 1), got {self.confidence!r}")
        if not (math.isfinite(self.delta) and 0 <= self.delta < 1):
            raise ConfigError(f"delta must be in [0, 1), got {self.delta!r}")
        for name in ("method", "configuration", "note"):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(f"{name} must be a string")

    @property
    def exceeds_claim(self) -> bool:
        """True when the lower bound is above the claimed epsilon: the claim is refuted at
        confidence :attr:`confidence` (a bug in the DP implementation or its accounting)."""
        return self.epsilon_lower_bound > self.claimed_epsilon

    def to_dict(self) -> dict[str, object]:
        """The ``canary.json`` object (keys as :mod:`securefed.audit.report` reads them)."""
        return {
            "method": self.method,
            "epsilon_lower_bound": float(self.epsilon_lower_bound),
            "confidence": float(self.confidence),
            "claimed_epsilon": float(self.claimed_epsilon),
            "delta": float(self.delta),
            "canaries": self.canaries,
            "guesses": self.guesses,
            "correct": self.correct,
            "configuration": self.configuration,
            "note": self.note,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> CanaryResult:
        """Inverse of :meth:`to_dict`; raises :class:`ConfigError` on a missing, extra or
        ill-typed key."""
        expected = set(cls.__dataclass_fields__)
        if set(data) != expected:
            missing, extra = sorted(expected - set(data)), sorted(set(data) - expected)
            raise ConfigError(f"canary result keys: missing {missing}, unexpected {extra}")
        return cls(
            method=_text_field(data, "method"),
            epsilon_lower_bound=_number_field(data, "epsilon_lower_bound"),
            confidence=_number_field(data, "confidence"),
            claimed_epsilon=_number_field(data, "claimed_epsilon"),
            delta=_number_field(data, "delta"),
            canaries=_int_field(data, "canaries"),
            guesses=_int_field(data, "guesses"),
            correct=_int_field(data, "correct"),
            configuration=_text_field(data, "configuration"),
            note=_text_field(data, "note"),
        )


class CanaryObservation(Protocol):
    """What one audited training run produced, before any statistics (read-only attributes).

    ``scores[i]`` is canary i's score (higher: more likely included), ``included[i]`` its secret
    inclusion bit, ``k_plus`` / ``k_minus`` the numbers of "in" / "out" guesses fixed BEFORE the
    run, ``claimed_epsilon`` the epsilon the mechanism claims at ``delta``.
    """

    @property
    def method(self) -> str: ...
    @property
    def scores(self) -> Sequence[float]: ...
    @property
    def included(self) -> Sequence[bool]: ...
    @property
    def k_plus(self) -> int: ...
    @property
    def k_minus(self) -> int: ...
    @property
    def confidence(self) -> float: ...
    @property
    def delta(self) -> float: ...
    @property
    def claimed_epsilon(self) -> float: ...
    @property
    def configuration(self) -> str: ...


def evaluate_canaries(observation: CanaryObservation) -> CanaryResult:
    """Guess (:func:`score_guesses`), count, and bound (:func:`epsilon_lower_bound` at
    ``beta = 1 - confidence`` and the observation's delta).

    Raises :class:`ConfigError` for inconsistent inputs (lengths, guess counts, a non-finite
    score, confidence outside (0, 1), delta outside [0, 1)).
    """
    confidence = observation.confidence
    if not (math.isfinite(confidence) and 0 < confidence < 1):
        raise ConfigError(f"confidence must be in (0, 1), got {confidence!r}")
    guesses, correct = score_guesses(
        observation.scores,
        observation.included,
        k_plus=observation.k_plus,
        k_minus=observation.k_minus,
    )
    canaries = len(observation.scores)
    bound = epsilon_lower_bound(
        canaries=canaries,
        guesses=guesses,
        correct=correct,
        beta=1 - confidence,
        delta=observation.delta,
    )
    return CanaryResult(
        method=observation.method,
        epsilon_lower_bound=bound,
        confidence=confidence,
        claimed_epsilon=observation.claimed_epsilon,
        delta=observation.delta,
        canaries=canaries,
        guesses=guesses,
        correct=correct,
        configuration=observation.configuration,
    )


def write_canary_result(result: CanaryResult, run_dir: str | os.PathLike[str]) -> Path:
    """Write ``result`` as JSON to ``run_dir / canary.json`` and return that path.

    The file is replaced atomically (temporary file in the same directory, fsync, ``os.replace``):
    a reader sees the old file or the new one, never half of one. JSON only (no pickle); the
    file is not signed (the report says so). Raises :class:`ConfigError` if ``run_dir`` is not an
    existing directory; ``OSError`` if writing fails.
    """
    directory = Path(run_dir)
    if not directory.is_dir():
        raise ConfigError(f"{directory} is not a directory")
    text = json.dumps(result.to_dict(), indent=2, sort_keys=True, allow_nan=False) + "\n"
    target = directory / CANARY_FILE
    write_atomic(target, text.encode("utf-8"))
    return target


# -- helpers ----------------------------------------------------------------------------------


def _check_counts(canaries: int, guesses: int, correct: int) -> None:
    for name, value in (("canaries", canaries), ("guesses", guesses), ("correct", correct)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name} must be an integer, got {value!r}")
    if not 0 <= correct <= guesses <= canaries:
        raise ConfigError(
            "need 0 <= correct <= guesses <= canaries, got "
            f"correct={correct}, guesses={guesses}, canaries={canaries}"
        )


def _int_field(data: Mapping[str, object], key: str) -> int:
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key} must be an integer, got {value!r}")
    return value


def _number_field(data: Mapping[str, object], key: str) -> float:
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{key} must be a number, got {value!r}")
    return float(value)


def _text_field(data: Mapping[str, object], key: str) -> str:
    value = data[key]
    if not isinstance(value, str):
        raise ConfigError(f"{key} must be a string, got {value!r}")
    return value


def _log_choose(n: int) -> list[float]:
    """``[log C(n, k) for k in 0..n]`` from ``math.lgamma``."""
    log_factorials = [math.lgamma(k + 1) for k in range(n + 1)]
    return [log_factorials[n] - log_factorials[k] - log_factorials[n - k] for k in range(n + 1)]


def _exp_log_sum(logs: Sequence[float]) -> float:
    """``sum(exp(x) for x in logs)`` without overflow or needless underflow (0.0 if empty)."""
    if not logs:
        return 0.0
    top = max(logs)
    return math.exp(top) * math.fsum(math.exp(x - top) for x in logs)
