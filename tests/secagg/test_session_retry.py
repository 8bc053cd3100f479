"""The sketch-seed setup dealt again without a dealer that offered no usable seed (issue 20).

The server's public checks on a dealer's signed offer, the smaller directory a retry sends, and
what a client accepts of it: only before its seed arrived, only the earlier directory less (at
least) its dealer.
"""

from __future__ import annotations

import dataclasses

import pytest

from securefed.errors import LocalProtocolError, RemoteProtocolError
from securefed.secagg.messages import (
    Message,
    SealedShare,
    SessionKey,
    SessionKeyDirectory,
    SketchSeedOffer,
    decode,
    sign_message,
)
from securefed.secagg.session import (
    SEALED_BYTES,
    SETUP_ROUND,
    SessionSetupClient,
    SessionSetupServer,
    SetupStage,
    seed_commitment,
)
from securefed.testing import Federation, resign
from tests.secagg.conftest import SESSION, federation


def wire(message: Message) -> Message:
    return decode(message.to_bytes())


def started(fed: Federation, n: int) -> tuple[dict[int, SessionSetupClient], SessionSetupServer]:
    server = SessionSetupServer(fed.roster, session_id=SESSION, identity=fed.server_key)
    clients = {
        i: SessionSetupClient(fed.roster, session_id=SESSION, index=i, identity=fed.client_keys[i])
        for i in range(n)
    }
    for client in clients.values():
        server.receive(wire(client.start()))
    return clients, server


def offers(clients: dict[int, SessionSetupClient], directory: SessionKeyDirectory) -> list[Message]:
    out: list[Message] = []
    for client in clients.values():
        out += client.receive(wire(directory))
    return out


def test_a_silent_dealer_is_left_out_and_the_next_lowest_index_deals() -> None:
    fed = federation(5)
    clients, server = started(fed, 5)
    first = offers({i: c for i, c in clients.items() if i != 0}, server.directory())
    assert first == []  # the dealer, client 0, got the directory too late (or stayed silent)
    assert server.dealer == 0
    assert not server.offered
    assert server.rejected is None  # silence proves nothing
    assert server.leave_out() == 0
    assert server.clients == (1, 2, 3, 4)
    again = server.directory()
    assert [k.sender for k in again.keys] == [1, 2, 3, 4]
    (offer,) = offers({i: c for i, c in clients.items() if i != 0}, again)
    assert isinstance(offer, SketchSeedOffer)
    assert offer.sender == 1
    server.receive(wire(offer))
    assert server.offered
    for recipient, delivery in server.deliveries():
        clients[recipient].receive(wire(delivery))
    seeds = {clients[i].sketch_seed for i in range(1, 5)}
    assert len(seeds) == 1
    (seed,) = seeds
    assert seed is not None
    assert server.commitment == seed_commitment(SESSION, seed)
    assert clients[0].sketch_seed is None
    with pytest.raises(LocalProtocolError):
        server.leave_out()  # the seed was offered: nobody is left out any more


def test_a_left_out_dealers_session_key_does_not_come_back() -> None:
    fed = federation(4)
    _, server = started(fed, 4)
    server.leave_out()
    again = SessionSetupClient(fed.roster, session_id=SESSION, index=0, identity=fed.client_keys[0])
    with pytest.raises(RemoteProtocolError, match="left out of the setup"):
        server.receive(wire(again.start()))
    assert server.clients == (1, 2, 3)


def test_a_client_accepts_a_directory_dealt_again_only_as_the_earlier_one_less_its_dealer() -> None:
    fed = federation(5)
    clients, server = started(fed, 5)
    directory = server.directory()
    assert clients[2].receive(wire(directory)) == []
    # the same directory again: its dealer (client 0) is still in it
    with pytest.raises(RemoteProtocolError, match="leave its last dealer out"):
        clients[2].receive(wire(directory))
    assert clients[2].stage is SetupStage.FAILED

    assert clients[3].receive(wire(directory)) == []
    # a smaller directory in which client 4's key was replaced by another key of client 4's
    other = SessionSetupClient(fed.roster, session_id=SESSION, index=4, identity=fed.client_keys[4])
    swapped = tuple(
        wire(other.start()) if k.sender == 4 else k for k in directory.keys if k.sender != 0
    )
    forged = resign(directory, fed.server_key, keys=swapped)
    with pytest.raises(RemoteProtocolError, match="may only leave session keys out"):
        clients[3].receive(wire(forged))


