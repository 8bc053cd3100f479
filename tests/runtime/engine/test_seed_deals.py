"""A fresh sketch-seed deal when the membership changes (issue 21, item 3).

In attention mode every round's weights come from sketches under the run's sketch seed. A party
that is gone still holds that seed (and could derive every later epoch's S_0); one that joins
late holds none and sits out the sketches. So a round before which the membership changed
begins with a fresh deal among the parties in the run now (DEAL, then SETUP), ledgered as
``sketch.seed_dealt`` by the server and by every party that holds the new seed. An institution
accepts a new deal only for a change of membership and at most ``max_seed_deals`` in a run: a
server that could deal at will would hand a colluding client new functionals of every model
each time (threat_model/attacks/test_seed_redeal.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from securefed.audit import EventType, Ledger, SketchSeedDealt
from securefed.audit.ledger import ledger_path
from securefed.crypto import get_suite
from securefed.errors import RemoteProtocolError
from securefed.personalize.modes import PersonalizationMode
from securefed.personalize.rounds import RoundParams
from securefed.runtime.engine import messages as m
from securefed.runtime.engine.institution import _deal_entries, _is_last_deal, _seed_deals
from securefed.runtime.engine.settings import EngineSettings
from securefed.secagg.federation import make_federation
from securefed.secagg.messages import SessionKey
from securefed.secagg.messages import decode as decode_protocol
from securefed.secagg.session import SessionSetupServer
from securefed.testing.rounds import VectorFederation
from tests.runtime.engine import clustered, entries, exchanges

DIM = 16


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    logging.disable(logging.WARNING)
    yield
    logging.disable(logging.NOTSET)


def fedamp(rounds: int = 3, **params: object) -> EngineSettings:
    return EngineSettings(
        mode=PersonalizationMode.FEDAMP,
        rounds=rounds,
        params=RoundParams(sketch_dim=8, **params),  # type: ignore[arg-type]
    )


def deals(run: VectorFederation, actor: str) -> list[dict[str, object]]:
    return [dict(e.payload) for e in entries(run, actor) if e.event is EventType.SKETCH_SEED_DEALT]


def hazards(run: VectorFederation) -> list[str]:
    return [str(e.payload["text"]) for e in entries(run, "server") if e.event is EventType.HAZARD]


class Absent:
    """A fault plan: every request to ``node`` is lost while ``absent`` is true."""

    def __init__(self, node: int) -> None:
        self.node, self.absent = node, True

    def request(self, node: int, request: m.Request) -> m.Request | None:
        return None if node == self.node and self.absent else request

    def reply(self, node: int, request: m.Request, reply: m.Reply) -> m.Reply | None:
        return reply


def run_until_round(run: VectorFederation, completed: int) -> Iterator[int]:
    """Exchanges of ``run`` until round ``completed`` has ended; the generator, to go on."""
    steps = exchanges(run)
    for _ in steps:
        if run.coordinator._completed_rounds >= completed:
            break
    return steps


def test_a_party_gone_between_rounds_leaves_the_seed_behind() -> None:
    with VectorFederation(clustered(5, DIM), fedamp(rounds=3), seed=3) as run:
        steps = run_until_round(run, 1)
        old_seed = run.institutions[4]._sketch_seed
        run.transport.replace(4, None)  # bank-4 is gone for good
        for _ in steps:
            pass
        remaining = [f"bank-{i}" for i in range(4)]
        server = deals(run, "server")
        assert [d["deal"] for d in server] == [1, 2]
        assert server[0]["members"] == [*remaining, "bank-4"]
        assert server[1]["members"] == remaining
        assert server[0]["commitment"] != server[1]["commitment"]
        for party in remaining:
            assert deals(run, party) == server  # every member ledgers the same two deals
        new_seeds = {run.institutions[i]._sketch_seed for i in range(4)}
        assert len(new_seeds) == 1
        assert old_seed not in new_seeds
        later = [v for v in run.views if v.number >= 2]
        assert later
        assert all(sorted(v.sketches) == [0, 1, 2, 3] for v in later)


def test_a_late_joiner_gets_the_seed_at_the_next_deal() -> None:
    late = Absent(4)
    with VectorFederation(clustered(5, DIM), fedamp(rounds=3), seed=5, faults=late) as run:
        steps = run_until_round(run, 1)
        assert run.views[0].sketches.keys() == {0, 1, 2, 3}  # bank-4 not in round 1
        late.absent = False
        for _ in steps:
            pass
        server = deals(run, "server")
        assert [d["members"] for d in server] == [
            ["bank-0", "bank-1", "bank-2", "bank-3"],
            [f"bank-{i}" for i in range(5)],
        ]
        joined = deals(run, "bank-4")  # it holds the second seed only, its first
        assert [(d["deal"], d["commitment"]) for d in joined] == [(1, server[1]["commitment"])]
        assert 4 in run.views[-1].sketches  # and sketches with the others
        assert run.institutions[4]._sketch_seed == run.institutions[0]._sketch_seed


def test_no_deal_while_the_membership_stays() -> None:
    with VectorFederation(clustered(4, DIM), fedamp(rounds=3), seed=1) as run:
        run.run()
        assert [d["deal"] for d in deals(run, "server")] == [1]
        assert [d["deal"] for d in deals(run, "bank-2")] == [1]


def test_the_deal_limit_keeps_the_seed() -> None:
    """With ``max_seed_deals = 1`` the coordinator does not deal again when a party is gone:
    the seed stays, and a hazard says why."""
    with VectorFederation(clustered(5, DIM), fedamp(rounds=3, max_seed_deals=1), seed=3) as run:
        steps = run_until_round(run, 1)
        seed = run.institutions[0]._sketch_seed
        run.transport.replace(4, None)
        for _ in steps:
            pass
        assert [d["deal"] for d in deals(run, "server")] == [1]
        assert run.institutions[0]._sketch_seed == seed
        assert any("sketch-seed deals are used up" in h for h in hazards(run))


def _directory(run: VectorFederation, session: bytes, members: list[int]) -> bytes:
    """A server-signed key directory of a fresh deal among ``members`` (the keys they answer
    to ``Setup(session=...)`` with)."""
    setup = SessionSetupServer(
        run.federation.roster, session_id=session, identity=run.federation.server_key
    )
    for i in members:
        reply = run.institutions[i].handle(m.Setup(session=session))
        assert isinstance(reply, m.SetupReply)
        assert len(reply.messages) == 1
        key = decode_protocol(reply.messages[0])
        assert isinstance(key, SessionKey)
        setup.receive(key)
    return setup.directory().to_bytes()


def test_an_institution_refuses_a_deal_among_the_same_parties() -> None:
    """A server that deals again with no change of membership is refused; the party keeps its
    seed and its state."""
    with VectorFederation(clustered(4, DIM), fedamp(rounds=3), seed=2) as run:
        run_until_round(run, 1)
        party = run.institutions[1]
        seed, phase = party._sketch_seed, party.phase
        directory = _directory(run, b"\x42" * 32, [0, 1, 2, 3])
        reply = party.respond(m.Setup(directory=directory))
        assert isinstance(reply, m.Refused)
        assert "membership did not change" in reply.reason
        assert party._sketch_seed == seed
        assert party.phase is phase


def test_an_institution_refuses_deals_beyond_the_limit() -> None:
    with VectorFederation(clustered(4, DIM), fedamp(rounds=3, max_seed_deals=1), seed=2) as run:
        run_until_round(run, 1)
        party = run.institutions[2]
        reply = party.respond(m.Setup(session=b"\x43" * 32))
        assert isinstance(reply, m.Refused)
        assert "deals are used up" in reply.reason
        assert party._sketch_seed is not None


def test_a_deal_for_a_changed_membership_is_accepted() -> None:
    """The same party, offered a deal among 3 of the 4 (one gone), takes the new seed: the
    old one is dropped when the directory comes, the new one ledgered when it arrives."""
    with VectorFederation(clustered(4, DIM), fedamp(rounds=3), seed=2) as run:
        run_until_round(run, 1)
        session = b"\x44" * 32
        directory = _directory(run, session, [0, 1, 2])
        dealer = run.institutions[0]
        old = dealer._sketch_seed
        offer = dealer.respond(m.Setup(directory=directory))
        assert isinstance(offer, m.SetupReply)
        assert offer.messages
        assert dealer._sketch_seed not in (None, old)  # the dealer drew the new seed
        assert [d["deal"] for d in deals(run, "bank-0")] == [1, 2]
        other = run.institutions[1]
        assert isinstance(other.respond(m.Setup(directory=directory)), m.SetupReply)
        assert other._sketch_seed is None  # dropped: the old seed serves no more rounds


def test_setup_messages_are_a_directory_or_a_deal() -> None:

    with pytest.raises(RemoteProtocolError):
        m.Setup()
    with pytest.raises(RemoteProtocolError):
        m.Setup(directory=b"x", session=bytes(32))
    with pytest.raises(RemoteProtocolError):
        m.Setup(session=b"short")
    assert np.array_equal(  # round trip of the new field
        np.frombuffer(m.decode(m.encode(m.Setup(session=bytes(range(32))))).session, np.uint8),  # type: ignore[union-attr]
        np.arange(32, dtype=np.uint8),
    )


class SilentAtDeal:
    """A fault plan: ``node`` does not answer a fresh deal's ``Setup(session=...)``."""

    def __init__(self, node: int) -> None:
        self.node = node

    def request(self, node: int, request: m.Request) -> m.Request | None:
        if node == self.node and isinstance(request, m.Setup) and request.session:
            return None
        return request

    def reply(self, node: int, request: m.Request, reply: m.Reply) -> m.Reply | None:
        return reply


