"""Exposure: how much of one party's model a coalition can read from what a round releases
(issue 21).

**The measure.** Stack the N models as the rows of W (N x d). Everything a round releases is a
*combination* ``a·W`` for a coefficient vector ``a ∈ R^N``: in attention mode target ``c`` learns
``u_c = Σ_u ξ_cu·w_u`` (its row of ξ, restricted to its surviving contributors and itself); in
group and fedavg mode the server itself learns each group sum, the indicator row of the group.
A coalition C of clients, together with the server, knows

* the combinations released to its members (attention: the rows of the targets in C; the
  outputs of honest targets are blinded, so the server learns none of them);
* the combinations released to the server (group sums), whatever C is;
* its members' own models, the unit vectors ``e_c``, ``c ∈ C``.

So it knows ``a·W`` for every ``a`` in the span S(C) of those vectors, and nothing else about W.
The **exposure** of party v is ::

    exposure(v) = min over coalitions C, |C| <= n_C, v ∉ C, of  dist(e_v, S(C))

a number in [0, 1]. If the models are isotropic around a mean the coalition knows (i.i.d. with
covariance σ²·I), the best linear estimate of ``w_v`` from the coalition's view is ``p·W`` with
``p`` the orthogonal projection of ``e_v`` on S(C), and its relative error is exactly
``‖e_v - p‖ = dist(e_v, S(C))`` (in expectation over the models; for large d the measured error
concentrates on it). Exposure 0 means the coalition reads ``w_v`` exactly; exposure 1 means it
learns nothing about it; ``exposure >= rho`` means that the coalition's best estimate of the
victim's model has relative error at least rho, i.e. it explains at most ``1 - rho²`` of the
victim's variance. The measure is scale-free: multiplying a released row by a non-zero number
(the target's renormalisation after dropouts, ``1 - ξ_ii``) does not change the span.

**Which coalitions.** S(C) only grows with C (each member adds its own vectors), so the distance
only falls: the minimum over ``|C| <= n_C`` is attained by coalitions of exactly
``s = min(n_C, N - 1)`` members, and only those are enumerated (``C(N, s)`` of them: 1891 for
N = 62, s = 2). No further pruning is done, because none is needed: a coalition none of whose
vectors has a non-zero v-coordinate gives distance 1 for v, which never lowers the minimum, but
all victims are evaluated at once per coalition, so skipping such coalitions would save little.

**Computation.** For a coalition C, ``span(e_c : c ∈ C)`` is orthogonal to every ``e_v`` with
``v ∉ C``, so ``dist(e_v, S(C)) = dist(e_v, span(P·a))`` where P zeroes the coordinates in C and
``a`` runs over the coalition's released rows. With the columns of ``P·A`` scaled to unit length
and ``U`` the left singular vectors whose singular values exceed ``RANK_TOLERANCE``,
``dist² = 1 - Σ_k U_vk²``. This is one batched SVD of ``K x N x k`` (k = the coalition's number of
rows, at most ``R·s + M``), vectorised over coalitions with numpy. Measured on a 2-core build
machine (random rows, best of 5): N = 8, 20, 40, 62 take 0.08, 0.11, 0.16, 0.22 ms with n_C = 1
and 0.13, 0.44, 2.9, 9.0 ms with n_C = 2 (the test
``test_exposure_at_62_parties_and_two_colluders_is_well_under_a_second`` in
tests/secagg/test_exposure.py asserts < 0.25 s for the last).

**Rank tolerance.** A direction whose singular value (of unit-length columns) is below
``RANK_TOLERANCE = 1e-13`` is treated as absent: two exactly parallel rows (uniform rows with
different self weights) must not count as two, and rounding makes their second singular value
~1e-16, not 0. A crafted pair of rows that differ by ``ε·e_v`` with ``ε < 1e-13`` would let the
coalition difference its outputs into ``ε·w_v``, under the codec's rounding of one unit
``2^-f`` per contributor: that is readable only if ``ε·B·2^f`` is well above 1, i.e. if the
codec's scaled bound ``B·2^f`` exceeds ~1e13 ≈ 2^43 (the default codec has ``8·2^16 = 2^19``;
the 32-bit ring allows at most 2^31).

This module imports only numpy, :mod:`securefed.errors` and the standard library.
"""