def test_a_client_that_holds_its_seed_refuses_any_other_directory() -> None:
    """One seed per client: a dealer, or a client that got the seed, takes no second one."""
    fed = federation(4)
    clients, server = started(fed, 4)
    directory = server.directory()
    for offer in offers(clients, directory):
        server.receive(wire(offer))
    for recipient, delivery in server.deliveries():
        clients[recipient].receive(wire(delivery))
    smaller = resign(directory, fed.server_key, keys=directory.keys[1:])
    for index in (0, 1):
        seed = clients[index].sketch_seed
        assert seed is not None
        with pytest.raises(RemoteProtocolError, match="not expected now"):
            clients[index].receive(wire(smaller))


def dealer_offer(fed: Federation, n: int) -> tuple[SessionSetupServer, SketchSeedOffer]:
    clients, server = started(fed, n)
    (offer,) = offers(clients, server.directory())
    assert isinstance(offer, SketchSeedOffer)
    return server, offer


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        (
            lambda o: {"sealed": o.sealed[:-1]},
            "does not seal the seed for exactly every other client",
        ),
        (
            lambda o: {"sealed": (*o.sealed, SealedShare(7, o.sealed[0].ciphertext))},
            "does not seal the seed for exactly every other client",
        ),
        (
            lambda o: {
                "sealed": (SealedShare(o.sealed[0].peer, bytes(SEALED_BYTES - 1)), *o.sealed[1:])
            },
            f"a sealed seed is not {SEALED_BYTES} bytes long",
        ),
    ],
    ids=["a-recipient-missing", "a-recipient-outside-the-directory", "a-sealed-seed-cut-short"],
)
def test_a_signed_offer_that_fails_the_public_checks_is_proof_against_its_dealer(
    changes: object, problem: str
) -> None:
    fed = federation(5)
    server, offer = dealer_offer(fed, 5)
    bad = resign(offer, fed.client_keys[0], **changes(offer))  # type: ignore[operator]
    with pytest.raises(RemoteProtocolError, match="signed offer is bad"):
        server.receive(wire(bad))
    assert server.rejected is not None
    assert problem in server.rejected
    assert not server.offered
    assert server.leave_out() == 0
    assert server.rejected is None


def test_an_offer_with_a_commitment_its_dealer_did_not_sign_is_proof_against_the_dealer() -> None:
    fed = federation(4)
    server, offer = dealer_offer(fed, 4)
    forged = dataclasses.replace(offer.commitment, commitment=bytes(32))  # signature now stale
    bad = resign(offer, fed.client_keys[0], commitment=forged)
    with pytest.raises(RemoteProtocolError, match="signed offer is bad"):
        server.receive(wire(bad))
    assert server.rejected is not None
    assert server.rejected.startswith("its commitment")


def test_an_offer_not_signed_by_the_dealer_proves_nothing() -> None:
    fed = federation(4)
    server, offer = dealer_offer(fed, 4)
    unsigned = dataclasses.replace(offer, signature=bytes(len(offer.signature)))
    with pytest.raises(RemoteProtocolError, match="bad signature"):
        server.receive(wire(unsigned))
    assert server.rejected is None
    assert not server.offered


def test_a_session_key_that_does_not_load_is_refused_before_the_directory() -> None:
    """Otherwise every client would fail on the directory: one client would stop the setup."""
    fed = federation(4)
    server = SessionSetupServer(fed.roster, session_id=SESSION, identity=fed.server_key)
    bad = sign_message(
        SessionKey, fed.client_keys[1], SESSION, SETUP_ROUND, sender=1, agreement_key=b"\x01"
    )
    with pytest.raises(RemoteProtocolError, match="does not load"):
        server.receive(wire(bad))
    assert server.clients == ()
