"""The exposure measure (issue 21, item 1): agrees with a brute force over every coalition of at
most n_C parties, has the closed forms it claims (uniform rows, group mode, one colluder with and
without dropouts), is scale-free, counts exactly parallel rows once but a crafted difference, and
stays well under a second at N = 62, n_C = 2."""

from __future__ import annotations

import ast
import itertools
import math
import sys
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from securefed.errors import ConfigError
from securefed.secagg import exposure as exposure_module
from securefed.secagg.exposure import (
    MAX_COALITIONS,
    attention_releases,
    exposure,
    exposure_report,
    group_exposure,
    group_releases,
    row_exposure,
    uniform_exposure,
)

Matrix = npt.NDArray[np.float64]


def uniform_rows(n: int, self_weight: float) -> Matrix:
    out = np.full((n, n), (1 - self_weight) / (n - 1))
    np.fill_diagonal(out, self_weight)
    return out


def random_rows(rng: np.random.Generator, n: int) -> Matrix:
    rows = rng.dirichlet(np.full(n, float(rng.choice([0.2, 1.0, 5.0]))), size=n)
    rows[rng.random((n, n)) < 0.25] = 0.0
    empty = rows.sum(axis=1) == 0
    rows[empty] = np.eye(n)[empty]
    return np.asarray(rows / rows.sum(axis=1, keepdims=True), dtype=np.float64)


def brute_force(stack: Matrix, bound: int, server: Matrix | None = None) -> npt.NDArray[np.float64]:
    """min over every coalition C, |C| <= bound, v not in C, of dist(e_v, span(...)) by lstsq."""
    if stack.ndim == 2:
        stack = stack[None]
    n = stack.shape[1]
    out = np.ones(n)
    for size in range(bound + 1):
        for coalition in itertools.combinations(range(n), size):
            vectors = [np.eye(n)[c] for c in coalition]
            vectors += [stack[r, c] for r in range(stack.shape[0]) for c in coalition]
            if server is not None:
                vectors += list(server)
            for v in set(range(n)) - set(coalition):
                unit = np.eye(n)[v]
                if not vectors:
                    continue
                basis = np.stack(vectors).T
                coefficients, *_ = np.linalg.lstsq(basis, unit, rcond=1e-12)
                out[v] = min(out[v], float(np.linalg.norm(unit - basis @ coefficients)))
    return out


# -- agreement with the definition -----------------------------------------------------------


@pytest.mark.parametrize("seed", range(40))
def test_exposure_is_the_brute_force_minimum_over_coalitions(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 7))
    bound = int(rng.integers(0, 4))
    rounds = int(rng.integers(1, 3))
    stack = np.stack([random_rows(rng, n) for _ in range(rounds)])
    server = random_rows(rng, n)[: int(rng.integers(0, 2))] if seed % 3 == 0 else None
    got = exposure(stack if rounds > 1 else stack[0], collusion_bound=bound, server_rows=server)
    np.testing.assert_allclose(got, brute_force(stack, bound, server), atol=1e-7)


def test_the_witness_coalition_attains_the_exposure() -> None:
    rng = np.random.default_rng(3)
    rows = random_rows(rng, 6)
    report = exposure_report(rows, collusion_bound=2)
    assert report.collusion_bound == 2
    for v, coalition in enumerate(report.coalitions):
        if not coalition:
            assert report.values[v] == 1.0
            continue
        assert v not in coalition
        assert len(coalition) == 2
        vectors = [np.eye(6)[c] for c in coalition] + [rows[c] for c in coalition]
        basis = np.stack(vectors).T
        coefficients, *_ = np.linalg.lstsq(basis, np.eye(6)[v], rcond=None)
        distance = np.linalg.norm(np.eye(6)[v] - basis @ coefficients)
        assert distance == pytest.approx(report.values[v], abs=1e-9)


