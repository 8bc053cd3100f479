"""Seeded partitions: disjoint, sized, deterministic, and each scheme's skew is what it claims."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from securefed.data import DataFormatError, Federation, PartitionConfig, Scheme, partition
from securefed.data.partition import derangement_count
from securefed.errors import ConfigError

CLASSES = 10
PER_CLASS = 60


def pool(classes: int = CLASSES, per_class: int = PER_CLASS) -> tuple[np.ndarray, np.ndarray]:
    """A pool sorted by label (like the bundled digits); each sample encodes its own row."""
    n = classes * per_class
    x = np.arange(n, dtype=np.float32).reshape(n, 1) * np.ones((1, 3), dtype=np.float32)
    y = np.repeat(np.arange(classes), per_class)
    return x, y


def all_rows(fed: Federation) -> np.ndarray:
    return np.concatenate([*fed.train_rows, *fed.test_rows])


def check_consistent(fed: Federation, x: np.ndarray, y: np.ndarray) -> None:
    """Rows are disjoint, and every tenant's arrays are exactly its rows (labels permuted)."""
    rows = all_rows(fed)
    assert len(np.unique(rows)) == len(rows), "a row was given twice"
    assert len(fed.tenants) == fed.config.tenants
    for t, tenant in enumerate(fed.tenants):
        assert tenant.index == t
        perm = np.asarray(fed.permutations[fed.groups[t]])
        for xs, ys, r in (
            (tenant.train_x, tenant.train_y, fed.train_rows[t]),
            (tenant.test_x, tenant.test_y, fed.test_rows[t]),
        ):
            np.testing.assert_array_equal(xs, x[r])
            np.testing.assert_array_equal(ys, perm[y[r]])
        assert len(tenant.train_y) >= 1


def held(fed: Federation, t: int) -> np.ndarray:
    """Tenant t's original (unpermuted) labels, train and test."""
    return np.concatenate([fed.train_rows[t], fed.test_rows[t]])


@pytest.mark.parametrize("scheme", list(Scheme))
@pytest.mark.parametrize("seed", [0, 1, 7])
@pytest.mark.parametrize("per_tenant", [None, 50])
def test_every_scheme_is_disjoint_consistent_and_deterministic(
    scheme: Scheme, seed: int, per_tenant: int | None
) -> None:
    x, y = pool()
    config = PartitionConfig(
        tenants=9, groups=3, scheme=scheme, seed=seed, samples_per_tenant=per_tenant
    )
    fed = partition(x, y, config)
    check_consistent(fed, x, y)
    assert fed.groups == (0, 0, 0, 1, 1, 1, 2, 2, 2)
    assert fed.num_classes == CLASSES
    again = partition(x, y, config)
    for a, b in zip(
        fed.train_rows + fed.test_rows, again.train_rows + again.test_rows, strict=True
    ):
        np.testing.assert_array_equal(a, b)
    assert fed.permutations == again.permutations
    other = partition(x, y, dataclasses.replace(config, seed=seed + 100))
    assert any(
        not np.array_equal(a, b) for a, b in zip(fed.train_rows, other.train_rows, strict=True)
    )


@pytest.mark.parametrize("scheme", list(Scheme))
def test_fixed_sizes_and_test_fraction(scheme: Scheme) -> None:
    x, y = pool()
    fed = partition(x, y, PartitionConfig(tenants=6, scheme=scheme, seed=3, samples_per_tenant=40))
    for tenant in fed.tenants:
        assert len(tenant.train_y) == 32
        assert len(tenant.test_y) == 8


def test_iid_with_all_data_uses_every_row_evenly() -> None:
    x, y = pool()
    fed = partition(x, y, PartitionConfig(tenants=7, scheme=Scheme.IID, seed=0))
    assert len(all_rows(fed)) == len(y)
    sizes = [len(held(fed, t)) for t in range(7)]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("scheme", [Scheme.CONCEPT_SHIFT, Scheme.DOMINANT_CLASS])
def test_non_iid_with_all_data_uses_every_row(scheme: Scheme) -> None:
    x, y = pool()
    fed = partition(x, y, PartitionConfig(tenants=6, groups=2, scheme=scheme, seed=0))
    assert len(all_rows(fed)) == len(y)


