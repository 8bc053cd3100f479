"""Seeded splitting of one pool of labelled samples among simulated tenants with latent groups.

The only module of securefed that uses ``numpy.random`` (ruff's TID251 is lifted for this file
alone): the randomness here decides which *public* sample goes to which *simulated* tenant, and
which of an institution's imported rows are held out for test (:func:`split_rows`); it is never a
key, a seed of the protocol or a mask. Every draw of :func:`partition` comes from one
``np.random.default_rng(config.seed)``, in a fixed order, so the same samples, labels and config
always give the same federation (bit for bit), and different seeds give different ones.

What :func:`partition` guarantees, for every scheme:

* the pool is shuffled first (a source sorted by label is fine);
* no row of the pool is given to two tenants, nor to both splits of one tenant
  (:attr:`Federation.train_rows` / :attr:`Federation.test_rows` record the rows);
* tenant ``t`` (index ``t``, 0..tenants-1) belongs to latent group ``t * groups // tenants``:
  contiguous, balanced blocks (sizes differ by at most one), so tenants 0.. are group 0;
* each tenant's rows are shuffled and split into test (``round(test_fraction * size)``, at most
  ``size - 1``) and train (the rest, never empty); stratification is not attempted;
* with ``samples_per_tenant = m`` every tenant gets exactly ``m`` rows; with ``None`` the pool is
  shared out as evenly as the scheme allows (IID: sizes differ by at most one; other schemes:
  every class's samples are split among the tenants that want it, so sizes vary a little).

The schemes (:class:`Scheme`):

* ``dominant-class`` ("practical non-IID", FedAMP paper): the classes are dealt to the groups
  (disjoint sets, balanced by sample count); a tenant draws ``dominant_share`` of its data from its
  group's classes and the rest from all other classes, each class in proportion to its size.
* ``concept-shift``: every tenant draws from every class in proportion to its size (stratified),
  but each group relabels *all* its tenants' labels (train and test) with its own fixed
  permutation: group 0 keeps the identity, the other groups get seeded, pairwise different
  derangements (no label keeps its value). The same input means different things in different
  groups -- as the same applicant profile carries different risk in different portfolios.
* ``pathological``: each tenant holds only ``classes_per_tenant`` classes, dealt cyclically from
  a seeded ordering of the classes (so every class is held by about the same number of tenants).
  Groups are recorded but do not shape the data.
* ``iid``: a uniform random split. Groups are recorded but do not shape the data.

Failure modes: :class:`~securefed.errors.ConfigError` for an invalid config or a request the data
cannot meet (the message says which class or tenant falls short and what to lower), and
:class:`~securefed.data.layout.DataFormatError` for malformed samples or labels.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from enum import Enum

import numpy as np
import numpy.typing as npt

from securefed.data.layout import TenantData, as_labels, as_samples
from securefed.errors import ConfigError

__all__ = [
    "Federation",
    "PartitionConfig",
    "Scheme",
    "derangement_count",
    "partition",
    "split_rows",
]

_ENUMERATE_DERANGEMENTS_UP_TO = 7
_MAX_DRAWS = 100_000

IntArray = npt.NDArray[np.int64]


class Scheme(Enum):
    """How the pool is split among tenants (see the module docstring)."""

    DOMINANT_CLASS = "dominant-class"
    CONCEPT_SHIFT = "concept-shift"
    PATHOLOGICAL = "pathological"
    IID = "iid"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class PartitionConfig:
    """What :func:`partition` builds. Validated on construction.

    ``scheme`` may be given as its string value (``"concept-shift"``); it is stored as a
    :class:`Scheme`. ``samples_per_tenant`` = None shares out the whole pool.

    Raises:
        ConfigError: ``tenants`` < 1, ``groups`` < 1 or > ``tenants``, ``seed`` < 0,
            ``test_fraction`` outside [0, 1), ``dominant_share`` outside [0, 1],
            ``samples_per_tenant`` < 1, ``classes_per_tenant`` < 1, or an unknown scheme.
    """

    tenants: int
    groups: int = 3
    scheme: Scheme = Scheme.DOMINANT_CLASS
    seed: int = 0
    test_fraction: float = 0.2
    dominant_share: float = 0.8
    samples_per_tenant: int | None = None
    classes_per_tenant: int = 2

    def __post_init__(self) -> None:
        if not isinstance(self.scheme, Scheme):
            try:
                object.__setattr__(self, "scheme", Scheme(self.scheme))
            except ValueError:
                known = ", ".join(s.value for s in Scheme)
                raise ConfigError(f"unknown scheme {self.scheme!r} (known: {known})") from None
        if not _is_int(self.tenants) or self.tenants < 1:
            raise ConfigError(f"tenants must be an int >= 1, got {self.tenants!r}")
        if not _is_int(self.groups) or not 1 <= self.groups <= self.tenants:
            raise ConfigError(
                f"groups must be an int in [1, tenants={self.tenants}], got {self.groups!r}"
            )
        if not _is_int(self.seed) or self.seed < 0:
            raise ConfigError(f"seed must be an int >= 0, got {self.seed!r}")
        if not isinstance(self.test_fraction, int | float) or not 0 <= self.test_fraction < 1:
            raise ConfigError(f"test_fraction must be in [0, 1), got {self.test_fraction!r}")
        if not isinstance(self.dominant_share, int | float) or not 0 <= self.dominant_share <= 1:
            raise ConfigError(f"dominant_share must be in [0, 1], got {self.dominant_share!r}")
        if self.samples_per_tenant is not None and (
            not _is_int(self.samples_per_tenant) or self.samples_per_tenant < 1
        ):
            raise ConfigError(
                f"samples_per_tenant must be None or an int >= 1, got {self.samples_per_tenant!r}"
            )
        if not _is_int(self.classes_per_tenant) or self.classes_per_tenant < 1:
            raise ConfigError(
                f"classes_per_tenant must be an int >= 1, got {self.classes_per_tenant!r}"
            )

    def group_of(self, tenant: int) -> int:
        """The latent group of tenant ``tenant``: contiguous balanced blocks."""
        return tenant * self.groups // self.tenants


@dataclass(frozen=True, eq=False)
class Federation:
    """The result of :func:`partition`.

    ``tenants[t].index == t``; ``groups[t]`` is tenant t's latent group; ``permutations[g]`` is
    group g's label map (``new = permutations[g][old]``; identity except under concept shift);
    ``train_rows[t]`` / ``test_rows[t]`` are the rows of the input pool that tenant t holds, in
    the order of its arrays (so ``tenants[t].train_x == pool_x[train_rows[t]]``);
    ``num_classes`` is max label + 1 of the pool; ``dominant_classes[g]`` are group g's dominant
    classes under dominant-class (sorted; empty tuple for the other schemes).
    """

    tenants: tuple[TenantData, ...]
    groups: tuple[int, ...]
    permutations: tuple[tuple[int, ...], ...]
    config: PartitionConfig
    train_rows: tuple[IntArray, ...]
    test_rows: tuple[IntArray, ...]
    num_classes: int
    dominant_classes: tuple[tuple[int, ...], ...] = ()


def derangement_count(n: int) -> int:
    """The number of permutations of ``n`` items with no fixed point (1, 0, 1, 2, 9, 44, ...)."""
    previous, current = 1, 0  # D(0), D(1)
    if n == 0:
        return previous
    for k in range(2, n + 1):
        previous, current = current, (k - 1) * (current + previous)
    return current


def _derangements(classes: int, count: int, rng: np.random.Generator) -> list[tuple[int, ...]]:
    """``count`` distinct, seeded derangements of ``range(classes)``."""
    available = derangement_count(classes)
    if count > available:
        raise ConfigError(
            f"concept shift needs {count} distinct derangements of {classes} labels (one per "
            f"group after the first) but only {available} exist: use fewer groups"
        )
    if count == 0:
        return []
    if classes <= _ENUMERATE_DERANGEMENTS_UP_TO:
        every = [
            p
            for p in itertools.permutations(range(classes))
            if all(p[i] != i for i in range(classes))
        ]
        chosen = rng.choice(len(every), size=count, replace=False)
        return [every[int(i)] for i in chosen]
    found: list[tuple[int, ...]] = []
    for _ in range(_MAX_DRAWS):
        p = tuple(int(v) for v in rng.permutation(classes))
        if all(p[i] != i for i in range(classes)) and p not in found:
            found.append(p)
            if len(found) == count:
                return found
    raise ConfigError("could not draw the concept-shift permutations")  # pragma: no cover


def _apportion(total: int, weights: npt.NDArray[np.float64], rng: np.random.Generator) -> IntArray:
    """Split ``total`` into integers proportional to ``weights`` (largest remainder).

    Entries with zero weight get zero; ties among remainders are broken at random (seeded), so
    no position is systematically favoured.
    """
    positive = weights > 0
    quotas = total * weights / weights.sum()
    base: IntArray = np.floor(quotas).astype(np.int64)
    left = total - int(base.sum())
    if left > 0:
        remainders = np.where(positive, quotas - base, -1.0)
        order = np.lexsort((rng.permutation(len(weights)), -remainders))
        base[order[:left]] += 1
    return base


def _class_pools(order: IntArray, labels: IntArray, classes: int) -> list[IntArray]:
    """For each class, its rows in the (shuffled) ``order``."""
    ordered = labels[order]
    return [order[ordered == c] for c in range(classes)]


def _dominant_sets(sizes: IntArray, groups: int, rng: np.random.Generator) -> list[list[int]]:
    """Deal the present classes to the groups, balancing the groups' sample counts.

    Classes go, largest first (random order among equal sizes), to the group with the fewest
    samples so far (then the fewest classes, then the lowest index).
    """
    present = np.flatnonzero(sizes > 0)
    if groups > len(present):
        raise ConfigError(
            f"dominant-class needs at least one class per group: {groups} groups but the data "
            f"has {len(present)} classes"
        )
    ties = rng.permutation(len(present))
    dealt: list[list[int]] = [[] for _ in range(groups)]
    mass = [0] * groups
    for position in np.lexsort((ties, -sizes[present])):
        c = int(present[position])
        g = min(range(groups), key=lambda h: (mass[h], len(dealt[h]), h))
        dealt[g].append(c)
        mass[g] += int(sizes[c])
    return dealt


def _weights(
    config: PartitionConfig,
    groups: tuple[int, ...],
    sizes: IntArray,
    rng: np.random.Generator,
) -> tuple[npt.NDArray[np.float64], tuple[tuple[int, ...], ...]]:
    """Each tenant's relative appetite for each class (rows sum to 1), and dominant classes."""
    tenants, classes = config.tenants, len(sizes)
    mass = sizes.astype(np.float64)
    w = np.zeros((tenants, classes))
    dominant: list[list[int]] = []
    if config.scheme is Scheme.CONCEPT_SHIFT:
        w[:] = mass
    elif config.scheme is Scheme.DOMINANT_CLASS:
        share = float(config.dominant_share)
        dominant = _dominant_sets(sizes, config.groups, rng)
        for t in range(tenants):
            inside = np.zeros(classes, dtype=bool)
            inside[dominant[groups[t]]] = True
            outside_mass = mass[~inside].sum()
            if outside_mass == 0:
                w[t] = np.where(inside, mass, 0.0)
            else:
                w[t] = np.where(
                    inside, share * mass / mass[inside].sum(), (1 - share) * mass / outside_mass
                )
    elif config.scheme is Scheme.PATHOLOGICAL:
        present = np.flatnonzero(sizes > 0)
        k = config.classes_per_tenant
        if k > len(present):
            raise ConfigError(
                f"pathological: classes_per_tenant={k} but the data has {len(present)} classes"
            )
        dealt = present[rng.permutation(len(present))]
        for t in range(tenants):
            held = [int(dealt[(t * k + j) % len(present)]) for j in range(k)]
            w[t, held] = mass[held]
    w /= w.sum(axis=1, keepdims=True)
    return w, tuple(tuple(sorted(d)) for d in dominant)


