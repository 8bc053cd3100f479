"""The maths of one personalized round, shared by the coordinator and the institutions.

Everything here is pure (numpy, no I/O, no torch): the round's protocol parameters from the run's
settings, the weight policy, xi from the clients' secret sketches, and group mode's personalized
model. See docs/fedamp.md for the formulas and what each party learns.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from securefed.crypto import get_suite
from securefed.encoding import CodecConfig, RingBits
from securefed.errors import ConfigError
from securefed.personalize.modes import PersonalizationMode
from securefed.personalize.partition import partition_from_distances
from securefed.personalize.sketch import (
    SketchConfig,
    Sketcher,
    centred_cosines_from_sketches,
    squared_distances_from_sketches,
)
from securefed.personalize.weights import (
    fedamp_weights,
    fedamp_weights_from_distances,
    fedavg_weights,
    group_weights,
    heurfedamp_weights,
    heurfedamp_weights_from_cosines,
    squared_distances,
)
from securefed.secagg import AggregationMode, RoundConfig, default_threshold
from securefed.secagg.exposure import group_exposure, uniform_exposure
from securefed.secagg.policy import WeightPolicy, enforce_policy
from securefed.secagg.roster import Roster

__all__ = [
    "NO_ROTATION",
    "RoundParams",
    "client_policy",
    "group_personalized",
    "group_self_weight",
    "learned_partition",
    "make_sketcher",
    "minimum_group_size",
    "plaintext_weights",
    "round_config",
    "server_dropouts",
    "server_policy",
    "sketch_epoch",
    "sketches_per_seed",
    "weights_from_sketches",
]

Vector = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class RoundParams:
    """The parameters of a personalized round that every party derives from the run
    configuration.

    Attributes:
        alpha: FedAMP's alpha_k (off-diagonal weight scale).
        sigma_scale: FedAMP's sigma as a multiple of the round's median squared distance.
        self_weight: xi_ii for HeurFedAMP and group mode (group mode: None = the plain group
            average, xi_ii = 1/|group|).
        temperature: HeurFedAMP's sigma (softmax temperature over cosines).
        groups: number of groups when group mode learns its partition.
        sketch_dim: the size of the secret sketches.
        threshold: Shamir threshold t (default floor(2N/3) + 1).
        k_min, cap: the weight policy (default: k_min = min(3, N - 1), cap = max(0.5, 1/(N-1))).
        value_range: the codec's bound B on |value|.
        fractional_bits: codec resolution 2**-f.
        colluders: n_C -- how many clients may collude with the server: in group mode, members
            of one group (every group needs at least ``minimum_group_size`` members); in
            attention mode, the coalition size of the exposure rule (``WeightPolicy.colluders``).
        min_exposure: rho, the least exposure every party keeps against such a coalition
            (``WeightPolicy.min_exposure``, securefed/secagg/exposure.py; docs/fedamp.md).
        history_rounds: W, how many earlier rounds' releases the exposure rule counts with a
            round's (``WeightPolicy.history_rounds``, securefed/secagg/history.py).
        sketches_per_seed: how many rounds sketch under one S_0 before the next sketch epoch
            (:func:`sketch_epoch`); None: ceil(d / sketch_dim) for a vector of d values.
        max_seed_deals: how many sketch seeds a party accepts in one run -- the setup at the
            join and the deals after a change of membership (docs/fedamp.md, "Sketch epochs").
    """

    alpha: float = 0.5
    sigma_scale: float = 1.0
    self_weight: float | None = 0.5
    temperature: float = 5.0
    groups: int = 2
    sketch_dim: int = 256
    threshold: int | None = None
    k_min: float | None = None
    cap: float | None = None
    value_range: float = 8.0
    fractional_bits: int = 16
    colluders: int = 1
    min_exposure: float = 0.5
    history_rounds: int = 3
    sketches_per_seed: int | None = None
    max_seed_deals: int = 8

    @property
    def attention_self_weight(self) -> float:
        """xi_ii of HeurFedAMP (0.5 when unset)."""
        return 0.5 if self.self_weight is None else self.self_weight


def client_policy(n: int, params: RoundParams) -> WeightPolicy:
    """The policy contributors check in a round of ``n`` clients. Defaults leave room for
    N - t dropouts: after D of the N - 1 contributors of a target drop, N - 1 - D remain, and
    k_min stays below that."""
    threshold = params.threshold or default_threshold(n)
    remaining = n - 1 - (n - threshold)
    k_min = params.k_min if params.k_min is not None else min(3.0, max(1.0, 0.75 * remaining))
    cap = params.cap if params.cap is not None else max(0.5, 1.0 / remaining)
    return WeightPolicy(
        k_min=k_min,
        cap=cap,
        min_exposure=params.min_exposure,
        colluders=params.colluders,
        history_rounds=params.history_rounds,
    )


def server_policy(n: int, params: RoundParams) -> WeightPolicy:
    """What the server enforces when it computes xi: the contributors' policy with a margin for
    D = N - t dropouts, so that honest runs pass the re-check on renormalised weights.

    If every off-diagonal weight is at most c times its row's off-diagonal sum, removing D of them
    leaves each remaining one at most c / (1 - D c) of the rest: c = cap / (1 + D cap) keeps that
    within the cap. k_min is raised by D (removing D contributors lowers N_eff by about D).
    Both are relaxed to what N - 1 contributors can satisfy.

    min_exposure: with one colluder (the default) the server needs no margin on rho, because it
    enforces the exposure rule robustly to D dropouts exactly (``enforce_policy(...,
    dropouts=D)``, called by :func:`weights_from_sketches`). With more colluders that is exact
    only for single rows; coalitions get a heuristic margin: 1 - rho^2 is the share of a
    victim's model a coalition explains, and removing D of the m = N - 1 contributors of a row
    removes about D/m of its spread, so the server aims at 1 - rho_s^2 = (1 - rho^2)(m - D)/m,
    capped just below what uniform rows give. A contributor still re-checks the renormalised
    rows (exactly) and refuses when dropouts leave too little.
    """
    policy = client_policy(n, params)
    dropouts = server_dropouts(n, params)
    cap = max(1.0 / (n - 1), policy.cap / (1 + dropouts * policy.cap))
    k_min = min(n - 1.0, policy.k_min + dropouts)
    min_exposure = policy.min_exposure
    if policy.colluders > 1:
        others = n - 1
        explained = (1.0 - min_exposure**2) * max(others - dropouts, 1) / others
        ceiling = uniform_exposure(n, policy.colluders) * (1 - 1e-6)
        min_exposure = max(min_exposure, min(math.sqrt(1.0 - explained), ceiling))
    return WeightPolicy(
        k_min=k_min,
        cap=cap,
        min_exposure=min_exposure,
        colluders=policy.colluders,
        history_rounds=policy.history_rounds,
    )


def server_dropouts(n: int, params: RoundParams) -> int:
    """D = N - t: how many contributors the server's weights must survive."""
    return n - (params.threshold or default_threshold(n))