def test_pool_is_shuffled_before_splitting() -> None:
    x, y = pool()  # sorted by label
    fed = partition(x, y, PartitionConfig(tenants=5, scheme=Scheme.IID, seed=0))
    for t in range(5):
        assert len(np.unique(y[held(fed, t)])) == CLASSES


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("share", [0.6, 0.8, 0.95])
def test_dominant_share_within_tolerance(seed: int, share: float) -> None:
    x, y = pool()
    config = PartitionConfig(
        tenants=6,
        groups=3,
        scheme=Scheme.DOMINANT_CLASS,
        seed=seed,
        dominant_share=share,
        samples_per_tenant=60,
    )
    fed = partition(x, y, config)
    dominant = fed.dominant_classes
    assert len(dominant) == 3
    flat = sorted(c for d in dominant for c in d)
    assert flat == list(range(CLASSES))  # disjoint, and every class is someone's dominant class
    for t in range(6):
        labels = y[held(fed, t)]
        mine = np.isin(labels, dominant[fed.groups[t]]).mean()
        assert abs(mine - share) <= 0.02
        others = set(labels[~np.isin(labels, dominant[fed.groups[t]])].tolist())
        if share <= 0.8:
            assert len(others) >= 5  # the rest is spread over the other classes
    assert fed.permutations == ((tuple(range(CLASSES)),) * 3)


def test_dominant_share_with_all_data_is_approximate() -> None:
    x, y = pool()
    fed = partition(x, y, PartitionConfig(tenants=9, scheme=Scheme.DOMINANT_CLASS, seed=2))
    for t in range(9):
        labels = y[held(fed, t)]
        assert abs(np.isin(labels, fed.dominant_classes[fed.groups[t]]).mean() - 0.8) <= 0.06


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("groups", [2, 3, 5])
def test_concept_shift_permutations_are_distinct_derangements(seed: int, groups: int) -> None:
    x, y = pool()
    config = PartitionConfig(
        tenants=10, groups=groups, scheme=Scheme.CONCEPT_SHIFT, seed=seed, samples_per_tenant=50
    )
    fed = partition(x, y, config)
    perms = fed.permutations
    assert len(perms) == groups
    assert perms[0] == tuple(range(CLASSES))
    for p in perms[1:]:
        assert sorted(p) == list(range(CLASSES))
        assert all(p[i] != i for i in range(CLASSES))
    assert len(set(perms)) == groups
    check_consistent(fed, x, y)  # the group's permutation on train AND test labels
    for t in range(10):
        assert len(np.unique(y[held(fed, t)])) == CLASSES  # every tenant sees every class
        assert abs(np.bincount(y[held(fed, t)], minlength=CLASSES) - 5).max() <= 1  # balanced
    assert fed.dominant_classes == ()


def test_concept_shift_same_input_different_label_across_groups() -> None:
    x, y = pool()
    config = PartitionConfig(tenants=4, groups=2, scheme="concept-shift", seed=0)  # type: ignore[arg-type]
    fed = partition(x, y, config)
    t0, t1 = fed.tenants[0], fed.tenants[-1]
    c0 = y[fed.train_rows[0][0]]
    assert t0.train_y[0] == c0
    r1 = fed.train_rows[3][y[fed.train_rows[3]] == c0][0]
    assert t1.train_y[list(fed.train_rows[3]).index(r1)] == fed.permutations[1][c0] != c0


@pytest.mark.parametrize("k", [1, 2, 3])
def test_pathological_tenants_hold_only_k_classes(k: int) -> None:
    x, y = pool()
    fed = partition(
        x,
        y,
        PartitionConfig(
            tenants=8,
            scheme=Scheme.PATHOLOGICAL,
            seed=1,
            classes_per_tenant=k,
            samples_per_tenant=30,
        ),
    )
    for t in range(8):
        assert len(np.unique(y[held(fed, t)])) == k


