"""Every mode on the engine, three rounds, with a party lost at each protocol stage of round 2
(``memory.Dropouts``, the plan behind the run configuration's ``dropout_rate``).

Asserted per run: the exchanges of every round (fedavg and group mode 5, attention mode 6, the
round that learns group mode's partition 7, local and plaintext runs 1), that every party the
round did not lose gets its personalized model -- the one the round's weights give, within the
codec's rounding -- and that metrics.json counts exactly those, and that the ledgers verify.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from securefed.audit import EventType, verify_run
from securefed.personalize.modes import PersonalizationMode
from securefed.personalize.rounds import RoundParams
from securefed.personalize.weights import group_weights, renormalise_row
from securefed.runtime.engine.coordinator import Flow, RoundView
from securefed.runtime.engine.memory import STAGES, Drop, Dropouts
from securefed.runtime.engine.settings import EngineSettings
from securefed.testing.rounds import VectorFederation
from tests.runtime.engine import Vector, clustered, entries

ROUNDS = 3
LOST = 1  # the party lost in round 2
TOLERANCE = 1e-3  # codec rounding (2**-16 per term) times the weights' amplification, with room


@dataclass(frozen=True)
class Case:
    settings: EngineSettings
    parties: int
    exchanges: tuple[int, ...]
    statistic: bool = False
    secure_drops: bool = True
    params: dict[str, object] = field(default_factory=dict)


def _settings(mode: PersonalizationMode, **changes: object) -> EngineSettings:
    return EngineSettings(mode=mode, rounds=ROUNDS, params=RoundParams(sketch_dim=16), **changes)  # type: ignore[arg-type]


P = PersonalizationMode
CASES = {
    "local": Case(_settings(P.LOCAL), 5, (1, 1, 1), secure_drops=False),
    "fedavg": Case(_settings(P.FEDAVG), 6, (5, 5, 5)),
    "group-declared": Case(_settings(P.GROUP, partition=(0, 1) * 4), 8, (5, 5, 5)),
    "group-learned": Case(_settings(P.GROUP, learn_partition=True), 8, (7, 5, 5)),
    "group-learned-statistic": Case(
        _settings(P.GROUP, learn_partition=True, statistic=True), 8, (7, 5, 5), statistic=True
    ),
    "fedamp": Case(_settings(P.FEDAMP), 6, (6, 6, 6)),
    "heurfedamp": Case(_settings(P.HEURFEDAMP), 6, (6, 6, 6)),
    "plaintext": Case(_settings(P.FEDAMP, secure=False), 5, (1, 1, 1), secure_drops=False),
}
# Stages at which a party lost in round 2 has not yet uploaded its masked inputs.
BEFORE_UPLOAD = ("advertise", "share", "verify", "mask")
RUNS = [
    pytest.param(name, stage, id=f"{name}-{stage or 'none'}")
    for name, case in CASES.items()
    for stage in (STAGES if case.secure_drops else (None,))
]


def expected_model(view: RoundView, settings: EngineSettings, models: Vector, i: int) -> Vector:
    """Party i's personalized model of the round ``view`` shows, from the weights the round
    used and the contributors it had (float64, no rounding)."""
    if view.flow is Flow.PLAIN:
        assert view.weights is not None
        result: Vector = view.weights[i] @ models
        return result
    for members, server in view.groups:
        if i not in members:
            continue
        if view.flow is Flow.ATTENTION:
            assert view.weights is not None
            survivors = [members[u] for u in server.survivors if members[u] != i]
            row = renormalise_row(view.weights[i], target=i, contributors=survivors)
            return row @ models
        assert server.result is not None
        contributors = [members[j] for j in server.result.contributors]
        mean = models[contributors].mean(axis=0)
        if settings.mode is PersonalizationMode.FEDAVG:
            return mean
        assert view.partition is not None
        own = float(group_weights(view.partition, self_weight=settings.params.self_weight)[i, i])
        others = (mean * len(contributors) - models[i]) / (len(contributors) - 1)
        return own * models[i] + (1 - own) * others
    raise AssertionError(f"party {i} is in no group")


@pytest.mark.parametrize(("name", "stage"), RUNS)
def test_a_run_with_a_party_lost_at_a_stage(name: str, stage: str | None, tmp_path: Path) -> None:
    case = CASES[name]
    n = case.parties
    models = np.stack(clustered(n, seed=5))
    statistics = None
    if case.statistic:  # segments by i < n/2, against the models' i % 2
        rng = np.random.default_rng(6)
        centres = rng.normal(0.0, 3.0, (2, 12))
        statistics = [centres[int(i >= n // 2)] + rng.normal(0.0, 0.05, 12) for i in range(n)]
    faults = Dropouts((Drop(LOST, 2, stage),)) if stage is not None else None
    with VectorFederation(
        list(models),
        case.settings,
        seed=7,
        faults=faults,
        similarity_inputs=statistics,
        workdir=tmp_path,
    ) as run:
        metrics = run.run()
        views = {view.number: view for view in run.views}
    assert [entry.exchanges for entry in metrics.history] == [0, *case.exchanges]
    assert sorted(views) == [1, 2, 3]
    aggregates = case.settings.mode is not PersonalizationMode.LOCAL
    # A result goes back with the next round's TRAIN: in a sum round that request carries the
    # key directory, so a party lost from "share" on in round 2 misses round 1's result too.
    sum_flow = case.settings.aggregates and not case.settings.attention
    for round_ in (1, 2, 3):
        lost = round_ == 2 and stage is not None and stage != "unmask"  # unmask: shares only
        lost = lost or (round_ == 1 and stage == "share" and sum_flow)
        completed = {i for i, learner in enumerate(run.learners) if round_ in learner.received}
        expected = set(range(n)) - {LOST} if lost else set(range(n))
        if lost and case.settings.attention and stage in BEFORE_UPLOAD:
            expected = set()  # the release history: see test_a_lost_party_blocks_the_outputs
        assert completed == (expected if aggregates else set()), (round_, completed)
        in_transit = round_ == 1 and lost  # counted when round 1 ended, lost on the way
        counted = len(completed) + (1 if in_transit else 0) if aggregates else n
        assert metrics.history[round_].completed == counted
        for i in completed:
            want = expected_model(views[round_], case.settings, models, i)
            got = run.learners[i].received[round_]
            assert np.max(np.abs(got - want)) < TOLERANCE, (round_, i)
        if lost and round_ == 2:
            assert f"bank-{LOST}" in metrics.history[round_].dropouts
    if case.settings.learn_partition:
        partition = metrics.partition
        assert partition is not None
        truth = (
            [int(i >= n // 2) for i in range(n)] if case.statistic else [i % 2 for i in range(n)]
        )
        assert [partition[i] == partition[0] for i in range(n)] == [t == truth[0] for t in truth]
    result = verify_run(tmp_path)
    assert result.ok, result.describe()


@pytest.mark.parametrize("name", ["fedamp", "heurfedamp"])
@pytest.mark.parametrize("stage", BEFORE_UPLOAD)
def test_a_lost_party_blocks_the_outputs_of_a_round_with_static_models(
    name: str, stage: str, tmp_path: Path
) -> None:
    """The liveness cost of the release history (docs/fedamp.md, "Across rounds"). The models
    here do not change, so every round's weights are round 1's: with LOST gone in round 2, each
    target's row is its round-1 row without LOST, and two outputs would give LOST's model. Lost
    before the mask request, every other target's output is withheld (ledgered); lost after it,
    the contributors' check over both rounds fails and the round aborts. Round 3, with everyone
    back, releases the round-1 rows again: every party gets its model."""
    case = CASES[name]
    models = np.stack(clustered(case.parties, seed=5))
    faults = Dropouts((Drop(LOST, 2, stage),))
    with VectorFederation(
        list(models), case.settings, seed=7, faults=faults, workdir=tmp_path
    ) as run:
        metrics = run.run()
        withheld = [
            dict(e.payload) for e in entries(run, "server") if e.event is EventType.OUTPUTS_WITHHELD
        ]
    others = [f"bank-{i}" for i in range(case.parties) if i != LOST]
    second, third = metrics.history[2], metrics.history[3]
    assert second.completed == 0
    if stage == "mask":
        assert second.withheld == []
        assert second.status == "aborted"
    else:
        assert second.withheld == others
        assert second.status == "no aggregate"
    assert third.withheld == []
    assert third.completed == case.parties
    assert metrics.history[1].completed == case.parties
    assert withheld == (
        []
        if stage == "mask"
        else [
            {
                "round": 2,
                "targets": [i for i in range(case.parties) if i != LOST],
                "reason": "exposure-across-rounds",
            }
        ]
    )
    result = verify_run(tmp_path)
    assert result.ok, result.describe()
