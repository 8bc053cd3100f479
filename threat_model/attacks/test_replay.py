"""Replay: validly signed messages from an earlier round or another session, played again.

ADVERSARY: a network attacker or a malicious server that recorded every message of an earlier
round of the same session, or of another session over the same roster (all of it authentic,
signed by the roster keys), and plays it into the current round: as it is, or with its
``session_id`` / ``round`` fields rewritten to the current ones (it cannot re-sign as a client;
the server could re-sign its own messages, but then nothing is replayed -- that is the malicious
server of the other attack files). Goals: make a client act on stale state (an old survivor set
calling a live client dropped, an old key directory with keys whose shares it could open), count
old consistency signatures towards the threshold t, or slip an old input into the sum.

ASSUMPTIONS: pinned roster, N = 5, t = 4; rounds differ in their round number, sessions in their
32-byte session id; every message's signature covers a type label, the session id and the round
(`securefed/secagg/messages.py`), and every role checks both before acting
(`securefed/secagg/verify.py`).

DEFENCE (expected and measured):
* a server message replayed as it is (key directory, share bundle, consistency request, unmask
  request; from an earlier round or another session) aborts the client that gets it ("from
  another session or round"); it reveals nothing afterwards;
* the same message relabelled to the current session and round fails its signature ("bad
  signature"), for server messages at the client and for client messages at the server (the
  client is counted as dropped and the sum is over the others);
* consistency signatures of an earlier round padded into the current unmask request do not
  count: the client sees fewer than t signatures on its own transcript and refuses;
* the session setup's sealed sketch seed replayed from another session is refused.
A client that is made to start the same (session, round) twice is stopped by its persisted
``RoundGuard`` (`tests/secagg/test_replay.py`); client messages replayed as they are into a round
are refused by the server (`tests/secagg/test_forgery_and_replay.py`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TypeVar

import numpy as np
import pytest

from securefed.secagg import MessageRejected, RoundConfig, Stage
from securefed.secagg.messages import (
    ConsistencyRequest,
    ConsistencySignature,
    KeyDirectory,
    MaskedInput,
    Message,
    ShareBundle,
    SketchSeedDelivery,
    UnmaskRequest,
    UnmaskResponse,
)
from securefed.secagg.server import Envelope
from securefed.secagg.session import SetupStage
from securefed.testing import Federation, RoundOutcome, make_federation, resign, run_round
from securefed.testing import run_session_setup as setup
from tests.secagg.conftest import config_for
from threat_model.attacks import seeded_rng

N = 5
DIM = 16
SESSION = bytes(range(100, 132))
OTHER_SESSION = bytes(range(200, 232))
ROUND = 2
VICTIM = 1
_FED: list[Federation] = []


def federation() -> Federation:
    if not _FED:
        _FED.append(make_federation(N))
    return _FED[0]


def config(session: bytes = SESSION, round_: int = ROUND) -> RoundConfig:
    return dataclasses.replace(config_for(federation(), dim=DIM), session_id=session, round=round_)


def inputs() -> dict[int, np.ndarray]:
    rng = seeded_rng(31)
    return {i: rng.uniform(-4.0, 4.0, DIM) for i in range(N)}


@dataclasses.dataclass
class Recording:
    """Every message of one honest round, server -> client and client -> server."""

    to_client: dict[tuple[int, type[Message]], Message] = dataclasses.field(default_factory=dict)
    to_server: dict[tuple[int, type[Message]], Message] = dataclasses.field(default_factory=dict)

    def client_hook(self, sender: int, message: Message) -> Sequence[Message]:
        self.to_server[(sender, type(message))] = message
        return (message,)

    def server_hook(self, envelope: Envelope) -> Sequence[Envelope]:
        self.to_client[(envelope.recipient, type(envelope.message))] = envelope.message
        return (envelope,)


_RECORDINGS: dict[str, Recording] = {}
M = TypeVar("M", bound=Message)


def recorded(source: str) -> Recording:
    """An honest round of the same session one round earlier, or of another session."""
    if source not in _RECORDINGS:
        old = config(round_=ROUND - 1) if source == "earlier-round" else config(OTHER_SESSION)
        recording = Recording()
        outcome = run_round(
            old,
            federation(),
            inputs(),
            client_hook=recording.client_hook,
            server_hook=recording.server_hook,
        )
        assert outcome.result is not None
        _RECORDINGS[source] = recording
    return _RECORDINGS[source]


def relabelled(message: M) -> M:
    """The old message with the current session and round written in; the old signature kept."""
    return dataclasses.replace(message, session_id=SESSION, round=ROUND)


def assert_round_completed_without_victim_leaking(
    outcome: RoundOutcome, sent: list[tuple[int, Message]], reason: str
) -> None:
    assert outcome.client_stages[VICTIM] is Stage.ABORTED
    assert reason in str(outcome.client_errors[VICTIM].__cause__)
    assert not [m for s, m in sent if s == VICTIM and isinstance(m, UnmaskResponse)]
    assert outcome.result is not None  # the four others still reach t = 4


SERVER_KINDS = [KeyDirectory, ShareBundle, ConsistencyRequest, UnmaskRequest]


@pytest.mark.parametrize("relabel", [False, True], ids=["as-is", "relabelled"])
@pytest.mark.parametrize("source", ["earlier-round", "other-session"])
@pytest.mark.parametrize("kind", SERVER_KINDS, ids=lambda k: k.__name__)
def test_a_replayed_server_message_aborts_the_client(
    kind: type[Message], source: str, relabel: bool
) -> None:
    old = recorded(source).to_client[(VICTIM, kind)]
    replay = relabelled(old) if relabel else old
    sent: list[tuple[int, Message]] = []

    def server_hook(envelope: Envelope) -> Sequence[Envelope]:
        if envelope.recipient == VICTIM and isinstance(envelope.message, kind):
            return (Envelope(VICTIM, replay),)
        return (envelope,)

    def client_hook(sender: int, message: Message) -> Sequence[Message]:
        sent.append((sender, message))
        return (message,)

    outcome = run_round(
        config(), federation(), inputs(), server_hook=server_hook, client_hook=client_hook
    )
    reason = "bad signature" if relabel else "another session or round"
    assert_round_completed_without_victim_leaking(outcome, sent, reason)


@pytest.mark.parametrize("source", ["earlier-round", "other-session"])
def test_a_relabelled_client_input_fails_its_signature_at_the_server(source: str) -> None:
    """Client 2's old masked input, relabelled, replaces its real one: rejected, not summed."""
    old = recorded(source).to_server[(2, MaskedInput)]

    def client_hook(sender: int, message: Message) -> Sequence[Message]:
        if sender == 2 and isinstance(message, MaskedInput):
            return (relabelled(old),)
        return (message,)

    outcome = run_round(config(), federation(), inputs(), client_hook=client_hook)
    rejected = [e for e in outcome.server_events if isinstance(e, MessageRejected)]
    assert any(e.sender == 2 and "bad signature" in e.reason for e in rejected)
    assert outcome.result is not None
    assert outcome.result.contributors == (0, 1, 3, 4)
    expected = sum(inputs()[i] for i in (0, 1, 3, 4))
    assert np.max(np.abs(outcome.result.values - expected)) <= outcome.result.error_bound


