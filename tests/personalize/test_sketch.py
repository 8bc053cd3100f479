"""Secret sketches for the attention weights (DESIGN §4a, securefed.personalize.sketch).

Tolerances follow the JL variance: a sketched squared distance has relative standard deviation
at most sqrt(2/k) (exactly that for a Gaussian S_0, no more for the sparse sign S_0); a sketched
cosine has standard deviation at most ~1/sqrt(k). Test data come from seeded numpy.random (the
code under test never touches it: see test_sketching_never_loads_numpy_random).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from securefed.crypto import KdfContext, KeyPurpose, KeyStream, derive_stream_key, get_suite
from securefed.errors import ConfigError
from securefed.personalize.sketch import (
    SketchConfig,
    SketchConstruction,
    Sketcher,
    SketchKind,
    centred_cosines_from_sketches,
    cosines_from_sketches,
    squared_distances_from_sketches,
)

FloatArray = npt.NDArray[np.float64]
SUITE = get_suite("default")
SEED = bytes(range(32))
SPARSE = SketchConstruction.SPARSE_SIGN
GAUSSIAN = SketchConstruction.GAUSSIAN


def sketcher(
    dim: int = 64,
    model_dim: int = 1000,
    *,
    seed: bytes = SEED,
    construction: SketchConstruction = SPARSE,
    nonzeros: int = 4,
    **kwargs: bytes,
) -> Sketcher:
    config = SketchConfig(dim=dim, construction=construction, nonzeros_per_column=nonzeros)
    return Sketcher(SUITE, seed, config, model_dim=model_dim, **kwargs)


def group_models(
    n: int, d: int, *, groups: int = 3, seed: int = 0
) -> tuple[FloatArray, npt.NDArray[np.int64]]:
    """Models with latent group structure: common base + group centre + individual noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % groups
    base = rng.normal(0.0, 0.05, d)
    centres = rng.normal(0.0, 0.01, (groups, d))
    return base + centres[labels] + rng.normal(0.0, 0.01, (n, d)), labels


def exact_squared_distances(models: FloatArray) -> FloatArray:
    diff = models[:, None, :] - models[None, :, :]
    out: FloatArray = np.einsum("ijk,ijk->ij", diff, diff)
    return out


def exact_cosines(vectors: FloatArray) -> FloatArray:
    unit: FloatArray = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return unit @ unit.T


def off_diagonal(matrix: FloatArray) -> FloatArray:
    return matrix[~np.eye(matrix.shape[0], dtype=bool)]


