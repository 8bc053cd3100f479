"""Federation-wide statistics of tabular features, from sums that secure aggregation adds up.

No institution reveals its own statistics, and no table is pooled (docs/tabular.md,
"Federation-wide standardisation"). Every institution turns each of its training records into
a short vector (:func:`record_contributions`); the sum of those vectors over all records of all
institutions holds, for every numeric column, the count of present values, their sum and their
sum of squares; the count of records; the count of each class; and the sum of every other
feature (binary values, one-hot categories, missing indicators). Each institution releases its
own sum through the Gaussian mechanism of its DP trainer (charged to its budget), the
institutions add the released sums by secure aggregation, and every institution derives the
same :class:`FederationStatistics` from the total (:func:`statistics_from_sum`): the mean and
standard deviation of every numeric column (for standardisation, with a missing cell imputed by
the mean), its missing rate, the class balance and the frequency of every other feature.

Sensitivity. A numeric value is clipped to its column's declared ``range = [lo, hi]`` and
mapped to ``u = (x - lo) / (hi - lo)`` in [0, 1] before it is summed (the features themselves
are never clipped); every other entry of a record's vector is 0 or 1. With ``n`` numeric
columns and ``m`` other features a record's vector has squared L2 norm at most
``2 + 3n + m``; every vector is divided by the square root of that bound
(:attr:`StatisticsLayout.norm_bound`), so one record changes the sum by at most 1 in L2 norm
and the DP trainer's clipping to norm 1 never alters a vector. A common scale factor does not
change any statistic: each is a ratio of two entries of the sum (so a secure *average* over the
institutions serves as well as the sum).

Noise. Under DP the total carries Gaussian noise; a count can come out small or even negative.
The derivation never divides by less than one record's worth, clips means to the declared range
and rates to [0, 1]; a standard deviation below :data:`MIN_SPREAD` of the range (noise left no
usable spread) is replaced by ``(hi - lo) / sqrt(12)``, a uniform's over the range -- scaling by
a floor would blow the column up -- and a column with no present value keeps the middle of its
range with that spread; each fallback is said in :attr:`FederationStatistics.fallbacks` (and
ledgered as a hazard by every institution).

Failure modes: :class:`~securefed.errors.ConfigError` for a schema whose numeric features lack a
range, arrays of the wrong shape, or a sum of the wrong length or with non-finite values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from securefed.data.schema import ColumnType, Missing, TabularSchema
from securefed.errors import ConfigError

__all__ = [
    "MIN_SPREAD",
    "FederationStatistics",
    "StatisticsLayout",
    "record_contributions",
    "statistics_from_sum",
]

#: The smallest standard deviation kept, as a share of a column's declared range.
MIN_SPREAD = 1e-3

Float64Array = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class StatisticsLayout:
    """Where each statistic sits in a record's vector, derived from the schema alone (so every
    institution derives the same layout).

    ``features``: the width of the prepared samples. ``numeric``: the feature index of each
    numeric column, with its ``ranges`` and the index of its missing indicator (``indicators``,
    -1 without one). ``others``: every other feature index. ``classes``: the number of labels.
    """

    features: int
    numeric: tuple[int, ...]
    ranges: tuple[tuple[float, float], ...]
    indicators: tuple[int, ...]
    others: tuple[int, ...]
    classes: int
    names: tuple[str, ...]

    @classmethod
    def of(cls, schema: TabularSchema) -> StatisticsLayout:
        """The layout of ``schema``. Raises ConfigError naming every numeric feature column
        without a declared ``range``."""
        unbounded = [
            c.name for c in schema.features if c.type is ColumnType.NUMERIC and c.range is None
        ]
        if unbounded:
            raise ConfigError(
                "federation-wide standardisation needs a declared range = [lo, hi] for every "
                f"numeric column (it bounds what one record adds): missing for {unbounded}"
            )
        numeric: list[int] = []
        ranges: list[tuple[float, float]] = []
        indicators: list[int] = []
        index = 0
        for column in schema.features:
            width = len(column.feature_names)
            if column.type is ColumnType.NUMERIC:
                assert column.range is not None  # noqa: S101 - checked above
                numeric.append(index)
                ranges.append(column.range)
                indicators.append(index + 1 if column.missing is Missing.INDICATOR else -1)
            index += width
        others = tuple(i for i in range(index) if i not in set(numeric))
        return cls(
            features=index,
            numeric=tuple(numeric),
            ranges=tuple(ranges),
            indicators=tuple(indicators),
            others=others,
            classes=len(schema.classes),
            names=schema.feature_names,
        )

    @property
    def length(self) -> int:
        """The length of a record's vector (and of the sum)."""
        return 1 + self.classes + 3 * len(self.numeric) + len(self.others)

    @property
    def norm_bound(self) -> float:
        """The bound on a record's squared L2 norm before scaling (module docstring)."""
        return float(2 + 3 * len(self.numeric) + len(self.others))


