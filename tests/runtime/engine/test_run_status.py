"""Runs that fail say so: a round without an aggregate is recorded as such, and the run ends
``degraded`` (some aggregating rounds failed) or ``failed`` (none succeeded), in the metrics and
in every party's ``run.finished`` (issue 19, section 3)."""

from __future__ import annotations

from pathlib import Path

from securefed.audit import EventType
from securefed.personalize.modes import PersonalizationMode
from securefed.personalize.rounds import RoundParams
from securefed.runtime.engine import messages as m
from securefed.runtime.engine.memory import Drop, Dropouts
from securefed.runtime.engine.settings import EngineSettings
from securefed.testing.rounds import VectorFederation
from tests.runtime.engine import clustered, entries

N = 4  # t = 3: one dropout is tolerated, two abort the round


def _settings(mode: PersonalizationMode, rounds: int) -> EngineSettings:
    return EngineSettings(mode=mode, rounds=rounds, params=RoundParams(sketch_dim=16))


def _run(
    tmp_path: Path, mode: PersonalizationMode, rounds: int, lost: dict[int, str]
) -> tuple[VectorFederation, list[str], list[dict[str, object]]]:
    """Run with parties 0 and 1 lost at ``lost[round]`` in each listed round."""
    drops = tuple(Drop(node, r, stage) for r, stage in lost.items() for node in (0, 1))
    with VectorFederation(
        clustered(N, seed=3),
        _settings(mode, rounds),
        seed=2,
        faults=Dropouts(drops),
        workdir=tmp_path,
    ) as run:
        metrics = run.run()
    statuses = [entry.status for entry in metrics.history[1:]]
    finished = [
        dict(e.payload)
        for actor in ("server", *(c.party_id for c in run.federation.roster.clients))
        for e in entries(run, actor)
        if e.event is EventType.RUN_FINISHED
    ]
    assert metrics.status == run.coordinator.status.value
    return run, statuses, finished


def test_a_round_without_survivors_degrades_the_run(tmp_path: Path) -> None:
    run, statuses, finished = _run(tmp_path, PersonalizationMode.FEDAVG, 2, {1: "mask"})
    assert statuses == ["aborted", "completed"]  # too few left: the protocol aborted
    assert run.coordinator.status is m.RunStatus.DEGRADED
    assert {f["status"] for f in finished} == {"degraded"}  # every party records it
    hazards = [
        str(e.payload["text"]) for e in entries(run, "server") if e.event is EventType.HAZARD
    ]
    assert any(h.startswith("round 1: aborted: no party got an aggregate") for h in hazards)


def test_no_round_aggregating_fails_the_run(tmp_path: Path) -> None:
    run, statuses, finished = _run(
        tmp_path, PersonalizationMode.FEDAVG, 2, {1: "share", 2: "consistency"}
    )
    assert all(s != "completed" for s in statuses)
    assert run.coordinator.status is m.RunStatus.FAILED
    assert {f["status"] for f in finished} == {"failed"}


def test_attention_rounds_without_outputs_are_recorded(tmp_path: Path) -> None:
    run, statuses, _ = _run(tmp_path, PersonalizationMode.FEDAMP, 2, {2: "mask"})
    assert statuses == ["completed", "aborted"]
    assert run.coordinator.status is m.RunStatus.DEGRADED


def test_local_runs_never_fail_this_way(tmp_path: Path) -> None:
    run, statuses, finished = _run(tmp_path, PersonalizationMode.LOCAL, 1, {1: "share"})
    assert statuses == ["completed"]
    assert run.coordinator.status is m.RunStatus.COMPLETED
    assert {f["status"] for f in finished} == {"completed"}


def test_degraded_travels_in_finish() -> None:
    finish = m.Finish(round=2, status=m.RunStatus.DEGRADED, result=None, heads=())
    assert m.decode(m.encode(finish)) == finish
