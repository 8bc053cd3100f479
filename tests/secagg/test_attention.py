"""Attention mode (DESIGN §4c): target-blinded personalized outputs, checked end to end."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pytest

from securefed.crypto import KeyPurpose, derive_directional_key
from securefed.encoding import CodecConfig, FixedPointCodec, RingBits
from securefed.errors import ConfigError
from securefed.secagg import (
    AggregationMode,
    PolicyRefused,
    RoundConfig,
    SecAggClient,
    SecAggServer,
    Stage,
)
from securefed.secagg.messages import KeyDirectory, Message, UnmaskResponse
from securefed.secagg.policy import WeightPolicy, encode_weights
from securefed.secagg.server import Envelope
from securefed.testing import RoundOutcome, resign, run_round
from tests.secagg.conftest import SESSION, federation

DIM = 40
PHASES = [Stage.ADVERTISE, Stage.SHARE, Stage.MASK, Stage.CONSISTENCY, Stage.UNMASK]


def attention_config(
    n: int, *, k_min: float = 1.5, cap: float = 0.8, min_exposure: float = 0.3, round_: int = 1
) -> RoundConfig:
    """A lenient policy: these tests are about the protocol's outputs (random rows at N = 3 have
    only two contributors each and can leave a party an exposure below the default 0.5)."""
    return RoundConfig(
        roster=federation(n).roster,
        session_id=SESSION,
        round=round_,
        vector_length=DIM,
        codec=CodecConfig(RingBits.BITS32, 16, 8.0),
        mode=AggregationMode.ATTENTION,
        policy=WeightPolicy(k_min=k_min, cap=cap, min_exposure=min_exposure),
        min_contributors=1,
    )


def models(n: int) -> dict[int, npt.NDArray[np.float64]]:
    rng = np.random.default_rng(n)
    return {i: rng.uniform(-4.0, 4.0, DIM) for i in range(n)}


def uniform_weights(n: int, self_weight: float = 0.4) -> npt.NDArray[np.float64]:
    weights = np.full((n, n), (1 - self_weight) / (n - 1))
    np.fill_diagonal(weights, self_weight)
    return weights


def reference(
    weights: npt.NDArray[np.float64], target: int, survivors: Sequence[int], n: int
) -> npt.NDArray[np.float64]:
    """u_i renormalised over the surviving contributors (DESIGN §4b), in plain float64."""
    w = models(n)
    contributors = [u for u in survivors if u != target]
    mass = sum(weights[target, u] for u in contributors)
    mixed = sum(weights[target, u] * w[u] for u in contributors) / mass
    return weights[target, target] * w[target] + (1 - weights[target, target]) * mixed


def check_outputs(outcome: RoundOutcome, weights: npt.NDArray[np.float64], n: int) -> None:
    assert outcome.server is not None
    survivors = outcome.server.survivors
    ulp = 2.0**-16
    for target, personalized in outcome.personalized.items():
        contributors = [u for u in survivors if u != target]
        mass = sum(weights[target, u] for u in contributors)
        bound = len(contributors) * ulp * (1 - weights[target, target]) / mass
        assert np.max(np.abs(personalized - reference(weights, target, survivors, n))) <= bound


@pytest.mark.parametrize("n", [3, 5, 8])
def test_every_survivor_gets_its_personalized_model(n: int) -> None:
    rng = np.random.default_rng(7)
    weights = rng.uniform(0.5, 1.0, (n, n))
    np.fill_diagonal(weights, 0)
    weights = 0.6 * weights / weights.sum(axis=1, keepdims=True)
    np.fill_diagonal(weights, 0.4)
    outcome = run_round(attention_config(n), federation(n), models(n), weights=weights)
    assert set(outcome.personalized) == set(range(n))
    assert all(stage is Stage.DONE for stage in outcome.client_stages.values())
    check_outputs(outcome, weights, n)


@pytest.mark.parametrize(
    ("client", "phase"),
    list(itertools.product([0, 3], PHASES)),
    ids=lambda v: getattr(v, "value", str(v)),
)
def test_dropouts_at_every_phase_n5(client: int, phase: Stage) -> None:
    """A contributor (and target) that drops: survivors renormalise over who is left."""
    weights = uniform_weights(5)
    outcome = run_round(
        attention_config(5), federation(5), models(5), weights=weights, dropouts={client: phase}
    )
    assert outcome.server is not None
    assert client not in outcome.personalized
    expected = {i for i in range(5) if i != client}
    assert set(outcome.personalized) == expected
    check_outputs(outcome, weights, 5)


def test_the_server_sees_only_blinded_outputs() -> None:
    n = 5
    weights = uniform_weights(n)
    outcome = run_round(attention_config(n), federation(n), models(n), weights=weights)
    assert outcome.server is not None
    codec = FixedPointCodec(attention_config(n).codec)
    for target, blinded in outcome.server.blinded_outputs.items():
        naive = codec.decode(blinded, n_terms=n - 1)
        true = sum(weights[target, u] * models(n)[u] for u in range(n) if u != target)
        # Pads are uniform in the ring: what the server holds is noise, not the aggregate.
        assert np.median(np.abs(naive - true)) > 1000


def test_target_pads_are_directional_and_never_shared() -> None:
    n = 4
    config = attention_config(n)
    fed = federation(n)
    clients = {i: SecAggClient(config, index=i, identity=fed.client_keys[i]) for i in range(n)}
    adverts = {i: c.start(models(n)[i]) for i, c in clients.items()}
    keys = {}
    for u, i in itertools.permutations(range(n), 2):
        private = clients[u]._target_key  # test-only peek at a client's private target key
        assert private is not None
        peer = config.suite.agreement_public_key(adverts[i].target_key)
        keys[(u, i)] = derive_directional_key(
            private.exchange(peer),
            purpose=KeyPurpose.TARGET,
            context=config.kdf_context,
            sender=u,
            recipient=i,
            sender_public=private.public_key(),
            recipient_public=peer,
        ).material
    assert len(set(keys.values())) == n * (n - 1)
    assert all(keys[(u, i)] != keys[(i, u)] for u, i in itertools.combinations(range(n), 2))

    sent: list[bytes] = []

    def record(sender: int, message: Message) -> Sequence[Message]:
        sent.append(message.to_bytes())
        return (message,)

    outcome = run_round(config, fed, models(n), weights=uniform_weights(n), client_hook=record)
    assert outcome.personalized
    target_private = [
        c._target_key.secret_bytes_for_sharing() for c in clients.values() if c._target_key
    ]
    assert target_private
    # No private target key of these clients -- nor, by construction, of the round's clients --
    # appears in any message: t_u is never Shamir-shared.
    assert not any(key in blob for key in target_private for blob in sent)


def test_keys_rotate_between_rounds() -> None:
    n = 4
    fed = federation(n)
    seen = []
    for round_ in (1, 2):
        client = SecAggClient(
            attention_config(n, round_=round_), index=0, identity=fed.client_keys[0]
        )
        advert = client.start(models(n)[0])
        seen.append((advert.encryption_keys[0], advert.mask_key, advert.target_key))
    assert all(a != b for a, b in zip(seen[0], seen[1], strict=True))


def test_weight_concentration_is_refused_by_every_contributor() -> None:
    """Target 0's whole off-diagonal weight on victim 1: every client refuses the broadcast xi."""
    n = 5
    weights = uniform_weights(n)
    weights[0] = [0.4, 0.6, 0.0, 0.0, 0.0]
    sent: list[Message] = []
    outcome = run_round(
        attention_config(n, k_min=2.0, cap=0.6),
        federation(n),
        models(n),
        weights=weights,
        client_hook=lambda s, m: (sent.append(m), (m,))[1],
    )
    assert outcome.result is None
    assert not outcome.personalized
    for i in range(n):
        refusals = [e for e in outcome.client_events[i] if isinstance(e, PolicyRefused)]
        assert refusals
        assert "target 0" in refusals[0].reason
    assert not any(isinstance(m, UnmaskResponse) for m in sent)


