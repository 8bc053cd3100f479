"""Small pieces of the runtime's nodes, checked by hand."""

from __future__ import annotations

import numpy as np
import pytest

from securefed.runtime.nodes import own_segment_weight


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