from __future__ import annotations

import itertools
import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from securefed.errors import ConfigError

__all__ = [
    "MAX_COALITIONS",
    "RANK_TOLERANCE",
    "ExposureReport",
    "attention_releases",
    "coalition_distance",
    "exposure",
    "exposure_report",
    "group_exposure",
    "group_releases",
    "party_index",
    "row_exposure",
    "uniform_exposure",
]

FloatArray = npt.NDArray[np.float64]
IndexArray = npt.NDArray[np.intp]

RANK_TOLERANCE: Final = 1e-13
# C(62, 3) = 37,820 and C(256, 2) = 32,640 coalitions fit; C(62, 4) = 557,845 does not. The
# computation itself is linear in the count; the bound keeps a misconfigured n_C from hanging.
MAX_COALITIONS: Final = 200_000
_CHUNK_FLOATS: Final = 1 << 22  # ~32 MiB of float64 per batched SVD


@dataclass(frozen=True, slots=True)
class ExposureReport:
    """The exposure of every party, and for each one a coalition that attains it.

    Attributes:
        values: ``values[v]`` = exposure(v) in [0, 1].
        coalitions: ``coalitions[v]`` = a coalition (sorted party indices, v not among them)
            whose view is closest to ``e_v``; ``()`` when no coalition learns anything about v
            (exposure 1) or n_C = 0.
        collusion_bound: the n_C it was computed for.
    """

    values: FloatArray
    coalitions: tuple[tuple[int, ...], ...]
    collusion_bound: int


def _bound(value: object, name: str = "collusion_bound") -> int:
    try:
        count = operator.index(value)  # type: ignore[arg-type]
    except TypeError as exc:
        raise ConfigError(f"{name} must be an int >= 0, got {value!r}") from exc
    if isinstance(value, bool) or count < 0:
        raise ConfigError(f"{name} must be an int >= 0, got {value!r}")
    return count


def _finite(values: npt.ArrayLike, name: str) -> FloatArray:
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name} must be an array of numbers") from exc
    if not np.isfinite(array).all():
        raise ConfigError(f"{name} must be finite")
    return array


def _released_stack(released: npt.ArrayLike) -> FloatArray:
    stack = _finite(released, "released")
    if stack.ndim == 2:
        stack = stack[None]
    if stack.ndim != 3 or stack.shape[1] != stack.shape[2] or stack.shape[1] < 1:
        raise ConfigError("released must be N x N (or R x N x N: one N x N per round)")
    return stack


def _server_rows(server_rows: npt.ArrayLike | None, n: int) -> FloatArray:
    if server_rows is None:
        return np.zeros((0, n), dtype=np.float64)
    rows = _finite(server_rows, "server_rows")
    if rows.ndim == 1:
        rows = rows[None]
    if rows.ndim != 2 or rows.shape[1] != n:
        raise ConfigError(f"server_rows must be M x N with N = {n}")
    return rows


def _coalitions(n: int, size: int) -> IndexArray:
    count = math.comb(n, size)
    if count > MAX_COALITIONS:
        raise ConfigError(
            f"exposure with n_C = {size} over {n} parties needs {count} coalitions "
            f"(limit {MAX_COALITIONS}); lower the policy's colluders"
        )
    combos = np.fromiter(
        itertools.chain.from_iterable(itertools.combinations(range(n), size)),
        dtype=np.intp,
        count=count * size,
    )
    return combos.reshape(count, size)