def test_different_weights_for_different_clients_abort_before_unmasking() -> None:
    n = 5
    fed = federation(n)
    weights = uniform_weights(n)
    other = uniform_weights(n, self_weight=0.3)
    sent: list[Message] = []

    def hook(envelope: Envelope) -> Sequence[Envelope]:
        message = envelope.message
        if isinstance(message, KeyDirectory) and envelope.recipient in (0, 1):
            message = resign(message, fed.server_key, weights=encode_weights(other))
        return (Envelope(envelope.recipient, message),)

    outcome = run_round(
        attention_config(n),
        fed,
        models(n),
        weights=weights,
        server_hook=hook,
        client_hook=lambda s, m: (sent.append(m), (m,))[1],
    )
    assert not any(isinstance(m, UnmaskResponse) for m in sent)
    assert not outcome.personalized


def test_malformed_weights_abort_the_clients() -> None:
    n = 4
    fed = federation(n)

    def hook(envelope: Envelope) -> Sequence[Envelope]:
        message = envelope.message
        if isinstance(message, KeyDirectory):
            message = resign(message, fed.server_key, weights=b"\x00" * 7)
        return (Envelope(envelope.recipient, message),)

    outcome = run_round(
        attention_config(n), fed, models(n), weights=uniform_weights(n), server_hook=hook
    )
    assert all(stage is Stage.ABORTED for stage in outcome.client_stages.values())


def test_server_needs_weights_exactly_in_attention_mode() -> None:
    n = 4
    config = attention_config(n)
    with pytest.raises(ConfigError, match="weight matrix"):
        SecAggServer(config, identity=federation(n).server_key)
    with pytest.raises(ConfigError, match="no weights"):
        SecAggServer(
            dataclasses.replace(config, mode=AggregationMode.SUM),
            identity=federation(n).server_key,
            weights=uniform_weights(n),
        )
