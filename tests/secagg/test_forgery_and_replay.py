"""Forged, replayed, duplicated, reordered and out-of-range messages (DESIGN §3, §8).

Client faults never abort the server: the message is refused (MessageRejected) and the client
counts as dropped. Server faults abort the client that sees them.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence

import numpy as np
import pytest

from securefed.crypto import KeyPurpose, derive_directional_key, vss
from securefed.errors import EncodingRangeError, LocalProtocolError, RemoteProtocolError
from securefed.secagg import (
    ClientsDropped,
    MessageRejected,
    SecAggClient,
    SecAggServer,
    ShareRejected,
    Stage,
)
from securefed.secagg.messages import (
    Abort,
    AdvertiseKeys,
    ConsistencyRequest,
    MaskedInput,
    Message,
    RevealedShare,
    ShareKeys,
    UnmaskRequest,
    UnmaskResponse,
)
from securefed.secagg.server import Envelope
from securefed.testing import RoundOutcome, resign, run_round
from tests.secagg.conftest import SESSION, config_for, federation, inputs_for


def rejected(outcome: RoundOutcome) -> list[MessageRejected]:
    return [e for e in outcome.server_events if isinstance(e, MessageRejected)]


def assert_correct_sum(outcome: RoundOutcome, n: int, contributors: tuple[int, ...]) -> None:
    assert outcome.result is not None, outcome.server_events
    assert outcome.result.contributors == contributors
    expected = sum(inputs_for(n)[i] for i in contributors)
    assert np.max(np.abs(outcome.result.values - expected)) <= outcome.result.error_bound


def capture_round(
    n: int, round_: int, session: bytes = SESSION
) -> dict[tuple[int, type[Message]], Message]:
    """All client messages of one honest round, by (sender, type)."""
    fed = federation(n)
    captured: dict[tuple[int, type[Message]], Message] = {}

    def hook(sender: int, message: Message) -> Sequence[Message]:
        captured[(sender, type(message))] = message
        return (message,)

    config = config_for(fed, round_=round_)
    if session != SESSION:
        config = type(config)(fed.roster, session, round_, config.vector_length, config.codec)
    run_round(config, fed, inputs_for(n), client_hook=hook)
    return captured


@pytest.mark.parametrize("kind", [AdvertiseKeys, ShareKeys, MaskedInput])
@pytest.mark.parametrize("source", ["other-round", "other-session"])
def test_replayed_client_message_is_rejected(kind: type[Message], source: str) -> None:
    """Client 2's message from another round or session replaces its real one."""
    old = capture_round(5, round_=0) if source == "other-round" else capture_round(5, 1, bytes(32))
    fed = federation(5)

    def hook(sender: int, message: Message) -> Sequence[Message]:
        if sender == 2 and isinstance(message, kind):
            return (old[(2, kind)],)
        return (message,)

    outcome = run_round(config_for(fed), fed, inputs_for(5), client_hook=hook)
    assert any(e.sender == 2 and "another session or round" in e.reason for e in rejected(outcome))
    assert_correct_sum(outcome, 5, (0, 1, 3, 4))


def test_message_from_outside_the_roster_is_rejected() -> None:
    fed, stranger = federation(5), federation(6)

    def hook(sender: int, message: Message) -> Sequence[Message]:
        if sender == 0 and isinstance(message, AdvertiseKeys):
            # index 5 does not exist in a 5-client roster; index 0 signed by a stranger's key
            return (
                resign(message, stranger.client_keys[5], sender=5),
                resign(message, stranger.client_keys[0]),
            )
        return (message,)

    outcome = run_round(config_for(fed), fed, inputs_for(5), client_hook=hook)
    reasons = [e.reason for e in rejected(outcome)]
    assert any("not in the roster" in r for r in reasons)
    assert any("bad signature" in r for r in reasons)
    assert_correct_sum(outcome, 5, (1, 2, 3, 4))


def test_tampered_masked_input_is_rejected() -> None:
    fed = federation(5)

    def hook(sender: int, message: Message) -> Sequence[Message]:
        if sender == 1 and isinstance(message, MaskedInput):
            vector = message.vector.copy()
            vector[0] += 1
            forged = MaskedInput(
                message.session_id, message.round, 1, None, vector, message.signature
            )
            return (forged,)
        return (message,)

    outcome = run_round(config_for(fed), fed, inputs_for(5), client_hook=hook)
    assert any(e.sender == 1 and "bad signature" in e.reason for e in rejected(outcome))
    assert_correct_sum(outcome, 5, (0, 2, 3, 4))


