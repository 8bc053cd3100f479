"""The one-run canary audit's statistics: hand-checked p-values and bounds, validity on simulated
randomized response, the guessing rule, and the canary.json result the report reads."""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from securefed.audit.canary_bound import (
    CANARY_FILE,
    LOWER_BOUND_NOTE,
    CanaryResult,
    epsilon_lower_bound,
    evaluate_canaries,
    p_value,
    score_guesses,
    write_canary_result,
)
from securefed.audit.rundata import load_run_data
from securefed.errors import ConfigError

# -- p-values and bounds, by hand -------------------------------------------------------------


def test_p_value_is_the_binomial_tail_plus_the_papers_delta_term() -> None:
    # eps = ln 3: each guess is right with probability q = 3/4; r = 3 guesses, v = 2 right.
    # P[Bin(3, 3/4) >= 2] = 3 (3/4)^2 (1/4) + (3/4)^3 = 27/64 + 27/64.
    pure = p_value(canaries=10, guesses=3, correct=2, epsilon=math.log(3), delta=0.0)
    assert pure == pytest.approx(54 / 64, rel=1e-12)
    # delta term: alpha = max(P[B = 1] / 1, (P[B = 1] + P[B = 0]) / 2) = max(9/64, 5/64) = 9/64.
    approx = p_value(canaries=10, guesses=3, correct=2, epsilon=math.log(3), delta=0.01)
    assert approx == pytest.approx(54 / 64 + 2 * 10 * 0.01 * 9 / 64, rel=1e-12)


def test_all_correct_guesses_give_the_closed_form_bound() -> None:
    # Pure DP, v = r: p = q^r, so the bound is logit(beta^(1/r)) (when positive: r >= 5).
    for r in (5, 7, 100, 1000):
        q = 0.05 ** (1 / r)
        expected = math.log(q / (1 - q))
        bound = epsilon_lower_bound(canaries=1000, guesses=r, correct=r, beta=0.05)
        assert bound == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_no_evidence_gives_a_zero_bound() -> None:
    assert epsilon_lower_bound(canaries=100, guesses=0, correct=0) == 0.0
    assert epsilon_lower_bound(canaries=100, guesses=50, correct=0) == 0.0
    assert epsilon_lower_bound(canaries=100, guesses=50, correct=25) == 0.0  # chance level
    # one right guess out of one: p = q >= 1/2 > beta for every epsilon >= 0
    assert epsilon_lower_bound(canaries=100, guesses=1, correct=1) == 0.0


def test_the_bound_grows_with_the_evidence() -> None:
    all_correct = [
        epsilon_lower_bound(canaries=2000, guesses=r, correct=r, delta=1e-5)
        for r in (5, 10, 50, 100, 500, 2000)
    ]
    assert all(a < b for a, b in itertools.pairwise(all_correct))
    by_correct = [
        epsilon_lower_bound(canaries=1000, guesses=200, correct=v) for v in range(110, 201, 10)
    ]
    assert all(a < b for a, b in itertools.pairwise(by_correct))


def test_delta_and_confidence_only_lower_the_bound() -> None:
    pure = epsilon_lower_bound(canaries=1000, guesses=200, correct=180)
    approx = epsilon_lower_bound(canaries=1000, guesses=200, correct=180, delta=1e-4)
    strict = epsilon_lower_bound(canaries=1000, guesses=200, correct=180, beta=0.001)
    assert 0 < approx < pure
    assert 0 < strict < pure


def test_the_bound_is_the_largest_rejected_epsilon() -> None:
    for m, r, v, delta in [(1000, 200, 180, 1e-5), (500, 125, 125, 1e-5), (100, 40, 35, 0.0)]:
        bound = epsilon_lower_bound(canaries=m, guesses=r, correct=v, beta=0.05, delta=delta)
        assert bound > 0
        at = p_value(canaries=m, guesses=r, correct=v, epsilon=bound, delta=delta)
        above = p_value(canaries=m, guesses=r, correct=v, epsilon=bound * 1.001, delta=delta)
        assert at <= 0.05 < above


