"""``securefed.simulate_round``: one personalized round of the real protocol over numpy models.

Drives the real protocol objects (keys, signatures, Shamir, masks, target pads, wire encoding) in
memory through :mod:`securefed.testing`, for tests, benchmarks and external checks. Modes:

* ``fedavg``: one secure sum; every completed client gets the average of the survivors' models.
* ``fedamp`` / ``heurfedamp``: attention mode (DESIGN §4c). The server computes xi from
  similarities (exact here unless ``similarity="sketch"``), applies the weight policy, and
  broadcasts xi; each target gets u_i = xi_ii w_i + (1 - xi_ii)/sum_C xi_iu * sum_C xi_iu w_u over
  its surviving contributors C, computed from an output the server only sees blinded.
* ``group``: a fixed partition; one secure sum per group; u_i = xi_ii w_i + (1 - xi_ii) * the
  mean of the other members' models (DESIGN §4e).

Reproducibility: ``seed`` fixes every random choice that reaches the result (the dither; masks
cancel exactly), through :func:`~securefed.runtime.seeded.seeded_random_bytes_unsafe`. This is a
SIMULATION API: never use its seeded randomness in a deployment.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np
import numpy.typing as npt

from securefed.crypto import get_suite
from securefed.encoding import CodecConfig, FixedPointCodec, RingBits, SumKind
from securefed.errors import ConfigError
from securefed.personalize import (
    SketchConfig,
    Sketcher,
    centred_cosines_from_sketches,
    fedamp_weights,
    fedamp_weights_from_distances,
    group_weights,
    heurfedamp_weights,
    heurfedamp_weights_from_cosines,
    partition_from_distances,
    renormalise_row,
    squared_distances_from_sketches,
)
from securefed.runtime.seeded import seeded_random_bytes_unsafe
from securefed.secagg import AggregationMode, RoundAborted, RoundConfig, Stage, default_threshold
from securefed.secagg.events import PolicyRefused
from securefed.secagg.messages import MaskedInput, Message
from securefed.secagg.policy import WeightPolicy, enforce_policy
from securefed.secagg.roster import ClientParty, Roster
from securefed.secagg.session import commitment_context
from securefed.secagg.transcript import ContextItem
from securefed.testing import (
    Federation,
    RoundOutcome,
    make_federation,
    run_round,
    run_session_setup,
)

__all__ = [
    "Mode",
    "RoundResult",
    "ServerView",
    "SimulationParams",
    "group_personalized",
    "group_self_weight",
    "make_sketcher",
    "minimum_group_size",
    "policy",
    "round_config",
    "simulate_round",
    "sub_roster",
    "weights_from_sketches",
]

Vector = npt.NDArray[np.float64]
PHASES = {
    stage.value: stage
    for stage in (Stage.ADVERTISE, Stage.SHARE, Stage.MASK, Stage.CONSISTENCY, Stage.UNMASK)
}


class Mode(Enum):
    FEDAVG = "fedavg"
    FEDAMP = "fedamp"
    HEURFEDAMP = "heurfedamp"
    GROUP = "group"


@dataclass(frozen=True, slots=True)
class SimulationParams:
    """Keyword parameters of :func:`simulate_round`, with their defaults.

    Attributes:
        alpha: FedAMP's alpha_k (off-diagonal weight scale).
        sigma_scale: FedAMP's sigma as a multiple of the round's median squared distance.
        self_weight: xi_ii for HeurFedAMP and group mode (group mode: None = the plain group
            average, xi_ii = 1/|group|).
        temperature: HeurFedAMP's sigma (softmax temperature over cosines).
        centred: HeurFedAMP cosines of centred models (minus the mean), not raw ones.
        partition: group label per client, or ``"sketch"`` to choose it from the first round's
            secret sketches (group mode; required there). The result reports it.
        groups: number of groups when ``partition == "sketch"``.
        sketch_dim: sketch size when ``similarity == "sketch"``.
        similarity: ``"exact"`` (the default here) or ``"sketch"`` (secret sketches).
        threshold: Shamir threshold t (default floor(2N/3) + 1).
        k_min, cap: the weight policy (default: k_min = min(3, N - 1), cap = max(0.5, 1/(N-1))).
        value_range: the codec's bound B on |value| (default 8: models with |w| <= 4 fit).
        fractional_bits: codec resolution 2**-f.
        colluders: group mode's n_C -- how many members of one group may collude with the
            server. Every group needs at least ``k_min + colluders`` members (k_min default 2
            here), so that a group sum always mixes at least k_min honest models (DESIGN §4e).
    """

    alpha: float = 0.5
    sigma_scale: float = 1.0
    self_weight: float | None = 0.5
    temperature: float = 5.0
    centred: bool = True
    partition: tuple[int, ...] | str | None = None
    groups: int = 2
    sketch_dim: int = 256
    similarity: str = "exact"
    threshold: int | None = None
    k_min: float | None = None
    cap: float | None = None
    value_range: float = 8.0
    fractional_bits: int = 16
    colluders: int = 1


@dataclass(frozen=True, slots=True)
class ServerView:
    """Every array the server received or computed, each vector its own 1-D ring array."""

    masked_inputs: dict[tuple[int, int | None], npt.NDArray[Any]]
    sketches: dict[int, Vector]
    outputs: dict[Any, npt.NDArray[Any]]
    self_seeds: dict[int, bytes]
    mask_keys: dict[int, bytes]
    weights: Vector
    advertised_mask_keys: dict[int, bytes] = field(default_factory=dict)
    survivors: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class RoundResult:
    """Outcome of :func:`simulate_round` (see the module docstring)."""

    personalized: dict[int, Vector]
    aborted: dict[int, str]
    weights: Vector
    error_bound: float
    server_view: ServerView
    configs: tuple[RoundConfig, ...] = field(default=(), repr=False)
    partition: tuple[int, ...] | None = None  # group mode: the partition used (for the ledger)
    refusals: dict[int, tuple[tuple[int, str], ...]] = field(default_factory=dict)
    """Contributors that refused the weights: client -> ((target, rule), ...)."""


def _params(n: int, raw: Mapping[str, Any]) -> SimulationParams:
    names = {f.name for f in dataclasses.fields(SimulationParams)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(f"unknown simulate_round parameters: {', '.join(unknown)}")
    params = SimulationParams(**raw)
    partition = params.partition
    if partition is not None and not isinstance(partition, str):
        params = dataclasses.replace(params, partition=tuple(int(g) for g in partition))
    elif isinstance(partition, str) and partition != "sketch":
        raise ConfigError("partition must be group labels or 'sketch'")
    if params.similarity not in ("exact", "sketch"):
        raise ConfigError("similarity must be 'exact' or 'sketch'")
    return params


def policy(n: int, params: SimulationParams) -> WeightPolicy:
    """The weight policy contributors check in a round of ``n`` clients."""
    return _policy(n, params)


def _self_weight(params: SimulationParams) -> float:
    if params.self_weight is None:
        raise ConfigError("self_weight=None (the group average) exists only in group mode")
    return params.self_weight


def _policy(n: int, params: SimulationParams) -> WeightPolicy:
    """The policy contributors check. Defaults leave room for N - t dropouts: after D of the
    N - 1 contributors of a target drop, N - 1 - D remain, and k_min stays below that."""
    threshold = params.threshold or default_threshold(n)
    remaining = n - 1 - (n - threshold)
    k_min = params.k_min if params.k_min is not None else min(3.0, max(1.0, 0.75 * remaining))
    cap = params.cap if params.cap is not None else max(0.5, 1.0 / remaining)
    return WeightPolicy(k_min=k_min, cap=cap)


def _server_policy(n: int, params: SimulationParams) -> WeightPolicy:
    """What the server enforces when it computes xi: the contributors' policy with a margin for
    D = N - t dropouts, so that honest runs pass the re-check on renormalised weights.

    If every off-diagonal weight is at most c times its row's off-diagonal sum, removing D of them
    leaves each remaining one at most c / (1 - D c) of the rest: c = cap / (1 + D cap) keeps that
    within the cap. k_min is raised by D (removing D contributors lowers N_eff by about D).
    Both are relaxed to what N - 1 contributors can satisfy.
    """
    policy = _policy(n, params)
    dropouts = n - (params.threshold or default_threshold(n))
    cap = max(1.0 / (n - 1), policy.cap / (1 + dropouts * policy.cap))
    k_min = min(n - 1.0, policy.k_min + dropouts)
    return WeightPolicy(k_min=k_min, cap=cap)


def simulate_round(
    models: Sequence[npt.ArrayLike],
    *,
    mode: str,
    seed: int,
    dropouts: Mapping[int, str] | None = None,
    federation: Federation | None = None,
    context: Sequence[ContextItem] = (),
    similarity_inputs: Sequence[npt.ArrayLike] | None = None,
    **params: Any,
) -> RoundResult:
    """Run one round of ``mode`` over ``models`` (N equal-length 1-D float arrays).

    ``dropouts[i] = phase`` makes client i vanish before that phase ("advertise", "share", "mask",
    "consistency", "unmask"). ``params``: see :class:`SimulationParams`.
    ``federation`` is the roster and identity keys the parties sign with (default: fresh ones
    for this round); in group mode each group runs with the sub-roster of its members.
    ``context`` is extra signed context every party binds into the round's transcript (e.g. the
    parties' ledger heads, :mod:`securefed.audit.checkpoint`).
    ``similarity_inputs`` are the vectors the clients sketch for the similarities (attention
    weights, or group mode's learned partition) in place of their models -- e.g. each client's
    DP similarity statistic (:mod:`securefed.personalize.statistic`); one per client, of equal
    length. Only the aggregation uses the models.

    Raises:
        ConfigError: unknown mode, parameters or phase names; models (or similarity inputs) of
            different lengths or count; fewer than 3 clients.
    """
    vectors = [np.asarray(m, dtype=np.float64).reshape(-1) for m in models]
    n = len(vectors)
    if n < 3 or len({v.size for v in vectors}) != 1:
        raise ConfigError("need at least 3 models of equal length")
    if federation is not None and federation.roster.size != n:
        raise ConfigError(f"the federation has {federation.roster.size} clients, not {n}")
    try:
        chosen = Mode(mode)
    except ValueError:
        raise ConfigError(f"unknown mode {mode!r}; modes: {[m.value for m in Mode]}") from None
    schedule = _schedule(dropouts or {}, n)
    settings = _params(n, params)
    fed = federation if federation is not None else make_federation(n)
    extra = tuple(context)
    similar = vectors if similarity_inputs is None else _similarity_vectors(similarity_inputs, n)
    if chosen is Mode.GROUP:
        return _group_round(vectors, similar, settings, seed, schedule, federation=fed, extra=extra)
    return _single_round(
        vectors, chosen, settings, seed, schedule, similar=similar, fed=fed, extra=extra
    )


def _similarity_vectors(inputs: Sequence[npt.ArrayLike], n: int) -> list[Vector]:
    vectors = [np.asarray(v, dtype=np.float64).reshape(-1) for v in inputs]
    if len(vectors) != n or len({v.size for v in vectors}) != 1 or vectors[0].size < 1:
        raise ConfigError(f"need {n} similarity inputs of equal, non-zero length")
    if not all(np.isfinite(v).all() for v in vectors):
        raise ConfigError("similarity inputs hold NaN or infinite values")
    return vectors


def _schedule(dropouts: Mapping[int, str], n: int) -> dict[int, Stage]:
    schedule = {}
    for client, phase in dropouts.items():
        if phase not in PHASES or not 0 <= client < n:
            raise ConfigError(f"dropouts map client indices to phases {sorted(PHASES)}")
        schedule[client] = PHASES[phase]
    return schedule


def _weights(
    vectors: list[Vector], mode: Mode, params: SimulationParams, sketch_seed: bytes | None
) -> tuple[Vector, dict[int, Vector]]:
    """xi as the server computes it: from exact similarities, or (``similarity="sketch"``) from
    the clients' secret distance sketches, which is all the server sees (DESIGN §4a)."""
    models = np.stack(vectors)
    n = len(vectors)
    sketches: dict[int, Vector] = {}
    if sketch_seed is not None:
        sketcher = make_sketcher(sketch_seed, params, model_dim=models.shape[1])
        sketches = {i: sketcher.distance_sketch(v, round_=1) for i, v in enumerate(vectors)}
        stacked = np.stack([sketches[i] for i in range(n)])
        return weights_from_sketches(stacked, mode, params), sketches
    if mode is Mode.FEDAMP:
        raw = fedamp_weights(models, alpha=params.alpha, sigma_scale=params.sigma_scale)
    else:
        raw = heurfedamp_weights(
            models,
            self_weight=_self_weight(params),
            sigma=params.temperature,
            centred=params.centred,
        )
    return enforce_policy(raw, _server_policy(n, params)), sketches


def make_sketcher(sketch_seed: bytes, params: SimulationParams, *, model_dim: int) -> Sketcher:
    """The distance sketcher every client of a session builds from the session's secret sketch
    seed (shared by the clients through the session setup, unknown to the server)."""
    return Sketcher(
        get_suite("default"), sketch_seed, SketchConfig(dim=params.sketch_dim), model_dim=model_dim
    )


def weights_from_sketches(stacked: Vector, mode: Mode, params: SimulationParams) -> Vector:
    """xi from the clients' distance sketches (one row each), as the server computes it, with
    the server's weight policy enforced (DESIGN §4a, §4d)."""
    if mode is Mode.FEDAMP:
        raw = fedamp_weights_from_distances(
            squared_distances_from_sketches(stacked),
            alpha=params.alpha,
            sigma_scale=params.sigma_scale,
        )
    else:
        raw = heurfedamp_weights_from_cosines(
            centred_cosines_from_sketches(stacked),
            self_weight=_self_weight(params),
            sigma=params.temperature,
        )
    result: Vector = enforce_policy(raw, _server_policy(stacked.shape[0], params))
    return result


def _single_round(
    vectors: list[Vector],
    mode: Mode,
    params: SimulationParams,
    seed: int,
    schedule: dict[int, Stage],
    *,
    similar: list[Vector],
    fed: Federation,
    extra: tuple[ContextItem, ...],
) -> RoundResult:
    n, dim = len(vectors), vectors[0].size
    attention = mode is not Mode.FEDAVG
    mode_of_round = AggregationMode.ATTENTION if attention else AggregationMode.SUM
    config = _round_config(fed, params, dim=dim, seed=seed, mode=mode_of_round)
    sketch_seed, context = None, list(extra)
    if attention and params.similarity == "sketch":
        sketch_seed, commitment = _session_setup(fed, config.session_id, seed)
        context.append(commitment_context(commitment))
    weights, sketches = (
        _weights(similar, mode, params, sketch_seed)
        if attention
        else (np.full((n, n), 1.0 / n), {})
    )
    received = _MaskedInputRecorder()
    outcome = run_round(
        config,
        fed,
        dict(enumerate(vectors)),
        dropouts=schedule,
        weights=weights if attention else None,
        random_bytes=seeded_random_bytes_unsafe(seed),
        client_hook=received,
        context=context,
    )
    view = _server_view(outcome, sketches, weights, received.inputs)
    if attention:
        return _attention_result(outcome, config, weights, view)
    return _fedavg_result(outcome, config, n, view)


def _session_setup(fed: Federation, session_id: bytes, seed: int) -> tuple[bytes, bytes]:
    """The clients' secret sketch seed and its commitment, through the real session setup."""
    clients, _, errors = run_session_setup(
        fed, session_id=session_id, random_bytes=seeded_random_bytes_unsafe(seed ^ 0x5EED)
    )
    sketch_seed, commitment = clients[0].sketch_seed, clients[0].commitment
    if errors or sketch_seed is None or commitment is None:
        raise ConfigError("the sketch-seed session setup failed")
    return sketch_seed, commitment


def _round_config(
    fed: Federation, params: SimulationParams, *, dim: int, seed: int, mode: AggregationMode
) -> RoundConfig:
    return round_config(
        fed.roster,
        params,
        dim=dim,
        session_id=seeded_random_bytes_unsafe(seed)(32),
        round_=1,
        mode=mode,
    )


def round_config(
    roster: Roster,
    params: SimulationParams,
    *,
    dim: int,
    session_id: bytes,
    round_: int,
    mode: AggregationMode,
) -> RoundConfig:
    """The protocol parameters of one round of ``roster`` (threshold, codec, policy) from
    ``params``: what the simulation runs, and what every party of a deployment derives from the
    shared run configuration (only ``session_id`` and ``round_`` come from the coordinator)."""
    n = roster.size
    threshold = params.threshold or default_threshold(n)
    return RoundConfig(
        roster=roster,
        session_id=session_id,
        round=round_,
        vector_length=dim,
        codec=CodecConfig(RingBits.BITS32, params.fractional_bits, params.value_range),
        threshold=threshold,
        mode=mode,
        policy=_policy(n, params),
        min_contributors=max(1, min(3, threshold - 1)),
    )


@dataclass
class _MaskedInputRecorder:
    """Client hook that keeps what the server receives (the server itself keeps only sums)."""

    inputs: dict[tuple[int, int | None], npt.NDArray[Any]] = field(default_factory=dict)

    def __call__(self, sender: int, message: Message) -> Sequence[Message]:
        if isinstance(message, MaskedInput):
            self.inputs[(sender, message.target)] = message.vector
        return (message,)


def _server_view(
    outcome: RoundOutcome,
    sketches: dict[int, Vector],
    weights: Vector,
    inputs: dict[tuple[int, int | None], npt.NDArray[Any]],
) -> ServerView:
    server = outcome.server
    assert server is not None  # noqa: S101 - run_round always reports its server
    outputs: dict[Any, npt.NDArray[Any]] = dict(server.blinded_outputs)
    if server.result is not None:
        outputs["sum"] = server.result.ring_sum
    return ServerView(
        masked_inputs=inputs,
        sketches=sketches,
        outputs=outputs,
        self_seeds=dict(server.reconstructed_self_seeds),
        mask_keys=dict(server.reconstructed_mask_keys),
        weights=weights,
        advertised_mask_keys={u: a.mask_key for u, a in server._adverts.items()},
        survivors=server.survivors,
    )


def _aborted(outcome: RoundOutcome) -> dict[int, str]:
    reasons = {}
    for client, stage in outcome.client_stages.items():
        if stage is Stage.DONE:
            continue
        events = [
            e.reason for e in outcome.client_events.get(client, []) if isinstance(e, RoundAborted)
        ]
        reasons[client] = events[-1] if events else f"dropped out ({stage.value})"
    return reasons


def _attention_result(
    outcome: RoundOutcome, config: RoundConfig, weights: Vector, view: ServerView
) -> RoundResult:
    survivors = outcome.server.survivors if outcome.server is not None else ()
    used = np.zeros_like(weights)
    bound = 0.0
    ulp = FixedPointCodec(config.codec).decode_error_bound(1, sum_kind=SumKind.WEIGHTED)
    for target in outcome.personalized:
        contributors = [u for u in survivors if u != target]
        used[target] = renormalise_row(weights[target], target=target, contributors=contributors)
        mass = float(sum(weights[target, u] for u in contributors))
        if mass > 0:
            bound = max(bound, len(contributors) * ulp * (1.0 - weights[target, target]) / mass)
    aborted = {i: r for i, r in _aborted(outcome).items() if i not in outcome.personalized}
    return RoundResult(
        dict(outcome.personalized),
        aborted,
        used,
        bound,
        view,
        (config,),
        refusals=_refusals(outcome),
    )


def _refusals(outcome: RoundOutcome) -> dict[int, tuple[tuple[int, str], ...]]:
    """Each contributor's weight-policy refusals, from its protocol events."""
    found: dict[int, tuple[tuple[int, str], ...]] = {}
    for client, events in outcome.client_events.items():
        for event in events:
            if isinstance(event, PolicyRefused):
                found[client] = found.get(client, ()) + (event.violations or ((-1, event.reason),))
    return found


def _fedavg_result(
    outcome: RoundOutcome, config: RoundConfig, n: int, view: ServerView
) -> RoundResult:
    result = outcome.result
    if result is None:
        return RoundResult({}, _aborted(outcome), np.zeros((n, n)), 0.0, view, (config,))
    members = result.contributors
    average = result.values / len(members)
    done = [i for i, stage in outcome.client_stages.items() if stage is Stage.DONE]
    used = np.zeros((n, n))
    used[np.ix_(done, members)] = 1.0 / len(members)
    bound = result.error_bound / len(members)
    return RoundResult(
        {i: average.copy() for i in done}, _aborted(outcome), used, bound, view, (config,)
    )


def _group_round(
    vectors: list[Vector],
    similar: list[Vector],
    params: SimulationParams,
    seed: int,
    schedule: dict[int, Stage],
    *,
    federation: Federation,
    extra: tuple[ContextItem, ...],
) -> RoundResult:
    n, dim = len(vectors), vectors[0].size
    sketches: dict[int, Vector] = {}
    if params.partition == "sketch":
        partition, sketches = _partition_from_sketches(similar, params, seed, federation)
        params = dataclasses.replace(params, partition=partition)
    if not isinstance(params.partition, tuple) or len(params.partition) != n:
        raise ConfigError("group mode needs a partition: one group label per client, or 'sketch'")
    weights = group_weights(params.partition, self_weight=params.self_weight)
    personalized: dict[int, Vector] = {}
    aborted: dict[int, str] = {}
    inputs: dict[tuple[int, int | None], npt.NDArray[Any]] = {}
    outputs: dict[Any, npt.NDArray[Any]] = {}
    seeds: dict[int, bytes] = {}
    keys: dict[int, bytes] = {}
    used = np.zeros((n, n))
    bound = 0.0
    configs = []
    smallest = _minimum_group_size(params)
    for label in sorted(set(params.partition)):
        members = [i for i in range(n) if params.partition[i] == label]
        if len(members) < smallest:
            raise ConfigError(
                f"group {label} has {len(members)} members; groups need at least "
                f"k_min + colluders = {smallest} (and 3 for secure aggregation)"
            )
        fed = _sub_federation(federation, members)
        group_seed = seed + 7919 * (label + 1)
        config = _round_config(fed, params, dim=dim, seed=group_seed, mode=AggregationMode.SUM)
        configs.append(config)
        local = {j: schedule[g] for j, g in enumerate(members) if g in schedule}
        received = _MaskedInputRecorder()
        outcome = run_round(
            config,
            fed,
            {j: vectors[g] for j, g in enumerate(members)},
            dropouts=local,
            random_bytes=seeded_random_bytes_unsafe(seed + 104729 * (label + 1)),
            client_hook=received,
            context=extra,
        )
        server = outcome.server
        assert server is not None  # noqa: S101
        inputs.update({(members[u], None): v for (u, _), v in received.inputs.items()})
        seeds.update({members[u]: s for u, s in server.reconstructed_self_seeds.items()})
        keys.update({members[u]: k for u, k in server.reconstructed_mask_keys.items()})
        for j, reason in _aborted(outcome).items():
            aborted[members[j]] = reason
        if outcome.result is None:
            continue
        outputs[label] = outcome.result.ring_sum
        contributors = [members[j] for j in outcome.result.contributors]
        for j, stage in outcome.client_stages.items():
            i = members[j]
            if stage is not Stage.DONE or i not in contributors or len(contributors) < 2:
                continue
            others = len(contributors) - 1
            own = weights[i, i]
            personalized[i] = group_personalized(
                vectors[i], outcome.result.values, contributors=len(contributors), own=own
            )
            used[i, [c for c in contributors if c != i]] = (1 - own) / others
            used[i, i] = own
            bound = max(bound, outcome.result.error_bound * (1 - own) / others)
    view = ServerView(inputs, sketches, outputs, seeds, keys, weights)
    return RoundResult(
        personalized, aborted, used, bound, view, tuple(configs), partition=params.partition
    )


def group_personalized(
    model: Vector, group_sum: Vector, *, contributors: int, own: float
) -> Vector:
    """Group mode's personalized model of a member that contributed ``model`` to ``group_sum``
    (the decoded sum of ``contributors`` >= 2 members): u_i = xi_ii w_i + (1 - xi_ii) * the mean
    of the other contributors' models (DESIGN §4e). Computed by the member itself in a
    deployment (the server never has w_i)."""
    if contributors < 2:
        raise ConfigError("a group model needs at least 2 contributors")
    others = contributors - 1
    result: Vector = own * model + (1 - own) * (group_sum - model) / others
    return result


def group_self_weight(partition: Sequence[int], member: int, self_weight: float | None) -> float:
    """xi_ii of ``member`` in group mode (None: the plain group average, 1/|group|)."""
    return float(group_weights(partition, self_weight=self_weight)[member, member])


def minimum_group_size(params: SimulationParams) -> int:
    """Public alias of the group-size rule (deployments check it before the first round)."""
    return _minimum_group_size(params)


def sub_roster(roster: Roster, members: Sequence[int]) -> Roster:
    """The roster of one group (see :func:`_sub_federation`): its members re-indexed 0..m-1."""
    clients = tuple(
        ClientParty(roster.clients[g].party_id, j, roster.clients[g].identity)
        for j, g in enumerate(members)
    )
    return Roster(suite=roster.suite, server=roster.server, clients=clients)


def _minimum_group_size(params: SimulationParams) -> int:
    """max(3, ceil(k_min + n_C)): k_min honest members in every group sum (DESIGN §4e)."""
    if isinstance(params.colluders, bool) or not isinstance(params.colluders, int):
        raise ConfigError(f"colluders must be an integer >= 0, got {params.colluders!r}")
    if params.colluders < 0:
        raise ConfigError(f"colluders must be >= 0, got {params.colluders}")
    k_min = 2.0 if params.k_min is None else params.k_min
    return max(3, math.ceil(k_min + params.colluders))


def _sub_federation(federation: Federation, members: Sequence[int]) -> Federation:
    """The roster of one group: its members (ids and identity keys kept, indices 0..m-1) and
    the same server."""
    return Federation(
        sub_roster(federation.roster, members),
        federation.server_key,
        tuple(federation.client_keys[g] for g in members),
    )


def _partition_from_sketches(
    vectors: list[Vector], params: SimulationParams, seed: int, fed: Federation
) -> tuple[tuple[int, ...], dict[int, Vector]]:
    """The session's partition, chosen once from the first round's secret sketches: the server
    sees only the sketches, estimates distances, and clusters them (DESIGN §4e)."""
    n = len(vectors)
    session_id = seeded_random_bytes_unsafe(seed)(32)
    sketch_seed, _ = _session_setup(fed, session_id, seed)
    sketcher = Sketcher(
        get_suite("default"),
        sketch_seed,
        SketchConfig(dim=params.sketch_dim),
        model_dim=vectors[0].size,
    )
    sketches = {i: sketcher.distance_sketch(v, round_=1) for i, v in enumerate(vectors)}
    distances = squared_distances_from_sketches(np.stack([sketches[i] for i in range(n)]))
    return partition_from_distances(distances, groups=params.groups), sketches
