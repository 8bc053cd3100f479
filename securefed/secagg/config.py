"""Round parameters: one validated, immutable object that both roles are built from.

R1 (threshold): ``t`` comes from this pinned config, never from how many clients showed up, and must
satisfy ``2t - N > n_C`` where ``n_C`` is the declared number of clients that may collude with the
server. Otherwise a server that tells some clients "v dropped" and others "v is alive" could, with
``n_C`` colluders signing both views, collect both of v's secrets. The default
``t = floor(2N/3) + 1`` tolerates ``n_C = 2t - N - 1`` colluders (about N/3), which is also the
default ``n_C``.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from enum import Enum

from securefed.crypto import CipherSuite, KdfContext, SuiteId, get_suite
from securefed.encoding import CodecConfig, check_sum_headroom, check_weighted_sum_headroom
from securefed.errors import ConfigError
from securefed.secagg.policy import WeightPolicy
from securefed.secagg.roster import Roster
from securefed.secagg.sharing import ShareScheme
from securefed.secagg.wire import MAX_VECTOR_WORDS, Writer

__all__ = [
    "PROTOCOL_VERSION",
    "AggregationMode",
    "GraphKind",
    "MaskGraph",
    "RoundConfig",
    "default_threshold",
]

PROTOCOL_VERSION = 2  # 2: per-neighbour share keys, verifiable shares, the verify phase


class AggregationMode(Enum):
    """What the round computes.

    ``SUM``: the server learns the plain sum of the survivors' inputs (FedAvg).
    ``ATTENTION``: one output per target i, u_i-part = sum over contributors u of xi_iu w_u, which
    the server unmasks only down to target-blinding pads that only i can remove (docs/fedamp.md);
    FedAMP and HeurFedAMP differ only in how xi is computed.
    """

    SUM = "sum"
    ATTENTION = "attention"


class GraphKind(Enum):
    """Which pairs of clients share masks (R8)."""

    COMPLETE = "complete"  # every pair: the default up to N = 62
    SECAGG_PLUS = "secagg+"  # a sparse random graph the server cannot bias


@dataclass(frozen=True, slots=True)
class MaskGraph:
    """The masking graph. ``degree`` is the expected number of neighbours for SECAGG_PLUS."""

    kind: GraphKind = GraphKind.COMPLETE
    degree: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.kind, GraphKind):
            raise ConfigError("graph kind must be a GraphKind")
        if self.kind is GraphKind.COMPLETE and self.degree != 0:
            raise ConfigError("the complete graph takes no degree")
        if self.kind is GraphKind.SECAGG_PLUS and self.degree < 2:
            raise ConfigError("a SecAgg+ graph needs degree >= 2")


# A SecAgg+ graph must leave every client at least this many neighbours ...
MIN_NEIGHBOURS = 2
# ... except with probability at most this (union bound over clients), else the config is refused.
MAX_LONELY_PROBABILITY = 2.0**-20


def lonely_probability(n_clients: int, degree: int) -> float:
    """Union bound on P(some client gets fewer than MIN_NEIGHBOURS neighbours) when each of the
    ``n_clients - 1`` possible edges of a client exists independently with probability
    ``degree / (n_clients - 1)`` (the SecAgg+ graph of :mod:`securefed.secagg.graph`)."""
    others = n_clients - 1
    p = min(1.0, degree / others)
    tail = sum(math.comb(others, k) * p**k * (1 - p) ** (others - k) for k in range(MIN_NEIGHBOURS))
    return n_clients * tail


def _check_graph(graph: MaskGraph, n: int) -> None:
    if graph.kind is GraphKind.SECAGG_PLUS:
        bound = lonely_probability(n, graph.degree)
        if bound > MAX_LONELY_PROBABILITY:
            raise ConfigError(
                f"a SecAgg+ graph of degree {graph.degree} over N={n} leaves some client "
                f"with fewer than {MIN_NEIGHBOURS} neighbours with probability up to "
                f"{bound:.1e} (> 2^-20): raise the degree"
            )


def default_threshold(n_clients: int) -> int:
    """``floor(2N/3) + 1``."""
    return (2 * n_clients) // 3 + 1


@dataclass(frozen=True, slots=True)
class RoundConfig:
    """Everything pinned for one round. Both roles must hold equal configs (the digest is signed).

    Attributes:
        roster: the pinned parties and identity keys (the suite comes from it).
        session_id: 32 random bytes chosen at session start.
        round: the round number (increases within a session).
        vector_length: ``d``, the number of ring elements per input.
        codec: fixed-point encoding; must have headroom for a sum of N inputs.
        threshold: ``t``; default ``floor(2N/3) + 1``.
        collusion_bound: ``n_C``; default ``2t - N - 1``, the most that ``t`` tolerates.
        mode: ``SUM`` (the server learns the sum) or ``ATTENTION`` (personalized outputs).
        graph: complete (default) or SecAgg+.
        policy: the weight policy every contributor checks in attention mode (docs/fedamp.md).
        min_contributors: a target's output needs at least this many surviving contributors;
            contributors refuse the round otherwise (attention mode; default min(3, t - 1)).
        sharing: how the round secrets are shared: ``FELDMAN`` (verifiable, the default) or
            ``SHAMIR`` (the semi-honest baseline for benchmarks; see
            :mod:`securefed.secagg.sharing`).

    Raises:
        ConfigError: any violated rule, including R1 (``2t - N > n_C``, ``1 <= t <= N``).
    """

    roster: Roster
    session_id: bytes
    round: int
    vector_length: int
    codec: CodecConfig
    threshold: int = 0
    collusion_bound: int = -1
    mode: AggregationMode = AggregationMode.SUM
    graph: MaskGraph = field(default_factory=MaskGraph)
    policy: WeightPolicy = field(default_factory=WeightPolicy)
    min_contributors: int = 0
    sharing: ShareScheme = ShareScheme.FELDMAN

    def __post_init__(self) -> None:
        n = self.roster.size
        if self.threshold == 0:
            object.__setattr__(self, "threshold", default_threshold(n))
        if self.min_contributors == 0:
            object.__setattr__(self, "min_contributors", max(1, min(3, self.threshold - 1)))
        if self.collusion_bound == -1:
            object.__setattr__(self, "collusion_bound", 2 * self.threshold - n - 1)
        KdfContext(self.session_id, self.round)  # validates both
        if not 1 <= self.vector_length <= MAX_VECTOR_WORDS:
            raise ConfigError(f"vector_length must be in [1, {MAX_VECTOR_WORDS}]")
        if not 1 <= self.threshold <= n:
            raise ConfigError(f"threshold must be in [1, N={n}]")
        if self.collusion_bound < 0 or 2 * self.threshold - n <= self.collusion_bound:
            raise ConfigError(
                f"R1 violated: need 2t - N > n_C >= 0, got t={self.threshold}, N={n}, "
                f"n_C={self.collusion_bound}; raise t or lower the declared collusion bound"
            )
        _check_graph(self.graph, n)
        self._check_types()
        if not 1 <= self.min_contributors < n:
            raise ConfigError(f"min_contributors must be in [1, N-1={n - 1}]")
        if self.mode is AggregationMode.ATTENTION and self.graph.kind is GraphKind.SECAGG_PLUS:
            raise ConfigError(
                "attention mode needs the complete masking graph: each target's output is a "
                "weighted sum over every contributor, and the masks of two contributors cancel "
                "in it only if they share a pairwise mask, which the SecAgg+ graph gives to "
                "neighbours only (every such round would abort); use the complete graph (the "
                "default up to N = 62) or group mode"
            )
        if self.mode is AggregationMode.ATTENTION:
            check_weighted_sum_headroom(self.codec, n)
        else:
            check_sum_headroom(self.codec, n)

    def _check_types(self) -> None:
        for name, kind in (
            ("mode", AggregationMode),
            ("policy", WeightPolicy),
            ("sharing", ShareScheme),
        ):
            if not isinstance(getattr(self, name), kind):
                raise ConfigError(f"{name} must be a {kind.__name__}")

    @property
    def suite(self) -> CipherSuite:
        return self.roster.suite

    @property
    def mask_suite(self) -> CipherSuite:
        """The suite whose key agreement makes mask keys: ECDH P-256 under verifiable sharing
        (the mask-key polynomial's constant term must *be* the advertised public key), else the
        roster's suite."""
        if self.sharing.verifiable:
            return get_suite(SuiteId.FIPS_P256)
        return self.suite

    @property
    def n_clients(self) -> int:
        return self.roster.size

    @property
    def kdf_context(self) -> KdfContext:
        return KdfContext(self.session_id, self.round)

    def digest(self) -> bytes:
        """SHA-256 over a canonical encoding of every parameter (part of the transcript)."""
        w = Writer().fixed(b"securefed/v1/round-config", 25).u8(PROTOCOL_VERSION)
        w.fixed(self.roster.digest(), 32).fixed(self.session_id, 32).u64(self.round)
        w.u32(self.vector_length).u32(self.threshold).u32(self.collusion_bound)
        w.blob(self.suite.suite_id.value.encode()).blob(self.mode.value.encode())
        w.blob(self.graph.kind.value.encode()).u32(self.graph.degree)
        w.blob(float(self.policy.k_min).hex().encode()).blob(float(self.policy.cap).hex().encode())
        w.blob(float(self.policy.min_exposure).hex().encode()).u32(self.policy.colluders)
        w.u32(self.policy.history_rounds)
        w.u32(self.min_contributors).blob(self.sharing.value.encode())
        w.u8(self.codec.ring.bits).u32(self.codec.fractional_bits)
        w.blob(float(self.codec.value_bound).hex().encode())
        return hashlib.sha256(w.getvalue()).digest()
