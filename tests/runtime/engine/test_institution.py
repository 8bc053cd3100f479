"""The institution's transition table and its refusals (securefed/runtime/engine/institution.py).

A request that is illegal in the party's phase, a replay of an old round's request, or a
coordinator that reports another head for the party is refused with a ``Refused`` reply naming
the error; the refusal is ledgered (except once the party has recorded run.finished: its head
then waits for the final checkpoint) and the party's state is unchanged, so the run goes on.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from securefed.audit import EventType, Head, verify_run
from securefed.personalize.modes import PersonalizationMode
from securefed.runtime.engine import messages as m
from securefed.runtime.engine.institution import TRANSITIONS, Institution, InstitutionPhase
from securefed.runtime.engine.settings import EngineSettings
from securefed.testing.rounds import VectorFederation
from tests.runtime.engine import clustered, entries, exchanges

N = 5
SAMPLES: dict[m.Kind, m.Request] = {
    m.Kind.JOIN: m.Join(bytes(32)),
    m.Kind.SETUP: m.Setup(b"a key directory"),
    m.Kind.ADVERT: m.Advert(m.NextRound(1, (0,) * N, (bytes(32),))),
    m.Kind.TRAIN: m.Train(1),
    m.Kind.STEP: m.Step(1, m.StepPhase.MASK, ()),
    m.Kind.FINISH: m.Finish(1, m.RunStatus.COMPLETED),
    m.Kind.SEAL: m.Seal(()),
}


def snapshot(institution: Institution) -> tuple[Any, ...]:
    """Everything an institution's answers depend on (objects by identity)."""
    state = institution
    return (
        state.phase,
        id(state._pending),
        id(state._finishing),
        dict(state._reported),
        state._partition,
        state._advertised_round,
        state._trained_round,
        state._evaluated,
        state._final_head,
        state._sketch_seed,
        tuple(state.learner.trained),  # type: ignore[attr-defined]
        id(state.learner.personalized),  # type: ignore[attr-defined]
    )


def refused(institution: Institution, request: m.Request | bytes) -> m.Refused:
    """Send ``request`` (encoded, or raw bytes) as a transport would; the reply must be a
    refusal that changed nothing but the ledger."""
    before = snapshot(institution)
    data = request if isinstance(request, bytes) else m.encode(request)
    reply = m.decode(institution.handle_bytes(data))
    assert isinstance(reply, m.Refused), reply
    assert snapshot(institution) == before
    return reply


def last_hazard(run: VectorFederation, actor: str) -> str:
    entry = entries(run, actor)[-1]
    assert entry.event is EventType.HAZARD
    return str(entry.payload["text"])


def fedavg(rounds: int) -> EngineSettings:
    return EngineSettings(mode=PersonalizationMode.FEDAVG, rounds=rounds)


def test_every_request_illegal_in_a_phase_is_refused_ledgered_and_changes_nothing(
    tmp_path: Path,
) -> None:
    probed: set[InstitutionPhase] = set()
    with VectorFederation(clustered(N), fedavg(1), seed=1, workdir=tmp_path) as run:
        party = run.institutions[0]
        for _ in exchanges(run):
            phase = party.phase
            if phase in probed:
                continue
            probed.add(phase)
            for kind in sorted(set(m.Kind) - TRANSITIONS[phase]):
                if kind not in SAMPLES:
                    continue  # replies are refused as replies (below)
                length = len(entries(run, "bank-0"))
                reply = refused(party, SAMPLES[kind])
                assert reply.error == "RemoteProtocolError"
                assert f"not accepted in phase {phase.value}" in reply.reason
                if phase in (InstitutionPhase.FINISHED, InstitutionPhase.SEALED):
                    # the head reported for the final checkpoint stays the last entry
                    assert len(entries(run, "bank-0")) == length
                else:
                    assert len(entries(run, "bank-0")) == length + 1
                    assert "refused a coordinator request (RemoteProtocolError)" in last_hazard(
                        run, "bank-0"
                    )
        assert probed == set(InstitutionPhase)
        assert all(learner.received.keys() == {1} for learner in run.learners)
    result = verify_run(tmp_path)
    assert result.ok, result.describe()


@pytest.mark.parametrize(
    "data",
    [
        b"not a message",
        m.encode(m.Sealed(m.Evaluation(0, None, None))),  # a reply is no request
        m.encode(m.Seal(())) + b"\x00",
    ],
    ids=["garbage", "a-reply", "trailing-bytes"],
)
def test_malformed_requests_are_refused_in_every_phase(tmp_path: Path, data: bytes) -> None:
    with VectorFederation(clustered(N), fedavg(1), seed=1, workdir=tmp_path) as run:
        for _ in exchanges(run):
            party = run.institutions[1]
            reply = refused(party, data)
            assert reply.error == "RemoteProtocolError"
        assert all(learner.received.keys() == {1} for learner in run.learners)