def _counts(
    config: PartitionConfig,
    weights: npt.NDArray[np.float64],
    sizes: IntArray,
    rng: np.random.Generator,
) -> IntArray:
    """How many rows of each class each tenant gets (tenants x classes)."""
    tenants, classes = weights.shape
    counts = np.zeros((tenants, classes), dtype=np.int64)
    m = config.samples_per_tenant
    if m is None:
        for c in range(classes):
            if sizes[c] and weights[:, c].sum() > 0:
                counts[:, c] = _apportion(int(sizes[c]), weights[:, c], rng)
        return counts
    for t in range(tenants):
        counts[t] = _apportion(m, weights[t], rng)
    need = counts.sum(axis=0)
    short = np.flatnonzero(need > sizes)
    if short.size:
        c = int(short[0])
        fits = int(m * min(sizes[i] / need[i] for i in short))
        raise ConfigError(
            f"not enough samples of class {c} for the {config.scheme.value} split: it needs "
            f"{need[c]}, the data has {sizes[c]}; lower samples_per_tenant (to about {fits})"
            + (" or dominant_share" if config.scheme is Scheme.DOMINANT_CLASS else "")
            + " or the number of tenants"
        )
    return counts


def _tenant_rows(
    config: PartitionConfig,
    *,
    order: IntArray,
    labels: IntArray,
    groups: tuple[int, ...],
    classes: int,
    rng: np.random.Generator,
) -> tuple[list[IntArray], tuple[tuple[int, ...], ...]]:
    """Each tenant's rows (not yet shuffled or split), and each group's dominant classes."""
    tenants = config.tenants
    if config.scheme is Scheme.IID:
        if config.samples_per_tenant is None:
            parts = np.array_split(order, tenants)
            return [np.asarray(p, dtype=np.int64) for p in parts], ()
        m = config.samples_per_tenant
        return [order[t * m : (t + 1) * m] for t in range(tenants)], ()
    sizes = np.bincount(labels, minlength=classes).astype(np.int64)
    weights, dominant = _weights(config, groups, sizes, rng)
    counts = _counts(config, weights, sizes, rng)
    pools = _class_pools(order, labels, classes)
    starts = np.vstack([np.zeros(classes, dtype=np.int64), np.cumsum(counts, axis=0)])
    rows: list[IntArray] = []
    for t in range(tenants):
        taken = [pools[c][starts[t, c] : starts[t + 1, c]] for c in range(classes)]
        rows.append(np.concatenate(taken).astype(np.int64))
    return rows, dominant


