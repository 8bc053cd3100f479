"""Who masks with whom, and who holds whose shares (R8).

``complete`` (the default up to N = 62): every pair of roster clients shares a mask, every client
holds a share of everyone's secrets, and the threshold is the round's ``t``.

``secagg+`` (Bell et al., CCS'20, for larger N): masks and shares only between neighbours of a
sparse random graph. The graph is **fixed before any key is chosen**, from the pinned roster and
the round number only:

    edge(u, v)  <=>  SHA-256("securefed/v2/graph" | roster digest | round | u | v)
                     read as a 64-bit number  <  2**64 * degree / (N - 1)        (u < v)

with lengths and integers as in :mod:`securefed.secagg.wire` (the label as a length-prefixed blob,
the digest as 32 bytes, the round as u64, u and v as u32). It is a graph over *all* N roster
clients, the same whoever shows up:

* no client can steer it: its fresh round keys are not an input (a graph hashed from the clients'
  own keys let two colluders regenerate keys until they were a victim's neighbours:
  ``threat_model/attacks/test_isolation.py``);
* the server cannot steer it through the session id (which it chooses) or through U1: dropping
  clients from the key directory changes no edge;
* what is left: the round number, which the server picks and clients only require to increase, and
  the roster, whose identity keys are chosen at roster assembly. A server that skips round numbers,
  or a coalition that grinds identity keys before the roster is pinned, gets several draws of the
  graph; each draw fails only with the small probability the degree was chosen for
  (:func:`degree_failure_bounds`), so g bits of grinding cost g bits of that margin.

Each client's secrets are shared among its *holders* (its neighbours in the full graph and itself,
``m = degree + 1``) with the threshold ``floor(2m/3) + 1`` over that full set; neighbours absent
from U1 hold no share and count as dropped. A client whose present holders fall below its threshold
cannot keep its guarantee, so it is left out (the server's key directory, :meth:`MaskingGraph.admit`
iterated to a fixpoint) or refuses (the client itself, :class:`NeighbourhoodTooSmall`); a client
with fewer than ``MIN_NEIGHBOURS`` neighbours in the fixed graph never takes part. Security then
rests on the random graph: with n_C colluders among N, a neighbourhood contains too many of them
only with small probability when ``degree`` is large enough -- a statistical guarantee, unlike the
complete graph's deterministic ``2t - N > n_C``; :func:`secagg_plus_degree` computes the degree
for given N, colluder and dropout fractions and security parameters (the table in
docs/protocol.md). :class:`~securefed.secagg.config.RoundConfig` refuses a degree that leaves some
client with fewer than two neighbours with probability above 2^-20.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from securefed.errors import ConfigError, RemoteProtocolError
from securefed.secagg.config import MIN_NEIGHBOURS, GraphKind, RoundConfig, default_threshold
from securefed.secagg.events import ExclusionReason
from securefed.secagg.wire import Writer

__all__ = [
    "GRAPH_LABEL",
    "MaskingGraph",
    "NeighbourhoodTooSmall",
    "build_graph",
    "degree_failure_bounds",
    "secagg_plus_degree",
]

GRAPH_LABEL = b"securefed/v2/graph"


class NeighbourhoodTooSmall(RemoteProtocolError):
    """A client cannot keep its guarantee in this round: too few of its holders take part
    (``STARVED``), or it has fewer than ``MIN_NEIGHBOURS`` neighbours in the fixed graph
    (``LONELY``)."""

    def __init__(self, client: int, reason: ExclusionReason, present: int, needed: int) -> None:
        self.client = client
        self.reason = reason
        self.present = present
        self.needed = needed
        if reason is ExclusionReason.LONELY:
            detail = (
                f"client {client} has {present} neighbours in the round's fixed graph, "
                f"fewer than {needed}: it cannot take part"
            )
        else:
            detail = (
                f"too few neighbours of client {client} survive: {present} of its holders "
                f"take part, its threshold is {needed}"
            )
        super().__init__(f"{detail} ({reason.value})")


@dataclass(frozen=True, slots=True)
class MaskingGraph:
    """The round's graph over every roster client: neighbours, Shamir thresholds, lonely clients.

    ``thresholds[u]`` is taken over u's *full* holder set; neighbours that do not take part count
    as dropped.
    """

    members: tuple[int, ...]
    adjacency: dict[int, tuple[int, ...]]
    thresholds: dict[int, int]
    lonely: tuple[int, ...] = ()

    def neighbours(self, client: int) -> tuple[int, ...]:
        """The clients ``client`` shares masks with when all are present (sorted)."""
        return self.adjacency[client]

    def holders(self, client: int) -> tuple[int, ...]:
        """The clients holding shares of ``client``'s secrets when all are present: its
        neighbours and itself (sorted)."""
        return tuple(sorted((*self.adjacency[client], client)))

    def present_neighbours(self, client: int, present: Collection[int]) -> tuple[int, ...]:
        """``client``'s neighbours that are in ``present`` (sorted)."""
        return tuple(v for v in self.adjacency[client] if v in present)

    def present_holders(self, client: int, present: Collection[int]) -> tuple[int, ...]:
        """``client``'s holders that are in ``present`` (sorted)."""
        return tuple(v for v in self.holders(client) if v in present)

    def threshold(self, client: int) -> int:
        """How many of ``holders(client)`` reconstruct ``client``'s secrets."""
        return self.thresholds[client]

    def exclusion(self, client: int, present: Collection[int]) -> NeighbourhoodTooSmall | None:
        """Why ``client`` cannot take part with ``present`` as the other participants, or None."""
        if client in self.lonely:
            return NeighbourhoodTooSmall(
                client, ExclusionReason.LONELY, len(self.adjacency[client]), MIN_NEIGHBOURS
            )
        alive = sum(1 for h in self.holders(client) if h in present)
        if alive < self.threshold(client):
            return NeighbourhoodTooSmall(
                client, ExclusionReason.STARVED, alive, self.threshold(client)
            )
        return None

    def admit(
        self, candidates: Sequence[int]
    ) -> tuple[tuple[int, ...], dict[int, ExclusionReason]]:
        """(admitted, excluded with reason): drop lonely clients and clients below their threshold
        among the others, until no admitted client is below its threshold (leaving one client out
        can push its neighbours below theirs)."""
        admitted = set(candidates)
        excluded: dict[int, ExclusionReason] = {}
        changed = True
        while changed:
            changed = False
            for client in sorted(admitted):
                problem = self.exclusion(client, admitted)
                if problem is not None:
                    admitted.discard(client)
                    excluded[client] = problem.reason
                    changed = True
        return tuple(sorted(admitted)), excluded

    def check_member(self, client: int, present: Collection[int]) -> None:
        """Raise NeighbourhoodTooSmall unless ``client`` can take part alongside ``present``."""
        problem = self.exclusion(client, present)
        if problem is not None:
            raise problem

    def check_survivors(self, clients: Sequence[int], survivors: Collection[int]) -> None:
        """Raise NeighbourhoodTooSmall unless every client in ``clients`` keeps a threshold of
        holders in ``survivors``."""
        alive = set(survivors)
        for client in clients:
            present = sum(1 for h in self.holders(client) if h in alive)
            if present < self.threshold(client):
                raise NeighbourhoodTooSmall(
                    client, ExclusionReason.STARVED, present, self.threshold(client)
                )