@pytest.mark.parametrize("phase", [ShareKeys, MaskedInput, UnmaskResponse])
def test_duplicated_client_messages_change_nothing(phase: type[Message]) -> None:
    fed = federation(5)

    def hook(sender: int, message: Message) -> Sequence[Message]:
        return (message, message) if isinstance(message, phase) else (message,)

    outcome = run_round(config_for(fed), fed, inputs_for(5), client_hook=hook)
    assert all("duplicate" in e.reason for e in rejected(outcome))
    assert len(rejected(outcome)) == 5
    assert_correct_sum(outcome, 5, (0, 1, 2, 3, 4))


def test_duplicated_and_reordered_server_messages_change_nothing() -> None:
    fed = federation(5)
    shuffler = random.Random(7)

    def duplicate(envelope: Envelope) -> Sequence[Envelope]:
        return (envelope, envelope)

    def reorder(envelopes: list[Envelope]) -> list[Envelope]:
        shuffled = list(envelopes)
        shuffler.shuffle(shuffled)
        return shuffled

    outcome = run_round(
        config_for(fed), fed, inputs_for(5), server_hook=duplicate, order_hook=reorder
    )
    assert outcome.client_errors == {}
    assert_correct_sum(outcome, 5, (0, 1, 2, 3, 4))


def test_out_of_order_server_message_aborts_the_client() -> None:
    fed = federation(5)
    config = config_for(fed)
    client = SecAggClient(config, index=0, identity=fed.client_keys[0])
    client.start(inputs_for(5)[0])
    server = SecAggServer(config, identity=fed.server_key)
    early = resign(
        UnmaskRequest(SESSION, 1, (0, 1, 2, 3), (), b""), fed.server_key
    )  # an unmask request before any key exchange
    with pytest.raises(RemoteProtocolError, match="not allowed"):
        client.receive(early)
    assert client.stage is Stage.ABORTED
    with pytest.raises(LocalProtocolError):
        client.receive(early)
    server.receive(early)  # a server message sent to the server is refused, not fatal
    assert isinstance(server.drain_events()[0], MessageRejected)


def test_client_message_in_the_wrong_phase_is_rejected() -> None:
    old = capture_round(5, round_=1)
    fed = federation(5)
    server = SecAggServer(config_for(fed), identity=fed.server_key)
    server.receive(old[(0, MaskedInput)])  # the server is still collecting advertisements
    (event,) = server.drain_events()
    assert isinstance(event, MessageRejected)
    assert "not allowed" in event.reason


def test_server_message_with_a_forged_signature_aborts_the_client() -> None:
    fed, other = federation(5), federation(6)

    def hook(envelope: Envelope) -> Sequence[Envelope]:
        if isinstance(envelope.message, ConsistencyRequest) and envelope.recipient == 3:
            return (Envelope(3, resign(envelope.message, other.server_key)),)
        return (envelope,)

    outcome = run_round(config_for(fed), fed, inputs_for(5), server_hook=hook)
    assert outcome.client_stages[3] is Stage.ABORTED
    assert "bad signature" in str(outcome.client_errors[3].__cause__)
    assert_correct_sum(outcome, 5, (0, 1, 2, 3, 4))  # 3 had sent its input; 4 > t still answer


def corrupt_share(response: UnmaskResponse, owner: int) -> tuple[RevealedShare, ...]:
    shares = []
    for item in response.self_seed_shares:
        revealed = item
        if item.owner == owner:
            share = vss.Share.from_bytes(item.share)
            bad = vss.Share(share.x, (share.y + 1) % vss.ORDER)
            revealed = RevealedShare(owner, bad.to_bytes())
        shares.append(revealed)
    return tuple(shares)


def test_corrupted_share_is_detected_named_and_ignored() -> None:
    """Client 2 (malicious) reveals a wrong share of client 0's self seed, signed by itself."""
    fed = federation(7)

    def hook(sender: int, message: Message) -> Sequence[Message]:
        if sender == 2 and isinstance(message, UnmaskResponse):
            return (
                resign(message, fed.client_keys[2], self_seed_shares=corrupt_share(message, 0)),
            )
        return (message,)

    outcome = run_round(config_for(fed), fed, inputs_for(7), client_hook=hook)
    flagged = [e for e in outcome.server_events if isinstance(e, ShareRejected)]
    assert flagged
    assert flagged[0].owner == 0
    assert flagged[0].holders == (2,)
    assert_correct_sum(outcome, 7, tuple(range(7)))


def test_corrupted_share_with_only_t_responders_aborts() -> None:
    fed = federation(5)  # t = 4: with one silent client, every subset includes the bad share

    def hook(sender: int, message: Message) -> Sequence[Message]:
        if sender == 2 and isinstance(message, UnmaskResponse):
            return (
                resign(message, fed.client_keys[2], self_seed_shares=corrupt_share(message, 0)),
            )
        return (message,)

    outcome = run_round(
        config_for(fed), fed, inputs_for(5), client_hook=hook, dropouts={4: Stage.UNMASK}
    )
    assert outcome.aborted
    assert outcome.result is None