def _explained(
    stack: FloatArray, server: FloatArray, combos: IndexArray
) -> tuple[FloatArray, IndexArray]:
    """For every party v: the largest ``1 - dist²(e_v, S(C))`` over the coalitions in
    ``combos`` that exclude v (``-inf`` if there is none), and the index of one that attains it."""
    rounds, n, _ = stack.shape
    size = combos.shape[1]
    width = rounds * size + server.shape[0]
    best = np.full(n, -np.inf)
    where = np.zeros(n, dtype=np.intp)
    if width == 0:  # nothing is known about anyone beyond the coalition's own models
        best[:] = 0.0
        if combos.shape[0]:
            for v in range(n):
                where[v] = int(np.flatnonzero(~(combos == v).any(axis=1))[0])
        return best, where
    chunk = max(1, _CHUNK_FLOATS // (n * width))
    for start in range(0, combos.shape[0], chunk):
        members = combos[start : start + chunk]
        count = members.shape[0]
        columns = stack[:, members, :].transpose(1, 3, 0, 2).reshape(count, n, rounds * size)
        if server.shape[0]:
            shared = np.broadcast_to(server.T, (count, n, server.shape[0]))
            columns = np.concatenate([columns, shared], axis=2)
        inside = np.zeros((count, n), dtype=bool)
        inside[np.arange(count)[:, None], members] = True
        matrix = np.where(inside[:, :, None], 0.0, columns)
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        matrix = np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)
        left, singular, _ = np.linalg.svd(matrix, full_matrices=False)
        kept = (singular > RANK_TOLERANCE).astype(np.float64)
        explained = np.einsum("knj,kj->kn", left * left, kept)
        explained[inside] = -np.inf
        top = explained.argmax(axis=0)
        values = explained[top, np.arange(n)]
        better = values > best
        best = np.where(better, values, best)
        where = np.where(better, top + start, where)
    return best, where


def exposure_report(
    released: npt.ArrayLike,
    *,
    collusion_bound: int,
    server_rows: npt.ArrayLike | None = None,
) -> ExposureReport:
    """Every party's exposure (see the module docstring) and a coalition attaining it.

    Args:
        released: N x N, row ``c`` = the coefficients of the one combination party ``c``
            learns (its output's weights over all N models; ``e_c`` or zeros for a party that
            learns nothing beyond its own model). Or R x N x N: party ``c`` learns
            ``released[r, c]`` for every r (e.g. rounds whose models are treated as the same).
        collusion_bound: n_C, the most clients in a coalition (the server is always in it).
        server_rows: M x N combinations the server learns itself (group sums in group and
            fedavg mode); every coalition knows them.

    Raises:
        ConfigError: malformed arrays, ``collusion_bound`` not an int >= 0, or more than
            :data:`MAX_COALITIONS` coalitions.
    """
    stack = _released_stack(released)
    n = stack.shape[1]
    server = _server_rows(server_rows, n)
    size = min(_bound(collusion_bound), n - 1)
    combos = _coalitions(n, size)
    best, where = _explained(stack, server, combos)
    distances = np.sqrt(np.clip(1.0 - best, 0.0, 1.0))
    witnesses = tuple(
        tuple(int(c) for c in combos[where[v]]) if distances[v] < 1.0 else () for v in range(n)
    )
    return ExposureReport(distances, witnesses, size)


def coalition_distance(
    released: npt.ArrayLike,
    coalition: Sequence[int],
    victim: int,
    *,
    without: int | None = None,
    server_rows: npt.ArrayLike | None = None,
) -> float:
    """``dist(e_victim, S(coalition))`` for one coalition (the quantity :func:`exposure_report`
    minimises), optionally leaving out the released rows of one member ``without`` (its own
    model ``e_without`` still counts): a member whose rows can be left out without raising the
    distance is not what exposes the victim.

    Raises:
        ConfigError: as :func:`exposure_report`, or bad indices (``victim`` in ``coalition``).
    """
    stack = _released_stack(released)
    n = stack.shape[1]
    server = _server_rows(server_rows, n)
    members = sorted({party_index(c, n, "coalition") for c in coalition})
    target = party_index(victim, n, "victim")
    if target in members:
        raise ConfigError("the victim cannot be in the coalition")
    columns = [stack[r, c] for r in range(stack.shape[0]) for c in members if c != without]
    columns += list(server)
    if not columns:
        return 1.0
    matrix = np.stack(columns, axis=1)
    matrix[members] = 0.0
    norms = np.linalg.norm(matrix, axis=0, keepdims=True)
    matrix = np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)
    left, singular, _ = np.linalg.svd(matrix, full_matrices=False)
    explained = float(np.sum(left[target, singular > RANK_TOLERANCE] ** 2))
    return math.sqrt(min(1.0, max(0.0, 1.0 - explained)))


