"""The coordinator against bad replies (securefed/runtime/engine/coordinator.py).

A malformed reply, a reply of the wrong kind, a forged join and a protocol message in another
party's name are each ledgered by the server with the sender's name; the sender sits the rest of
the phase out (a dropout the protocol recovers) and the round goes on without it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path

from securefed.audit import EventType, verify_run
from securefed.crypto import get_suite
from securefed.personalize.modes import PersonalizationMode
from securefed.runtime.engine import messages as m
from securefed.runtime.engine.institution import Institution
from securefed.runtime.engine.memory import FaultPlan, MemoryTransport
from securefed.runtime.engine.settings import EngineSettings
from securefed.runtime.engine.signing import sign_joined
from securefed.testing.rounds import VectorFederation
from tests.runtime.engine import clustered, entries

N = 5


def server_hazards(run: VectorFederation) -> list[str]:
    return [str(e.payload["text"]) for e in entries(run, "server") if e.event is EventType.HAZARD]


def fedavg(rounds: int = 1) -> EngineSettings:
    return EngineSettings(mode=PersonalizationMode.FEDAVG, rounds=rounds)


def check_round_went_on(run: VectorFederation, without: int, round_: int = 1) -> None:
    """Everyone but ``without`` got round ``round_``'s average of the others."""
    for i, learner in enumerate(run.learners):
        assert (round_ in learner.received) == (i != without), i
    (view,) = [v for v in run.views if v.number == round_]
    ((members, server),) = view.groups
    assert server.result is not None
    contributors = [members[j] for j in server.result.contributors]
    assert without not in contributors
    assert len(contributors) == N - 1
    expected = sum(run.learners[j].vector for j in contributors) / len(contributors)
    for i in contributors:
        assert abs(run.learners[i].received[round_] - expected).max() < 1e-4


class _Garbling(MemoryTransport):
    """Replaces the bytes of the replies ``garble(node, request)`` picks by garbage."""

    def __init__(
        self,
        institutions: Mapping[int, Institution],
        faults: FaultPlan,
        garble: Callable[[int, m.Request], bool],
    ) -> None:
        super().__init__(institutions, faults=faults)
        self._garble = garble

    def exchange(self, requests: Mapping[int, bytes], *, timeout: float) -> dict[int, bytes]:
        replies = super().exchange(requests, timeout=timeout)
        for node in replies:
            request = m.decode(requests[node])
            assert not isinstance(request, m.Reply)
            if self._garble(node, request):
                replies[node] = b"SE\x01\x69 not a reply"
        return replies


def test_a_malformed_reply_is_ledgered_with_the_senders_name(tmp_path: Path) -> None:
    def at_mask(node: int, request: m.Request) -> bool:
        return node == 2 and isinstance(request, m.Step) and request.phase is m.StepPhase.MASK

    with VectorFederation(clustered(N), fedavg(), seed=1, workdir=tmp_path) as run:
        run.transport = _Garbling(run.institutions, run.capture, at_mask)
        metrics = run.run()
        [hazard] = [h for h in server_hazards(run) if "malformed" in h]
        assert hazard.startswith("bank-2 sent a malformed or unexpected reply: ")
        assert metrics.history[1].dropouts == {"bank-2": "mask"}
        check_round_went_on(run, without=2)
    assert verify_run(tmp_path).ok


class _Plan:
    """A fault plan from one reply-rewriting function."""

    def __init__(self, rewrite: Callable[[int, m.Request, m.Reply], m.Reply | None]) -> None:
        self._rewrite = rewrite

    def request(self, node: int, request: m.Request) -> m.Request | None:
        return request

    def reply(self, node: int, request: m.Request, reply: m.Reply) -> m.Reply | None:
        return self._rewrite(node, request, reply)


def test_a_reply_of_the_wrong_kind_is_ledgered_with_the_senders_name(tmp_path: Path) -> None:
    def sealed_for_trained(node: int, request: m.Request, reply: m.Reply) -> m.Reply:
        if node == 2 and isinstance(reply, m.Trained):
            return m.Sealed(reply.evaluation)
        return reply

    plan = _Plan(sealed_for_trained)
    with VectorFederation(clustered(N), fedavg(), seed=2, faults=plan, workdir=tmp_path) as run:
        metrics = run.run()
        [hazard] = [h for h in server_hazards(run) if "unexpected" in h]
        assert hazard == (
            "bank-2 sent a malformed or unexpected reply: expected Trained, got Sealed"
        )
        assert metrics.history[1].dropouts == {"bank-2": "share"}
        check_round_went_on(run, without=2)
    assert verify_run(tmp_path).ok


def test_a_forged_join_is_ledgered_and_the_round_goes_on_without_it(tmp_path: Path) -> None:
    """Node 2's first join reply is signed with a key that is not bank-2's: the node is not
    mapped (so it holds no keys for round 1); its honest join in the next exchange maps it, and
    it takes part from round 2 on."""
    impostor = get_suite("default").generate_signing_key()
    forged: list[int] = []

    def forge(node: int, request: m.Request, reply: m.Reply) -> m.Reply:
        first = node == 2 and not forged
        if first and isinstance(request, m.Join) and isinstance(reply, m.Joined):
            forged.append(node)
            return sign_joined(impostor, run.federation.roster, request, reply)
        return reply

    plan = _Plan(forge)
    with VectorFederation(clustered(N), fedavg(2), seed=3, faults=plan, workdir=tmp_path) as run:
        metrics = run.run()
        assert forged == [2]
        [hazard] = [h for h in server_hazards(run) if "join refused" in h]
        assert hazard == (
            "node 2: join refused: a join reply claiming 'bank-2' has a bad signature"
        )
        assert metrics.history[1].dropouts == {"bank-2": "advertise"}
        check_round_went_on(run, without=2, round_=1)
        assert all(2 in learner.received for learner in run.learners)  # back in round 2
    assert verify_run(tmp_path).ok


def test_a_protocol_message_in_another_partys_name_is_refused(tmp_path: Path) -> None:
    """bank-3 uploads bank-2's masked input instead of its own: the server refuses it, ledgers
    it by bank-3's name, and the round completes without bank-3's input."""
    uploads: dict[int, tuple[bytes, ...]] = {}

    def replay_neighbour(node: int, request: m.Request, reply: m.Reply) -> m.Reply:
        if isinstance(request, m.Step) and request.phase is m.StepPhase.MASK:
            assert isinstance(reply, m.StepReply)
            uploads[node] = reply.messages
            if node == 3:
                return dataclasses.replace(reply, messages=uploads[2])
        return reply

    plan = _Plan(replay_neighbour)
    with VectorFederation(clustered(N), fedavg(), seed=4, faults=plan, workdir=tmp_path) as run:
        metrics = run.run()
        [hazard] = [h for h in server_hazards(run) if "another party's name" in h]
        assert hazard.startswith("round 1: bank-3 sent a protocol message that was refused")
        assert metrics.history[1].dropouts == {"bank-3": "dropped out"}
        check_round_went_on(run, without=3)
    assert verify_run(tmp_path).ok
