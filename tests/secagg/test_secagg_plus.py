"""R8: the SecAgg+ sparse masking graph, and rounds run on it."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pytest

from securefed.errors import ConfigError, RemoteProtocolError
from securefed.secagg import GraphKind, MaskGraph, RoundAborted, Stage
from securefed.secagg.config import lonely_probability
from securefed.secagg.graph import build_graph
from securefed.secagg.messages import AdvertiseKeys, ConsistencyRequest, Message, UnmaskResponse
from securefed.secagg.server import Envelope
from securefed.testing import resign, run_round
from tests.secagg.conftest import SESSION, config_for, federation, inputs_for

SPARSE = MaskGraph(GraphKind.SECAGG_PLUS, degree=17)  # N = 40


def adverts(n: int) -> list[AdvertiseKeys]:
    """Fresh random advertisements (signatures do not matter to the graph)."""
    return [
        AdvertiseKeys(SESSION, 1, i, os.urandom(32), os.urandom(32), b"", b"") for i in range(n)
    ]


def test_graph_is_symmetric_without_self_loops_and_deterministic() -> None:
    config = config_for(federation(40), graph=SPARSE)
    ads = adverts(40)
    graph = build_graph(config, ads)
    assert graph == build_graph(config, list(reversed(ads)))
    for u in graph.members:
        assert u not in graph.neighbours(u)
        for v in graph.neighbours(u):
            assert u in graph.neighbours(v)
        assert graph.holders(u) == tuple(sorted((*graph.neighbours(u), u)))
        assert graph.threshold(u) == (2 * len(graph.holders(u))) // 3 + 1


def test_mean_degree_matches_the_configured_degree() -> None:
    config = config_for(federation(40), graph=SPARSE)
    degrees = [
        len(build_graph(config, adverts(40)).neighbours(u)) for _ in range(5) for u in range(40)
    ]
    # Binomial(39, 17/39) per client: mean 17, sd 3.1; 200 (correlated) draws: within +-1.5.
    assert abs(np.mean(degrees) - 17) < 1.5
    assert min(degrees) >= 2


def test_config_refuses_a_degree_that_isolates_clients() -> None:
    with pytest.raises(ConfigError, match="raise the degree"):
        config_for(federation(40), graph=MaskGraph(GraphKind.SECAGG_PLUS, degree=8))
    assert lonely_probability(40, 17) <= 2**-20 < lonely_probability(40, 16)


def test_dropping_clients_from_u1_changes_no_other_edge() -> None:
    """The server cannot bias the graph by choosing whom to leave out of the key directory."""
    config = config_for(federation(40), graph=SPARSE)
    ads = adverts(40)
    full = build_graph(config, ads)
    kept = [a for a in ads if a.sender % 7 != 3]
    partial = build_graph(config, kept)
    for u in partial.members:
        expected = tuple(v for v in full.neighbours(u) if v in partial.members)
        assert partial.neighbours(u) == expected


def test_a_client_without_neighbours_makes_the_graph_invalid() -> None:
    config = config_for(federation(40), graph=SPARSE)
    object.__setattr__(config, "graph", MaskGraph(GraphKind.SECAGG_PLUS, degree=2))  # bypass
    # P(no isolated client in a degree-2 graph over 40 clients) is about 1e-4 per draw.
    errors = [graph_error(config, adverts(40)) for _ in range(20)]
    assert any(errors)
    assert all("fewer than 2 neighbours" in e for e in errors if e)


def graph_error(config: object, ads: list[AdvertiseKeys]) -> str:
    """The error message of building the graph, or "" if it builds."""
    try:
        build_graph(config, ads)  # type: ignore[arg-type]
    except RemoteProtocolError as exc:
        return str(exc)
    return ""


def run_sparse(n: int, dropouts: dict[int, Stage] | None = None, **hooks: object):  # type: ignore[no-untyped-def]
    fed = federation(n)
    return run_round(config_for(fed, graph=SPARSE), fed, inputs_for(n), dropouts=dropouts, **hooks)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "dropouts",
    [{}, {3: Stage.MASK}, {5: Stage.SHARE, 11: Stage.UNMASK}],
    ids=["none", "one-after-sharing", "two"],
)
def test_sparse_round_sums_correctly(dropouts: dict[int, Stage]) -> None:
    outcome = run_sparse(40, dropouts)
    if outcome.result is None:  # a random neighbourhood may lose too much: a clean abort
        reasons = [e.reason for e in outcome.server_events if isinstance(e, RoundAborted)]
        assert any("too few neighbours" in r for r in reasons), outcome.server_events
        return
    expected = sum(inputs_for(40)[i] for i in outcome.result.contributors)
    assert np.max(np.abs(outcome.result.values - expected)) <= outcome.result.error_bound


def test_sparse_round_without_dropouts_always_succeeds() -> None:
    outcome = run_sparse(40)
    assert outcome.result is not None
    assert outcome.result.contributors == tuple(range(40))
    uploads = outcome.upload_bytes
    dense = run_round(config_for(federation(40)), federation(40), inputs_for(40)).upload_bytes
    # Shares go to ~8 neighbours instead of 23 peers: the key-sharing upload shrinks.
    assert sum(uploads.values()) < sum(dense.values())


def test_server_claiming_all_neighbours_of_a_client_dropped_aborts() -> None:
    """N = 100, degree 20: hiding v's ~20 neighbours leaves ~80 >= t = 67 survivors, so only the
    per-neighbourhood rule (not the global threshold) can stop the server."""
    fed = federation(100)
    config = config_for(fed, graph=MaskGraph(GraphKind.SECAGG_PLUS, degree=20), dim=8)
    victim = 0
    state: dict[str, object] = {}
    sent: list[tuple[int, Message]] = []

    def server_hook(envelope: Envelope) -> Sequence[Envelope]:
        message = envelope.message
        if isinstance(message, ConsistencyRequest):
            if "graph" not in state:
                state["graph"] = build_graph(config, state["adverts"])  # type: ignore[arg-type]
            neighbours = set(state["graph"].neighbours(victim))  # type: ignore[attr-defined]
            if envelope.recipient in neighbours:
                return ()  # the "dropped" neighbours hear nothing more
            survivors = tuple(v for v in message.survivors if v not in neighbours)
            return (
                Envelope(envelope.recipient, resign(message, fed.server_key, survivors=survivors)),
            )
        if hasattr(message, "advertisements"):
            state["adverts"] = message.advertisements  # the key directory
        return (envelope,)

    def client_hook(sender: int, message: Message) -> Sequence[Message]:
        sent.append((sender, message))
        return (message,)

    outcome = run_round(
        config, fed, inputs_for(100, dim=8), server_hook=server_hook, client_hook=client_hook
    )
    assert outcome.client_stages[victim] is Stage.ABORTED
    reasons = [e.reason for e in outcome.client_events[victim] if isinstance(e, RoundAborted)]
    assert any("too few neighbours" in r for r in reasons), outcome.client_events[victim]
    assert not any(isinstance(m, UnmaskResponse) for _, m in sent)
    assert outcome.result is None