def exposure(
    released: npt.ArrayLike,
    *,
    collusion_bound: int,
    server_rows: npt.ArrayLike | None = None,
) -> FloatArray:
    """``exposure(v)`` for every party v: :attr:`ExposureReport.values` of
    :func:`exposure_report` (same arguments and errors)."""
    return exposure_report(
        released, collusion_bound=collusion_bound, server_rows=server_rows
    ).values


def party_index(value: object, n: int, name: str, *, noun: str = "party") -> int:
    """``value`` as an index in [0, n); ConfigError naming ``name`` (and the ``noun`` the
    caller's indices are: "party", "client") otherwise."""
    try:
        index = operator.index(value)  # type: ignore[arg-type]
    except TypeError as exc:
        raise ConfigError(f"{name} must be integers ({noun} indices)") from exc
    if isinstance(value, bool) or not 0 <= index < n:
        raise ConfigError(f"{name}: {value!r} is not a {noun} index in [0, {n})")
    return index


def attention_releases(
    weights: npt.ArrayLike,
    *,
    targets: Sequence[int] | None = None,
    contributors: Mapping[int, Sequence[int]] | None = None,
) -> FloatArray:
    """The combinations an attention round releases, as :func:`exposure_report` takes them.

    Row ``i`` of the result is target ``i``'s row of ξ if ``i`` receives an output (it is in
    ``targets``, default every party or every key of ``contributors``), restricted to ``i`` and
    its surviving contributors ``contributors[i]`` when those are given (the target's
    renormalisation rescales the row, which leaves the span unchanged). A party that receives
    no output gets ``e_i``: it knows its own model only.

    Raises:
        ConfigError: ``weights`` not a finite N x N matrix, or bad indices.
    """
    matrix = _finite(weights, "weights")
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] < 1:
        raise ConfigError("weights must be an N x N matrix")
    n = matrix.shape[0]
    chosen: Sequence[int]
    if targets is None:
        chosen = range(n) if contributors is None else list(contributors)
    else:
        chosen = targets
    out = np.eye(n, dtype=np.float64)
    for value in chosen:
        target = party_index(value, n, "targets")
        if contributors is None:
            out[target] = matrix[target]
            continue
        if target not in contributors:
            raise ConfigError(f"no contributor set given for target {target}")
        where = f"contributors of target {target}"
        members = [party_index(u, n, where) for u in contributors[target]]
        row = np.zeros(n, dtype=np.float64)
        row[members] = matrix[target, members]
        row[target] = matrix[target, target]
        out[target] = row
    return out


def _groups(partition: Sequence[int]) -> dict[int, list[int]]:
    labels = list(partition)
    if not labels:
        raise ConfigError("the partition must name at least one party")
    groups: dict[int, list[int]] = {}
    for party, label in enumerate(labels):
        if isinstance(label, bool):
            raise ConfigError("group labels must be integers")
        try:
            key = operator.index(label)
        except TypeError as exc:
            raise ConfigError("group labels must be integers") from exc
        groups.setdefault(key, []).append(party)
    return groups


def group_releases(partition: Sequence[int]) -> FloatArray:
    """Group and fedavg mode: the combinations the server learns, one indicator row per group
    (``partition[i]`` is party ``i``'s group label; fedavg is one group of everyone). Pass them
    as ``server_rows`` with no ``released`` rows beyond the identity: a member's output is
    ``ξ_ii·w_i`` plus a multiple of its group sum, so it adds nothing the server lacks.

    Raises:
        ConfigError: an empty partition or labels that are not integers.
    """
    groups = _groups(partition)
    out = np.zeros((len(groups), len(partition)), dtype=np.float64)
    for row, members in enumerate(groups.values()):
        out[row, members] = 1.0
    return out


