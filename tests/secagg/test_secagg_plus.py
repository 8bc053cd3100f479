"""R8: the SecAgg+ sparse masking graph, and rounds run on it."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence

import numpy as np
import pytest

from securefed.errors import ConfigError
from securefed.secagg import GraphKind, MaskGraph, RoundAborted, RoundConfig, Stage
from securefed.secagg.config import default_threshold, lonely_probability
from securefed.secagg.events import ClientsExcluded, ExclusionReason
from securefed.secagg.graph import (
    GRAPH_LABEL,
    MaskingGraph,
    NeighbourhoodTooSmall,
    build_graph,
    degree_failure_bounds,
    secagg_plus_degree,
)
from securefed.secagg.inmemory import RoundOutcome
from securefed.secagg.messages import (
    ConsistencyRequest,
    KeyDirectory,
    Message,
    ShareKeys,
    UnmaskResponse,
)
from securefed.secagg.server import Envelope
from securefed.testing import Federation, make_federation, resign, run_round
from tests.secagg.conftest import config_for, federation, inputs_for

SPARSE = MaskGraph(GraphKind.SECAGG_PLUS, degree=17)  # N = 40


def sparse_config(fed: Federation, **changes: object) -> RoundConfig:
    return config_for(fed, graph=SPARSE, **changes)


def test_graph_is_symmetric_without_self_loops_and_over_the_whole_roster() -> None:
    config = sparse_config(federation(40))
    graph = build_graph(config)
    assert graph == build_graph(config)
    assert graph.members == tuple(range(40))
    for u in graph.members:
        assert u not in graph.neighbours(u)
        for v in graph.neighbours(u):
            assert u in graph.neighbours(v)
        assert graph.holders(u) == tuple(sorted((*graph.neighbours(u), u)))
        assert graph.threshold(u) == default_threshold(len(graph.holders(u)))


def test_edges_are_the_documented_hash_of_roster_digest_round_and_indices() -> None:
    config = sparse_config(federation(40), round_=7)
    graph = build_graph(config)
    prefix = len(GRAPH_LABEL).to_bytes(4, "big") + GRAPH_LABEL + config.roster.digest()
    prefix += (7).to_bytes(8, "big")
    for u in range(40):
        for v in range(u + 1, 40):
            digest = hashlib.sha256(prefix + u.to_bytes(4, "big") + v.to_bytes(4, "big")).digest()
            edge = int.from_bytes(digest[:8], "big") * 39 < 17 << 64
            assert (v in graph.neighbours(u)) is edge


def test_graph_ignores_session_and_keys_and_follows_roster_and_round() -> None:
    fed = federation(40)
    config = sparse_config(fed)
    graph = build_graph(config)
    # The server chooses the session id: it changes nothing.
    assert build_graph(dataclasses.replace(config, session_id=bytes(32))) == graph
    # Another round, or another roster (other identity keys), is another draw.
    assert build_graph(dataclasses.replace(config, round=2)).adjacency != graph.adjacency
    other = sparse_config(make_federation(40))
    assert build_graph(other).adjacency != graph.adjacency


def test_masking_partners_are_the_fixed_graph_whatever_keys_the_clients_pick() -> None:
    """Two rounds with the same config but fresh keys: every client deals shares to exactly its
    neighbours in the fixed graph (keys are not an input, so grinding them changes no edge)."""
    fed = federation(40)
    config = sparse_config(fed, dim=8)
    graph = build_graph(config)
    dealt: dict[int, tuple[int, ...]] = {}

    def hook(sender: int, message: Message) -> Sequence[Message]:
        if isinstance(message, ShareKeys):
            dealt[sender] = tuple(d.recipient for d in message.dealt)
        return (message,)

    for _ in range(2):
        dealt.clear()
        outcome = run_round(config, fed, inputs_for(40, dim=8), client_hook=hook)
        assert outcome.result is not None
        assert dealt == {u: graph.neighbours(u) for u in range(40)}


def test_mean_degree_matches_the_configured_degree() -> None:
    fed = federation(40)
    degrees = [
        len(build_graph(sparse_config(fed, round_=r)).neighbours(u))
        for r in range(1, 6)
        for u in range(40)
    ]
    # Binomial(39, 17/39) per client: mean 17, sd 3.1; 200 (correlated) draws: within +-1.5.
    assert abs(np.mean(degrees) - 17) < 1.5
    assert min(degrees) >= 2


def test_config_refuses_a_degree_that_isolates_clients() -> None:
    with pytest.raises(ConfigError, match="raise the degree"):
        config_for(federation(40), graph=MaskGraph(GraphKind.SECAGG_PLUS, degree=8))
    assert lonely_probability(40, 17) <= 2**-20 < lonely_probability(40, 16)


def test_thresholds_are_over_the_full_neighbourhood() -> None:
    """Absent neighbours count as dropped: the threshold does not shrink with U1."""
    graph = build_graph(sparse_config(federation(40)))
    for v in range(40):
        holders = graph.holders(v)
        m, t = len(holders), graph.threshold(v)
        assert t == (2 * m) // 3 + 1
        others = {u for u in range(40) if u not in holders}
        neighbours = graph.neighbours(v)
        spare = m - t  # this many neighbours may be absent from U1

        def present(absent: int) -> set[int]:
            return {*others, v, *neighbours[absent:]}  # noqa: B023 - used in this iteration

        assert graph.exclusion(v, present(spare)) is None
        problem = graph.exclusion(v, present(spare + 1))
        assert isinstance(problem, NeighbourhoodTooSmall)
        assert (problem.reason, problem.present, problem.needed) == (
            ExclusionReason.STARVED,
            t - 1,
            t,
        )


def test_admission_is_a_fixpoint() -> None:
    """Leaving one client out can push its neighbours below their thresholds: admit() iterates."""
    # A path 0-1-2-3 (thresholds over m = 2 or 3 holders: every holder is needed).
    adjacency = {0: (1,), 1: (0, 2), 2: (1, 3), 3: (2,), 4: (5, 6), 5: (4, 6), 6: (4, 5)}
    graph = MaskingGraph(
        tuple(range(7)),
        adjacency,
        {u: default_threshold(len(vs) + 1) for u, vs in adjacency.items()},
    )
    admitted, excluded = graph.admit([1, 2, 3, 4, 5, 6])  # 0 is absent
    assert admitted == (4, 5, 6)
    assert excluded == dict.fromkeys((1, 2, 3), ExclusionReason.STARVED)


def starved_victim(fed: Federation) -> tuple[RoundConfig, int, tuple[int, ...]]:
    """(config, victim, neighbours to drop): the lowest-degree client and just enough of its
    neighbours to starve it while every other client keeps its threshold (searched over rounds)."""
    for round_ in range(1, 40):
        config = sparse_config(fed, round_=round_)
        graph = build_graph(config)
        victim = min(range(40), key=lambda u: len(graph.neighbours(u)))
        spare = len(graph.holders(victim)) - graph.threshold(victim)
        gone = graph.neighbours(victim)[: spare + 1]
        _, excluded = graph.admit([u for u in range(40) if u not in gone])
        if set(excluded) == {victim}:
            return config, victim, gone
    raise AssertionError("no round found")  # pragma: no cover - P(no round) is negligible


def check_sum(outcome: RoundOutcome, n: int, dim: int) -> None:
    assert outcome.result is not None, outcome.server_events
    expected = sum(inputs_for(n, dim=dim)[i] for i in outcome.result.contributors)
    assert np.max(np.abs(outcome.result.values - expected)) <= outcome.result.error_bound


def test_a_starved_client_is_left_out_with_the_reason_and_the_round_completes() -> None:
    fed = federation(40)
    config, victim, gone = starved_victim(fed)
    dropouts = dict.fromkeys(gone, Stage.ADVERTISE)
    outcome = run_round(config, fed, inputs_for(40, dim=config.vector_length), dropouts=dropouts)
    excluded = [e for e in outcome.server_events if isinstance(e, ClientsExcluded)]
    assert [(e.clients, e.reason, e.stage) for e in excluded] == [
        ((victim,), ExclusionReason.STARVED, Stage.ADVERTISE)
    ]
    assert outcome.client_stages[victim] is Stage.ABORTED
    reasons = [e.reason for e in outcome.client_events[victim] if isinstance(e, RoundAborted)]
    assert any("left out" in r and "too few neighbours" in r for r in reasons), reasons
    check_sum(outcome, 40, config.vector_length)
    assert outcome.result is not None
    assert set(outcome.result.contributors) == set(range(40)) - {victim, *gone}


def test_a_starved_client_in_the_directory_refuses_before_dealing_shares() -> None:
    """A server that keeps the victim in the key directory without its neighbours: the victim
    raises NeighbourhoodTooSmall (typed, with the counts) and sends nothing more."""
    fed = federation(40)
    config, victim, gone = starved_victim(fed)
    sent: list[tuple[int, Message]] = []

    def client_hook(sender: int, message: Message) -> Sequence[Message]:
        sent.append((sender, message))
        return () if sender in gone else (message,)  # the server "loses" the neighbours' keys

    forced: list[int] = []

    # An honest server leaves the victim out; force it in, as a malicious server would.
    def force_in(envelope: Envelope) -> Sequence[Envelope]:
        message = envelope.message
        if envelope.recipient == victim:
            return ()  # not the Abort that an honest server sends it
        if isinstance(message, KeyDirectory):
            victims_advert = next(m for s, m in sent if s == victim)
            adverts = sorted({*message.advertisements, victims_advert}, key=lambda a: a.sender)
            forged = resign(message, fed.server_key, advertisements=tuple(adverts))
            extra = [] if forced else [Envelope(victim, forged)]
            forced.append(victim)
            return (Envelope(envelope.recipient, forged), *extra)
        return (envelope,)

    outcome = run_round(
        config,
        fed,
        inputs_for(40, dim=config.vector_length),
        client_hook=client_hook,
        server_hook=force_in,
    )
    error = outcome.client_errors[victim]
    assert isinstance(error, NeighbourhoodTooSmall)
    assert error.reason is ExclusionReason.STARVED
    assert error.present == error.needed - 1
    assert [type(m).__name__ for s, m in sent if s == victim] == ["AdvertiseKeys"]


def test_a_lonely_client_cannot_take_part() -> None:
    """A degree the config would refuse (forced past the check): a client with fewer than 2
    neighbours in the fixed graph is left out with the reason LONELY, and refuses by itself."""
    fed = federation(40)
    for round_ in range(1, 200):
        config = sparse_config(fed, round_=round_)
        object.__setattr__(config, "graph", MaskGraph(GraphKind.SECAGG_PLUS, degree=3))  # bypass
        graph = build_graph(config)
        if graph.lonely:
            break
    lonely = graph.lonely[0]
    problem = graph.exclusion(lonely, range(40))
    assert isinstance(problem, NeighbourhoodTooSmall)
    assert problem.reason is ExclusionReason.LONELY
    with pytest.raises(NeighbourhoodTooSmall, match="cannot take part"):
        graph.check_member(lonely, range(40))
    outcome = run_round(config, fed, inputs_for(40, dim=config.vector_length))
    lonely_events = [
        e
        for e in outcome.server_events
        if isinstance(e, ClientsExcluded) and e.reason is ExclusionReason.LONELY
    ]
    assert lonely_events
    assert set(graph.lonely) == set(lonely_events[0].clients)
    assert outcome.client_stages[lonely] is Stage.ABORTED
    if outcome.result is not None:
        assert lonely not in outcome.result.contributors


@pytest.mark.parametrize(
    "stage", [Stage.SHARE, Stage.MASK, Stage.CONSISTENCY, Stage.UNMASK], ids=lambda s: s.value
)
def test_a_sparse_round_with_dropouts_completes(stage: Stage) -> None:
    """Two clients drop before ``stage``; they are chosen so that every neighbourhood keeps its
    threshold (the fixed graph is known before the round)."""
    fed = federation(40)
    config = sparse_config(fed)
    graph = build_graph(config)
    alive = set(range(40))
    dropped: list[int] = []
    for u in sorted(range(40), key=lambda u: -len(graph.neighbours(u))):
        if len(dropped) == 2:
            break
        if all(graph.exclusion(v, alive - {u}) is None for v in alive - {u}):
            alive.discard(u)
            dropped.append(u)
    outcome = run_round(config, fed, inputs_for(40), dropouts=dict.fromkeys(dropped, stage))
    check_sum(outcome, 40, config.vector_length)
    assert outcome.result is not None
    late = stage in (Stage.CONSISTENCY, Stage.UNMASK)  # their inputs are already in the sum
    assert set(outcome.result.contributors) == (set(range(40)) if late else alive)


@pytest.mark.parametrize(
    "dropouts",
    [{}, {3: Stage.MASK}, {5: Stage.SHARE, 11: Stage.UNMASK}],
    ids=["none", "one-after-sharing", "two"],
)
def test_sparse_round_sums_correctly(dropouts: dict[int, Stage]) -> None:
    fed = federation(40)
    outcome = run_round(sparse_config(fed), fed, inputs_for(40), dropouts=dropouts)
    if outcome.result is None:  # a low-degree neighbourhood may lose too much: a clean abort
        reasons = [e.reason for e in outcome.server_events if isinstance(e, RoundAborted)]
        assert any("too few neighbours" in r for r in reasons), outcome.server_events
        return
    check_sum(outcome, 40, 64)


def test_sparse_round_without_dropouts_always_succeeds() -> None:
    outcome = run_round(sparse_config(federation(40)), federation(40), inputs_for(40))
    assert outcome.result is not None
    assert outcome.result.contributors == tuple(range(40))
    uploads = outcome.upload_bytes
    dense = run_round(config_for(federation(40)), federation(40), inputs_for(40)).upload_bytes
    # Shares go to ~17 neighbours instead of 39 peers: the key-sharing upload shrinks.
    assert sum(uploads.values()) < sum(dense.values())


def test_server_claiming_all_neighbours_of_a_client_dropped_aborts() -> None:
    """N = 100, degree 20: hiding v's ~20 neighbours leaves ~80 >= t = 67 survivors, so only the
    per-neighbourhood rule (not the global threshold) can stop the server."""
    fed = federation(100)
    config = config_for(fed, graph=MaskGraph(GraphKind.SECAGG_PLUS, degree=20), dim=8)
    victim = 0
    neighbours = set(build_graph(config).neighbours(victim))
    sent: list[tuple[int, Message]] = []

    def server_hook(envelope: Envelope) -> Sequence[Envelope]:
        message = envelope.message
        if isinstance(message, ConsistencyRequest):
            if envelope.recipient in neighbours:
                return ()  # the "dropped" neighbours hear nothing more
            survivors = tuple(v for v in message.survivors if v not in neighbours)
            return (
                Envelope(envelope.recipient, resign(message, fed.server_key, survivors=survivors)),
            )
        return (envelope,)

    def client_hook(sender: int, message: Message) -> Sequence[Message]:
        sent.append((sender, message))
        return (message,)

    outcome = run_round(
        config, fed, inputs_for(100, dim=8), server_hook=server_hook, client_hook=client_hook
    )
    assert outcome.client_stages[victim] is Stage.ABORTED
    assert isinstance(outcome.client_errors[victim], NeighbourhoodTooSmall)
    reasons = [e.reason for e in outcome.client_events[victim] if isinstance(e, RoundAborted)]
    assert any("too few neighbours" in r for r in reasons), outcome.client_events[victim]
    assert not any(isinstance(m, UnmaskResponse) for _, m in sent)
    assert outcome.result is None


def test_degree_bounds() -> None:
    """The complete graph meets R1 deterministically; the bounds fall as the degree grows."""
    privacy, _ = degree_failure_bounds(100, 99, colluders=10, dropout=0.0)
    assert privacy == 0.0
    low = degree_failure_bounds(1000, 100, colluders=50, dropout=0.05)
    high = degree_failure_bounds(1000, 200, colluders=50, dropout=0.05)
    assert high[0] < low[0]
    assert high[1] < low[1]
    # The attack's set-up (N = 100, degree 20, a coalition of a third) is far from 2^-40.
    assert degree_failure_bounds(100, 20, colluders=33, dropout=0.05)[0] > 1e-3


@pytest.mark.parametrize(
    ("n", "gamma", "delta", "expected"),
    [
        (100, 0.05, 0.05, 70),
        (100, 0.1, 0.1, None),
        (1000, 0.05, 0.05, 126),
        (1000, 0.1, 0.1, 345),
        (10000, 0.05, 0.05, 149),
    ],
)
def test_degree_table_in_the_docs(n: int, gamma: float, delta: float, expected: int | None) -> None:
    """Rows of the table in docs/protocol.md (sigma = 40, eta = 30)."""
    degree = secagg_plus_degree(n, gamma, delta)
    assert degree == expected
    if degree is not None and degree > 2:
        privacy, correctness = degree_failure_bounds(n, degree - 1, int(gamma * n), delta)
        assert privacy > 2.0**-40 or correctness > 2.0**-30  # the smallest such degree