def test_a_member_silent_at_a_deal_does_not_start_another() -> None:
    """bank-5 joins late; bank-4 stays silent at the deal that follows: the seed goes to the
    other five, bank-4 sits out the sketches, and no further deal is tried for it."""
    late = Absent(5)
    faults = SilentAtDeal(4)

    class Both:
        def request(self, node: int, request: m.Request) -> m.Request | None:
            passed = late.request(node, request)
            return None if passed is None else faults.request(node, passed)

        def reply(self, node: int, request: m.Request, reply: m.Reply) -> m.Reply | None:
            return reply

    with VectorFederation(clustered(6, DIM), fedamp(rounds=4), seed=8, faults=Both()) as run:
        steps = run_until_round(run, 1)
        late.absent = False
        for _ in steps:
            pass
        server = deals(run, "server")
        assert [d["members"] for d in server] == [
            [f"bank-{i}" for i in range(5)],
            ["bank-0", "bank-1", "bank-2", "bank-3", "bank-5"],
        ]
        assert 4 not in run.views[-1].sketches
        assert 5 in run.views[-1].sketches


def test_a_restart_trusts_the_seed_file_only_if_it_is_the_last_deal(tmp_path: Path) -> None:
    """After a stop between ledgering a deal and writing the seed file, the file holds the
    previous deal's seed: the restarted party drops it (it sits out sketches until a deal)
    instead of sketching under a seed the others no longer use."""

    roster = make_federation(4).roster
    key = get_suite("default").generate_signing_key()
    with Ledger.open(ledger_path(tmp_path, "bank-0"), "bank-0", key) as ledger:
        assert _seed_deals(_deal_entries(ledger), roster) == (0, None)
        assert not _is_last_deal(_deal_entries(ledger), b"\x01" * 32)
        for deal, members, byte in (
            (1, ("bank-0", "bank-1", "bank-2", "bank-3"), 1),
            (2, ("bank-0", "bank-2", "bank-3"), 2),
        ):
            commitment = (bytes([byte]) * 32).hex()
            ledger.record(SketchSeedDealt(deal=deal, members=members, commitment=commitment))
        deals = _deal_entries(ledger)
        assert _seed_deals(deals, roster) == (2, (0, 2, 3))
        assert _is_last_deal(deals, b"\x02" * 32)
        assert not _is_last_deal(deals, b"\x01" * 32)  # the previous deal's seed