def split_rows(rows: int, *, test_fraction: float, seed: int) -> tuple[IntArray, IntArray]:
    """One table's rows split into train and test, seeded: ``(train_rows, test_rows)``.

    ``round(test_fraction * rows)`` rows (at most ``rows - 1``) go to test, drawn uniformly by
    ``np.random.default_rng(seed)`` -- a seeded split of an institution's own records, never a
    key. Both index arrays are sorted, so each split keeps the table's row order. The same
    ``rows``, ``test_fraction`` and ``seed`` always give the same split.

    Raises:
        ConfigError: ``rows`` < 1, ``test_fraction`` outside [0, 1), or ``seed`` < 0.
    """
    if not _is_int(rows) or rows < 1:
        raise ConfigError(f"split_rows() needs at least one row, got {rows!r}")
    if not isinstance(test_fraction, int | float) or not 0 <= test_fraction < 1:
        raise ConfigError(f"test_fraction must be in [0, 1), got {test_fraction!r}")
    if not _is_int(seed) or seed < 0:
        raise ConfigError(f"seed must be an int >= 0, got {seed!r}")
    n_test = min(int(np.floor(test_fraction * rows + 0.5)), rows - 1)
    is_test = np.zeros(rows, dtype=bool)
    is_test[np.random.default_rng(seed).permutation(rows)[:n_test]] = True
    return np.flatnonzero(~is_test).astype(np.int64), np.flatnonzero(is_test).astype(np.int64)


