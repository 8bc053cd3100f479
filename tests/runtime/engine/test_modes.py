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

from securefed.audit import verify_run
from securefed.personalize.modes import PersonalizationMode
from securefed.personalize.rounds import RoundParams
from securefed.personalize.weights import group_weights, renormalise_row
from securefed.runtime.engine.coordinator import Flow, RoundView
from securefed.runtime.engine.memory import STAGES, Drop, Dropouts
from securefed.runtime.engine.settings import EngineSettings
from securefed.testing.rounds import VectorFederation
from tests.runtime.engine import Vector, clustered

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