def test_exposure_never_rises_with_more_colluders_and_is_scale_free() -> None:
    rng = np.random.default_rng(8)
    rows = random_rows(rng, 7)
    values = [exposure(rows, collusion_bound=b) for b in range(7)]
    for fewer, more in itertools.pairwise(values):
        assert (more <= fewer + 1e-12).all()
    np.testing.assert_array_equal(values[0], np.ones(7))  # the server alone learns nothing
    np.testing.assert_allclose(values[6], np.zeros(7), atol=1e-12)  # everyone else colludes
    scaled = rows * rng.uniform(1e-6, 1e3, (7, 1))
    np.testing.assert_allclose(exposure(scaled, collusion_bound=2), values[2], atol=1e-12)


# -- closed forms ----------------------------------------------------------------------------


def test_the_weight_shape_attack_row_has_the_issue_geometry() -> None:
    for n in (8, 20, 40):
        rows = uniform_rows(n, 0.5)
        rows[0] = 0.0
        rows[0, 0], rows[0, 1] = 0.5, 0.25
        rows[0, 2:] = 0.25 / (n - 2)
        # ||rest|| / sqrt(xi_jv^2 + ||rest||^2) = 1/sqrt(m + 1), m = N - 2
        assert exposure(rows, collusion_bound=1)[1] == pytest.approx(1 / math.sqrt(n - 1))
        assert exposure_report(rows, collusion_bound=1).coalitions[1] == (0,)


@pytest.mark.parametrize(("n", "bound"), [(2, 1), (3, 1), (5, 2), (8, 1), (8, 3), (20, 2)])
def test_uniform_rows_give_the_uniform_exposure(n: int, bound: int) -> None:
    expected = uniform_exposure(n, bound)
    assert expected == pytest.approx(math.sqrt(1 - 1 / (n - min(bound, n - 1))))
    # different self weights: exactly parallel rows once the coalition's coordinates go
    rows = uniform_rows(n, 0.5)
    rows[0] = uniform_rows(n, 0.2)[0]
    np.testing.assert_allclose(exposure(rows, collusion_bound=bound), expected, atol=1e-12)


def test_local_rows_expose_nothing_and_a_row_on_one_contributor_exposes_it() -> None:
    np.testing.assert_array_equal(exposure(np.eye(5), collusion_bound=2), np.ones(5))
    rows = np.eye(5)
    rows[0] = [0.999, 0.001, 0.0, 0.0, 0.0]  # a tiny weight is divided back out
    values = exposure(rows, collusion_bound=1)
    assert values[1] == 0.0
    np.testing.assert_array_equal(np.delete(values, 1), np.ones(4))


@pytest.mark.parametrize(
    ("partition", "bound"),
    [([0, 0, 0, 1, 1, 1, 1], 1), ([0, 0, 0, 1, 1, 1, 1], 2), ([0] * 6, 1), ([0, 1, 1, 2], 1)],
)
def test_group_exposure_is_the_measure_on_the_group_sums(partition: list[int], bound: int) -> None:
    n = len(partition)
    closed = group_exposure(partition, collusion_bound=bound)
    measured = exposure(np.eye(n), collusion_bound=bound, server_rows=group_releases(partition))
    np.testing.assert_allclose(closed, measured, atol=1e-12)
    for v, label in enumerate(partition):
        size = partition.count(label)
        assert closed[v] == pytest.approx(math.sqrt(1 - 1 / (size - min(bound, size - 1))))


def test_row_exposure_is_the_one_colluder_measure() -> None:
    rng = np.random.default_rng(5)
    for _ in range(30):
        n = int(rng.integers(2, 9))
        rows = random_rows(rng, n)
        per_row = row_exposure(rows)
        assert per_row.min() == pytest.approx(exposure(rows, collusion_bound=1).min(), abs=1e-9)
        for i in range(n):  # each row alone
            alone = attention_releases(rows, targets=[i])
            assert per_row[i] == pytest.approx(exposure(alone, collusion_bound=1).min(), abs=1e-9)