# --- configuration and arguments ------------------------------------------------------------------
@pytest.mark.parametrize(
    "changes",
    [
        {"dim": 0},
        {"dim": 4097},
        {"dim": True},
        {"dim": 64, "nonzeros_per_column": 3},  # does not divide k
        {"nonzeros_per_column": 0},
        {"dim": 8, "nonzeros_per_column": 16},
        {"offset_scale": 0.0},
        {"offset_scale": -1.0},
        {"offset_scale": math.inf},
        {"offset_scale": 1e9},
        {"construction": "sparse-sign"},
    ],
)
def test_config_rejects_bad_values(changes: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        SketchConfig(**changes)  # type: ignore[arg-type]


def test_config_defaults_and_gaussian_ignores_nonzeros() -> None:
    config = SketchConfig()
    assert (config.dim, config.construction, config.nonzeros_per_column) == (256, SPARSE, 4)
    SketchConfig(dim=63, construction=GAUSSIAN)  # s = 4 does not divide 63: irrelevant here


@pytest.mark.parametrize(
    "kwargs",
    [
        {"seed": bytes(31)},
        {"seed": bytes(33)},
        {"model_dim": 0},
        {"session_id": bytes(16)},
    ],
)
def test_sketcher_rejects_bad_arguments(kwargs: dict[str, object]) -> None:
    arguments: dict[str, object] = {"seed": SEED, "model_dim": 10, **kwargs}
    with pytest.raises(ConfigError):
        Sketcher(SUITE, arguments.pop("seed"), SketchConfig(dim=8), **arguments)  # type: ignore[arg-type]


def test_sketches_reject_bad_vectors_and_rounds() -> None:
    sk = sketcher(dim=8, model_dim=10)
    bad_nan = np.ones(10)
    bad_nan[3] = math.nan
    for bad in (np.ones(9), np.ones((10, 1)), bad_nan):
        with pytest.raises(ConfigError):
            sk.distance_sketch(bad, round_=1)
    with pytest.raises(ConfigError):
        sk.distance_sketch(np.ones(10), round_=-1)
    with pytest.raises(ConfigError):
        sk.round_matrix_apply(np.ones(10), round_=1, kind="cosine")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        sk.cosine_sketch(np.ones(10), mean=np.ones(10), round_=1)  # no direction


# --- reproducibility and the key schedule ---------------------------------------------------------
@pytest.mark.parametrize("construction", list(SketchConstruction))
def test_same_seed_and_round_give_the_same_sketch(construction: SketchConstruction) -> None:
    w = np.random.default_rng(1).normal(size=1000)
    first = sketcher(construction=construction).distance_sketch(w, round_=5)
    again = sketcher(construction=construction).distance_sketch(w, round_=5)
    np.testing.assert_array_equal(first, again)
    other_seed = sketcher(construction=construction, seed=bytes(32)).distance_sketch(w, round_=5)
    other_session = sketcher(construction=construction, session_id=bytes(32)).distance_sketch(
        w, round_=5
    )
    assert not np.allclose(first, other_seed)
    assert not np.allclose(first, other_session)


def test_key_schedule_is_as_documented() -> None:
    """Rebuild S_0 (sparse) and eta_r from the crypto layer by the documented formulas."""
    k, s, d, round_ = 8, 2, 6, 3
    sk = sketcher(dim=k, model_dim=d, nonzeros=s)
    session = SUITE.digest(b"securefed/v1/sketch-session\x00" + SEED)

    def stream(tag: int, round_: int) -> KeyStream:
        context = KdfContext(session_id=session, round=round_)
        return KeyStream(
            derive_stream_key(SUITE, SEED, purpose=KeyPurpose.SKETCH, context=context, target=tag)
        )

    raw = stream(0, 0).words(s * d, np.uint32).astype(np.int64).reshape(s, d)
    expected = np.zeros((k, d))
    for block in range(s):
        rows = block * (k // s) + ((raw[block] >> 1) * (k // s) >> 31)
        expected[rows, np.arange(d)] = np.where(raw[block] & 1, -1.0, 1.0) / math.sqrt(s)
    np.testing.assert_array_equal(sk.base_matrix(), expected)

    words = stream(2, round_).words(k, np.uint64).astype(np.uint64)
    uniform = ((words >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53
    radius, angle = np.sqrt(-2 * np.log(uniform[0::2])), 2 * math.pi * uniform[1::2]
    normals = np.column_stack([radius * np.cos(angle), radius * np.sin(angle)]).ravel()
    scale = sk.config.offset_scale * math.sqrt(d / k)
    np.testing.assert_allclose(sk.offset(round_), scale * normals, rtol=1e-13)


def test_regression_vectors() -> None:
    """Pinned outputs for SEED (all clients of a session must agree across software versions)."""
    sk = sketcher(dim=8, model_dim=6, nonzeros=2)
    base = sk.base_matrix().T
    assert np.argwhere(base != 0).tolist() == [
        [0, 3], [0, 6], [1, 1], [1, 6], [2, 0], [2, 4],
        [3, 0], [3, 5], [4, 0], [4, 7], [5, 1], [5, 6],
    ]  # fmt: skip
    assert np.sign(base[base != 0]).tolist() == [1, -1, 1, 1, -1, 1, -1, -1, -1, 1, 1, -1]
    np.testing.assert_allclose(
        sk.offset(0)[:3] / (1e5 * math.sqrt(6 / 8)), [0.94824588, 0.90474459, 0.08228335], atol=1e-8
    )
    np.testing.assert_allclose(
        sk.rotation(1)[0, :3], [0.2864398, 0.06488898, 0.71662604], atol=1e-8
    )
    gaussian = sketcher(dim=8, model_dim=6, construction=GAUSSIAN)
    np.testing.assert_allclose(
        gaussian.base_matrix()[:2, 0] * math.sqrt(8), [0.24972674, 1.44801802], atol=1e-8
    )


# --- S_0 fixed, Q_r fresh -------------------------------------------------------------------------
@pytest.mark.parametrize("construction", list(SketchConstruction))
def test_base_matrix_is_round_independent(construction: SketchConstruction) -> None:
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(2, 1000))
    sk = sketcher(construction=construction)
    base_a, base_b = sk.base_apply(a), sk.base_apply(b)
    for round_ in (0, 1, 7, 2**40):
        rotation = sk.rotation(round_)
        sa = sk.round_matrix_apply(a, round_=round_)
        sb = sk.round_matrix_apply(b, round_=round_)
        np.testing.assert_allclose(rotation.T @ sa, base_a, atol=1e-12)
        # S_rᵀS_r = S_0ᵀS_0 every round: inner products of sketches do not depend on the round.
        assert sa @ sb == pytest.approx(base_a @ base_b, rel=1e-12, abs=1e-9)
        assert sa @ sa == pytest.approx(base_a @ base_a, rel=1e-12)


def test_rotations_are_fresh_per_round_and_kind() -> None:
    sk = sketcher()
    first = sk.rotation(1)
    second = sk.rotation(2)
    assert not np.allclose(first, second)
    assert not np.allclose(first, sk.rotation(1, kind=SketchKind.COSINE))
    np.testing.assert_array_equal(sk.rotation(1), first)  # the cache never serves a stale round
    assert not first.flags.writeable
    assert not np.allclose(sk.offset(1), sk.offset(2))


@pytest.mark.parametrize("dim", [1, 2, 64, 256])
def test_rotation_is_orthogonal_and_applied_consistently(dim: int) -> None:
    sk = sketcher(dim=dim, nonzeros=1)
    rotation = sk.rotation(3)
    identity = np.eye(dim)
    assert np.abs(rotation @ rotation.T - identity).max() < 1e-10
    assert np.abs(rotation.T @ rotation - identity).max() < 1e-10
    w = np.random.default_rng(3).normal(size=1000)
    np.testing.assert_allclose(
        sk.round_matrix_apply(w, round_=3), rotation @ sk.base_apply(w), atol=1e-12
    )


def test_rotation_has_haar_trace_moments() -> None:
    """Haar measure on O(k), k >= 4: E tr Q = 0, E tr² = 1, E tr⁴ = 3 (Diaconis-Shahshahani);
    E Q_00² = 1/k. A missing sign correction (plain QR) breaks the first two."""
    k, samples = 6, 600
    traces = []
    corner = []
    for index in range(samples):
        rotation = sketcher(
            dim=k, model_dim=4, seed=index.to_bytes(32, "big"), nonzeros=1
        ).rotation(1)
        traces.append(np.trace(rotation))
        corner.append(rotation[0, 0] ** 2)
    trace = np.array(traces)
    assert abs(trace.mean()) < 4 * math.sqrt(1 / samples)
    assert abs((trace**2).mean() - 1) < 4 * math.sqrt(2 / samples)
    assert abs((trace**4).mean() - 3) < 1.0
    assert np.mean(corner) == pytest.approx(1 / k, abs=0.03)


def test_sparse_base_matrix_structure() -> None:
    k, s, d = 32, 4, 500
    sk = sketcher(dim=k, model_dim=d, nonzeros=s)
    base = sk.base_matrix()
    assert set(np.unique(np.abs(base))) == {0.0, 1 / math.sqrt(s)}
    per_block = (base.reshape(s, k // s, d) != 0).sum(axis=1)
    assert (per_block == 1).all()  # one entry per column in every row block
    np.testing.assert_allclose(np.linalg.norm(base, axis=0), 1.0)
    w = np.random.default_rng(4).normal(size=d)
    np.testing.assert_allclose(sk.base_apply(w), base @ w, atol=1e-12)


def test_gaussian_blockwise_generation_matches_the_matrix() -> None:
    # k = 63 (odd) and d over two generation blocks (4160 columns each) plus a partial one.
    sk = sketcher(dim=63, model_dim=9000, construction=GAUSSIAN)
    base = sk.base_matrix()
    w = np.random.default_rng(5).normal(size=9000)
    np.testing.assert_allclose(sk.base_apply(w), base @ w, atol=1e-10)
    assert abs(base.mean()) < 1e-3
    assert base.var() * 63 == pytest.approx(1.0, abs=0.01)


def test_base_matrix_refuses_huge_matrices() -> None:
    with pytest.raises(ConfigError):
        sketcher(dim=1024, model_dim=2**15).base_matrix()


# --- accuracy -------------------------------------------------------------------------------------
@pytest.mark.parametrize("construction", list(SketchConstruction))
def test_squared_distances_are_unbiased(construction: SketchConstruction) -> None:
    k, d, seeds = 32, 512, 200
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(2, d))
    true = float((x - y) @ (x - y))
    ratios = []
    for index in range(seeds):
        sk = sketcher(dim=k, model_dim=d, seed=index.to_bytes(32, "big"), construction=construction)
        sketches = np.stack([sk.distance_sketch(x, round_=1), sk.distance_sketch(y, round_=1)])
        ratios.append(squared_distances_from_sketches(sketches)[0, 1] / true)
    assert np.mean(ratios) == pytest.approx(1.0, abs=4 * math.sqrt(2 / k / seeds))
    assert np.std(ratios) < 1.25 * math.sqrt(2 / k)


@pytest.mark.parametrize("dim", [64, 256])
def test_squared_distances_accuracy_on_group_models(dim: int) -> None:
    models, labels = group_models(12, 20_000)
    sk = sketcher(dim=dim, model_dim=20_000)
    sketches = np.stack([sk.distance_sketch(w, round_=4) for w in models])
    estimate = squared_distances_from_sketches(sketches)
    exact = exact_squared_distances(models)
    relative = np.abs(off_diagonal(estimate) / off_diagonal(exact) - 1)
    scale = math.sqrt(2 / dim)
    assert np.median(relative) < 1.5 * scale
    assert relative.max() < 5 * scale
    nearest = np.argmin(estimate + np.diag(np.full(12, np.inf)), axis=1)
    assert (labels[nearest] == labels).all()  # the latent groups survive sketching


@pytest.mark.parametrize("dim", [64, 256])
def test_cosines_accuracy_on_group_models(dim: int) -> None:
    models, _ = group_models(12, 20_000, seed=1)
    centred = models - models.mean(axis=0)
    exact = exact_cosines(centred)
    sk = sketcher(dim=dim, model_dim=20_000)
    # Server-side centring of the distance sketches (the offset cancels).
    distance_sketches = np.stack([sk.distance_sketch(w, round_=2) for w in models])
    from_distances = centred_cosines_from_sketches(distance_sketches)
    # Client-side centring with a reference every client knows (here the true mean).
    mean = models.mean(axis=0)
    cosine_sketches = np.stack([sk.cosine_sketch(w, mean=mean, round_=2) for w in models])
    from_cosines = cosines_from_sketches(cosine_sketches)
    for estimate in (from_distances, from_cosines):
        assert np.abs(estimate - exact).max() < 4 / math.sqrt(dim)
        np.testing.assert_array_equal(np.diag(estimate), 1.0)
    norms = np.linalg.norm(cosine_sketches, axis=1)
    assert np.abs(norms**2 - 1).max() < 5 * math.sqrt(2 / dim)


def test_fedamp_weights_from_sketches_are_close_to_exact() -> None:
    """xi_ij = alpha·e^(-d_ij/sigma)/sigma, sigma = median squared distance, alpha = 0.5 (the
    formula of docs/fedamp.md, written out here). Tolerances at k = 256 are about twice the errors
    measured over 5 seeds (relative off-diagonal error <= 0.27, off-diagonal row sums <= 0.10,
    absolute <= 0.05); sigma ~ 8 here, so xi_ii ~ 0.47."""
    models, _ = group_models(20, 20_000, seed=2)
    sk = sketcher(dim=256, model_dim=20_000)
    sketches = np.stack([sk.distance_sketch(w, round_=1) for w in models])

    def weights(distances: FloatArray) -> FloatArray:
        sigma = float(np.median(off_diagonal(distances)))
        xi = 0.5 * np.exp(-distances / sigma) / sigma
        np.fill_diagonal(xi, 0.0)
        np.fill_diagonal(xi, 1.0 - xi.sum(axis=1))
        return xi

    exact = weights(exact_squared_distances(models))
    estimate = weights(squared_distances_from_sketches(sketches))
    assert (off_diagonal(np.abs(estimate / exact - 1)) < 0.5).all()
    row_sums = (1 - np.diag(estimate)) / (1 - np.diag(exact))
    assert np.abs(row_sums - 1).max() < 0.2
    assert np.abs(estimate - exact).max() < 0.1


# --- what the server sees -------------------------------------------------------------------------
def test_offset_masks_norms_and_preserves_differences() -> None:
    d = 20_000
    sk = sketcher(dim=64, model_dim=d)
    rng = np.random.default_rng(7)
    w = rng.normal(0.0, 0.05, d)
    small, large = sk.distance_sketch(w, round_=1), sk.distance_sketch(10 * w, round_=1)
    plain_small = sk.round_matrix_apply(w, round_=1)
    plain_large = sk.round_matrix_apply(10 * w, round_=1)
    assert np.linalg.norm(plain_large) / np.linalg.norm(plain_small) == pytest.approx(10.0)
    # The offset (E‖η‖² = offset_scale²·d) dominates: a 10x larger model moves the norm by < 1e-3.
    assert np.linalg.norm(large) / np.linalg.norm(small) == pytest.approx(1.0, abs=1e-3)
    offset = sk.offset(1)
    assert np.linalg.norm(offset) ** 2 / (1e5**2 * d) == pytest.approx(1.0, abs=0.5)
    np.testing.assert_allclose(small - plain_small, offset, rtol=0, atol=1e-6)
    # Differences are those of the plain sketches (the offset cancels, up to float64 rounding).
    np.testing.assert_allclose(large - small, plain_large - plain_small, atol=1e-6)
    assert np.abs(
        squared_distances_from_sketches(np.stack([small, large]))[0, 1]
        - ((plain_large - plain_small) @ (plain_large - plain_small))
    ) < 1e-6 * ((plain_large - plain_small) @ (plain_large - plain_small))


def test_server_estimators_on_hand_computed_sketches() -> None:
    distances = squared_distances_from_sketches([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]])
    np.testing.assert_array_equal(
        distances, [[0.0, 25.0, 100.0], [25.0, 0.0, 25.0], [100.0, 25.0, 0.0]]
    )
    cosines = cosines_from_sketches([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]])
    np.testing.assert_allclose(cosines, [[1, 0, -1], [0, 1, 0], [-1, 0, 1]], atol=1e-15)
    # Two points centred at their mean are opposite.
    np.testing.assert_allclose(
        centred_cosines_from_sketches([[1e6, 1.0], [1e6, 3.0]]), [[1, -1], [-1, 1]]
    )


def test_server_estimators_are_symmetric_and_reject_bad_input() -> None:
    sketches = np.random.default_rng(8).normal(size=(7, 16)) + 1e6
    distances = squared_distances_from_sketches(sketches)
    np.testing.assert_array_equal(distances, distances.T)
    np.testing.assert_array_equal(np.diag(distances), 0.0)
    cosines = centred_cosines_from_sketches(sketches)
    np.testing.assert_array_equal(cosines, cosines.T)
    assert np.abs(cosines).max() <= 1.0
    for bad in ([1.0, 2.0], np.zeros((0, 3)), [[math.nan, 1.0]]):
        with pytest.raises(ConfigError):
            squared_distances_from_sketches(bad)
    with pytest.raises(ConfigError):
        cosines_from_sketches([[0.0, 0.0], [1.0, 0.0]])
    with pytest.raises(ConfigError):
        centred_cosines_from_sketches([[1.0, 2.0]])


def test_sketching_never_loads_numpy_random() -> None:
    code = (
        "import sys, numpy as np\n"
        "from securefed.crypto import get_suite\n"
        "from securefed.personalize.sketch import *\n"
        "for c in SketchConstruction:\n"
        "    sk = Sketcher(get_suite('default'), bytes(32), SketchConfig(dim=16, construction=c),"
        " model_dim=100)\n"
        "    ys = [sk.distance_sketch(np.arange(100.0) * i, round_=1) for i in range(3)]\n"
        "    sk.cosine_sketch(np.arange(100.0), mean=None, round_=1)\n"
        "    squared_distances_from_sketches(ys); centred_cosines_from_sketches(ys)\n"
        "print('numpy.random' in sys.modules)\n"
    )
    root = Path(__file__).resolve().parents[2]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(  # noqa: S603 -- fixed argv: this interpreter and a literal program
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert result.stdout.strip() == "False"