def test_small_number_of_classes_limits_concept_shift_groups() -> None:
    assert [derangement_count(n) for n in range(7)] == [1, 0, 1, 2, 9, 44, 265]
    x, y = pool(classes=3, per_class=40)
    fed = partition(x, y, PartitionConfig(tenants=3, groups=3, scheme=Scheme.CONCEPT_SHIFT))
    assert sorted(fed.permutations[1:]) == [(1, 2, 0), (2, 0, 1)]
    with pytest.raises(ConfigError, match="derangements"):
        partition(x, y, PartitionConfig(tenants=4, groups=4, scheme=Scheme.CONCEPT_SHIFT))


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (PartitionConfig(tenants=20, samples_per_tenant=31, scheme=Scheme.IID), "exceeds"),
        (
            PartitionConfig(
                tenants=9, groups=3, scheme=Scheme.DOMINANT_CLASS, samples_per_tenant=65
            ),
            "not enough samples of class",
        ),
        (PartitionConfig(tenants=11, groups=11, scheme=Scheme.DOMINANT_CLASS), "one class per"),
        (
            PartitionConfig(tenants=3, scheme=Scheme.PATHOLOGICAL, classes_per_tenant=11),
            "classes_per_tenant",
        ),
        (PartitionConfig(tenants=601, groups=1, scheme=Scheme.IID), "no samples"),
    ],
)
def test_requests_the_data_cannot_meet(config: PartitionConfig, message: str) -> None:
    x, y = pool()
    with pytest.raises(ConfigError, match=message):
        partition(x, y, config)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"tenants": 0},
        {"tenants": 3, "groups": 4},
        {"tenants": 3, "groups": 0},
        {"tenants": 3, "seed": -1},
        {"tenants": 3, "test_fraction": 1.0},
        {"tenants": 3, "test_fraction": -0.1},
        {"tenants": 3, "dominant_share": 1.5},
        {"tenants": 3, "samples_per_tenant": 0},
        {"tenants": 3, "classes_per_tenant": 0},
        {"tenants": 3, "scheme": "sorted"},
        {"tenants": True},
    ],
)
def test_invalid_configs(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        PartitionConfig(**kwargs)  # type: ignore[arg-type]


def test_scheme_strings_are_accepted() -> None:
    assert PartitionConfig(tenants=3, scheme="iid").scheme is Scheme.IID  # type: ignore[arg-type]


def test_malformed_pool() -> None:
    x, y = pool()
    config = PartitionConfig(tenants=3)
    with pytest.raises(ConfigError, match="samples but"):
        partition(x, y[:-1], config)
    with pytest.raises(DataFormatError, match="labels"):
        partition(x, y - 1, config)
    with pytest.raises(DataFormatError, match="non-finite"):
        partition(np.full_like(x, np.nan), y, config)
    with pytest.raises(ConfigError, match="empty"):
        partition(x[:0], y[:0], config)


def test_images_get_the_seed_layout_shape() -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (200, 28, 28)).astype(np.uint8)
    y = np.repeat(np.arange(10), 20)
    fed = partition(x, y, PartitionConfig(tenants=4, groups=2, scheme=Scheme.IID))
    t = fed.tenants[0]
    assert t.train_x.shape[1:] == (1, 28, 28)
    assert t.train_x.dtype == np.float32
    np.testing.assert_allclose(t.train_x[:, 0], x[fed.train_rows[0]] / 255, rtol=1e-6)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    tenants=st.integers(1, 12),
    groups=st.integers(1, 4),
    scheme=st.sampled_from(list(Scheme)),
    seed=st.integers(0, 2**32),
    per_tenant=st.one_of(st.none(), st.integers(5, 40)),
    test_fraction=st.sampled_from([0.0, 0.2, 0.5]),
)
def test_property_disjoint_and_sized(
    *,
    tenants: int,
    groups: int,
    scheme: Scheme,
    seed: int,
    per_tenant: int | None,
    test_fraction: float,
) -> None:
    x, y = pool(per_class=40)
    config = PartitionConfig(
        tenants=tenants,
        groups=min(groups, tenants),
        scheme=scheme,
        seed=seed,
        samples_per_tenant=per_tenant,
        test_fraction=test_fraction,
        dominant_share=0.7,
    )
    message = ""
    try:
        fed = partition(x, y, config)
    except ConfigError as error:
        message = str(error)
    if message:  # only a fixed size close to the pool may fail to fit
        assert per_tenant is not None
        assert "not enough samples of class" in message or "exceeds" in message
        assume(False)
    check_consistent(fed, x, y)
    assert len(all_rows(fed)) <= len(y)
    for t, tenant in enumerate(fed.tenants):
        size = len(tenant.train_y) + len(tenant.test_y)
        if per_tenant is not None:
            assert size == per_tenant
        assert len(tenant.test_y) == min(int(np.floor(test_fraction * size + 0.5)), size - 1)
        assert fed.groups[t] == t * config.groups // tenants
    counts = np.bincount(fed.groups, minlength=config.groups)
    assert counts.max() - counts.min() <= 1