@pytest.mark.parametrize("relabel", [False, True], ids=["as-is", "relabelled"])
def test_old_consistency_signatures_do_not_count_towards_t(relabel: bool) -> None:
    """The victim's unmask request holds its own signature and the others' from round 1."""
    old = recorded("earlier-round").to_server
    sent: list[tuple[int, Message]] = []

    def pad(message: UnmaskRequest) -> UnmaskRequest:
        own = next(s for s in message.consistency if s.sender == VICTIM)
        stale = [
            m
            for v in range(N)
            if v != VICTIM and isinstance(m := old[(v, ConsistencySignature)], ConsistencySignature)
        ]
        stale = [relabelled(s) if relabel else s for s in stale]
        assert len(stale) == N - 1
        signatures = tuple(sorted([own, *stale], key=lambda s: s.sender))
        forged = dataclasses.replace(message, consistency=signatures)
        # The server may re-sign its own message: only the signatures inside are replayed.
        result = resign(forged, federation().server_key)
        assert isinstance(result, UnmaskRequest)
        return result

    def server_hook(envelope: Envelope) -> Sequence[Envelope]:
        message = envelope.message
        if envelope.recipient == VICTIM and isinstance(message, UnmaskRequest):
            return (Envelope(VICTIM, pad(message)),)
        return (envelope,)

    def client_hook(sender: int, message: Message) -> Sequence[Message]:
        sent.append((sender, message))
        return (message,)

    outcome = run_round(
        config(), federation(), inputs(), server_hook=server_hook, client_hook=client_hook
    )
    assert_round_completed_without_victim_leaking(
        outcome, sent, "fewer than t clients signed this client's transcript"
    )


@pytest.mark.parametrize("relabel", [False, True], ids=["as-is", "relabelled"])
def test_a_sketch_seed_delivery_from_another_session_is_refused(relabel: bool) -> None:
    """Session setup: client 2 gets the sealed sketch seed of an earlier session."""
    fed = federation()
    _, old_server, errors = setup(fed, session_id=OTHER_SESSION)
    assert errors == {}
    old = dict(old_server.deliveries())[2]
    replay = dataclasses.replace(old, session_id=SESSION) if relabel else old

    def hook(recipient: int, delivery: SketchSeedDelivery) -> Sequence[Message]:
        return (replay,) if recipient == 2 else (delivery,)

    clients, _, errors = setup(fed, session_id=SESSION, delivery_hook=hook)
    reason = "bad signature" if relabel else "another session or round"
    assert set(errors) == {2}
    assert reason in str(errors[2])
    assert clients[2].sketch_seed is None
    assert clients[2].stage is SetupStage.FAILED
    assert clients[3].sketch_seed is not None