def sketches_per_seed(params: RoundParams, *, model_dim: int) -> int:
    """The bound on sketch rounds under one S_0: ``params.sketches_per_seed``, else
    ceil(d / k) -- no more sketch values of one model under one S_0 than the model has values
    (docs/fedamp.md, "Sketch epochs"). For d <= k one sketch already carries the whole vector
    for whoever holds the seed, so a new S_0 would only jitter the weights: one epoch
    (:data:`NO_ROTATION` rounds)."""
    if params.sketches_per_seed is not None:
        return params.sketches_per_seed
    if model_dim <= params.sketch_dim:
        return NO_ROTATION
    return -(-model_dim // params.sketch_dim)


def sketch_epoch(round_: int, per_seed: int) -> int:
    """The sketch epoch of ``round_`` (rounds count from 1): epoch j covers rounds
    j·per_seed + 1 to (j + 1)·per_seed, whatever rounds actually sketch, so every party
    derives the same epoch from the round number alone."""
    return (round_ - 1) // per_seed


_EPOCH_LABEL = b"securefed/v1/sketch-epoch"
NO_ROTATION = 2**31 - 1  # sketches_per_seed when the sketch is as large as the vector


def make_sketcher(
    sketch_seed: bytes, params: RoundParams, *, model_dim: int, epoch: int = 0
) -> Sketcher:
    """The distance sketcher every client of a session builds from the session's secret sketch
    seed (shared by the clients through the session setup, unknown to the server), for sketch
    epoch ``epoch``: epoch 0 is the seed's own S_0; epoch j > 0 binds the sketch streams to
    the suite digest of "securefed/v1/sketch-epoch" || j || seed, a fresh S_0 that the server cannot
    relate to the others without the seed."""
    suite = get_suite("default")
    session_id = None
    if epoch:
        session_id = suite.digest(_EPOCH_LABEL + epoch.to_bytes(4, "big") + sketch_seed)
    return Sketcher(
        suite,
        sketch_seed,
        SketchConfig(dim=params.sketch_dim),
        model_dim=model_dim,
        session_id=session_id,
    )


def weights_from_sketches(
    stacked: Vector, mode: PersonalizationMode, params: RoundParams
) -> Vector:
    """xi from the clients' distance sketches (one row each), as the server computes it, with
    the server's weight policy enforced (docs/fedamp.md)."""
    if mode is PersonalizationMode.FEDAMP:
        raw = fedamp_weights_from_distances(
            squared_distances_from_sketches(stacked),
            alpha=params.alpha,
            sigma_scale=params.sigma_scale,
        )
    elif mode is PersonalizationMode.HEURFEDAMP:
        raw = heurfedamp_weights_from_cosines(
            centred_cosines_from_sketches(stacked),
            self_weight=params.attention_self_weight,
            sigma=params.temperature,
        )
    else:
        raise ConfigError(f"{mode.value} does not compute attention weights")
    n = stacked.shape[0]
    result: Vector = enforce_policy(
        raw, server_policy(n, params), dropouts=server_dropouts(n, params)
    )
    return result


def round_config(
    roster: Roster,
    params: RoundParams,
    *,
    dim: int,
    session_id: bytes,
    round_: int,
    mode: AggregationMode,
) -> RoundConfig:
    """The protocol parameters of one round of ``roster`` (threshold, codec, policy): what every
    party derives from the shared run configuration (only ``session_id`` and ``round_`` come
    from the coordinator)."""
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
        policy=client_policy(n, params),
        min_contributors=max(1, min(3, threshold - 1)),
    )


