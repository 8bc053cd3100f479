"""Both shares across targets: "u dropped" for one output, "u alive" for another (DESIGN §3 R2).

ADVERSARY: a malicious server (it re-signs any server message with its roster key) that wants,
in attention mode, both Shamir-shared secrets of victim u = 5: the self-mask seed b_u (revealed
for survivors) and the pairwise-mask key s_u (revealed for dropped clients). It tries to get them
by treating u as alive for some targets' outputs and as dropped for others' -- the attack that
per-output contributor sets would allow.

ASSUMPTIONS: pinned roster; honest clients run the consistency check and reveal shares only for
the one U3 they signed; 2t - N > n_C (R1; N = 6, t = 5, n_C = 3). The last test adds n_C colluding
clients who sign whatever the server asks.

OUTCOME (expected and measured): impossible by construction. There is no message that carries a
per-target survivor set (UnmaskRequest, ConsistencyRequest and BlindedOutput each carry one
``survivors`` tuple; contributor sets are derived from it). A client shown an UnmaskRequest whose
survivor set differs from the U3 it signed refuses (``UnmaskRefused``) and aborts; a second,
different UnmaskRequest to a client that already answered is an illegal transition (abort); a
target whose BlindedOutput names another survivor set refuses it. In every variant no
UnmaskResponse reveals a mask-key share of u, and no client answers twice. (Even both shares
would leave the server's copy of y_(u,i) padded by PRG(tau_{u->i}); that second layer is not
exercised here.)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np
import pytest

from securefed.encoding import CodecConfig, RingBits
from securefed.secagg import AggregationMode, RoundConfig, Stage, UnmaskRefused
from securefed.secagg.masking import Output, round_outputs
from securefed.secagg.messages import (
    BlindedOutput,
    ConsistencyRequest,
    Message,
    UnmaskRequest,
    UnmaskResponse,
)
from securefed.secagg.policy import WeightPolicy
from securefed.secagg.server import Envelope
from securefed.testing import Federation, RoundOutcome, make_federation, resign, run_round
from tests.secagg.test_malicious_server import EquivocatingServer, revealed_owners
from threat_model.attacks import seeded_rng

N = 6
DIM = 16
VICTIM = 5
_FED: list[Federation] = []


def federation() -> Federation:
    if not _FED:
        _FED.append(make_federation(N))
    return _FED[0]


def config(fed: Federation) -> RoundConfig:
    return RoundConfig(
        roster=fed.roster,
        session_id=bytes(range(7, 39)),
        round=1,
        vector_length=DIM,
        codec=CodecConfig(RingBits.BITS32, 16, 8.0),
        mode=AggregationMode.ATTENTION,
        policy=WeightPolicy(k_min=3.0, cap=0.5),
        min_contributors=3,
    )


def weights() -> np.ndarray:
    xi = np.full((N, N), 0.1)
    np.fill_diagonal(xi, 0.5)
    return xi


def inputs() -> dict[int, np.ndarray]:
    rng = seeded_rng(17)
    return {i: rng.uniform(-4.0, 4.0, DIM) for i in range(N)}


def run(
    server_hook: Callable[[Envelope], Sequence[Envelope]],
) -> tuple[RoundOutcome, list[UnmaskResponse]]:
    responses: list[UnmaskResponse] = []

    def record(sender: int, message: Message) -> Sequence[Message]:
        if isinstance(message, UnmaskResponse):
            responses.append(message)
        return (message,)

    fed = federation()
    outcome = run_round(
        config(fed), fed, inputs(), weights=weights(), server_hook=server_hook, client_hook=record
    )
    return outcome, responses


def assert_never_both_shares(responses: list[UnmaskResponse]) -> None:
    senders = [r.sender for r in responses]
    assert len(senders) == len(set(senders)), "a client answered twice"
    for response in responses:
        seeds = {s.owner for s in response.self_seed_shares}
        keys = {s.owner for s in response.mask_key_shares}
        assert not seeds & keys
    _, key_holders = revealed_owners(responses, VICTIM)
    assert key_holders == set(), f"mask-key shares of {VICTIM} revealed by {key_holders}"


def without_victim(survivors: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(v for v in survivors if v != VICTIM)


def test_no_message_can_carry_a_per_target_survivor_set() -> None:
    for message_type in (ConsistencyRequest, UnmaskRequest, BlindedOutput):
        names = {f.name for f in dataclasses.fields(message_type) if f.init}
        assert names <= {
            "session_id",
            "round",
            "survivors",
            "consistency",
            "recipient",
            "vector",
            "signature",
        }, f"{message_type.__name__} grew a field: review R2"
    # Every output's contributor set is derived from the one survivor set.
    u3 = (0, 1, 2, 3, 4, 5)
    for output in round_outputs(config(federation()), u3):
        assert output.contributors(u3) == tuple(v for v in u3 if v != output.target)
    assert Output(0).contributors(u3) == (1, 2, 3, 4, 5)


def test_u_dropped_for_some_outputs_alive_for_others_is_refused() -> None:
    """Clients 0-2 are asked to unmask as if u dropped (mask-key shares of u); 3-5 as if alive."""
    fed = federation()

    def hook(envelope: Envelope) -> Sequence[Envelope]:
        message = envelope.message
        if isinstance(message, UnmaskRequest) and envelope.recipient in (0, 1, 2):
            message = resign(message, fed.server_key, survivors=without_victim(message.survivors))
        return (Envelope(envelope.recipient, message),)

    outcome, responses = run(hook)
    print(f"\n[both-shares] split request: responders={sorted(r.sender for r in responses)}")
    for i in (0, 1, 2):
        assert any(isinstance(e, UnmaskRefused) for e in outcome.client_events[i])
        assert outcome.client_stages[i] is Stage.ABORTED
    assert_never_both_shares(responses)
    assert sorted(r.sender for r in responses) == [3, 4, 5]
    assert not outcome.personalized  # 3 responses < t: nothing unmasked
    assert outcome.server is not None
    assert not outcome.server.blinded_outputs


@pytest.mark.parametrize("forged_first", [False, True])
def test_two_requests_to_the_same_client_get_one_answer(forged_first: bool) -> None:
    """Each client gets the honest request and one calling u dropped, in either order."""
    fed = federation()

    def hook(envelope: Envelope) -> Sequence[Envelope]:
        message = envelope.message
        if not isinstance(message, UnmaskRequest):
            return (envelope,)
        forged = resign(message, fed.server_key, survivors=without_victim(message.survivors))
        pair = [message, forged][:: -1 if forged_first else 1]
        return tuple(Envelope(envelope.recipient, m) for m in pair)

    outcome, responses = run(hook)
    print(
        f"[both-shares] double request (forged first={forged_first}): "
        f"responders={sorted(r.sender for r in responses)}, "
        f"personalized={sorted(outcome.personalized)}"
    )
    assert_never_both_shares(responses)
    assert not outcome.personalized  # every client aborted on the second request
    for i in range(N):
        assert outcome.client_stages[i] is Stage.ABORTED
        if forged_first:
            assert any(isinstance(e, UnmaskRefused) for e in outcome.client_events[i])
    if forged_first:
        assert responses == []


def test_output_claiming_u_dropped_for_one_target_is_refused() -> None:
    """After an honest unmasking, target 0's output claims u was not among its contributors."""
    fed = federation()

    def hook(envelope: Envelope) -> Sequence[Envelope]:
        message = envelope.message
        if isinstance(message, BlindedOutput) and envelope.recipient == 0:
            message = resign(message, fed.server_key, survivors=without_victim(message.survivors))
        return (Envelope(envelope.recipient, message),)

    outcome, responses = run(hook)
    assert_never_both_shares(responses)
    assert 0 not in outcome.personalized
    assert outcome.client_stages[0] is Stage.ABORTED
    assert set(outcome.personalized) == {1, 2, 3, 4, 5}