def record_contributions(
    layout: StatisticsLayout, samples: npt.ArrayLike, labels: npt.ArrayLike
) -> Float64Array:
    """One row per record: ``[1, one-hot label, u·present, u²·present, present, others]``
    divided by ``sqrt(layout.norm_bound)`` (module docstring); every row's L2 norm is at most 1.

    Raises ConfigError for samples that are not ``(rows, layout.features)`` or labels outside
    ``[0, classes)``."""
    x = np.asarray(samples, dtype=np.float64)
    y = np.asarray(labels)
    if x.ndim != 2 or x.shape[1] != layout.features or y.shape != (x.shape[0],):
        raise ConfigError(
            f"statistics need samples of shape (rows, {layout.features}) and one label per "
            f"row, got {x.shape} and {y.shape}"
        )
    if y.size and (y.min() < 0 or y.max() >= layout.classes):
        raise ConfigError(f"labels must be in [0, {layout.classes})")
    rows = x.shape[0]
    onehot = np.zeros((rows, layout.classes))
    onehot[np.arange(rows), y.astype(np.int64)] = 1.0
    numeric = np.asarray(layout.numeric, dtype=np.int64)
    lo = np.array([r[0] for r in layout.ranges])
    hi = np.array([r[1] for r in layout.ranges])
    u = np.clip((x[:, numeric] - lo) / (hi - lo), 0.0, 1.0) if numeric.size else x[:, :0]
    present = np.ones_like(u)
    for k, indicator in enumerate(layout.indicators):
        if indicator >= 0:
            present[:, k] = 1.0 - np.clip(x[:, indicator], 0.0, 1.0)
    u = u * present
    others = np.clip(x[:, np.asarray(layout.others, dtype=np.int64)], 0.0, 1.0)
    vector = np.hstack([np.ones((rows, 1)), onehot, u, u * u, present, others])
    return np.asarray(vector / math.sqrt(layout.norm_bound), dtype=np.float64)


@dataclass(frozen=True, slots=True)
class FederationStatistics:
    """What every institution derives from the same total (module docstring). Per numeric
    column (in ``layout.numeric`` order): ``means``, ``stds`` and ``missing_rates``; per
    class: ``class_balance``; per other feature: ``frequencies``. ``records`` is the count of
    records the (noisy, possibly averaged) total stands for, in the total's own scale."""

    means: tuple[float, ...]
    stds: tuple[float, ...]
    missing_rates: tuple[float, ...]
    class_balance: tuple[float, ...]
    frequencies: tuple[float, ...]
    fallbacks: tuple[str, ...]

    def scaler(
        self, layout: StatisticsLayout
    ) -> tuple[Float64Array, Float64Array, npt.NDArray[np.int64]]:
        """``(shift, scale, indicator)`` for a model's feature scaler: every numeric feature
        standardised by the federation's mean and deviation (a missing cell, flagged by its
        indicator, imputed by the mean); every other feature unchanged."""
        shift = np.zeros(layout.features)
        scale = np.ones(layout.features)
        indicator = np.full(layout.features, -1, dtype=np.int64)
        for k, j in enumerate(layout.numeric):
            shift[j], scale[j], indicator[j] = self.means[k], self.stds[k], layout.indicators[k]
        return shift, scale, indicator

    def to_json(self, layout: StatisticsLayout) -> dict[str, object]:
        """A JSON-ready record, by feature name."""
        return {
            "numeric": {
                layout.names[j]: {
                    "mean": self.means[k],
                    "std": self.stds[k],
                    "missing_rate": self.missing_rates[k],
                }
                for k, j in enumerate(layout.numeric)
            },
            "class_balance": list(self.class_balance),
            "frequencies": {
                layout.names[j]: self.frequencies[k] for k, j in enumerate(layout.others)
            },
            "fallbacks": list(self.fallbacks),
        }


def statistics_from_sum(layout: StatisticsLayout, total: npt.ArrayLike) -> FederationStatistics:
    """The federation's statistics from the (noisy) sum of every record's vector, or from any
    positive multiple of it (module docstring). Raises ConfigError for a total of the wrong
    length or with non-finite values."""
    v = np.asarray(total, dtype=np.float64)
    if v.shape != (layout.length,) or not np.isfinite(v).all():
        raise ConfigError(
            f"the statistics total must be {layout.length} finite values, got shape {v.shape}"
        )
    unit = 1.0 / math.sqrt(layout.norm_bound)  # one record's worth, before any averaging
    n = len(layout.numeric)
    k = layout.classes
    count = max(v[0], unit)
    balance = np.clip(v[1 : 1 + k] / count, 0.0, 1.0)
    sums, squares, present = (v[1 + k + i * n : 1 + k + (i + 1) * n] for i in range(3))
    others = v[1 + k + 3 * n :]
    means, stds, rates, fallbacks = [], [], [], []
    for j in range(n):
        lo, hi = layout.ranges[j]
        width = hi - lo
        name = layout.names[layout.numeric[j]]
        rates.append(float(np.clip(1.0 - present[j] / count, 0.0, 1.0)))
        if present[j] < unit:  # no present value survives the noise
            means.append(lo + width / 2)
            stds.append(width / math.sqrt(12.0))
            fallbacks.append(f"{name}: no present values; the middle of its range")
            continue
        mean_u = float(np.clip(sums[j] / present[j], 0.0, 1.0))
        second = float(np.clip(squares[j] / present[j], 0.0, 1.0))
        spread = math.sqrt(max(second - mean_u * mean_u, 0.0))
        if spread < MIN_SPREAD:
            # noise (or a constant column) left no usable spread: scaling by a floor would
            # blow the column up (measured: about 100-fold, AUC 0.62 instead of 0.77), so the
            # column gets the spread of a uniform over its range, which never inflates it
            fallbacks.append(
                f"{name}: spread below {MIN_SPREAD:g} of its range; the range's (uniform) "
                "spread is used"
            )
            spread = 1.0 / math.sqrt(12.0)
        means.append(lo + width * mean_u)
        stds.append(width * spread)
    return FederationStatistics(
        means=tuple(means),
        stds=tuple(stds),
        missing_rates=tuple(rates),
        class_balance=tuple(float(b) for b in balance),
        frequencies=tuple(float(f) for f in np.clip(others / count, 0.0, 1.0)),
        fallbacks=tuple(fallbacks),
    )