def partition(samples: npt.ArrayLike, labels: npt.ArrayLike, config: PartitionConfig) -> Federation:
    """Split a labelled pool among ``config.tenants`` simulated tenants (see the module docstring).

    ``samples`` follow the seed layout's sample rules (``(n, 28, 28)``, ``(n, 784)``, ``(n, F)``,
    ...; pixel values 0..255 are scaled to [0, 1]); ``labels`` are integral, >= 0, shape ``(n,)``.

    Raises:
        DataFormatError: malformed samples or labels.
        ConfigError: sample and label counts differ; an empty pool;
            ``tenants * samples_per_tenant`` exceeds the pool; some class is too small for the
            request; a tenant would get no training sample; fewer classes than groups
            (dominant-class) or than ``classes_per_tenant`` (pathological); or too few labels
            for one distinct derangement per extra group (concept shift).
    """
    (x,) = as_samples(samples, where="partition() samples")
    y = as_labels(labels, where="partition() labels")
    if len(x) != len(y):
        raise ConfigError(f"partition(): {len(x)} samples but {len(y)} labels")
    n = len(y)
    if n == 0:
        raise ConfigError("partition(): the pool is empty")
    m = config.samples_per_tenant
    if m is not None and config.tenants * m > n:
        raise ConfigError(
            f"partition(): {config.tenants} tenants x {m} samples = {config.tenants * m} "
            f"exceeds the {n} samples available"
        )
    classes = int(y.max()) + 1
    rng = np.random.default_rng(config.seed)
    order = rng.permutation(n).astype(np.int64)
    groups = tuple(config.group_of(t) for t in range(config.tenants))
    rows, dominant = _tenant_rows(
        config, order=order, labels=y, groups=groups, classes=classes, rng=rng
    )

    identity = tuple(range(classes))
    if config.scheme is Scheme.CONCEPT_SHIFT:
        permutations = (identity, *_derangements(classes, config.groups - 1, rng))
    else:
        permutations = (identity,) * config.groups

    tenants: list[TenantData] = []
    train_rows: list[IntArray] = []
    test_rows: list[IntArray] = []
    for t, unshuffled in enumerate(rows):
        if len(unshuffled) < 1:
            raise ConfigError(
                f"partition(): tenant {t} would get no samples ({n} samples for "
                f"{config.tenants} tenants under {config.scheme.value}); use fewer tenants"
            )
        mine = unshuffled[rng.permutation(len(unshuffled))]
        n_test = min(int(np.floor(config.test_fraction * len(mine) + 0.5)), len(mine) - 1)
        test, train = mine[:n_test], mine[n_test:]
        relabel = np.asarray(permutations[groups[t]], dtype=np.int64)
        tenants.append(TenantData(t, x[train], relabel[y[train]], x[test], relabel[y[test]]))
        train_rows.append(train)
        test_rows.append(test)
    return Federation(
        tenants=tuple(tenants),
        groups=groups,
        permutations=permutations,
        config=config,
        train_rows=tuple(train_rows),
        test_rows=tuple(test_rows),
        num_classes=classes,
        dominant_classes=dominant,
    )
