"""Who masks with whom, and who holds whose shares (R8).

``complete`` (the default up to N = 62): every pair of clients in U1 shares a mask, every client
holds a share of everyone's secrets, and the threshold is the round's ``t``.

``secagg+`` (Bell et al., CCS'20, for larger N): masks and shares only between neighbours of a
sparse random graph. Whether ``u`` and ``v`` are neighbours depends only on a hash of the session,
the round and the two clients' own fresh advertised keys:

    edge(u, v)  <=>  SHA-256("securefed/v1/graph" | session | round | u | keys_u | v | keys_v)
                     read as a 64-bit number  <  2**64 * degree / (N - 1)

so the server cannot bias the graph: it does not choose the keys, and dropping other clients from
U1 does not change any edge (unlike a permutation seeded by a hash of all of U1, which a server
could grind by choosing which clients to drop). Each client's secrets are shared among its
*holders* (its neighbours and itself) with the per-neighbourhood threshold
``floor(2m/3) + 1`` for ``m`` holders; a neighbourhood with fewer than that many survivors aborts
the round ("too few neighbours survive"). Security then rests on the random graph: with n_C
colluders among N, a neighbourhood of ``m`` holders contains more than ``m/3`` of them only with
small probability when ``degree`` is Θ(log N) (Bell et al.) -- a statistical guarantee, unlike the
complete graph's deterministic ``2t - N > n_C``. Because edges are independent, degrees vary;
:class:`~securefed.secagg.config.RoundConfig` refuses a degree that leaves some client with fewer
than two neighbours with probability above 2^-20 (e.g. N = 40 needs degree >= 17, N = 1000 needs
>= 24), and a round whose graph is still that unlucky aborts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from securefed.errors import RemoteProtocolError
from securefed.secagg.config import MIN_NEIGHBOURS, GraphKind, RoundConfig, default_threshold
from securefed.secagg.messages import AdvertiseKeys
from securefed.secagg.wire import Writer

__all__ = ["MaskingGraph", "build_graph"]


@dataclass(frozen=True, slots=True)
class MaskingGraph:
    """The graph over U1: neighbours and Shamir thresholds per client."""

    members: tuple[int, ...]
    adjacency: dict[int, tuple[int, ...]]
    thresholds: dict[int, int]

    def neighbours(self, client: int) -> tuple[int, ...]:
        """The clients ``client`` shares masks with (sorted)."""
        return self.adjacency[client]

    def holders(self, client: int) -> tuple[int, ...]:
        """The clients holding shares of ``client``'s secrets: its neighbours and itself."""
        return tuple(sorted((*self.adjacency[client], client)))

    def threshold(self, client: int) -> int:
        """How many of ``holders(client)`` reconstruct ``client``'s secrets."""
        return self.thresholds[client]

    def check_survivors(self, clients: Sequence[int], survivors: Sequence[int]) -> None:
        """Raise unless every client in ``clients`` keeps a threshold of surviving holders."""
        alive = set(survivors)
        for client in clients:
            if sum(1 for h in self.holders(client) if h in alive) < self.threshold(client):
                raise RemoteProtocolError(f"too few neighbours of client {client} survive")


def _edge(config: RoundConfig, low: AdvertiseKeys, high: AdvertiseKeys) -> bool:
    w = Writer().blob(b"securefed/v1/graph").fixed(config.session_id, 32).u64(config.round)
    for advert in (low, high):
        w.u32(advert.sender).blob(advert.encryption_key).blob(advert.mask_key)
    draw = int.from_bytes(hashlib.sha256(w.getvalue()).digest()[:8], "big")
    return draw * (config.n_clients - 1) < (config.graph.degree << 64)


def build_graph(config: RoundConfig, advertisements: Sequence[AdvertiseKeys]) -> MaskingGraph:
    """The masking graph of a round, from its key directory (U1). Pure: both roles compute it.

    Raises:
        RemoteProtocolError: in ``secagg+`` mode, a client with fewer than ``MIN_NEIGHBOURS``
            neighbours (the round cannot protect it).
    """
    adverts = sorted(advertisements, key=lambda a: a.sender)
    members = tuple(a.sender for a in adverts)
    if config.graph.kind is GraphKind.COMPLETE:
        adjacency = {u: tuple(v for v in members if v != u) for u in members}
        return MaskingGraph(members, adjacency, dict.fromkeys(members, config.threshold))
    linked: dict[int, list[int]] = {u: [] for u in members}
    for i, low in enumerate(adverts):
        for high in adverts[i + 1 :]:
            if _edge(config, low, high):
                linked[low.sender].append(high.sender)
                linked[high.sender].append(low.sender)
    lonely = [u for u in members if len(linked[u]) < MIN_NEIGHBOURS]
    if lonely:
        raise RemoteProtocolError(f"clients {lonely} have fewer than {MIN_NEIGHBOURS} neighbours")
    adjacency = {u: tuple(sorted(vs)) for u, vs in linked.items()}
    thresholds = {u: default_threshold(len(vs) + 1) for u, vs in adjacency.items()}
    return MaskingGraph(members, adjacency, thresholds)
