"""Checkpoint framing: a lying coordinator makes an honest institution's ledger look edited.

ADVERSARY: a malicious coordinator. It cannot sign as an institution, but it tells each
institution which ledger heads to checkpoint at the end of a round (with the next round's
``Train``), and every checkpoint is what ``securefed audit verify`` compares the other ledgers
against.

ASSUMPTIONS: N = 5 institutions, FedAvg, secure aggregation with the complete graph, 2 rounds;
every ledger is honest and intact.

ATTACK: with round 2's ``Train`` to bank-0, send a checkpoint whose head for bank-1 has the right
seq but another hash. An institution that checkpoints the heads as sent (the behaviour before
issue 21, kept as a fixture) then holds, in its own signed ledger, a claim that contradicts
bank-1's intact ledger, and ``audit verify`` blames bank-1: TAMPERED, exit 1.

DEFENCE (expected and measured): an institution checkpoints only the heads bound into the
round's signed transcript (and its own head as it reported it). On a mismatch it checkpoints
nothing and records a typed ``coordinator.inconsistent-heads`` event instead
(`securefed/runtime/engine/institution.py::Institution._checkpoint_heads`). ``audit verify`` then
finds every chain intact and reports EQUIVOCATED (exit 4), naming the institution that recorded
the coordinator's inconsistency -- not TAMPERED against an honest ledger.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import pytest

from securefed.audit import EventType, Head, verify_run
from securefed.audit.verify import EXIT_EQUIVOCATED, EXIT_TAMPERED, VerifyStatus
from securefed.personalize.modes import PersonalizationMode
from securefed.runtime.engine import messages as m
from securefed.runtime.engine.institution import Institution
from securefed.runtime.engine.settings import EngineSettings
from securefed.testing.rounds import VectorFederation
from tests.runtime.engine import clustered, entries

N = 5


class _ForgeBankOnesHead:
    """The coordinator's lie: in round 2's Train to bank-0, bank-1's head gets another hash."""

    def request(self, node: int, request: m.Request) -> m.Request | None:
        if node == 0 and isinstance(request, m.Train) and request.round == 2 and request.heads:
            forged = tuple(
                Head(h.actor, max(h.seq, 0), "f" * 64) if h.actor == "bank-1" else h
                for h in request.heads
            )
            return dataclasses.replace(request, heads=forged)
        return request

    def reply(self, node: int, request: m.Request, reply: m.Reply) -> m.Reply | None:
        return reply


def _run(tmp_path: Path) -> VectorFederation:
    settings = EngineSettings(mode=PersonalizationMode.FEDAVG, rounds=2)
    run = VectorFederation(
        clustered(N), settings, seed=31, faults=_ForgeBankOnesHead(), workdir=tmp_path
    )
    with run:
        run.run()
    return run


def _accept_any_heads(self: Institution, round_: int, heads: Sequence[Head]) -> tuple[Head, ...]:
    """The weaker variant (before issue 21): checkpoint the heads as the coordinator sent them."""
    return tuple(heads)


def test_framing_an_honest_ledger_succeeds_when_heads_are_checkpointed_as_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Institution, "_checkpoint_heads", _accept_any_heads)
    _run(tmp_path)
    result = verify_run(tmp_path)
    assert result.status is VerifyStatus.TAMPERED
    assert result.exit_code == EXIT_TAMPERED
    assert any("bank-1" in p.describe() for p in result.problems)  # the honest ledger is blamed


def test_framing_fails_the_institution_records_the_coordinators_equivocation(
    tmp_path: Path,
) -> None:
    run = _run(tmp_path)
    recorded = [e for e in entries(run, "bank-0") if e.event is EventType.INCONSISTENT_HEADS]
    assert [e.payload["round"] for e in recorded] == [1]
    assert "differs from the heads bound" in str(recorded[0].payload["reason"])
    result = verify_run(tmp_path)
    assert result.ok, result.describe()  # every chain intact: nobody is framed
    assert result.status is VerifyStatus.EQUIVOCATED
    assert result.exit_code == EXIT_EQUIVOCATED
    assert result.summary().startswith("EQUIVOCATED: ledgers/bank-0.jsonl")
    assert "coordinator sent it heads for round 1" in result.summary()