class Both:
    """Two fault plans in turn (requests only)."""

    def __init__(self, *plans: Absent | SilentAtDeal) -> None:
        self.plans = plans

    def request(self, node: int, request: m.Request) -> m.Request | None:
        passed: m.Request | None = request
        for plan in self.plans:
            if passed is None:
                return None
            passed = plan.request(node, passed)
        return passed

    def reply(self, node: int, request: m.Request, reply: m.Reply) -> m.Reply | None:
        return reply


def test_a_late_joiner_silent_at_the_deal_leaves_the_seed_as_it_is() -> None:
    """Only the parties that share the seed answer the deal: it is abandoned (they would refuse
    a directory among themselves), the seed stays, the rounds go on."""
    late = Absent(4)
    with VectorFederation(
        clustered(5, DIM), fedamp(rounds=3), seed=6, faults=Both(late, SilentAtDeal(4))
    ) as run:
        steps = run_until_round(run, 1)
        seed = run.institutions[0]._sketch_seed
        late.absent = False
        for _ in steps:
            pass
        assert [d["deal"] for d in deals(run, "server")] == [1]
        assert run.institutions[0]._sketch_seed == seed
        assert any("the seed stays" in h for h in hazards(run))
        assert not any("left out of the run" in h for h in hazards(run))
        assert all(sorted(v.sketches) == [0, 1, 2, 3] for v in run.views)


