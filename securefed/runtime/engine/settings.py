"""What every party of a run derives from the run configuration it holds: the engine's settings.

The coordinator and each institution build the same :class:`EngineSettings` from the same run
configuration (its SHA-256 is in every ledger), so neither has to trust the other about the mode,
the number of rounds, the round parameters or a declared partition.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from securefed.errors import ConfigError
from securefed.personalize.modes import PersonalizationMode
from securefed.personalize.rounds import RoundParams, minimum_group_size
from securefed.runtime.config import RunConfig, SegmentSource
from securefed.secagg import AggregationMode

__all__ = ["EngineSettings", "round_params"]


@dataclass(frozen=True, slots=True)
class EngineSettings:
    """The run as the engine sees it.

    Attributes:
        mode: the personalization mode.
        rounds: how many rounds the run has.
        secure: False only for plaintext comparison runs (the in-memory transport).
        params: the round parameters (weights, policy, codec).
        partition: group mode's declared partition (one label per roster index, labels
            0..G-1); None when group mode learns it, and in every other mode.
        learn_partition: group mode chooses its partition from the first round's sketches.
        statistic: similarities come from each party's DP statistic, not its model.
    """

    mode: PersonalizationMode
    rounds: int
    secure: bool = True
    params: RoundParams = field(default_factory=RoundParams)
    partition: tuple[int, ...] | None = None
    learn_partition: bool = False
    statistic: bool = False

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ConfigError(f"rounds must be >= 1, got {self.rounds}")
        if self.partition is not None:
            labels = set(self.partition)
            if labels != set(range(len(labels))):
                raise ConfigError("group labels must be 0..G-1")

    @property
    def attention(self) -> bool:
        """FedAMP / HeurFedAMP: one target-blinded output per party."""
        return self.mode.is_attention

    @property
    def aggregates(self) -> bool:
        return self.mode is not PersonalizationMode.LOCAL

    @property
    def sketches(self) -> bool:
        """Whether parties send secret sketches (attention weights or a partition to learn)."""
        return self.secure and (self.attention or self.learn_partition)

    @property
    def anchor(self) -> bool:
        """Whether the personalized model is also the next round's proximal anchor (FedAMP)."""
        return self.attention

    @property
    def aggregation(self) -> AggregationMode:
        return AggregationMode.ATTENTION if self.attention else AggregationMode.SUM

    def fixed_partition(self, n: int) -> tuple[int, ...] | None:
        """The partition every round uses, if known before the first: the declared one, one
        group of everyone (fedavg, attention), or None (learned, or local)."""
        if self.mode is PersonalizationMode.GROUP:
            return self.partition
        if self.mode is PersonalizationMode.LOCAL:
            return None
        return (0,) * n

    def check_partition(self, partition: Sequence[int], n: int) -> None:
        """Raise ConfigError unless ``partition`` fits n parties and the group-size rule."""
        if len(partition) != n:
            raise ConfigError(f"a partition lists {len(partition)} groups for {n} parties")
        if self.mode is not PersonalizationMode.GROUP:
            return
        smallest = minimum_group_size(self.params)
        for label in sorted(set(partition)):
            size = list(partition).count(label)
            if size < smallest:
                raise ConfigError(
                    f"group {label} has {size} members; groups need at least k_min + colluders "
                    f"= {smallest} (and 3 for secure aggregation)"
                )

    @classmethod
    def from_run_config(
        cls, config: RunConfig, *, parties: int, declared: Sequence[int] | None = None
    ) -> EngineSettings:
        """The settings of ``config`` for ``parties`` institutions; ``declared`` are the
        segments a data directory declares (``federation.json``), used when the configuration
        says ``segments = "declared"``.

        Raises:
            ConfigError: group mode with declared segments but none given, a partition of the
                wrong length or with a group below the minimum size.
        """
        partition = None
        learn = False
        if config.mode is PersonalizationMode.GROUP:
            segments = config.personalize.segments
            if segments is SegmentSource.LEARNED:
                learn = True
            else:
                chosen = segments if isinstance(segments, tuple) else declared
                if chosen is None:
                    raise ConfigError(
                        "group mode with declared segments needs them: list them in "
                        "[personalize] segments = [...], give a data directory with "
                        'federation.json, or use segments = "learned"'
                    )
                partition = _relabelled(chosen)
        settings = cls(
            mode=config.mode,
            rounds=config.rounds,
            secure=config.secure,
            params=round_params(config),
            partition=partition,
            learn_partition=learn,
            statistic=config.uses_statistic,
        )
        if partition is not None:
            settings.check_partition(partition, parties)
        return settings


def _relabelled(segments: Sequence[int]) -> tuple[int, ...]:
    """The same grouping with labels 0..G-1 in order of first appearance."""
    labels: dict[int, int] = {}
    return tuple(labels.setdefault(int(s), len(labels)) for s in segments)


def round_params(config: RunConfig) -> RoundParams:
    """The round parameters of ``config`` (HeurFedAMP's xi_ii defaults to 0.5)."""
    p = config.personalize
    heur = config.mode is PersonalizationMode.HEURFEDAMP
    return RoundParams(
        alpha=p.alpha,
        sigma_scale=p.sigma_scale,
        self_weight=p.self_weight if p.self_weight is not None or not heur else 0.5,
        temperature=p.temperature,
        sketch_dim=p.sketch_dim,
        groups=p.groups,
        value_range=config.value_range,
        **_exposure_overrides(config),
    )


def _exposure_overrides(config: RunConfig) -> dict[str, Any]:
    """The exposure rule's keys the configuration sets (unset: RoundParams' defaults)."""
    p = config.personalize
    overrides: dict[str, Any] = {}
    if p.colluders is not None:
        overrides["colluders"] = p.colluders
    if p.min_exposure is not None:
        overrides["min_exposure"] = p.min_exposure
    if p.history_rounds is not None:
        overrides["history_rounds"] = p.history_rounds
    if p.sketches_per_seed is not None:
        overrides["sketches_per_seed"] = p.sketches_per_seed
    if p.max_seed_deals is not None:
        overrides["max_seed_deals"] = p.max_seed_deals
    return overrides