def build_graph(config: RoundConfig) -> MaskingGraph:
    """The masking graph of a round over all ``config.n_clients`` roster clients, from the roster
    digest and the round number only (pure and cached: every party computes the same graph,
    before any key exists)."""
    n = config.n_clients
    members = tuple(range(n))
    if config.graph.kind is GraphKind.COMPLETE:
        adjacency = dict(enumerate(_complete_rows(n)))
        return MaskingGraph(members, adjacency, dict.fromkeys(members, config.threshold))
    rows = _sparse_rows(config.roster.digest(), config.round, n, config.graph.degree)
    adjacency = dict(enumerate(rows))
    thresholds = {u: default_threshold(len(vs) + 1) for u, vs in adjacency.items()}
    lonely = tuple(u for u, vs in adjacency.items() if len(vs) < MIN_NEIGHBOURS)
    return MaskingGraph(members, adjacency, thresholds, lonely)


@functools.lru_cache(maxsize=8)
def _complete_rows(n: int) -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(v for v in range(n) if v != u) for u in range(n))


@functools.lru_cache(maxsize=8)
def _sparse_rows(
    roster_digest: bytes, round_: int, n: int, degree: int
) -> tuple[tuple[int, ...], ...]:
    prefix = Writer().blob(GRAPH_LABEL).fixed(roster_digest, 32).u64(round_).getvalue()
    base = hashlib.sha256(prefix)
    limit = degree << 64
    linked: list[list[int]] = [[] for _ in range(n)]
    for low in range(n):
        low_bytes = low.to_bytes(4, "big")
        for high in range(low + 1, n):
            pair = base.copy()
            pair.update(low_bytes + high.to_bytes(4, "big"))
            if int.from_bytes(pair.digest()[:8], "big") * (n - 1) < limit:
                linked[low].append(high)
                linked[high].append(low)
    return tuple(tuple(sorted(vs)) for vs in linked)