class LosesSetup:
    """A fault plan: ``node`` loses its in-memory setup right after it answered a fresh deal
    (a restart between the deal's key and its directory; its seed file survives)."""

    def __init__(self, run: VectorFederation, node: int) -> None:
        self.run, self.node = run, node

    def request(self, node: int, request: m.Request) -> m.Request | None:
        return request

    def reply(self, node: int, request: m.Request, reply: m.Reply) -> m.Reply | None:
        if node == self.node and isinstance(request, m.Setup) and request.session:
            self.run.institutions[node]._setup = None
        return reply


def test_a_party_that_lost_its_setup_mid_deal_sits_out_the_sketches() -> None:
    """It gave a key, then restarted: it cannot open the directory and keeps its old seed. The
    commitment it sketches under shows that, so the coordinator leaves it out of the rounds
    (it would bind another commitment and abort them); the others go on under the new seed."""
    late = Absent(5)
    with VectorFederation(clustered(6, DIM), fedamp(rounds=4), seed=9, faults=late) as run:
        plan = LosesSetup(run, 2)

        class Plans:
            def request(self, node: int, request: m.Request) -> m.Request | None:
                return late.request(node, request)

            def reply(self, node: int, request: m.Request, reply: m.Reply) -> m.Reply | None:
                return plan.reply(node, request, reply)

        run.transport.faults = Plans()
        steps = run_until_round(run, 1)
        late.absent = False
        for _ in steps:
            pass
        seeds = {i: run.institutions[i]._sketch_seed for i in range(6)}
        assert seeds[2] is not None
        assert seeds[2] != seeds[0]
        assert len({seeds[i] for i in (0, 1, 3, 4, 5)}) == 1
        assert [d["deal"] for d in deals(run, "server")] == [1, 2]
        # bank-5 joined during round 2: the deal came before round 3; bank-2 (refused, so
        # unmapped) rejoined during it and sketched under its old seed in round 4
        assert [sorted(v.sketches) for v in run.views[2:]] == [[0, 1, 3, 4, 5]] * 2
        assert any("no longer holds (restarted?)" in h for h in hazards(run))
        assert any("bank-2 sketches under another sketch seed" in h for h in hazards(run))
        statuses = [r["status"] for r in run.coordinator.metrics().to_dict()["history"][1:]]
        assert statuses == ["completed"] * 4


class Rewrites:
    """A fault plan: ``late`` (an :class:`Absent`) for requests, ``rewrite`` for replies."""

    def __init__(
        self, late: Absent | None, rewrite: Callable[[int, m.Request, m.Reply], m.Reply | None]
    ) -> None:
        self.late, self.rewrite = late, rewrite

    def request(self, node: int, request: m.Request) -> m.Request | None:
        return request if self.late is None else self.late.request(node, request)

    def reply(self, node: int, request: m.Request, reply: m.Reply) -> m.Reply | None:
        return self.rewrite(node, request, reply)


