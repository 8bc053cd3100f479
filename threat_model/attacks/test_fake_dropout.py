"""Fake dropout: the server calls an alive client "dropped" after it has received its input.

ADVERSARY: a malicious server (it decides U3, re-signs any server message with its roster key)
that wants victim u's plaintext input x_u in sum mode. It receives u's masked input
y_u = enc(x_u) + PRG(b_u) + sum_v +-PRG(s_uv) and keeps it, but leaves u out of U3 -- "u dropped
before masking" -- so that the honest clients reveal their shares of u's mask key s_u (what they
do for every dropped client). With s_u it can compute every pairwise mask s_uv and strip them
from y_u. It then also asks for u's self-mask seed b_u, by a second unmask request that calls u
alive.

ASSUMPTIONS: pinned roster, N = 5, t = 4, no colluding client (server alone). Honest clients
reveal shares only for the one U3 they signed in the consistency check, and for each client
either its self-seed share (u in U3) or its mask-key share (u not in U3), never both.

DEFENCE (expected and measured): double masking plus "never both shares". The fake dropout does
give the server s_u (by design: it cannot be told from a real dropout, and the victim's own
ConsistencyRequest never comes) -- but no honest client reveals a share of b_u, so y_u stripped of
its pairwise masks is still enc(x_u) + PRG(b_u), uniform in the ring and nowhere near x_u
(MEASURED: median error 1.3e4-1.9e4 over 6 runs against |x_u| <= 4; the same stripping given
b_u by a test-only oracle recovers x_u to 1.5e-5, so b_u is the only thing missing). The sum the
server obtains excludes u. A second unmask request that calls u alive gets no answer:
before the first, it names a survivor set other than the signed one (``UnmaskRefused``, abort);
after it, the client has finished the round. Telling only some clients that u dropped (an
equivocation) is caught by the consistency check: see `tests/secagg/test_malicious_server.py`
and `threat_model/attacks/test_both_shares_across_targets.py`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pytest

from securefed.encoding import FixedPointCodec
from securefed.secagg import RoundConfig, Stage, UnmaskRefused
from securefed.secagg.masking import Output, self_seed_commitment, unmask_sum
from securefed.secagg.messages import (
    AdvertiseKeys,
    MaskedInput,
    Message,
    ShareKeys,
    UnmaskRequest,
    UnmaskResponse,
)
from securefed.secagg.server import Envelope
from securefed.testing import Federation, make_federation, resign, run_round
from tests.secagg.conftest import config_for
from threat_model.attacks import seeded_rng

N = 5
DIM = 32
VICTIM = 2
_FED: list[Federation] = []


def federation() -> Federation:
    if not _FED:
        _FED.append(make_federation(N))
    return _FED[0]


def inputs() -> dict[int, np.ndarray]:
    rng = seeded_rng(23)
    return {i: rng.uniform(-4.0, 4.0, DIM) for i in range(N)}


class FakeDropout:
    """Client hook: the server keeps the victim's messages but acts as if its input never came."""

    def __init__(self) -> None:
        self.kept: list[MaskedInput] = []
        self.responses: list[UnmaskResponse] = []
        self.mask_keys: dict[int, bytes] = {}  # advertised public mask keys
        self.victim_sent: list[str] = []
        self.commitment = b""

    def __call__(self, sender: int, message: Message) -> Sequence[Message]:
        if sender == VICTIM:
            self.victim_sent.append(type(message).__name__)
        if isinstance(message, AdvertiseKeys):
            self.mask_keys[sender] = message.mask_key
        if sender == VICTIM and isinstance(message, ShareKeys):
            self.commitment = message.commitment.self_seed_commitment
        if isinstance(message, UnmaskResponse):
            self.responses.append(message)
        if sender == VICTIM and isinstance(message, MaskedInput):
            self.kept.append(message)  # received and kept, then "not received"
            return ()
        return (message,)


def self_seed_holders(responses: list[UnmaskResponse], owner: int) -> set[int]:
    return {r.sender for r in responses if any(s.owner == owner for s in r.self_seed_shares)}


def mask_key_holders(responses: list[UnmaskResponse], owner: int) -> set[int]:
    return {r.sender for r in responses if any(s.owner == owner for s in r.mask_key_shares)}


def strip_masks(
    config: RoundConfig,
    y_u: np.ndarray,
    mask_key: bytes,
    public: dict[int, bytes],
    self_seed: bytes | None = None,
) -> np.ndarray:
    """The attacker's best use of s_u: remove every pairwise mask u added (the server's own
    unmasking code), and the self mask too if it had b_u."""
    suite = config.mask_suite
    private = suite.agreement_private_key(mask_key)
    secrets = {
        (VICTIM, v): private.exchange(suite.agreement_public_key(key))
        for v, key in public.items()
        if v != VICTIM
    }
    # unmask_sum(owner=u, peer=v, undo=True) cancels the mask u applied for v.
    seeds = {} if self_seed is None else {VICTIM: self_seed}
    return unmask_sum(
        [y_u], config=config, output=Output(), self_seeds=seeds, dropped_secrets=secrets
    )