# --- choosing the degree (docs/protocol.md, "The SecAgg+ option") ---------------------------------
_LOG_CUT = 230.0  # terms below e^-230 of a distribution's mode are dropped (far below 2^-40)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def _binomial(trials: int, p: float) -> tuple[IntArray, FloatArray]:
    """(values, probabilities) of Binomial(trials, p), without negligible tails."""
    values = np.arange(trials + 1, dtype=np.int64)
    if p <= 0.0 or p >= 1.0 or trials == 0:
        at = 0 if p <= 0.0 else trials
        return values[at : at + 1], np.ones(1)
    lg = np.array([math.lgamma(k + 1) for k in range(trials + 1)])
    logs = lg[trials] - lg - lg[::-1] + values * math.log(p) + (trials - values) * math.log1p(-p)
    keep = np.nonzero(logs > logs.max() - _LOG_CUT)[0]
    lo, hi = int(keep[0]), int(keep[-1]) + 1
    return values[lo:hi], np.exp(logs[lo:hi])


def _threshold(m: IntArray) -> IntArray:
    return (2 * m) // 3 + 1


def degree_failure_bounds(
    n_clients: int, degree: int, colluders: int, dropout: float
) -> tuple[float, float]:
    """(privacy, correctness) failure bounds of one round's SecAgg+ graph.

    Edges are independent with probability ``p = degree / (N - 1)``, so for an honest client v the
    number of colluding neighbours C ~ Binomial(n_C, p) and of honest neighbours H ~
    Binomial(N - 1 - n_C, p) are independent; m = 1 + C + H holders, threshold t = floor(2m/3) + 1.

    * privacy fails for v if C >= min(2t - m, t - 1): enough colluders to obtain both of v's
      secrets from two views of the survivors (the per-neighbourhood R1), or to reach v's
      threshold with v alone, so that v could be led to unmask with only colluders' masks on its
      input. Bound: (N - n_C) * P(fail), a union over honest clients.
    * correctness fails for v if its honest *surviving* neighbours Hs (each honest client drops
      independently with probability ``dropout``) are fewer than t, counting neither v nor any
      colluder. Bound: N * P(fail).

    ``degree >= N - 1`` is the complete graph (p = 1).
    """
    if not 0 <= colluders < n_clients or not 0.0 <= dropout < 1.0 or degree < 1:
        raise ConfigError("need 0 <= colluders < N, 0 <= dropout < 1 and degree >= 1")
    p = min(1.0, degree / (n_clients - 1))
    honest = n_clients - 1 - colluders
    c, pc = _binomial(colluders, p)
    h, ph = _binomial(honest, p)
    cc, hh = np.meshgrid(c, h, indexing="ij")
    m = 1 + cc + hh
    t = _threshold(m)
    leaks = cc >= np.minimum(2 * t - m, t - 1)
    privacy = float((np.outer(pc, ph) * leaks).sum()) * (n_clients - colluders)
    # Correctness: Hs survivors and Hd dropped honest neighbours are independent binomials; v
    # fails iff floor(2m/3) >= Hs, i.e. Hd >= ceil(3 Hs / 2) - 1 - C - Hs.
    hs, phs = _binomial(honest, p * (1.0 - dropout))
    hd, phd = _binomial(honest, p * dropout)
    tail = np.zeros(honest + 2)
    tail[hd] = phd
    tail = np.cumsum(tail[::-1])[::-1]  # tail[j] = P(Hd >= j)
    cc, ss = np.meshgrid(c, hs, indexing="ij")
    need = np.clip(-((-3 * ss) // 2) - 1 - cc - ss, 0, honest + 1)
    correctness = float((np.outer(pc, phs) * tail[need]).sum()) * n_clients
    return privacy, correctness


def secagg_plus_degree(
    n_clients: int,
    collusion_fraction: float,
    dropout_fraction: float,
    *,
    sigma: int = 40,
    eta: int = 30,
) -> int | None:
    """The smallest degree whose :func:`degree_failure_bounds` are at most 2^-sigma (privacy) and
    2^-eta (correctness), with n_C = floor(collusion_fraction * N). ``N - 1`` means that only the
    complete graph qualifies; None that not even the complete graph does. Found by bisection (both
    bounds fall as the degree grows)."""

    def ok(degree: int) -> bool:
        privacy, correctness = degree_failure_bounds(
            n_clients, degree, math.floor(collusion_fraction * n_clients), dropout_fraction
        )
        return privacy <= 2.0**-sigma and correctness <= 2.0**-eta

    low, high = 1, n_clients - 1
    if not ok(high):
        return None
    while high - low > 1:
        middle = (low + high) // 2
        if ok(middle):
            high = middle
        else:
            low = middle
    return high
