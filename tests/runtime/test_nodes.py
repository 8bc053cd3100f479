"""Small pieces of the runtime's nodes, checked by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from securefed.audit import Ledger
from securefed.audit.entry import parse_entry
from securefed.crypto import get_suite
from securefed.runtime.nodes import ClientNode, own_segment_weight
from securefed.secagg.policy import PolicyRule


def test_own_segment_weight_by_hand() -> None:
    weights = np.array(
        [
            [0.5, 0.5, 0.0, 0.0],  # all off-diagonal weight on its own segment: 1.0
            [0.2, 0.2, 0.3, 0.3],  # 0.2 of 0.8 on its own segment: 0.25
            [0.0, 0.0, 1.0, 0.0],  # no off-diagonal weight: not counted
            [0.1, 0.1, 0.4, 0.4],  # 0.4 of 0.6: 2/3
        ]
    )
    share = own_segment_weight(weights, [0, 0, 1, 1])
    assert share == pytest.approx((1.0 + 0.25 + 2 / 3) / 3)
    assert own_segment_weight(np.eye(3), [0, 0, 1]) is None


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
