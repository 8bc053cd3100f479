"""The sketch-seed setup dealt again when its dealer offers no usable seed (issue 20).

A dealer that stays silent, or whose signed offer fails the coordinator's public checks, sits
the run out, named in a hazard with its typed reason (``no-offer``, ``bad-offer``); the next
lowest index deals, at most ``SETUP_ATTEMPTS`` dealers in all; the run goes on with the others.
A run whose every dealer fails ends ``failed`` within a bounded number of exchanges.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from securefed.audit import EventType, verify_run
from securefed.personalize.modes import PersonalizationMode
from securefed.personalize.rounds import RoundParams
from securefed.runtime.engine import messages as m
from securefed.runtime.engine.coordinator import SETUP_ATTEMPTS, Outbox
from securefed.runtime.engine.settings import EngineSettings
from securefed.secagg.messages import SealedShare, SketchSeedOffer
from securefed.secagg.messages import decode as decode_protocol
from securefed.testing import resign
from securefed.testing.rounds import VectorFederation
from tests.runtime.engine import clustered, entries

P = PersonalizationMode
Rewrite = Callable[[int, m.Request, m.Reply], m.Reply | None]


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    logging.disable(logging.WARNING)
    yield
    logging.disable(logging.NOTSET)


def fedamp(rounds: int = 2, mode: P = P.FEDAMP, **changes: object) -> EngineSettings:
    return EngineSettings(mode=mode, rounds=rounds, params=RoundParams(sketch_dim=16), **changes)  # type: ignore[arg-type]


class Replies:
    """A fault plan that rewrites replies only."""

    def __init__(self, rewrite: Rewrite) -> None:
        self._rewrite = rewrite

    def request(self, node: int, request: m.Request) -> m.Request | None:
        return request

    def reply(self, node: int, request: m.Request, reply: m.Reply) -> m.Reply | None:
        return self._rewrite(node, request, reply)


def silent_dealers(*dealers: int) -> Replies:
    """These parties answer the setup directory with nothing (the dealer among them offers no
    seed; the others had nothing to offer anyway)."""

    def rewrite(node: int, request: m.Request, reply: m.Reply) -> m.Reply:
        if node in dealers and isinstance(reply, m.SetupReply):
            return m.SetupReply()
        return reply

    return Replies(rewrite)


def hazards(run: VectorFederation) -> list[str]:
    return [str(e.payload["text"]) for e in entries(run, "server") if e.event is EventType.HAZARD]


def setups(run: VectorFederation) -> int:
    """Drive ``run`` to its end (bounded); the number of SETUP exchanges it made."""
    coordinator, transport = run.coordinator, run.transport
    outbox: Outbox | None = coordinator.start(transport.nodes())
    count = 0
    for _ in range(60):
        if outbox is None:
            break
        count += any(m.decode(r).KIND is m.Kind.SETUP for r in outbox.requests.values())
        replies = transport.exchange(outbox.requests, timeout=0.0)
        outbox = coordinator.receive(replies, transport.nodes())
    assert outbox is None, "the run did not end"
    return count


def left_out(texts: Sequence[str], party: str, fault: str) -> bool:
    return any(
        t.startswith(f"sketch-seed dealer {party} left out of the run ({fault})") for t in texts
    )


def test_two_silent_dealers_in_turn_are_left_out_and_the_third_deals(tmp_path: Path) -> None:
    with VectorFederation(
        clustered(7), fedamp(), seed=3, faults=silent_dealers(0, 1), workdir=tmp_path
    ) as run:
        metrics = run.run()
        assert run.coordinator.status is m.RunStatus.COMPLETED
        for entry in metrics.history[1:]:
            assert entry.completed == 5
            assert entry.dropouts == {"bank-0": "setup", "bank-1": "setup"}
        texts = hazards(run)
    assert left_out(texts, "bank-0", "no-offer")
    assert left_out(texts, "bank-1", "no-offer")
    assert "the sketch-seed setup is dealt again by bank-2" in texts
    result = verify_run(tmp_path)
    assert result.ok, result.describe()


def test_a_run_whose_every_dealer_is_silent_ends_failed_after_setup_attempts(
    tmp_path: Path,
) -> None:
    with VectorFederation(
        clustered(8), fedamp(), seed=4, faults=silent_dealers(*range(8)), workdir=tmp_path
    ) as run:
        assert setups(run) == SETUP_ATTEMPTS
        assert run.coordinator.status is m.RunStatus.FAILED
        texts = hazards(run)
    assert [t for t in texts if "left out of the run" in t] == [
        f"sketch-seed dealer bank-{i} left out of the run (no-offer): no offer"
        for i in range(SETUP_ATTEMPTS)
    ]
    assert any(t.startswith("the run cannot go on: the sketch-seed setup failed") for t in texts)


def test_the_setup_ends_when_fewer_than_three_parties_would_share_the_seed(
    tmp_path: Path,
) -> None:
    with VectorFederation(
        clustered(3), fedamp(), seed=5, faults=silent_dealers(0), workdir=tmp_path
    ) as run:
        assert setups(run) == 1
        assert run.coordinator.status is m.RunStatus.FAILED
        assert any("2 parties left to share one" in t for t in hazards(run))


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda o: {"sealed": o.sealed[:-1]}, "it does not seal the seed for exactly every other"),
        (
            lambda o: {"sealed": (SealedShare(o.sealed[0].peer, b"short"), *o.sealed[1:])},
            "a sealed seed is not 60 bytes long",
        ),
    ],
    ids=["a-recipient-missing", "a-sealed-seed-cut-short"],
)
def test_a_dealer_whose_signed_offer_fails_the_checks_is_left_out_and_named(
    tmp_path: Path, change: Callable[[SketchSeedOffer], dict[str, object]], problem: str
) -> None:
    """bank-0, the dealer, signs an offer that fails the coordinator's public checks: proof of
    its own misbehaviour."""

    def rewrite(node: int, request: m.Request, reply: m.Reply) -> m.Reply:
        if node == 0 and isinstance(reply, m.SetupReply) and reply.messages:
            offer = decode_protocol(reply.messages[0])
            assert isinstance(offer, SketchSeedOffer)
            key = run.federation.client_keys[0]
            return m.SetupReply((resign(offer, key, **change(offer)).to_bytes(),))
        return reply

    plan = Replies(rewrite)
    with VectorFederation(clustered(6), fedamp(), seed=6, faults=plan, workdir=tmp_path) as run:
        metrics = run.run()
        assert run.coordinator.status is m.RunStatus.COMPLETED
        assert metrics.history[1].completed == 5
        assert metrics.history[1].dropouts == {"bank-0": "setup"}
        texts = hazards(run)
    assert left_out(texts, "bank-0", "bad-offer")
    assert any(problem in t for t in texts if "left out of the run" in t)
    assert "the sketch-seed setup is dealt again by bank-1" in texts


def test_a_silent_dealer_in_a_learned_partition_sits_the_run_out(tmp_path: Path) -> None:
    """Group mode learns its partition from sketches: same setup, same retry."""
    with VectorFederation(
        clustered(8),
        fedamp(mode=P.GROUP, learn_partition=True),
        seed=7,
        faults=silent_dealers(0),
        workdir=tmp_path,
    ) as run:
        metrics = run.run()
        assert run.coordinator.status is m.RunStatus.COMPLETED
        for entry in metrics.history[1:]:
            assert entry.dropouts.get("bank-0") == "setup"
            assert entry.completed >= 6
