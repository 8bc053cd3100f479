"""Small pieces of the runtime's nodes and of the coordinator's record, checked by hand."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from securefed.audit import Ledger
from securefed.audit.entry import parse_entry
from securefed.crypto import get_suite
from securefed.personalize.modes import PersonalizationMode
from securefed.runtime.engine.coordinator import Coordinator
from securefed.runtime.engine.settings import EngineSettings
from securefed.runtime.nodes import ClientNode
from securefed.secagg.federation import make_federation
from securefed.secagg.policy import PolicyRule
from securefed.testing.rounds import VectorFederation, engine_config


def own_segment_weight(tmp_path: Path, weights: np.ndarray, segments: list[int]) -> float | None:
    """The coordinator's own-segment share of ``weights`` (an attention round's xi)."""
    n = len(segments)
    federation = make_federation(n)
    settings = EngineSettings(mode=PersonalizationMode.FEDAMP, rounds=1)
    with Ledger.open(tmp_path / f"server-{n}.jsonl", "server", federation.server_key) as ledger:
        coordinator = Coordinator(
            config=engine_config(settings, seed=0, parties=n),
            settings=settings,
            roster=federation.roster,
            identity=federation.server_key,
            ledger=ledger,
            transport="memory",
            segments=segments,
        )
        round_ = SimpleNamespace(weights=weights)
        return coordinator._own_segment_weight(round_)  # type: ignore[arg-type]


def test_own_segment_weight_by_hand(tmp_path: Path) -> None:
    weights = np.array(
        [
            [0.5, 0.5, 0.0, 0.0],  # all off-diagonal weight on its own segment: 1.0
            [0.2, 0.2, 0.3, 0.3],  # 0.2 of 0.8 on its own segment: 0.25
            [0.0, 0.0, 1.0, 0.0],  # no off-diagonal weight: not counted
            [0.1, 0.1, 0.4, 0.4],  # 0.4 of 0.6: 2/3
        ]
    )
    share = own_segment_weight(tmp_path, weights, [0, 0, 1, 1])
    assert share == pytest.approx((1.0 + 0.25 + 2 / 3) / 3)
    assert own_segment_weight(tmp_path, np.eye(3), [0, 0, 1]) is None


def test_a_runs_own_segment_weight_is_that_of_its_weights() -> None:
    """In a run's metrics: the share computed from the weights the coordinator used."""
    rng = np.random.default_rng(2)
    centres = rng.uniform(-2, 2, (2, 16))
    models = [centres[i % 2] + rng.normal(0, 0.1, 16) for i in range(6)]
    segments = [i % 2 for i in range(6)]
    settings = EngineSettings(mode=PersonalizationMode.HEURFEDAMP, rounds=1)
    with VectorFederation(models, settings, seed=3, segments=segments) as run:
        metrics = run.run()
        (view,) = run.views
    assert view.weights is not None
    shares = []
    for i, row in enumerate(view.weights):
        others = [j for j in range(6) if j != i]
        shares.append(sum(row[j] for j in others if j % 2 == i % 2) / sum(row[j] for j in others))
    share = metrics.history[1].own_segment_weight
    assert share == pytest.approx(float(np.mean(shares)))
    assert share is not None
    assert share > 0.5  # the sketches find the segments


def test_refusals_are_ledgered_with_the_rule_name(tmp_path: Path) -> None:
    key = get_suite("default").generate_signing_key()
    ledger = Ledger.open(tmp_path / "bank-0.jsonl", "bank-0", key)
    node = ClientNode.__new__(ClientNode)  # only the ledger is needed here
    node.ledger = ledger
    node.record_refusals(3, [(1, PolicyRule.EFFECTIVE_CONTRIBUTORS), (2, "cap")])
    ledger.close()
    lines = (tmp_path / "bank-0.jsonl").read_bytes().splitlines()
    payloads = [dict(parse_entry(line).payload) for line in lines]
    assert payloads == [
        {"round": 3, "target": 1, "reason": "effective-contributors"},
        {"round": 3, "target": 2, "reason": "cap"},
    ]