def test_p_value_increases_with_epsilon() -> None:
    for r, v, delta in [(100, 90, 1e-5), (500, 400, 1e-4), (1000, 600, 1e-5), (20, 15, 0.01)]:
        values = [
            p_value(canaries=1000, guesses=r, correct=v, epsilon=e / 20, delta=delta)
            for e in range(200)
        ]
        assert all(b >= a - 1e-12 for a, b in itertools.pairwise(values))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"canaries": 10, "guesses": 11, "correct": 1}, "correct <= guesses <= canaries"),
        ({"canaries": 10, "guesses": 5, "correct": 6}, "correct <= guesses <= canaries"),
        ({"canaries": 10, "guesses": 5, "correct": -1}, "correct <= guesses <= canaries"),
        ({"canaries": 10, "guesses": 5, "correct": 2.0}, "integer"),
        ({"canaries": 10, "guesses": 5, "correct": 2, "beta": 0.0}, "beta"),
        ({"canaries": 10, "guesses": 5, "correct": 2, "beta": 1.0}, "beta"),
        ({"canaries": 10, "guesses": 5, "correct": 2, "delta": 1.5}, "delta"),
        ({"canaries": 10, "guesses": 5, "correct": 2, "delta": math.nan}, "delta"),
    ],
)
def test_invalid_inputs_are_refused(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        epsilon_lower_bound(**kwargs)  # type: ignore[arg-type]


# -- validity: simulated pure-epsilon randomized response -------------------------------------


def test_randomized_response_bound_rarely_exceeds_the_true_epsilon() -> None:
    # Every canary's bit is released through eps-randomized response and every bit is guessed:
    # the number of correct guesses is exactly Binomial(m, e^eps / (1 + e^eps)), the worst case
    # of the theorem, so the bound exceeds eps with probability about beta, never much more.
    rng = np.random.default_rng(20230508)
    epsilon, m, trials, beta = 1.0, 1000, 300, 0.05
    q = math.exp(epsilon) / (1 + math.exp(epsilon))
    bounds = []
    for _ in range(trials):
        bits = rng.integers(0, 2, size=m).astype(bool)
        flips = rng.random(m) >= q
        released = bits ^ flips
        correct = int(np.sum(released == bits))
        bounds.append(epsilon_lower_bound(canaries=m, guesses=m, correct=correct, beta=beta))
    exceed = sum(b > epsilon for b in bounds)
    assert exceed <= 30  # mean <= 15 (= beta * trials); 30 is 4 standard deviations above
    assert float(np.median(bounds)) > 0.7  # and the bound is close to tight, not vacuous


# -- guessing -----------------------------------------------------------------------------------


def test_guesses_take_the_highest_as_in_and_the_lowest_as_out() -> None:
    scores = [0.1, 0.9, 0.5, 0.3, 0.7]
    included = [False, True, False, False, True]
    assert score_guesses(scores, included, k_plus=1, k_minus=1) == (2, 2)
    assert score_guesses(scores, included, k_plus=2, k_minus=2) == (4, 4)
    assert score_guesses(scores, included, k_plus=3, k_minus=0) == (3, 2)  # 0.5 is out
    assert score_guesses(scores, included, k_plus=0, k_minus=3) == (3, 3)
    assert score_guesses(scores, included, k_plus=0, k_minus=0) == (0, 0)


def test_ties_are_broken_by_canary_index() -> None:
    scores = [1.0, 1.0, 1.0, 1.0]
    # index order: the highest index counts as the highest score
    assert score_guesses(scores, [False, False, False, True], k_plus=1, k_minus=0) == (1, 1)
    assert score_guesses(scores, [True, False, False, False], k_plus=1, k_minus=0) == (1, 0)
    assert score_guesses(scores, [False, True, True, True], k_plus=0, k_minus=1) == (1, 1)


def test_bad_guess_inputs_are_refused() -> None:
    with pytest.raises(ConfigError, match="inclusion bits"):
        score_guesses([1.0, 2.0], [True], k_plus=1, k_minus=0)
    with pytest.raises(ConfigError, match="exceeds"):
        score_guesses([1.0, 2.0], [True, False], k_plus=2, k_minus=1)
    with pytest.raises(ConfigError, match="finite"):
        score_guesses([1.0, math.nan], [True, False], k_plus=1, k_minus=0)
    with pytest.raises(ConfigError, match="k_minus"):
        score_guesses([1.0, 2.0], [True, False], k_plus=1, k_minus=-1)


@dataclass(frozen=True)
class _Observation:
    scores: tuple[float, ...]
    included: tuple[bool, ...]
    method: str = "test"
    k_plus: int = 2
    k_minus: int = 2
    confidence: float = 0.95
    delta: float = 1e-5
    claimed_epsilon: float = 1.0
    configuration: str = "hand-made scores"


def test_evaluate_canaries_guesses_counts_and_bounds() -> None:
    m = 400
    included = tuple(i % 2 == 0 for i in range(m))
    perfect = tuple(float(b) + i / 10_000 for i, b in enumerate(included))
    result = evaluate_canaries(_Observation(perfect, included, k_plus=100, k_minus=100))
    assert (result.canaries, result.guesses, result.correct) == (m, 200, 200)
    expected = epsilon_lower_bound(canaries=m, guesses=200, correct=200, beta=0.05, delta=1e-5)
    assert result.epsilon_lower_bound == pytest.approx(expected, rel=1e-12)
    assert result.exceeds_claim  # about 4.2 > 1.0
    useless = tuple(-s for s in perfect)  # every guess wrong
    assert evaluate_canaries(_Observation(useless, included)).epsilon_lower_bound == 0.0
    with pytest.raises(ConfigError, match="confidence"):
        evaluate_canaries(_Observation(perfect, included, confidence=1.0))


# -- the result and canary.json ---------------------------------------------------------------


def _result(**changes: object) -> CanaryResult:
    fields: dict[str, object] = {
        "method": "one-run canary audit",
        "epsilon_lower_bound": 4.39,
        "confidence": 0.95,
        "claimed_epsilon": 0.61,
        "delta": 1e-5,
        "canaries": 1000,
        "guesses": 250,
        "correct": 250,
        "configuration": "preset broken-no-noise",
    }
    fields.update(changes)
    return CanaryResult(**fields)  # type: ignore[arg-type]


def test_to_dict_has_the_agreed_schema_and_round_trips() -> None:
    result = _result()
    data = result.to_dict()
    assert set(data) == {
        "method",
        "epsilon_lower_bound",
        "confidence",
        "claimed_epsilon",
        "delta",
        "canaries",
        "guesses",
        "correct",
        "configuration",
        "note",
    }
    assert data["note"] == LOWER_BOUND_NOTE == "a lower bound, not a proof of privacy"
    assert CanaryResult.from_dict(json.loads(json.dumps(data))) == result
    with pytest.raises(ConfigError, match="missing"):
        CanaryResult.from_dict({k: v for k, v in data.items() if k != "delta"})
    with pytest.raises(ConfigError, match="integer"):
        CanaryResult.from_dict({**data, "correct": 250.0})


@pytest.mark.parametrize(
    "changes",
    [
        {"correct": 251},
        {"guesses": 1001},
        {"epsilon_lower_bound": -1.0},
        {"epsilon_lower_bound": math.inf},
        {"claimed_epsilon": math.nan},
        {"confidence": 1.0},
        {"delta": 1.0},
        {"canaries": True},
    ],
)
def test_an_inconsistent_result_cannot_be_built(changes: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        _result(**changes)


def test_the_written_file_is_what_the_report_reads(tmp_path: Path) -> None:
    result = _result()
    path = write_canary_result(result, tmp_path)
    assert path == tmp_path / CANARY_FILE == tmp_path / "canary.json"
    assert json.loads(path.read_text(encoding="utf-8")) == result.to_dict()
    assert load_run_data(tmp_path).canary == result.to_dict()
    assert [p.name for p in tmp_path.iterdir()] == ["canary.json"]  # no temporary file left
    write_canary_result(_result(epsilon_lower_bound=0.2), tmp_path)  # replaced
    assert load_run_data(tmp_path).canary == _result(epsilon_lower_bound=0.2).to_dict()
    with pytest.raises(ConfigError, match="not a directory"):
        write_canary_result(result, tmp_path / "missing")
