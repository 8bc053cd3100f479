"""The SecAgg+ graph securefed shipped before issue 20 -- a test fixture, never production code.

Edges hashed the session and the two clients' own fresh advertised keys, the graph was built over
U1 (the key directory) only, and each client's threshold was ``floor(2m/3) + 1`` over its holders
*in U1*. ``threat_model/attacks/test_isolation.py`` monkeypatches the protocol roles' graph with
:func:`build_graph` to show the isolation attack that this construction allows.

Today's clients advertise one share key per neighbour of the fixed graph. The old graph is not
known before the keys, so under this fixture every client advertises a key for every other roster
client (:func:`complete_graph` while advertising) and :func:`advertised_key` picks the one for a
peer from that complete list. The old edge rule hashed the clients' encryption and mask keys; it
hashes the mask keys here (the attack needs some fresh key in the hash, nothing more).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from securefed.crypto import AgreementPublicKey
from securefed.errors import RemoteProtocolError
from securefed.secagg.config import MIN_NEIGHBOURS, GraphKind, RoundConfig, default_threshold
from securefed.secagg.graph import MaskingGraph
from securefed.secagg.messages import AdvertiseKeys
from securefed.secagg.wire import Writer


def edge(config: RoundConfig, low: AdvertiseKeys, high: AdvertiseKeys) -> bool:
    """The old edge rule: a hash of session, round and both clients' advertised keys."""
    w = Writer().blob(b"securefed/v1/graph").fixed(config.session_id, 32).u64(config.round)
    for advert in (low, high):
        w.u32(advert.sender).blob(advert.mask_key)
    draw = int.from_bytes(hashlib.sha256(w.getvalue()).digest()[:8], "big")
    return draw * (config.n_clients - 1) < (config.graph.degree << 64)


def adjacent(config: RoundConfig, a: AdvertiseKeys, b: AdvertiseKeys) -> bool:
    """Whether the old rule links the clients of advertisements ``a`` and ``b``."""
    low, high = sorted((a, b), key=lambda advert: advert.sender)
    return edge(config, low, high)


def complete_graph(config: RoundConfig) -> MaskingGraph:
    """Every roster client linked to every other (what clients advertise share keys for)."""
    members = tuple(range(config.n_clients))
    adjacency = {u: tuple(v for v in members if v != u) for u in members}
    return MaskingGraph(members, adjacency, dict.fromkeys(members, config.threshold))


def advertised_key(
    config: RoundConfig, graph: MaskingGraph, advert: AdvertiseKeys, peer: int
) -> AgreementPublicKey:
    """The share key ``advert``'s sender advertised for ``peer``, from its complete key list."""
    position = peer if peer < advert.sender else peer - 1
    return config.suite.agreement_public_key(advert.encryption_keys[position])


def build_graph(config: RoundConfig, advertisements: Sequence[AdvertiseKeys]) -> MaskingGraph:
    """The old masking graph of a round, over its key directory (U1) only."""
    adverts = sorted(advertisements, key=lambda a: a.sender)
    members = tuple(a.sender for a in adverts)
    if config.graph.kind is GraphKind.COMPLETE:
        adjacency = {u: tuple(v for v in members if v != u) for u in members}
        return MaskingGraph(members, adjacency, dict.fromkeys(members, config.threshold))
    linked: dict[int, list[int]] = {u: [] for u in members}
    for i, low in enumerate(adverts):
        for high in adverts[i + 1 :]:
            if edge(config, low, high):
                linked[low.sender].append(high.sender)
                linked[high.sender].append(low.sender)
    lonely = [u for u in members if len(linked[u]) < MIN_NEIGHBOURS]
    if lonely:
        raise RemoteProtocolError(f"clients {lonely} have fewer than {MIN_NEIGHBOURS} neighbours")
    adjacency = {u: tuple(sorted(vs)) for u, vs in linked.items()}
    thresholds = {u: default_threshold(len(vs) + 1) for u, vs in adjacency.items()}
    return MaskingGraph(members, adjacency, thresholds)
