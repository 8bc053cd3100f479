"""Small aggregates: a round in which so many clients drop that an output would mix too few models.

ADVERSARY: a malicious server (it decides who "dropped": it can ignore any client's messages) or
plain network failure, aiming to hand a target (or itself) an aggregate of very few models --
in the limit one, which is that model.

ASSUMPTIONS: threshold t pinned in the RoundConfig (default floor(2N/3) + 1: t = 5 for N = 6),
clients validate |U3| >= t themselves and, in attention mode, check before unmasking that every
target they contribute to has at least ``min_contributors`` surviving contributors
(``check_survivor_weights``). Contributor sets are derived from the one survivor set U3
(C_i = U3 - {i}), so every target of a round has |U3| - 1 contributors (or |U3|): the minimum
binds all targets at once.

OUTCOME (expected and measured):
* one round of the engine (``securefed.testing.rounds.simulate_round``), N = 6, t = 5: two
  parties vanish before masking, before the consistency check or before unmasking -> the round
  aborts, ``personalized`` is empty, every client is in
  ``aborted``, the server holds no output and reconstructed no seed and no mask key (before
  unmasking: the four responders' b-shares are fewer than t). One
  dropout (control) completes for the five others.
* ``run_round`` with min_contributors = 5 (N = 6): no dropout completes (5 contributors per
  target); one dropout before masking leaves 4 per target -> every contributor refuses
  (``PolicyRefused``: "would aggregate only 4 contributors"), no unmask share is revealed, no
  output. With the engine's defaults (min_contributors = min(3, t - 1)) this rule never binds
  before the threshold does.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from securefed.encoding import CodecConfig, RingBits
from securefed.secagg import AggregationMode, PolicyRefused, RoundConfig, Stage
from securefed.secagg.messages import Message, UnmaskResponse
from securefed.secagg.policy import WeightPolicy
from securefed.testing import Federation, make_federation, run_round
from securefed.testing.rounds import simulate_round
from threat_model.attacks import seeded_rng

N = 6
DIM = 16


def models() -> list[np.ndarray]:
    rng = seeded_rng(11)
    return [rng.uniform(-3.0, 3.0, DIM) for _ in range(N)]


@pytest.mark.parametrize("phase", ["mask", "consistency", "unmask"])
def test_too_many_dropouts_abort_with_no_output(phase: str) -> None:
    result = simulate_round(models(), mode="heurfedamp", seed=3, dropouts={4: phase, 5: phase})
    print(f"\n[small-aggregate] 2 of {N} drop before {phase}: aborted={sorted(result.aborted)}")
    assert result.personalized == {}
    assert set(result.aborted) == set(range(N))
    assert result.server_view.outputs == {}
    assert result.server_view.mask_keys == {}
    assert result.server_view.self_seeds == {}  # nothing was reconstructed at all


def test_control_one_dropout_completes() -> None:
    result = simulate_round(models(), mode="heurfedamp", seed=3, dropouts={5: "mask"})
    assert set(result.personalized) == set(range(5))
    assert set(result.aborted) == {5}


def strict_config(fed: Federation) -> RoundConfig:
    return RoundConfig(
        roster=fed.roster,
        session_id=bytes(range(32)),
        round=1,
        vector_length=DIM,
        codec=CodecConfig(RingBits.BITS32, 16, 8.0),
        mode=AggregationMode.ATTENTION,
        policy=WeightPolicy(k_min=3.0, cap=0.5),
        min_contributors=5,
    )


def test_min_contributors_above_the_threshold_aborts_small_aggregates() -> None:
    fed = make_federation(N)
    config = strict_config(fed)
    assert config.threshold == 5
    weights = np.full((N, N), 0.1)
    np.fill_diagonal(weights, 0.5)
    inputs = dict(enumerate(models()))

    complete = run_round(config, fed, inputs, weights=weights)
    assert set(complete.personalized) == set(range(N))  # 5 contributors per target: allowed

    sent: list[Message] = []

    def record(sender: int, message: Message) -> Sequence[Message]:
        sent.append(message)
        return (message,)

    outcome = run_round(
        config, fed, inputs, weights=weights, dropouts={5: Stage.MASK}, client_hook=record
    )
    reasons = {
        i: [e.reason for e in outcome.client_events[i] if isinstance(e, PolicyRefused)]
        for i in range(5)
    }
    print(f"[small-aggregate] min_contributors=5, one dropout: refusals={reasons}")
    assert not outcome.personalized
    assert outcome.server is not None
    assert not outcome.server.blinded_outputs
    assert not any(isinstance(m, UnmaskResponse) for m in sent)
    for i in range(5):
        assert reasons[i]
        assert "only 4 contributors" in reasons[i][0]