def test_a_late_joiner_with_an_unusable_key_leaves_the_seed_as_it_is() -> None:
    """Its key fails to load: the usable keys are the seed holders', the deal is abandoned
    before any directory (an honest dealer is never blamed), the run completes."""
    late = Absent(4)

    def bad_key(node: int, request: m.Request, reply: m.Reply) -> m.Reply | None:
        if node == 4 and isinstance(request, m.Setup) and request.session:
            return m.SetupReply((b"\x00" * 40,))
        return reply

    plan = Rewrites(late, bad_key)
    with VectorFederation(clustered(5, DIM), fedamp(rounds=4), seed=5, faults=plan) as run:
        steps = run_until_round(run, 1)
        late.absent = False
        for _ in steps:
            pass
        assert not run.coordinator._left_out
        assert run.coordinator.metrics().to_dict()["status"] == "completed"
        assert any("the seed stays" in h for h in hazards(run))


def test_a_failed_deal_between_rounds_does_not_end_the_run() -> None:
    """bank-3 is gone, so 3 parties share a new seed; the dealer swallows the directory: the
    deal gives up (its members dropped the old seed), the rounds go on without sketches, the
    run ends degraded rather than failed."""
    armed = [False]

    def silent_dealer(node: int, request: m.Request, reply: m.Reply) -> m.Reply | None:
        if armed[0] and node == 0 and isinstance(request, m.Setup) and request.directory:
            return None
        return reply

    plan = Rewrites(None, silent_dealer)
    with VectorFederation(clustered(4, DIM), fedamp(rounds=4), seed=2, faults=plan) as run:
        steps = run_until_round(run, 1)
        run.transport.replace(3, None)
        armed[0] = True
        for _ in steps:
            pass
        assert run.coordinator.metrics().to_dict()["status"] == "degraded"
        assert any("the fresh sketch-seed deal failed" in h for h in hazards(run))


def test_a_join_at_the_deal_limit_starts_no_setup() -> None:
    """A party that holds no seed at its limit (say, restarted after a stop between ledgering
    a deal and writing the seed file) gives no session key at a join: the limit holds."""
    with VectorFederation(clustered(4, DIM), fedamp(rounds=3, max_seed_deals=1), seed=2) as run:
        run_until_round(run, 1)
        party = run.institutions[1]
        party._sketch_seed = party._seed_commitment = None
        party._setup = None
        joined = party.respond(m.Join(b"\x01" * 32, b"\x52" * 32, None, 1))
        assert isinstance(joined, m.Joined)
        assert joined.setup_key == b""


def test_a_party_that_missed_the_directory_is_left_out_of_the_rounds() -> None:
    """The directory to bank-2 is lost: it keeps the old seed, which the departed bank-4 also
    holds. The commitment it reports with its sketch gives it away: its sketch is not used
    (a hazard names it), so it neither aborts the round nor sketches for the server under a
    seed a departed party knows."""
    armed = [False]

    class LoseDirectory:
        def request(self, node: int, request: m.Request) -> m.Request | None:
            if armed[0] and node == 2 and isinstance(request, m.Setup) and request.directory:
                armed[0] = False
                return None
            return request

        def reply(self, node: int, request: m.Request, reply: m.Reply) -> m.Reply | None:
            return reply

    with VectorFederation(
        clustered(5, DIM), fedamp(rounds=4), seed=3, faults=LoseDirectory()
    ) as run:
        steps = run_until_round(run, 1)
        old = run.institutions[4]._sketch_seed
        run.transport.replace(4, None)
        armed[0] = True
        for _ in steps:
            pass
        assert run.institutions[2]._sketch_seed == old
        assert any("bank-2 sketches under another sketch seed" in h for h in hazards(run))
        assert all(2 not in v.sketches for v in run.views[2:])
