"""Weight concentration: the server steers a target's weight onto one victim (DESIGN §4b).

ADVERSARY: a malicious server (it chooses and signs the broadcast weights xi) colluding with
target 0, which would like u_0 to be dominated by victim 1's model -- in the extreme
u_0 = xi_00 w_0 + (1 - xi_00) w_1, from which target 0 reads w_1 directly.

ASSUMPTIONS: pinned roster; xi travels in the signed key directory and is bound into the
consistency transcript (all clients saw the same xi); every honest client runs
``check_broadcast_weights`` on xi and ``check_survivor_weights`` on the renormalised rows after
the survivor set U3 is known; policy k_min = 3, cap = 0.5 (what the engine's rounds use for
N = 6). The server may also claim that contributors dropped out (it decides U3).

OUTCOME (expected and measured): every contributor refuses -- a ``PolicyRefused`` event naming
target 0 -- before it sends anything derived from its model (for a bad broadcast xi: not even a
masked input; for concentration created by dropouts: no unmask share). No output, blinded or
not, is produced for any target. An honest uniform xi in the same setting completes (control).
Note: a refusal aborts the whole round for that contributor (every target, not only target 0);
that fails closed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pytest

from securefed.encoding import CodecConfig, RingBits
from securefed.secagg import AggregationMode, PolicyRefused, RoundConfig, Stage
from securefed.secagg.messages import MaskedInput, Message, UnmaskResponse
from securefed.secagg.policy import WeightPolicy
from securefed.testing import Federation, RoundOutcome, make_federation, run_round
from threat_model.attacks import seeded_rng

DIM = 16
SESSION = bytes(range(100, 132))
VICTIM = 1
Weights = npt.NDArray[np.float64]
_FEDERATIONS: dict[int, Federation] = {}


def federation(n: int) -> Federation:
    if n not in _FEDERATIONS:
        _FEDERATIONS[n] = make_federation(n)
    return _FEDERATIONS[n]


def config(n: int) -> RoundConfig:
    return RoundConfig(
        roster=federation(n).roster,
        session_id=SESSION,
        round=1,
        vector_length=DIM,
        codec=CodecConfig(RingBits.BITS32, 16, 8.0),
        mode=AggregationMode.ATTENTION,
        policy=WeightPolicy(k_min=3.0, cap=0.5),
        min_contributors=3,
    )


def uniform(n: int, self_weight: float = 0.5) -> Weights:
    weights = np.full((n, n), (1 - self_weight) / (n - 1))
    np.fill_diagonal(weights, self_weight)
    return weights


def run(
    n: int, weights: Weights, dropouts: dict[int, Stage] | None = None
) -> tuple[RoundOutcome, list[tuple[int, Message]]]:
    sent: list[tuple[int, Message]] = []

    def record(sender: int, message: Message) -> Sequence[Message]:
        sent.append((sender, message))
        return (message,)

    models = {i: seeded_rng(i).uniform(-4, 4, DIM) for i in range(n)}
    outcome = run_round(
        config(n), federation(n), models, weights=weights, dropouts=dropouts, client_hook=record
    )
    return outcome, sent


def refusals(outcome: RoundOutcome, client: int) -> list[str]:
    return [e.reason for e in outcome.client_events[client] if isinstance(e, PolicyRefused)]


def test_control_uniform_weights_complete() -> None:
    outcome, _ = run(6, uniform(6))
    assert set(outcome.personalized) == set(range(6))
    assert not any(refusals(outcome, i) for i in range(6))


def concentrated(n: int, row: Sequence[float]) -> Weights:
    weights = uniform(n)
    weights[0] = row
    return weights


ATTACKS = {
    # all of target 0's off-diagonal weight on the victim
    "whole-weight-on-victim": [0.4, 0.6, 0.0, 0.0, 0.0, 0.0],
    # a tiny weight, all on the victim: target 0 would divide it back out
    "tiny-weight-on-victim": [0.999, 0.001, 0.0, 0.0, 0.0, 0.0],
    # spread (N_eff = 3.05 >= k_min) but the victim carries 52% > cap = 50%
    "just-above-cap": [0.5, 0.26, 0.06, 0.06, 0.06, 0.06],
    # two contributors only (N_eff = 2 < k_min), each at the cap
    "two-contributors": [0.5, 0.25, 0.25, 0.0, 0.0, 0.0],
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_concentrated_broadcast_weights_are_refused_by_every_contributor(name: str) -> None:
    n = 6
    outcome, sent = run(n, concentrated(n, ATTACKS[name]))
    print(
        f"\n[concentration] {name}: "
        f"refusing clients = {[i for i in range(n) if refusals(outcome, i)]}"
    )
    assert not outcome.personalized
    assert outcome.result is None
    assert outcome.server is not None
    assert not outcome.server.blinded_outputs
    for i in range(n):  # every contributor of target 0 (and target 0 itself) refuses
        reasons = refusals(outcome, i)
        assert reasons, f"client {i} did not refuse"
        assert "target 0" in reasons[0]
        assert outcome.client_stages[i] is Stage.ABORTED
    # Refused at the key directory: no masked input (nothing derived from a model) was sent.
    assert not any(isinstance(m, MaskedInput | UnmaskResponse) for _, m in sent)


def test_concentration_created_by_claimed_dropouts_is_refused_before_unmasking() -> None:
    """The broadcast xi passes, but the server then drops contributors 2 and 3 from U3 (N = 8,
    t = 6 allows two dropouts): renormalised, the victim's 0.3 of the remaining 0.5 exceeds the
    cap. Every remaining contributor of target 0 refuses at the consistency check."""
    n = 8
    weights = uniform(n)
    weights[0] = [0.0, 0.3, 0.25, 0.25, 0.05, 0.05, 0.05, 0.05]
    broadcast_ok, _ = run(n, weights)  # the same xi with no dropouts completes
    assert set(broadcast_ok.personalized) == set(range(n))

    outcome, sent = run(n, weights, dropouts={2: Stage.MASK, 3: Stage.MASK})
    assert not outcome.personalized
    assert outcome.server is not None
    assert not outcome.server.blinded_outputs
    contributors = [1, 4, 5, 6, 7]
    for i in contributors:
        reasons = refusals(outcome, i)
        assert reasons
        assert "target 0" in reasons[0]
        assert outcome.client_stages[i] is Stage.ABORTED
    assert any(isinstance(m, MaskedInput) for _, m in sent)  # they got as far as masking
    assert not any(isinstance(m, UnmaskResponse) for _, m in sent)  # but revealed nothing