@pytest.mark.parametrize("seed", range(12))
def test_row_exposure_with_dropouts_is_the_worst_survivor_set(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(3, 7))
    dropouts = int(rng.integers(0, n))
    rows = random_rows(rng, n)
    robust = row_exposure(rows, dropouts=dropouts)
    for i in range(n):
        others = [u for u in range(n) if u != i]
        worst = 1.0
        for count in range(min(dropouts, n - 1) + 1):
            for dropped in itertools.combinations(others, count):
                survivors = [u for u in others if u not in dropped]
                released = attention_releases(rows, contributors={i: survivors})
                worst = min(worst, float(exposure(released, collusion_bound=1).min()))
        assert robust[i] ** 2 == pytest.approx(worst**2, abs=1e-9)


def test_attention_releases_restrict_rows_to_their_survivors() -> None:
    rows = uniform_rows(4, 0.4)
    released = attention_releases(rows, contributors={0: [1, 2], 3: []})
    np.testing.assert_allclose(released[0], [0.4, 0.2, 0.2, 0.0])
    np.testing.assert_allclose(released[3], [0.0, 0.0, 0.0, 0.4])
    np.testing.assert_array_equal(released[1:3], np.eye(4)[1:3])  # no output: own model only
    np.testing.assert_array_equal(attention_releases(rows, targets=[2])[2], rows[2])


# -- numerics --------------------------------------------------------------------------------


def test_a_crafted_near_parallel_difference_is_counted() -> None:
    rows = uniform_rows(6, 0.5)
    rows[1] = rows[0]  # rows 0 and 1: parallel once coordinates 0 and 1 are removed
    rows[1, 1], rows[1, 0] = 0.5, 0.1
    assert exposure(rows, collusion_bound=2)[2] > 0.8
    rows[1, 2] += 1e-9  # a difference of 1e-9 on client 2 alone (row sums are not the point)
    assert exposure(rows, collusion_bound=2)[2] < 1e-6


# -- cost ------------------------------------------------------------------------------------


def test_exposure_at_62_parties_and_two_colluders_is_well_under_a_second() -> None:
    rows = random_rows(np.random.default_rng(62), 62)
    exposure(rows, collusion_bound=2)
    best = math.inf
    for _ in range(3):
        start = time.perf_counter()
        exposure(rows, collusion_bound=2)
        best = min(best, time.perf_counter() - start)
    print(f"\n[exposure] N=62, n_C=2: {best * 1e3:.1f} ms")
    assert best < 0.25  # measured ~10 ms on a 2-core build machine


def test_too_many_coalitions_are_refused() -> None:
    assert math.comb(62, 4) > MAX_COALITIONS
    with pytest.raises(ConfigError, match="coalitions"):
        exposure(np.eye(62), collusion_bound=4)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: exposure(np.eye(3), collusion_bound=-1), "collusion_bound"),
        (lambda: exposure(np.eye(3), collusion_bound=True), "collusion_bound"),
        (lambda: exposure(np.eye(3), collusion_bound=1.5), "collusion_bound"),  # type: ignore[arg-type]
        (lambda: exposure(np.ones((2, 3)), collusion_bound=1), "N x N"),
        (lambda: exposure(np.array([[np.nan, 0.0], [0.0, 1.0]]), collusion_bound=1), "finite"),
        (lambda: exposure(np.eye(3), collusion_bound=1, server_rows=np.ones(4)), "M x N"),
        (lambda: row_exposure(np.eye(3), dropouts=-1), "dropouts"),
        (lambda: group_exposure([], collusion_bound=1), "at least one"),
        (lambda: group_exposure([0, "a"], collusion_bound=1), "integers"),  # type: ignore[list-item]
        (lambda: uniform_exposure(0, 1), "parties"),
        (lambda: attention_releases(np.eye(3), targets=[3]), "party index"),
        (lambda: attention_releases(np.eye(3), targets=[0], contributors={1: [0]}), "target 0"),
    ],
)
def test_bad_arguments_are_config_errors(call: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        call()  # type: ignore[operator]


def test_exposure_imports_only_numpy_errors_and_the_standard_library() -> None:
    source = Path(exposure_module.__file__).read_text(encoding="utf-8")
    roots: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            roots.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            roots.add(node.module)
    outside = {
        name
        for name in roots
        if name.split(".")[0] not in sys.stdlib_module_names
        and name not in {"numpy", "numpy.typing", "securefed.errors"}
    }
    assert outside == set()
