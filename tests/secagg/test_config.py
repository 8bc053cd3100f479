"""RoundConfig refuses every unsafe or inconsistent parameter (R1, R7)."""

from __future__ import annotations

import pytest

from securefed.encoding import CodecConfig, RingBits
from securefed.errors import ConfigError
from securefed.secagg import AggregationMode, GraphKind, MaskGraph, default_threshold
from securefed.secagg.policy import WeightPolicy
from tests.secagg.conftest import config_for, federation


@pytest.mark.parametrize(("n", "t"), [(3, 3), (5, 4), (10, 7), (20, 14), (62, 42)])
def test_default_threshold_and_collusion_bound(n: int, t: int) -> None:
    config = config_for(federation(n) if n <= 20 else federation(62))
    assert default_threshold(n) == t
    if n <= 20:
        assert config.threshold == t
        assert config.collusion_bound == 2 * t - n - 1
        assert 2 * config.threshold - n > config.collusion_bound


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"threshold": 6}, "threshold"),
        ({"threshold": -1}, "threshold"),
        ({"threshold": 3, "collusion_bound": 1}, "R1"),
        ({"collusion_bound": 3}, "R1"),
        ({"dim": 0}, "vector_length"),
        ({"dim": 2**28 + 1}, "vector_length"),
        ({"round_": -1}, "round"),
    ],
)
def test_refused_parameters(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_for(federation(5), **changes)  # type: ignore[arg-type]


def test_codec_must_have_headroom_for_a_sum_of_n() -> None:
    tight = CodecConfig(RingBits.BITS32, 16, 2**15 - 1)  # one term fits, five do not
    with pytest.raises(ConfigError, match="wrap"):
        config_for(federation(5), codec=tight)


def test_graph_parameters_are_validated() -> None:
    with pytest.raises(ConfigError):
        MaskGraph(GraphKind.COMPLETE, degree=3)
    with pytest.raises(ConfigError):
        MaskGraph(GraphKind.SECAGG_PLUS, degree=1)


def test_attention_mode_with_the_secagg_plus_graph_is_refused_with_the_reason() -> None:
    """Issue 20, finding 3: the configuration accepted it and every such round aborted."""
    with pytest.raises(ConfigError, match="attention mode needs the complete masking graph"):
        config_for(
            federation(20),
            mode=AggregationMode.ATTENTION,
            graph=MaskGraph(GraphKind.SECAGG_PLUS, degree=18),
        )
    config_for(federation(20), graph=MaskGraph(GraphKind.SECAGG_PLUS, degree=18))  # sums: fine


def test_digest_changes_with_every_parameter() -> None:
    fed = federation(5)
    base = config_for(fed)
    variants = [
        config_for(fed, round_=2),
        config_for(fed, dim=65),
        config_for(fed, threshold=5, collusion_bound=4),
        config_for(fed, collusion_bound=1),
        config_for(fed, codec=CodecConfig(RingBits.BITS64, 16, 256.0)),
        config_for(federation(5, "fips-p256")),
        config_for(fed, policy=WeightPolicy(min_exposure=0.4)),  # the exposure rule is bound
        config_for(fed, policy=WeightPolicy(colluders=2)),
    ]
    digests = {base.digest(), *(v.digest() for v in variants)}
    assert len(digests) == len(variants) + 1