def test_out_of_range_input_is_refused_locally_and_the_round_goes_on() -> None:
    fed = federation(5)
    config = config_for(fed)
    client = SecAggClient(config, index=1, identity=fed.client_keys[1])
    bad = inputs_for(5)[1].copy()
    bad[3] = config.codec.value_bound * 2
    with pytest.raises(EncodingRangeError):
        client.start(bad)
    assert client.stage is Stage.IDLE  # state intact: it can start again with valid input
    client.start(inputs_for(5)[1])
    assert client.stage is Stage.ADVERTISE
    outcome = run_round(config, fed, inputs_for(5), dropouts={1: Stage.ADVERTISE})
    assert any(isinstance(e, ClientsDropped) and e.clients == (1,) for e in outcome.server_events)
    assert_correct_sum(outcome, 5, (0, 2, 3, 4))


def test_share_keys_are_directional_and_nonces_never_repeat() -> None:
    """R3: key(u->v) != key(v->u), all keys distinct, no (key, nonce) pair repeats in a round."""
    fed = federation(5)
    config = config_for(fed)
    sealed: list[bytes] = []

    def hook(sender: int, message: Message) -> Sequence[Message]:
        if isinstance(message, ShareKeys):
            sealed.extend(d.ciphertext for d in message.dealt)
        return (message,)

    clients = {i: SecAggClient(config, index=i, identity=fed.client_keys[i]) for i in range(5)}
    adverts = {i: c.start(inputs_for(5)[i]) for i, c in clients.items()}
    keys = {}
    for u, v in itertools.permutations(range(5), 2):
        private = clients[u]._encryption_keys[v]  # test-only peek: u's private key for v
        peer = config.suite.agreement_public_key(adverts[v].encryption_keys[u if u < v else u - 1])
        keys[(u, v)] = derive_directional_key(
            private.exchange(peer),
            purpose=KeyPurpose.SHARE,
            context=config.kdf_context,
            sender=u,
            recipient=v,
            sender_public=private.public_key(),
            recipient_public=peer,
        ).material
    assert len(set(keys.values())) == 20
    assert all(keys[(u, v)] != keys[(v, u)] for u, v in itertools.combinations(range(5), 2))

    run_round(config, fed, inputs_for(5), client_hook=hook)
    nonces = [c[:12] for c in sealed]
    assert len(sealed) == 20
    assert len(set(nonces)) == len(nonces)


def test_corrupted_share_outside_the_first_subset_is_still_reported() -> None:
    """Holder 6's share is never needed (0..4 reconstruct), but it is checked and named."""
    fed = federation(7)

    def hook(sender: int, message: Message) -> Sequence[Message]:
        if sender == 6 and isinstance(message, UnmaskResponse):
            return (
                resign(message, fed.client_keys[6], self_seed_shares=corrupt_share(message, 0)),
            )
        return (message,)

    outcome = run_round(config_for(fed), fed, inputs_for(7), client_hook=hook)
    flagged = [(e.owner, e.holders) for e in outcome.server_events if isinstance(e, ShareRejected)]
    assert flagged == [(0, (6,))]
    assert_correct_sum(outcome, 7, tuple(range(7)))


def test_client_forgets_its_secrets_when_the_server_aborts() -> None:
    fed = federation(5)
    client = SecAggClient(config_for(fed), index=2, identity=fed.client_keys[2])
    client.start(inputs_for(5)[2])
    abort = resign(Abort(SESSION, 1, "test", b""), fed.server_key)
    assert client.receive(abort) == []
    assert client.stage is Stage.ABORTED
    assert client._mask_key is None  # test-only peek: secrets are dropped
    assert client._values is None


def test_a_delayed_message_arriving_after_its_phase_is_refused_as_late() -> None:
    """Client 3's ShareKeys is held back and arrives while the server collects masked inputs."""
    fed = federation(5)
    held: list[tuple[int, Message]] = []

    def hold(sender: int, message: Message) -> Sequence[Message]:
        if sender == 3 and isinstance(message, ShareKeys):
            held.append((sender, message))
            return ()
        return (message,)

    def release(stage: Stage) -> Sequence[tuple[int, Message]]:
        if stage is Stage.MASK and held:
            return [held.pop()]
        return ()

    outcome = run_round(
        config_for(fed), fed, inputs_for(5), client_hook=hold, before_advance=release
    )
    late = [e for e in rejected(outcome) if e.sender == 3]
    assert late
    assert "not allowed" in late[0].reason
    assert_correct_sum(outcome, 5, (0, 1, 2, 4))