def test_a_replayed_train_for_an_old_round_is_refused(tmp_path: Path) -> None:
    """Replays of round 1's and round 2's Train (and of round 1's as a non-training Train) while
    round 2's result waits to be applied: refused, nothing changes, the result still arrives."""
    with VectorFederation(clustered(N), fedavg(3), seed=2, workdir=tmp_path) as run:
        party = run.institutions[0]
        replayed = 0
        for _ in exchanges(run):
            trains = [r for n, r in run.capture.requests if n == 0 and isinstance(r, m.Train)]
            if len(trains) == 2 and party._finishing is not None and not replayed:
                for old in (*trains, dataclasses.replace(trains[0], train=False, messages=())):
                    reply = refused(party, old)
                    assert reply.error == "RemoteProtocolError"
                    assert f"round {old.round}" in reply.reason
                replayed += 1
        assert replayed == 1
        assert run.learners[0].received.keys() == {1, 2, 3}
        assert run.learners[0].trained == [1, 2, 3]
        checkpoints = [e for e in entries(run, "bank-0") if e.event is EventType.CHECKPOINT]
        assert len(checkpoints) == 4  # rounds 1, 2 and 3, and the final one: none twice
        assert len({repr(e.payload) for e in checkpoints}) == 4
    assert verify_run(tmp_path).ok


def test_a_replayed_advert_for_an_old_round_is_refused(tmp_path: Path) -> None:
    """Round 1's key request again while the party holds its keys for round 2: refused, and its
    round-2 keys survive (it takes part in round 2)."""
    with VectorFederation(clustered(N), fedavg(2), seed=3, workdir=tmp_path) as run:
        party = run.institutions[0]
        replayed = False
        for _ in exchanges(run):
            pending = party._pending
            if not replayed and pending is not None and pending.round == 2:
                (first,) = [
                    r.next for n, r in run.capture.requests if n == 0 and isinstance(r, m.Join)
                ]
                assert first is not None
                assert party.phase is InstitutionPhase.ADVERTISED
                reply = refused(party, m.Advert(first))
                assert "round 1 is not a new round" in reply.reason
                reply = refused(party, m.Advert(dataclasses.replace(first, round=9)))
                assert "round 9 is not a new round" in reply.reason  # beyond the run, too
                replayed = True
        assert replayed
        assert run.learners[0].received.keys() == {1, 2}


class _ForgedHead:
    """A coordinator that binds another head for bank-0 into round 2's transcript."""

    def request(self, node: int, request: m.Request) -> m.Request | None:
        if node == 0 and isinstance(request, m.Train) and request.round == 2:
            heads = tuple(
                Head(h.actor, h.seq + 1, "0" * 64) if h.actor == "bank-0" else h
                for h in request.context
            )
            return dataclasses.replace(request, context=heads)
        return request

    def reply(self, node: int, request: m.Request, reply: m.Reply) -> m.Reply | None:
        return reply


def test_a_coordinator_reporting_another_own_head_is_refused(tmp_path: Path) -> None:
    with VectorFederation(
        clustered(N), fedavg(3), seed=4, faults=_ForgedHead(), workdir=tmp_path
    ) as run:
        metrics = run.run()
        answers = [
            reply
            for node, request, reply in run.capture.replies
            if node == 0 and isinstance(request, m.Train) and request.round == 2
        ]
        assert [type(a) for a in answers] == [m.Refused]
        assert isinstance(answers[0], m.Refused)
        assert answers[0].error == "RemoteProtocolError"
        assert "not the head this party reported" in answers[0].reason
        assert run.learners[0].trained == [1, 3]  # refused before training: nothing charged
        hazards = [
            str(e.payload["text"]) for e in entries(run, "bank-0") if e.event is EventType.HAZARD
        ]
        assert any("not the head this party reported" in h for h in hazards)
        # the round goes on without it; it rejoins and takes part in round 3
        assert metrics.history[2].completed == N - 1
        assert "bank-0" in metrics.history[2].dropouts
        assert run.learners[0].received.keys() == {1, 3}
        assert all(learner.received.keys() == {1, 2, 3} for learner in run.learners[1:])
    assert verify_run(tmp_path).ok
