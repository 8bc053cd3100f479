"""Session setup: every client gets the dealer's sketch seed; the server gets none of it."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import pytest

from securefed.errors import ConfigError, RemoteProtocolError
from securefed.secagg import RoundAborted
from securefed.secagg.messages import Message, SealedShare, SketchSeedDelivery
from securefed.secagg.session import (
    SessionSetupClient,
    SessionSetupServer,
    SetupStage,
    commitment_context,
    seed_commitment,
)
from securefed.testing import resign, run_round, run_session_setup
from tests.secagg.conftest import SESSION, config_for, federation, inputs_for


def test_every_client_gets_the_dealers_seed_and_the_server_only_ciphertexts() -> None:
    fed = federation(5)
    clients, server, errors = run_session_setup(fed, session_id=SESSION)
    assert errors == {}
    seeds = {c.sketch_seed for c in clients.values()}
    commitments = {c.commitment for c in clients.values()}
    assert len(seeds) == 1
    assert None not in seeds
    (seed,) = seeds
    assert commitments == {seed_commitment(SESSION, seed)}
    assert server.commitment == seed_commitment(SESSION, seed)
    assert all(c.stage is SetupStage.DONE for c in clients.values())
    # Nothing the server handles contains the seed in the clear.
    relayed = [server.directory().to_bytes()] + [d.to_bytes() for _, d in server.deliveries()]
    assert not any(seed in blob for blob in relayed)


def test_a_tampered_sealed_seed_is_refused() -> None:
    fed = federation(4)

    def tamper(recipient: int, delivery: SketchSeedDelivery) -> Sequence[Message]:
        if recipient == 2:
            ct = bytearray(delivery.sealed.ciphertext)
            ct[-1] ^= 1
            sealed = SealedShare(delivery.sealed.peer, bytes(ct))
            return (resign(delivery, fed.server_key, sealed=sealed),)
        return (delivery,)

    clients, _, errors = run_session_setup(fed, session_id=SESSION, delivery_hook=tamper)
    assert set(errors) == {2}
    assert clients[2].sketch_seed is None
    assert clients[2].stage is SetupStage.FAILED
    assert clients[1].sketch_seed is not None


def test_a_seed_sealed_for_another_client_or_a_forged_commitment_is_refused() -> None:
    fed = federation(4)
    captured: dict[int, SketchSeedDelivery] = {}

    def swap(recipient: int, delivery: SketchSeedDelivery) -> Sequence[Message]:
        captured[recipient] = delivery
        if recipient == 3:  # give client 3 the ciphertext sealed for client 2
            return (resign(delivery, fed.server_key, sealed=captured[2].sealed),)
        if recipient == 2:  # and client 2 a commitment the server made up
            forged = dataclasses.replace(delivery.commitment, commitment=bytes(32))
            return (resign(delivery, fed.server_key, commitment=forged),)
        return (delivery,)

    _, _, errors = run_session_setup(fed, session_id=SESSION, delivery_hook=swap)
    assert set(errors) == {2, 3}


def test_only_the_dealer_may_offer_and_messages_outside_the_session_are_refused() -> None:
    fed = federation(4)
    server = SessionSetupServer(fed.roster, session_id=SESSION, identity=fed.server_key)
    clients = [
        SessionSetupClient(fed.roster, session_id=SESSION, index=i, identity=fed.client_keys[i])
        for i in range(4)
    ]
    for client in clients:
        server.receive(client.start())
    directory = server.directory()
    assert clients[1].receive(directory) == []  # client 1 is not the dealer: it offers nothing
    rogue = clients[1]._offer()  # test-only: force a non-dealer to offer a seed
    with pytest.raises(RemoteProtocolError, match="only the dealer"):
        server.receive(rogue)
    other = SessionSetupClient(
        fed.roster, session_id=bytes(32), index=0, identity=fed.client_keys[0]
    )
    with pytest.raises(RemoteProtocolError, match="another session"):
        server.receive(other.start())
    with pytest.raises(ConfigError):
        SessionSetupClient(fed.roster, session_id=SESSION, index=1, identity=fed.client_keys[0])


def test_a_client_with_another_commitment_signs_another_transcript() -> None:
    """The commitment is bound into every round: a split view aborts before unmasking."""
    fed = federation(5)
    clients, _, _ = run_session_setup(fed, session_id=SESSION)
    commitment = clients[0].commitment
    assert commitment is not None
    context = [commitment_context(commitment)]
    other = {0: [commitment_context(bytes(32))], 1: [commitment_context(bytes(32))]}
    outcome = run_round(config_for(fed), fed, inputs_for(5), context=context, client_context=other)
    assert outcome.result is None
    assert any(isinstance(e, RoundAborted) for e in outcome.server_events)
    agreed = run_round(config_for(fed), fed, inputs_for(5), context=context)
    assert agreed.result is not None