def group_exposure(partition: Sequence[int], *, collusion_bound: int) -> FloatArray:
    """Every party's exposure in group (or fedavg) mode, in closed form.

    For v in group G the best coalition is ``s = min(n_C, |G| - 1)`` other members of G (members
    of other groups add nothing about v): S(C) restricted to the coordinates outside C is the
    indicator of the ``|G| - s`` remaining members, so ``exposure(v) = sqrt(1 - 1/(|G| - s))``.
    It is 0 for a group of one or when n_C >= |G| - 1. Equal to :func:`exposure_report` with
    ``server_rows = group_releases(partition)`` (tested), without enumerating coalitions.

    Raises:
        ConfigError: as :func:`group_releases`, or ``collusion_bound`` not an int >= 0.
    """
    bound = _bound(collusion_bound)
    out = np.zeros(len(partition), dtype=np.float64)
    for members in _groups(partition).values():
        remaining = len(members) - min(bound, len(members) - 1)
        out[members] = math.sqrt(1.0 - 1.0 / remaining)
    return out


def uniform_exposure(parties: int, collusion_bound: int) -> float:
    """The exposure every party has when every one of ``parties`` targets spreads its weight
    uniformly over all the others (the most any attention ξ can give everyone, and what mixing
    toward uniform converges to): ``sqrt(1 - 1/(parties - s))``, ``s = min(n_C, parties - 1)``.
    A coalition's rows, with its own coordinates removed, are all the indicator of the
    ``parties - s`` others.

    Raises:
        ConfigError: ``parties`` not an int >= 1 or ``collusion_bound`` not an int >= 0.
    """
    if isinstance(parties, bool) or not isinstance(parties, int) or parties < 1:
        raise ConfigError(f"parties must be an int >= 1, got {parties!r}")
    remaining = parties - min(_bound(collusion_bound), parties - 1)
    return math.sqrt(1.0 - 1.0 / remaining)


def row_exposure(weights: npt.ArrayLike, *, dropouts: int = 0) -> FloatArray:
    """For n_C = 1, in closed form: ``out[i]`` = the least exposure that target ``i``'s row alone
    leaves any other party, ``sqrt(1 - max_v x_v² / ‖x‖²)`` with ``x`` the row without its
    diagonal entry (1.0 for a row with no off-diagonal weight). With one colluder the coalition
    is one target, so ``exposure(ξ, collusion_bound=1)`` is, for each v, the least over rows of
    ``sqrt(1 - x_v²/‖x‖²)``, and every row can be judged (and fixed) on its own.

    ``dropouts = D``: the least such exposure after *any* D of the row's other contributors drop
    out (the row restricted to the survivors): for each v the worst case removes the D largest
    ``x_u``, u ≠ v, so ``‖x‖²`` loses the sum of their squares. 0 where fewer than one other
    contributor than v would remain with weight.

    Raises:
        ConfigError: ``weights`` not a finite N x N matrix or ``dropouts`` not an int >= 0.
    """
    matrix = _finite(weights, "weights")
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] < 1:
        raise ConfigError("weights must be an N x N matrix")
    drop = min(_bound(dropouts, "dropouts"), matrix.shape[0] - 1)
    off = np.where(np.eye(matrix.shape[0], dtype=bool), 0.0, np.abs(matrix))
    top = off.max(axis=1, keepdims=True)
    scaled = np.divide(off, top, out=np.zeros_like(off), where=top > 0)
    squares = scaled * scaled
    norms = squares.sum(axis=1, keepdims=True)
    if drop:
        ordered = -np.sort(-squares, axis=1)
        largest = ordered[:, :drop].sum(axis=1, keepdims=True)  # the D largest
        one_more = ordered[:, : drop + 1].sum(axis=1, keepdims=True)
        # v among the D largest: remove the D largest others = the D + 1 largest minus v
        threshold = ordered[:, drop - 1 : drop]
        removed = np.where(squares >= threshold, one_more - squares, largest)
        norms = norms - removed
    alone = (squares > 0) & (norms <= squares * (1 + 1e-12))  # v alone, up to rounding
    share = np.divide(squares, norms, out=np.zeros_like(squares), where=(squares > 0) & ~alone)
    share = np.where(alone, 1.0, share)
    result: FloatArray = np.sqrt(np.clip(1.0 - share.max(axis=1, initial=0.0), 0.0, 1.0))
    return result