def test_equivocating_consistency_with_colluders_never_yields_both_shares() -> None:
    """R1 in attention mode. Client 1 is told u dropped, everyone else that it survived; the
    n_C = 3 colluders {2, 3, 4} sign both views. The honest clients are {0, 1, 5}: the "alive"
    view gathers 0, 5 + 3 colluders = t signatures (the server proceeds and learns b_u); the
    "dropped" view only 1 + 3 colluders < t, so client 1 never reveals its share of s_u."""
    fed = federation()
    cfg = config(fed)
    t, n_c = cfg.threshold, cfg.collusion_bound
    colluders = frozenset({2, 3, 4})
    assert len(colluders) == n_c
    attack = EquivocatingServer(fed, cfg, VICTIM, frozenset({1}), colluders)
    run_round(
        cfg,
        fed,
        inputs(),
        weights=weights(),
        server_hook=attack.server_hook,
        client_hook=attack.client_hook,
    )
    responses = attack.recorder.unmask_responses()
    assert responses  # the attack reached the unmasking phase
    seeds, keys = revealed_owners(responses, VICTIM)
    honest_seeds, honest_keys = seeds - colluders, keys - colluders
    print(
        f"[both-shares] equivocation t={t} n_C={n_c}: "
        f"honest b_u-share holders={sorted(honest_seeds)}"
        f" honest s_u-share holders={sorted(honest_keys)}"
    )
    assert len(honest_seeds) + n_c >= t  # b_u is reconstructible (u is a survivor) ...
    assert len(honest_keys) + n_c < t  # ... but s_u is not