def group_personalized(
    model: Vector, group_sum: Vector, *, contributors: int, own: float
) -> Vector:
    """Group mode's personalized model of a member that contributed ``model`` to ``group_sum``
    (the decoded sum of ``contributors`` >= 2 members): u_i = xi_ii w_i + (1 - xi_ii) * the mean
    of the other contributors' models. Computed by the member itself (the server never has w_i).

    Raises:
        ConfigError: fewer than 2 contributors.
    """
    if contributors < 2:
        raise ConfigError("a group model needs at least 2 contributors")
    others = contributors - 1
    result: Vector = own * model + (1 - own) * (group_sum - model) / others
    return result


def group_self_weight(partition: Sequence[int], member: int, self_weight: float | None) -> float:
    """xi_ii of ``member`` in group mode (None: the plain group average, 1/|group|)."""
    return float(group_weights(partition, self_weight=self_weight)[member, member])


def minimum_group_size(params: RoundParams) -> int:
    """max(3, ceil(k_min + n_C), the least size whose group exposure is >= min_exposure): k_min
    honest members in every group sum, and no coalition of the server and n_C members explains
    more than 1 - rho^2 of any member's model (``group_exposure``: sqrt(1 - 1/(|G| - n_C)) >= rho,
    i.e. |G| >= n_C + 1/(1 - rho^2); with the defaults, n_C + 2 = k_min + n_C).

    Raises:
        ConfigError: ``colluders`` is not an integer >= 0, or ``min_exposure`` not in [0, 1).
    """
    if isinstance(params.colluders, bool) or not isinstance(params.colluders, int):
        raise ConfigError(f"colluders must be an integer >= 0, got {params.colluders!r}")
    if params.colluders < 0:
        raise ConfigError(f"colluders must be >= 0, got {params.colluders}")
    rho = params.min_exposure
    if isinstance(rho, bool) or not isinstance(rho, int | float) or not 0 <= rho < 1:
        raise ConfigError(f"min_exposure must be a number in [0, 1), got {rho!r}")
    k_min = 2.0 if params.k_min is None else params.k_min
    bound = params.colluders + 1.0 / (1.0 - rho * rho)  # the exposure's size, up to rounding
    size = max(3, math.ceil(k_min + params.colluders), math.floor(bound) - 1)
    while not _keeps_exposure(size, params):
        size += 1  # a step or two from the closed form
    return size


def _keeps_exposure(size: int, params: RoundParams) -> bool:
    """Whether a group of ``size`` keeps ``min_exposure`` (as ``group_exposure`` computes it)."""
    exposure = group_exposure([0] * size, collusion_bound=params.colluders)[0]
    return bool(exposure >= params.min_exposure * (1 - 1e-9))


def learned_partition(sketches: Vector, params: RoundParams) -> tuple[int, ...]:
    """Group mode's partition, chosen once from one round's secret distance sketches (one row
    per party): the server sees only the sketches, estimates distances, and clusters them."""
    distances = squared_distances_from_sketches(sketches)
    return tuple(int(g) for g in partition_from_distances(distances, groups=params.groups))


def plaintext_weights(
    mode: PersonalizationMode,
    similar: Vector,
    params: RoundParams,
    *,
    partition: Sequence[int] | None,
) -> tuple[Vector, tuple[int, ...] | None]:
    """xi from the present parties' similarity vectors (models or statistics, one row each) --
    the plaintext reference of comparison runs, where the server sees every model. Group mode
    learns a partition from exact distances when ``partition`` is None; it is returned."""
    m = similar.shape[0]
    if mode is PersonalizationMode.FEDAVG:
        return fedavg_weights(m), None
    if mode is PersonalizationMode.FEDAMP:
        return fedamp_weights(similar, alpha=params.alpha, sigma_scale=params.sigma_scale), None
    if mode is PersonalizationMode.HEURFEDAMP:
        weights = heurfedamp_weights(
            similar, self_weight=params.attention_self_weight, sigma=params.temperature
        )
        return weights, None
    if mode is not PersonalizationMode.GROUP:
        raise ConfigError(f"{mode.value} does not aggregate")
    labels = (
        tuple(partition)
        if partition is not None
        else tuple(
            int(g)
            for g in partition_from_distances(squared_distances(similar), groups=params.groups)
        )
    )
    return group_weights(labels, self_weight=params.self_weight), labels
