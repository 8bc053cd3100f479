"""Plaintext reference for the personalization weights ξ and the personalized models (DESIGN §4).

Every function here takes and returns numpy float64 arrays; row ``i`` of a weight matrix belongs to
target ``i`` and ``u_i = Σ_j ξ_ij·w_j`` (:func:`personalized_models`). All weight matrices are
row-stochastic: entries in ``[0, 1]``, each row summing to 1 up to float64 rounding. These are the
numbers the secure protocol must reproduce (within its codec's error bound); the protocol computes
ξ from sketches instead of models, and the server then applies
:func:`securefed.secagg.policy.enforce_policy`.

Every function validates its inputs (shapes, ``N >= 2`` clients, finite values, parameter ranges)
and raises :class:`~securefed.errors.ConfigError` with a message naming the bad argument. No
function modifies its arguments.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from securefed.errors import ConfigError
from securefed.secagg.policy import ROW_SUM_TOLERANCE, client_index

__all__ = [
    "cosine_similarities",
    "fedamp_weights",
    "fedamp_weights_from_distances",
    "fedavg_weights",
    "group_weights",
    "heurfedamp_weights",
    "heurfedamp_weights_from_cosines",
    "local_weights",
    "personalized_models",
    "renormalise_row",
    "squared_distances",
]

FloatArray = npt.NDArray[np.float64]


# -- validation -------------------------------------------------------------------------------


def _array(values: npt.ArrayLike, name: str, ndim: int) -> FloatArray:
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name} must be an array of numbers") from exc
    if array.ndim != ndim:
        raise ConfigError(f"{name} must be {ndim}-D, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ConfigError(f"{name} must be finite (no NaN or inf)")
    return array


def _square(values: npt.ArrayLike, name: str) -> FloatArray:
    matrix = _array(values, name, 2)
    if matrix.shape[0] != matrix.shape[1] or matrix.shape[0] < 2:
        raise ConfigError(f"{name} must be N x N with N >= 2, got shape {matrix.shape}")
    return matrix


def _models(values: npt.ArrayLike) -> FloatArray:
    models = _array(values, "models", 2)
    if models.shape[0] < 2 or models.shape[1] < 1:
        raise ConfigError(f"models must be N x d with N >= 2 and d >= 1, got {models.shape}")
    return models


def _number(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number")
    return float(value)


def _positive(value: object, name: str) -> float:
    number = _number(value, name)
    if number <= 0:
        raise ConfigError(f"{name} must be > 0")
    return number


def _fraction(value: object, name: str) -> float:
    number = _number(value, name)
    if not 0 <= number <= 1:
        raise ConfigError(f"{name} must be in [0, 1]")
    return number


def _count(n: object) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ConfigError("the number of clients must be an int >= 2")
    return n


def _off_diagonal(n: int) -> npt.NDArray[np.bool_]:
    return ~np.eye(n, dtype=bool)


# -- similarities -----------------------------------------------------------------------------


def squared_distances(models: npt.ArrayLike) -> FloatArray:
    """``D_ij = ‖w_i - w_j‖²`` for the rows of ``models`` (N x d), computed from the differences
    (not from ``‖w_i‖² + ‖w_j‖² - 2⟨w_i, w_j⟩``, which cancels catastrophically for close models).
    Symmetric with a zero diagonal. Costs O(N²·d) time and O(N·d) extra memory.

    Raises:
        ConfigError: not an N x d finite array with N >= 2, or a distance overflows float64.
    """
    x = _models(models)
    n = x.shape[0]
    out = np.zeros((n, n), dtype=np.float64)
    with np.errstate(over="ignore"):
        for i in range(n - 1):
            diff = x[i + 1 :] - x[i]
            row = np.einsum("ij,ij->i", diff, diff)
            out[i, i + 1 :] = row
            out[i + 1 :, i] = row
    if not np.isfinite(out).all():
        raise ConfigError("models are too large: a squared distance overflows float64")
    return out


def cosine_similarities(models: npt.ArrayLike, *, centred: bool = True) -> FloatArray:
    """Pairwise cosines of the rows of ``models`` (N x d), in ``[-1, 1]`` with a unit diagonal.

    ``centred=True`` first subtracts the across-client mean ``(1/N)·Σ_j w_j`` from every model.
    Raw-weight cosines are dominated by the component all models share (the common
    initialisation) and come out ≈ 1 for every pair; centred cosines compare what each client
    learned differently (DESIGN §4). A zero vector (e.g. a model equal to the mean) has cosine 0
    with every other model.

    Raises:
        ConfigError: not an N x d finite array with N >= 2.
    """
    x = _models(models)
    if centred:
        x = x - x.mean(axis=0)
    norms = np.linalg.norm(x, axis=1)
    safe = np.where(norms > 0, norms, 1.0)
    unit = np.where((norms > 0)[:, None], x / safe[:, None], 0.0)
    cos: FloatArray = np.clip(unit @ unit.T, -1.0, 1.0)
    np.fill_diagonal(cos, 1.0)
    return cos


# -- weight matrices --------------------------------------------------------------------------


def _with_self_weights(off: FloatArray) -> FloatArray:
    """Set ``ξ_ii = 1 - Σ_{j≠i} ξ_ij``; a row whose off-diagonal sum exceeds 1 is scaled down to
    sum to exactly 1 and gets ``ξ_ii = 0``."""
    sums = off.sum(axis=1)
    over = sums > 1
    out = off.copy()
    out[over] /= sums[over, None]
    np.fill_diagonal(out, np.where(over, 0.0, 1.0 - sums))
    return out


def _fedamp_sigma(off: FloatArray, *, sigma: float | None, sigma_scale: float | None) -> float:
    if (sigma is None) == (sigma_scale is None):
        raise ConfigError("give exactly one of sigma (absolute) and sigma_scale (x median)")
    if sigma is not None:
        return _positive(sigma, "sigma")
    scale = _positive(sigma_scale, "sigma_scale")
    median = float(np.median(off))
    if median <= 0:
        raise ConfigError("sigma_scale needs a positive median squared distance; it is 0")
    result = scale * median
    if not math.isfinite(result) or result <= 0:
        raise ConfigError("sigma_scale x median squared distance is not a positive float")
    return result


def fedamp_weights_from_distances(
    sq_dist: npt.ArrayLike,
    *,
    alpha: float,
    sigma: float | None = None,
    sigma_scale: float | None = None,
) -> FloatArray:
    """FedAMP attention weights (Huang et al., AAAI 2021) from squared distances ``d_ij``.

    ``ξ_ij = alpha·A'(d_ij) = alpha·e^(-d_ij/sigma)/sigma`` for ``j ≠ i``
    (``A(x) = 1 - e^(-x/sigma)``) and ``ξ_ii = 1 - Σ_{j≠i} ξ_ij``.

    **Clamp:** the paper leaves ``ξ_ii`` negative when ``Σ_{j≠i} ξ_ij > 1`` (large
    ``alpha/sigma``); here such a row's off-diagonal part is scaled down to sum to exactly 1 and
    ``ξ_ii = 0``, which keeps the relative attention and makes ``u_i`` a convex combination.

    Row ``i`` uses row ``i`` of ``sq_dist`` (symmetry is not required, so estimated
    distances can be passed); its diagonal is ignored.

    Args:
        sq_dist: N x N finite squared distances, non-negative off the diagonal.
        alpha: ``alpha_k > 0``.
        sigma: absolute ``sigma > 0``; or
        sigma_scale: ``sigma = sigma_scale x median`` of the N(N - 1) off-diagonal squared distances
            of this round. A fixed sigma is fragile because distances grow over rounds; a relative
            one keeps ``e^(-d/sigma)`` in a useful range. Exactly one of the two must be given.

    Raises:
        ConfigError: bad shape, values or parameters; both or neither of ``sigma`` and
            ``sigma_scale``; a zero median with ``sigma_scale``; weights overflowing float64.
    """
    dist = _square(sq_dist, "sq_dist")
    off_mask = _off_diagonal(dist.shape[0])
    if (dist[off_mask] < 0).any():
        raise ConfigError("sq_dist must be non-negative off the diagonal")
    a = _positive(alpha, "alpha")
    scale = _fedamp_sigma(dist[off_mask], sigma=sigma, sigma_scale=sigma_scale)
    with np.errstate(over="ignore", invalid="ignore"):
        attention = np.where(off_mask, a * (np.exp(-dist / scale) / scale), 0.0)
    if not np.isfinite(attention).all():
        raise ConfigError("alpha / sigma is too large: the attention weights overflow float64")
    return _with_self_weights(attention)


def fedamp_weights(
    models: npt.ArrayLike,
    *,
    alpha: float,
    sigma: float | None = None,
    sigma_scale: float | None = None,
) -> FloatArray:
    """FedAMP weights from the models (N x d), with exact squared distances
    (:func:`squared_distances`); see :func:`fedamp_weights_from_distances` for the formula, the
    clamp and the parameters.

    Raises:
        ConfigError: as :func:`squared_distances` and :func:`fedamp_weights_from_distances`.
    """
    return fedamp_weights_from_distances(
        squared_distances(models), alpha=alpha, sigma=sigma, sigma_scale=sigma_scale
    )


def heurfedamp_weights_from_cosines(
    cos: npt.ArrayLike, *, self_weight: float, sigma: float
) -> FloatArray:
    """HeurFedAMP weights: ``ξ_ii = self_weight`` and
    ``ξ_ij = (1 - self_weight)·softmax_{j≠i}(sigma·cos_ij)`` (softmax over the other clients).

    Any finite similarity matrix works (the diagonal is ignored); ``sigma = 0`` gives uniform
    off-diagonal weights, larger ``sigma`` concentrates them on the most similar clients.

    Raises:
        ConfigError: bad shape or values, ``self_weight`` outside ``[0, 1]``, ``sigma`` negative
            or not finite, or ``sigma·cos`` overflowing float64.
    """
    similarity = _square(cos, "cos")
    self_w = _fraction(self_weight, "self_weight")
    temperature = _number(sigma, "sigma")
    if temperature < 0:
        raise ConfigError("sigma must be >= 0")
    off_mask = _off_diagonal(similarity.shape[0])
    with np.errstate(over="ignore"):
        logits = np.where(off_mask, temperature * similarity, -np.inf)
    if not np.isfinite(logits[off_mask]).all():
        raise ConfigError("sigma x cos overflows float64")
    exps = np.exp(logits - logits.max(axis=1, keepdims=True))  # the diagonal becomes 0
    out: FloatArray = (1.0 - self_w) * exps / exps.sum(axis=1, keepdims=True)
    np.fill_diagonal(out, self_w)
    return out


def heurfedamp_weights(
    models: npt.ArrayLike, *, self_weight: float, sigma: float, centred: bool = True
) -> FloatArray:
    """HeurFedAMP weights from the models (N x d) using :func:`cosine_similarities` of centred
    (default) or raw weights; see :func:`heurfedamp_weights_from_cosines`.

    Raises:
        ConfigError: as :func:`cosine_similarities` and :func:`heurfedamp_weights_from_cosines`.
    """
    return heurfedamp_weights_from_cosines(
        cosine_similarities(models, centred=centred), self_weight=self_weight, sigma=sigma
    )


def fedavg_weights(n: int) -> FloatArray:
    """FedAvg: every entry ``1/N``, so every client gets the plain average (self included).

    Raises:
        ConfigError: ``n`` not an int >= 2.
    """
    count = _count(n)
    return np.full((count, count), 1.0 / count)


def local_weights(n: int) -> FloatArray:
    """Local training only: the identity (``u_i = w_i``; no client receives anything).

    Raises:
        ConfigError: ``n`` not an int >= 2.
    """
    return np.eye(_count(n), dtype=np.float64)


def group_weights(partition: Sequence[int], *, self_weight: float | None) -> FloatArray:
    """Group mode (DESIGN §4e): ``partition[i]`` is client ``i``'s group label. Within a group G,
    ``ξ_ii = self_weight`` and ``ξ_ij = (1 - self_weight)/(|G| - 1)``; 0 across groups; a client
    alone in its group gets ``ξ_ii = 1``. The within-group weights do not depend on the target,
    so every member's output is ``self_weight·w_i`` plus a multiple of one group sum.
    ``self_weight=None`` gives every member the plain group average (``ξ_ii = 1/|G|``).

    Raises:
        ConfigError: fewer than 2 clients, labels that are not integers, ``self_weight``
            outside ``[0, 1]``.
    """
    labels = list(partition)
    n = _count(len(labels))
    groups: dict[int, list[int]] = {}
    for client, label in enumerate(labels):
        try:
            key = operator.index(label)
        except TypeError as exc:
            raise ConfigError("group labels must be integers") from exc
        if isinstance(label, bool):
            raise ConfigError("group labels must be integers")
        groups.setdefault(key, []).append(client)
    fixed = None if self_weight is None else _fraction(self_weight, "self_weight")
    out = np.zeros((n, n), dtype=np.float64)
    for members in groups.values():
        if len(members) == 1:
            out[members[0], members[0]] = 1.0
            continue
        self_w = 1.0 / len(members) if fixed is None else fixed
        block = np.ix_(members, members)
        out[block] = (1.0 - self_w) / (len(members) - 1)
        out[members, members] = self_w
    return out


# -- using the weights ------------------------------------------------------------------------


def personalized_models(weights: npt.ArrayLike, models: npt.ArrayLike) -> FloatArray:
    """``u_i = Σ_j ξ_ij·w_j`` for every target: ``weights`` (N x N) times ``models`` (N x d).

    Raises:
        ConfigError: bad shapes (including a mismatched N) or non-finite values.
    """
    xi = _square(weights, "weights")
    x = _models(models)
    if x.shape[0] != xi.shape[0]:
        raise ConfigError(f"weights are for {xi.shape[0]} clients, models for {x.shape[0]}")
    result: FloatArray = xi @ x
    return result


def renormalise_row(row: npt.ArrayLike, *, target: int, contributors: Sequence[int]) -> FloatArray:
    """Target ``target``'s weights as used after dropouts (DESIGN §4b).

    ``ξ'_ii = ξ_ii``; for a surviving contributor ``u ∈ C``,
    ``ξ'_iu = ξ_iu·(1 - ξ_ii)/Σ_{v∈C} ξ_iv``; 0 for everyone else. The row still sums to 1. A
    local row (no off-diagonal weight at all) is returned unchanged.

    Raises:
        ConfigError: ``row`` is not a probability row of length N >= 2 (finite, in [0, 1],
            summing to 1 within ``ROW_SUM_TOLERANCE``); bad, repeated or self-including indices;
            or the row has off-diagonal weight but the contributors in ``C`` carry none, so it
            cannot be renormalised (the target must abort).
    """
    weights = _array(row, "row", 1)
    n = weights.size
    if n < 2 or (weights < 0).any() or (weights > 1).any():
        raise ConfigError("row must have N >= 2 entries in [0, 1]")
    if abs(math.fsum(weights.tolist()) - 1) > ROW_SUM_TOLERANCE:
        raise ConfigError("row must sum to 1")
    i = client_index(target, n, "target")
    survivors = [client_index(u, n, "contributors") for u in contributors]
    if len(set(survivors)) != len(survivors) or i in survivors:
        raise ConfigError("contributors must be distinct and must not include the target")
    out = np.zeros(n, dtype=np.float64)
    out[i] = weights[i]
    if not np.delete(weights, i).any():
        return out
    mass = math.fsum(weights[survivors].tolist())
    if mass == 0:
        raise ConfigError(f"target {i}: no surviving contributor carries weight")
    out[survivors] = weights[survivors] * ((1.0 - weights[i]) / mass)
    return out
