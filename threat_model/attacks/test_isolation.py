"""SecAgg+ isolation: colluders steer the masking graph, the server starves the victim's
neighbourhood, and the colluders' shares unmask the victim's input.

ADVERSARY: a malicious server and three clients of the pinned roster that collude with it (well
under the declared n_C = 33 of N = 100), in a sum round on the SecAgg+ graph. Goal: the victim's
input x_v itself, not a sum. (a) The colluders choose their round keys after seeing the victim's
advertisement (the server relays it to them first) and regenerate them until the graph makes them
v's neighbours. (b) The server leaves v's honest neighbours out of U1, as if they had never
advertised: the round still has ~80 >= t = 67 clients. (c) The colluders decrypt the shares of
v's secrets that v dealt them, reconstruct its self-mask seed b_v and mask key s_v (interpolating
the shares against v's own signed commitments), and strip every mask from v's masked input.

ASSUMPTIONS: N = 100, degree 20, t = 67, d = 32, 16 fractional bits; the victim is client 0. The
protocol roles are the real ones (`SecAggClient`, `SecAggServer`), driven directly; the old
construction is `threat_model/attacks/_old_graph.py`, monkeypatched in as the roles' graph:
edges hashed from the two clients' fresh keys, the graph and the thresholds over U1 only (with
share keys advertised for every roster client, since that graph is unknown before the keys).

ATTACK (old construction, measured): each colluder needs a few fresh key pairs (edge probability
20/99) to become v's neighbour; with v's ~20 honest neighbours left out of U1, v's holders in U1
are itself and the three colluders, so its threshold drops to floor(2*4/3) + 1 = 3 and v masks
with the colluders only. The colluders' three shares give b_v and s_v (s_v checked against v's
signed public mask key), and x_v comes out with relative error ~1e-5 (the codec's rounding): the
input is recovered exactly.

DEFENCE (new construction, `securefed/secagg/graph.py`, measured): the graph is a hash of the
roster digest, the round and the two indices -- no key is an input, so regenerating keys changes
no edge (the adversary's best case is three colluders that *are* v's neighbours in the fixed
graph). v's threshold is over its full fixed neighbourhood (~21 holders, threshold ~15) and
absent neighbours count as dropped: with its honest neighbours left out of U1, v has 4 of the
~15 holders it needs. The honest server code leaves v out of the key directory
(`ClientsExcluded`, reason STARVED) and sends it an Abort; a server that forces v into the
directory anyway meets v's own check, which raises `NeighbourhoodTooSmall` before v deals a
share. Either way v sends nothing after its advertisement: no share of b_v or s_v exists and no
masked input of v is ever sent. Residual (docs/protocol.md, "The SecAgg+ option"): the round
number and the roster are inputs the server or a roster-assembly coalition could grind, and the
guarantee per graph is statistical.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pytest

import securefed.secagg.client
import securefed.secagg.server
from securefed.crypto import vss
from securefed.encoding import FixedPointCodec
from securefed.errors import ProtocolError
from securefed.secagg import GraphKind, MaskGraph, RoundConfig, SecAggClient, SecAggServer, Stage
from securefed.secagg.events import ClientsExcluded, ExclusionReason
from securefed.secagg.graph import MaskingGraph, NeighbourhoodTooSmall, build_graph
from securefed.secagg.masking import Output, unmask_sum
from securefed.secagg.messages import (
    Abort,
    AdvertiseKeys,
    KeyDirectory,
    MaskedInput,
    Message,
    ShareKeys,
    sign_message,
)
from securefed.secagg.server import Envelope
from securefed.testing import Federation, make_federation
from tests.secagg.conftest import config_for
from threat_model.attacks import _old_graph, seeded_rng

N = 100
DEGREE = 20
DIM = 32
VICTIM = 0
MAX_TRIES = 500  # fresh key pairs one colluder may try
_FED: list[Federation] = []


def federation() -> Federation:
    if not _FED:
        _FED.append(make_federation(N))
    return _FED[0]


def config() -> RoundConfig:
    return config_for(federation(), graph=MaskGraph(GraphKind.SECAGG_PLUS, degree=DEGREE), dim=DIM)


def inputs() -> dict[int, np.ndarray]:
    rng = seeded_rng(47)
    return {i: rng.uniform(-4.0, 4.0, DIM) for i in range(N)}


Grind = Callable[[AdvertiseKeys, AdvertiseKeys], bool]
Tamper = Callable[[Envelope], Sequence[Envelope]]


@dataclass
class Round:
    """The clients and what happened to them in one attacked round."""

    config: RoundConfig
    colluders: tuple[int, ...]
    clients: dict[int, SecAggClient] = field(default_factory=dict)
    adverts: dict[int, AdvertiseKeys] = field(default_factory=dict)
    tries: dict[int, int] = field(default_factory=dict)
    sent: list[tuple[int, Message]] = field(default_factory=list)
    errors: dict[int, ProtocolError] = field(default_factory=dict)
    kept: dict[int, object] = field(default_factory=dict)  # colluder -> its share pair of v
    server: SecAggServer | None = None

    def advertise(self, grind: Grind | None) -> None:
        """Every client advertises, the victim first; a colluder regenerates its keys until
        ``grind(victim's advert, its advert)`` holds."""
        for i in range(N):
            tries = 0
            while True:
                tries += 1
                assert tries <= MAX_TRIES, "grinding failed"  # P = (79/99)^500
                client = SecAggClient(self.config, index=i, identity=federation().client_keys[i])
                advert = client.start(inputs()[i])
                if i not in self.colluders or grind is None or grind(self.adverts[VICTIM], advert):
                    break
            self.clients[i], self.adverts[i], self.tries[i] = client, advert, tries
            self.sent.append((i, advert))

    def run(self, hidden: set[int], tamper: Tamper = lambda e: (e,)) -> None:
        """The server runs the round as if the clients in ``hidden`` had never advertised;
        ``tamper`` may rewrite what it sends."""
        server = self.server = SecAggServer(self.config, identity=federation().server_key)
        for i, advert in self.adverts.items():
            if i not in hidden:
                server.receive(advert)
        while not server.stage.terminal:
            replies: list[tuple[int, Message]] = []
            for planned in server.advance():
                for envelope in tamper(planned):
                    client = self.clients[envelope.recipient]
                    if envelope.recipient in hidden or client.stage.terminal:
                        continue
                    try:
                        out = client.receive(envelope.message)
                    except ProtocolError as exc:
                        self.errors[envelope.recipient] = exc
                        continue
                    replies += [(envelope.recipient, m) for m in out]
                    if envelope.recipient in self.colluders and VICTIM in client._held:
                        self.kept[envelope.recipient] = client._held[VICTIM]  # decrypted
            for sender, message in replies:
                self.sent.append((sender, message))
                if not server.stage.terminal:
                    server.receive(message)

    def sent_by(self, client: int) -> list[str]:
        return [type(m).__name__ for s, m in self.sent if s == client]


def recover_victim(attacked: Round, graph: MaskingGraph) -> np.ndarray:
    """The coalition's estimate of x_v from v's masked input and the colluders' shares."""
    config = attacked.config
    (y_v,) = [m for s, m in attacked.sent if s == VICTIM and isinstance(m, MaskedInput)]
    t = graph.threshold(VICTIM)
    held = [attacked.kept[c] for c in attacked.colluders]
    (keys,) = [m for s, m in attacked.sent if s == VICTIM and isinstance(m, ShareKeys)]

    def combine(field: str, polynomial: bytes) -> bytes:
        shares = {
            c: vss.Share.from_bytes(getattr(h, field))
            for c, h in zip(attacked.colluders, held, strict=True)
        }
        commitment = vss.Commitment.from_bytes(polynomial)
        return vss.reconstruct(commitment, shares, threshold=t).secret

    b_v = combine("self_seed", keys.commitment.self_seed_polynomial)
    s_v = combine("mask_key", keys.commitment.mask_key_polynomial)
    suite = config.mask_suite
    private = suite.agreement_private_key(s_v)
    assert private.public_key() == suite.agreement_public_key(attacked.adverts[VICTIM].mask_key)
    secrets = {
        (VICTIM, u): private.exchange(suite.agreement_public_key(attacked.adverts[u].mask_key))
        for u in graph.neighbours(VICTIM)
    }
    stripped = unmask_sum(
        [y_v.vector],
        config=config,
        output=Output(),
        self_seeds={VICTIM: b_v},
        dropped_secrets=secrets,
    )
    decoded: np.ndarray = FixedPointCodec(config.codec).decode(stripped)
    return decoded


def relative_error(estimate: np.ndarray) -> float:
    truth = inputs()[VICTIM]
    return float(np.linalg.norm(estimate - truth) / np.linalg.norm(truth))


def test_isolation_recovers_the_input_on_the_old_graph(monkeypatch: pytest.MonkeyPatch) -> None:
    attacked = Round(config(), colluders=(1, 2, 3))
    cfg = attacked.config
    u1: list[AdvertiseKeys] = []

    def old_graph(config: RoundConfig) -> MaskingGraph:
        if not u1:  # advertising: share keys for every roster client
            return _old_graph.complete_graph(config)
        return _old_graph.build_graph(config, u1)

    for module in (securefed.secagg.client, securefed.secagg.server):
        monkeypatch.setattr(module, "build_graph", old_graph)
        monkeypatch.setattr(module, "advertised_key", _old_graph.advertised_key)
    attacked.advertise(grind=lambda victim, advert: _old_graph.adjacent(cfg, victim, advert))
    victim = attacked.adverts[VICTIM]
    hidden = {
        u
        for u, advert in attacked.adverts.items()
        if u != VICTIM and u not in attacked.colluders and _old_graph.adjacent(cfg, victim, advert)
    }
    u1.extend(a for u, a in attacked.adverts.items() if u not in hidden)
    attacked.run(hidden)
    graph = old_graph(cfg)

    assert graph.neighbours(VICTIM) == attacked.colluders  # isolated among the colluders
    assert graph.threshold(VICTIM) == 3 <= len(attacked.colluders)
    assert attacked.sent_by(VICTIM)[:4] == [
        "AdvertiseKeys",
        "ShareKeys",
        "ShareReceipt",
        "MaskedInput",
    ]
    error = relative_error(recover_victim(attacked, graph))
    tries = [attacked.tries[c] for c in attacked.colluders]
    outcome = attacked.server.result if attacked.server else None
    print(
        f"\n[isolation] old graph: key pairs tried per colluder {tries}; "
        f"{len(hidden)} honest neighbours left out of U1 ({N - len(hidden)} >= t = "
        f"{cfg.threshold}); victim's holders in U1 {graph.holders(VICTIM)}, threshold "
        f"{graph.threshold(VICTIM)}; relative error of x_v from the colluders' shares: "
        f"{error:.2g}; round completed: {outcome is not None}"
    )
    assert error < 1e-4  # exact up to the codec's rounding (ulp 2^-16 against |x| <= 4)


def attack_the_new_graph() -> tuple[Round, MaskingGraph]:
    """The same adversary against the fixed graph, with the honest server code."""
    cfg = config()
    graph = build_graph(cfg)
    # The adversary's best case: the colluders are v's neighbours in the fixed graph.
    colluders = graph.neighbours(VICTIM)[:3]
    attacked = Round(cfg, colluders=colluders)
    attacked.advertise(grind=None)
    hidden = set(graph.neighbours(VICTIM)) - set(colluders)
    attacked.run(hidden)
    return attacked, graph


def test_grinding_keys_changes_no_edge_of_the_new_graph() -> None:
    """Fresh keys for everyone, twice: the old rule's edges move with the keys, the new graph
    (which has no key input) stays the same."""
    cfg = config()
    graph = build_graph(cfg)
    old_neighbourhoods = []
    for _ in range(2):
        attacked = Round(cfg, colluders=())
        attacked.advertise(grind=None)
        assert build_graph(cfg) == graph
        victim = attacked.adverts[VICTIM]
        old_neighbourhoods.append(
            {u for u in range(1, N) if _old_graph.adjacent(cfg, victim, attacked.adverts[u])}
        )
    moved = len(old_neighbourhoods[0] ^ old_neighbourhoods[1])
    print(f"\n[isolation] fresh keys: old-rule edges of the victim that moved: {moved}; new: 0")
    assert moved > 0


def test_isolation_fails_on_the_new_graph_the_victim_is_left_out() -> None:
    attacked, graph = attack_the_new_graph()
    server = attacked.server
    assert server is not None
    excluded = [e for e in server.drain_events() if isinstance(e, ClientsExcluded)]
    starved = {c for e in excluded if e.reason is ExclusionReason.STARVED for c in e.clients}
    assert VICTIM in starved
    assert attacked.sent_by(VICTIM) == ["AdvertiseKeys"]
    assert attacked.clients[VICTIM].stage is Stage.ABORTED
    assert attacked.kept == {}  # no colluder ever held a share of v
    contributors = server.result.contributors if server.result else ()
    print(
        f"\n[isolation] new graph, honest server code: victim's holders {len(graph.holders(0))}, "
        f"threshold {graph.threshold(VICTIM)}, present {1 + len(attacked.colluders)}; "
        f"left out (STARVED, with the cascade): {len(starved)} clients incl. the victim; "
        f"victim sent {attacked.sent_by(VICTIM)}; "
        f"round completed without it: {server.result is not None} "
        f"({len(contributors)} contributors)"
    )
    assert VICTIM not in contributors


def test_isolation_fails_on_the_new_graph_the_victim_refuses() -> None:
    """A server that forces the starved victim into the key directory anyway: it signs a
    directory of every advertisement it admitted to hear, the victim's included."""
    cfg = config()
    graph = build_graph(cfg)
    colluders = graph.neighbours(VICTIM)[:3]
    attacked = Round(cfg, colluders=colluders)
    attacked.advertise(grind=None)
    hidden = set(graph.neighbours(VICTIM)) - set(colluders)
    forged = sign_message(
        KeyDirectory,
        federation().server_key,
        cfg.session_id,
        cfg.round,
        advertisements=tuple(a for u, a in sorted(attacked.adverts.items()) if u not in hidden),
        weights=b"",
        history=b"",
    )
    forced: list[Envelope] = []

    def force_in(envelope: Envelope) -> Sequence[Envelope]:
        if envelope.recipient == VICTIM:
            return ()  # hold back what the honest code sends it (an Abort)
        if forced or not isinstance(envelope.message, (KeyDirectory, Abort)):
            return (envelope,)
        forced.append(Envelope(VICTIM, forged))
        return (envelope, forced[0])

    attacked.run(hidden, force_in)

    error = attacked.errors[VICTIM]
    assert isinstance(error, NeighbourhoodTooSmall)
    assert error.reason is ExclusionReason.STARVED
    assert (error.present, error.needed) == (1 + len(colluders), graph.threshold(VICTIM))
    assert attacked.sent_by(VICTIM) == ["AdvertiseKeys"]
    assert attacked.kept == {}
    assert not any(isinstance(m, MaskedInput) for s, m in attacked.sent if s == VICTIM)
    print(
        f"[isolation] new graph, victim forced into the directory: {type(error).__name__}: {error}"
    )