class RecordingRandom:
    """``random_bytes`` for the clients that remembers what it returned (test-only oracle)."""

    def __init__(self) -> None:
        self.drawn: list[bytes] = []

    def __call__(self, n: int) -> bytes:
        self.drawn.append(os.urandom(n))
        return self.drawn[-1]


def test_fake_dropout_yields_the_mask_key_but_never_the_self_seed() -> None:
    fed = federation()
    config = config_for(fed, dim=DIM)
    attack = FakeDropout()
    randomness = RecordingRandom()
    outcome = run_round(config, fed, inputs(), client_hook=attack, random_bytes=randomness)
    server = outcome.server
    assert server is not None
    assert outcome.result is not None, outcome.server_events

    # The fake dropout "worked" as far as it can: the server holds y_u and s_u ...
    (y_u,) = attack.kept
    assert VICTIM in server.reconstructed_mask_keys
    assert mask_key_holders(attack.responses, VICTIM) == {0, 1, 3, 4}
    assert outcome.result.contributors == (0, 1, 3, 4)  # ... and u is not in the sum
    expected = sum(inputs()[i] for i in (0, 1, 3, 4))
    assert np.max(np.abs(outcome.result.values - expected)) <= outcome.result.error_bound
    # ... but no honest client revealed a share of b_u: it cannot be reconstructed.
    assert self_seed_holders(attack.responses, VICTIM) == set()
    assert VICTIM not in server.reconstructed_self_seeds
    assert attack.victim_sent == [  # nothing after its input
        "AdvertiseKeys",
        "ShareKeys",
        "ShareReceipt",
        "MaskedInput",
    ]

    # Stripping every pairwise mask from y_u leaves enc(x_u) + PRG(b_u): not x_u.
    codec = FixedPointCodec(config.codec)
    s_u = server.reconstructed_mask_keys[VICTIM]
    guess = codec.decode(strip_masks(config, y_u.vector, s_u, attack.mask_keys))
    error = np.abs(guess - inputs()[VICTIM])
    # Control: b_u is the only thing missing. An oracle that finds b_u among the clients' random
    # draws (by its signed commitment) makes the same stripping recover x_u exactly.
    (b_u,) = [
        seed
        for seed in randomness.drawn
        if len(seed) == 32 and self_seed_commitment(config, VICTIM, seed) == attack.commitment
    ]
    oracle = codec.decode(strip_masks(config, y_u.vector, s_u, attack.mask_keys, b_u))
    oracle_error = np.max(np.abs(oracle - inputs()[VICTIM]))
    print(
        f"\n[fake-dropout] s_u without b_u: median |guess - x_u| = {np.median(error):.3g} "
        f"(|x_u| <= 4); with b_u (oracle): max error {oracle_error:.2g}"
    )
    assert oracle_error <= codec.decode_error_bound(1)
    assert np.mean(error > 1.0) > 0.9


@pytest.mark.parametrize("forged_first", [False, True])
def test_asking_for_the_self_seed_as_well_gets_no_answer(forged_first: bool) -> None:
    """After the fake dropout, each client also gets an UnmaskRequest calling u alive."""
    fed = federation()
    config = config_for(fed, dim=DIM)
    attack = FakeDropout()

    def hook(envelope: Envelope) -> Sequence[Envelope]:
        message = envelope.message
        if not isinstance(message, UnmaskRequest):
            return (envelope,)
        alive = tuple(sorted({*message.survivors, VICTIM}))
        forged = resign(message, fed.server_key, survivors=alive)
        pair = (forged, message) if forged_first else (message, forged)
        return tuple(Envelope(envelope.recipient, m) for m in pair)

    outcome = run_round(config, fed, inputs(), client_hook=attack, server_hook=hook)
    senders = [r.sender for r in attack.responses]
    print(
        f"[fake-dropout] second request (forged first={forged_first}): responders={senders}, "
        f"b_u holders={sorted(self_seed_holders(attack.responses, VICTIM))}"
    )
    assert len(senders) == len(set(senders)), "a client answered twice"
    assert self_seed_holders(attack.responses, VICTIM) == set()
    if forged_first:
        assert senders == []
        for i in (0, 1, 3, 4):
            assert outcome.client_stages[i] is Stage.ABORTED
            assert any(isinstance(e, UnmaskRefused) for e in outcome.client_events[i])
        assert outcome.result is None
    else:
        assert sorted(senders) == [0, 1, 3, 4]
        assert all(outcome.client_stages[i] is Stage.DONE for i in (0, 1, 3, 4))
