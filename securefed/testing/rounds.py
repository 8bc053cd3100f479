"""The real engine over fixed numpy vectors: the harness of the tests and the executable attacks.

:func:`simulate_round` runs ONE round of the one engine (:mod:`securefed.runtime.engine`): a
:class:`~securefed.runtime.engine.coordinator.Coordinator` and one
:class:`~securefed.runtime.engine.institution.Institution` per model, over the in-memory
transport, every message through its canonical encoding. Each institution's learner is a
:class:`VectorLearner`: it holds a fixed vector (training changes nothing), stores the
personalized vector it receives, has no DP, and ledgers like a real institution. What the server
received is captured on the transport (a :class:`~securefed.runtime.engine.memory.FaultPlan`
that decodes every reply's secure-aggregation messages) and from the coordinator's
:class:`~securefed.runtime.engine.coordinator.RoundView`; :class:`RoundResult` reports it.

:class:`VectorFederation` is the same set-up for several rounds, with any fault plan: the engine
tests drive it directly.

Modes (``mode``): ``fedavg`` (one secure sum, every completed party gets the average of the
contributors), ``fedamp`` / ``heurfedamp`` (attention mode: xi from the parties' similarities,
one target-blinded output each), ``group`` (one secure sum per group of a declared partition, or
of one learned from the secret sketches with ``partition="sketch"``). ``secure=False`` runs the
plaintext comparison (the coordinator sees every model).

Similarities (``similarity``, attention mode only): the engine computes xi from each party's
secret sketch, and only from that. ``"sketch"`` is exactly that. ``"exact"`` (the default, as
before) is an ORACLE for comparisons: on its way to the coordinator each party's sketch is
replaced by its raw similarity vector (its model, or its ``similarity_inputs`` entry), and the
coordinator's sketch estimators -- squared distances of rows, centred cosines of rows -- then
compute the exact distances and cosines, so xi is the exact-similarity xi with the server's
weight policy applied. Never a deployment's view: the coordinator holds the vectors in the clear
(``server_view.sketches`` shows them). Group mode's learned partition always uses the real
sketches.

``dropouts[i] = phase`` makes party i vanish before that protocol phase (``advertise``,
``share``, ``mask``, ``consistency``, ``unmask``): from the first request of that phase on,
every request to it is lost, the end of the run included -- so it never receives a personalized
model. (:class:`~securefed.runtime.engine.memory.Dropouts`, the run configuration's plan, differs
at ``unmask``: there only the unmasking shares are lost.)

Reproducibility: ``seed`` fixes every random choice that reaches a result (the dither, session
ids, the sketch seed) through :func:`~securefed.runtime.seeded.seeded_random_bytes_unsafe`. A
SIMULATION harness: never use its seeded randomness in a deployment.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt

from securefed.audit import Ledger, PolicyRefusal, UpdateReleased, ledger_path
from securefed.encoding import FixedPointCodec, SumKind
from securefed.errors import ConfigError
from securefed.personalize.modes import PersonalizationMode
from securefed.personalize.rounds import RoundParams, minimum_group_size
from securefed.personalize.weights import group_weights, renormalise_row
from securefed.runtime.config import (
    DataConfig,
    ModelName,
    PersonalizeConfig,
    RunConfig,
    SegmentSource,
    SimilaritySource,
)
from securefed.runtime.engine import messages as m
from securefed.runtime.engine.coordinator import Coordinator, RoundView
from securefed.runtime.engine.institution import Institution
from securefed.runtime.engine.memory import STAGES, FaultPlan, MemoryTransport, drive
from securefed.runtime.engine.metrics import RunMetrics
from securefed.runtime.engine.settings import EngineSettings
from securefed.runtime.seeded import seeded_random_bytes_unsafe
from securefed.secagg import RoundConfig
from securefed.secagg.federation import Federation, make_federation
from securefed.secagg.messages import AdvertiseKeys, MaskedInput
from securefed.secagg.messages import decode as decode_protocol
from securefed.secagg.roster import save_roster

__all__ = [
    "Capture",
    "RoundResult",
    "ServerView",
    "Vanish",
    "VectorFederation",
    "VectorLearner",
    "engine_config",
    "simulate_round",
]

Vector = npt.NDArray[np.float64]
SERVER_ID = "server"


# --- the learner -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outcome:
    """One local round of a :class:`VectorLearner`."""

    trained: bool
    refused: str | None = None


class VectorLearner:
    """A :class:`~securefed.runtime.engine.learner.Learner` that holds a fixed vector.

    ``train`` changes nothing (it records the round); ``receive`` stores the personalized vector
    (``personalized``, and ``received[round]`` for the round it last trained in) without
    replacing the held vector. No DP (epsilon None). ``last_round``: the budget -- rounds after
    it are refused as a budget refusal. With a ``ledger``, masked releases and weight-policy
    refusals are ledgered as a real institution's are (digests and rule names only).
    """

    def __init__(
        self,
        vector: npt.ArrayLike,
        *,
        similarity: npt.ArrayLike | None = None,
        ledger: Ledger | None = None,
        last_round: int | None = None,
    ) -> None:
        self.vector = np.array(vector, dtype=np.float64).reshape(-1)
        self.vector.setflags(write=False)
        self.similarity = (
            None if similarity is None else np.array(similarity, dtype=np.float64).reshape(-1)
        )
        self.ledger = ledger
        self.last_round = last_round
        self.trained: list[int] = []
        self.personalized: Vector | None = None
        self.received: dict[int, Vector] = {}
        self.anchored = False
        self.released: dict[int, list[npt.NDArray[np.generic]]] = {}
        self.refusals: dict[int, list[tuple[int, str]]] = {}

    def train(self, round_: int) -> Outcome:
        refusal = self.budget_refusal(round_)
        if refusal is not None:
            return Outcome(trained=False, refused=refusal)
        self.trained.append(round_)
        return Outcome(trained=True)

    def budget_refusal(self, round_: int) -> str | None:
        if self.last_round is not None and round_ > self.last_round:
            return f"round {round_} is beyond this party's budget of {self.last_round} rounds"
        return None

    def parameters(self) -> Vector:
        return self.vector.copy()

    def receive(self, personalized: Vector, *, anchor: bool) -> None:
        vector = np.array(personalized, dtype=np.float64)
        self.personalized = vector
        self.received[self.trained[-1] if self.trained else 0] = vector
        self.anchored = anchor

    def similarity_input(self) -> Vector | None:
        return self.similarity

    def accuracy(self) -> float | None:
        return None

    def epsilon(self) -> float | None:
        return None

    def info(self) -> m.ClientInfo:
        return m.ClientInfo(train_samples=0, test_samples=0)

    def record_release(self, round_: int, masked: Sequence[npt.NDArray[np.generic]]) -> None:
        if not masked:
            return
        self.released[round_] = [np.array(v) for v in masked]
        if self.ledger is not None:
            self.ledger.record(UpdateReleased.of(round_, masked))

    def record_refusals(self, round_: int, refusals: Sequence[tuple[int, str]]) -> None:
        self.refusals.setdefault(round_, []).extend(refusals)
        if self.ledger is not None:
            for target, rule in refusals:
                reason = rule.value if isinstance(rule, Enum) else str(rule)
                self.ledger.record(PolicyRefusal(round=round_, target=target, reason=reason))


# --- fault plans -----------------------------------------------------------------------------


class _Reliable:
    def request(self, node: int, request: m.Request) -> m.Request | None:
        return request

    def reply(self, node: int, request: m.Request, reply: m.Reply) -> m.Reply | None:
        return reply


class Capture:
    """A :class:`FaultPlan` that records what was delivered, around an ``inner`` plan.

    ``requests``: every request an institution received; ``replies``: every reply the
    coordinator received, with the request it answers. ``sketches``: parties whose secret
    sketch is replaced by the given vector on its way to the coordinator (the ``"exact"``
    oracle, module docstring).
    """

    def __init__(
        self, inner: FaultPlan | None = None, *, sketches: Mapping[int, Vector] | None = None
    ) -> None:
        self.inner: FaultPlan = inner if inner is not None else _Reliable()
        self.sketches = dict(sketches or {})
        self.requests: list[tuple[int, m.Request]] = []
        self.replies: list[tuple[int, m.Request, m.Reply]] = []

    def request(self, node: int, request: m.Request) -> m.Request | None:
        delivered = self.inner.request(node, request)
        if delivered is not None:
            self.requests.append((node, delivered))
        return delivered

    def reply(self, node: int, request: m.Request, reply: m.Reply) -> m.Reply | None:
        delivered = self.inner.reply(node, request, reply)
        exact = node in self.sketches
        if exact and isinstance(delivered, m.Trained) and delivered.sketch is not None:
            delivered = dataclasses.replace(delivered, sketch=self.sketches[node])
        if delivered is not None:
            self.replies.append((node, request, delivered))
        return delivered

    def step_replies(self, phase: m.StepPhase) -> list[tuple[int, m.StepReply]]:
        """The replies to ``phase`` steps, by node."""
        return [
            (node, reply)
            for node, request, reply in self.replies
            if isinstance(request, m.Step)
            and request.phase is phase
            and isinstance(reply, m.StepReply)
        ]

    def adverts(self, round_: int) -> dict[int, m.AdvertPart]:
        """The key advertisements (or declines) for ``round_`` that reached the coordinator."""
        found: dict[int, m.AdvertPart] = {}
        for node, _, reply in self.replies:
            part = (
                reply.advert if isinstance(reply, m.Joined | m.Advertised | m.StepReply) else None
            )
            if part is not None and part.round == round_:
                found[node] = part
        return found


_STEP_POSITION = {
    m.StepPhase.KEYS: STAGES.index("share"),
    m.StepPhase.VERIFY: STAGES.index("verify"),
    m.StepPhase.MASK: STAGES.index("mask"),
    m.StepPhase.CONFIRM: STAGES.index("consistency"),
    m.StepPhase.UNMASK: STAGES.index("unmask"),
}


class Vanish:
    """A :class:`FaultPlan`: node i vanishes before protocol phase ``phases[i]`` of round
    ``round_`` -- from the first request of that phase on, every request to it is lost (the
    run's end included)."""

    def __init__(self, phases: Mapping[int, str], *, round_: int = 1) -> None:
        for phase in phases.values():
            if phase not in STAGES:
                raise ConfigError(f"dropouts map client indices to phases {sorted(STAGES)}")
        self._start = {node: STAGES.index(phase) for node, phase in phases.items()}
        self._round = round_
        self.gone: set[int] = set()

    def _position(self, request: m.Request) -> int | None:
        if isinstance(request, m.Join | m.Advert) and request.next is not None:
            return 0 if request.next.round == self._round else None
        if isinstance(request, m.Train) and request.round == self._round and request.messages:
            return STAGES.index("share")
        if isinstance(request, m.Step) and request.round == self._round:
            return _STEP_POSITION[request.phase]
        if isinstance(request, m.Train) and request.round > self._round:
            return len(STAGES)
        if isinstance(request, m.Finish | m.Seal):
            return len(STAGES)
        return None

    def request(self, node: int, request: m.Request) -> m.Request | None:
        if node in self.gone:
            return None
        start = self._start.get(node)
        position = self._position(request)
        if start is None or position is None or position < start:
            return request
        self.gone.add(node)
        if isinstance(request, m.Join):  # it joins, then vanishes before advertising keys
            return dataclasses.replace(request, next=None)
        return None

    def reply(self, node: int, request: m.Request, reply: m.Reply) -> m.Reply | None:
        return reply


# --- the federation ----------------------------------------------------------------------------


def engine_config(settings: EngineSettings, *, seed: int, parties: int) -> RunConfig:
    """A run configuration that says what ``settings`` say (the coordinator's metrics and
    ledger read it); the round parameters themselves come from ``settings``."""
    p = settings.params
    segments: SegmentSource | tuple[int, ...] = SegmentSource.DECLARED
    if settings.learn_partition:
        segments = SegmentSource.LEARNED
    elif settings.partition is not None:
        segments = settings.partition
    return RunConfig(
        name="vectors",
        mode=settings.mode,
        rounds=settings.rounds,
        secure=settings.secure,
        seed=seed,
        value_range=p.value_range,
        data=DataConfig(tenants=parties, model=ModelName.MLP),
        dp=None,
        personalize=PersonalizeConfig(
            segments=segments,
            groups=p.groups,
            self_weight=p.self_weight,
            alpha=p.alpha,
            sigma_scale=p.sigma_scale,
            temperature=p.temperature,
            sketch_dim=p.sketch_dim,
            similarity=SimilaritySource.STATISTIC if settings.statistic else SimilaritySource.MODEL,
        ),
    )


def party_seed(seed: int, index: int) -> int:
    """The random-bytes seed of party ``index`` in a harness run of seed ``seed``."""
    digest = hashlib.sha256(f"securefed/testing/rounds/{seed}/{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


class VectorFederation:
    """A coordinator and one institution per vector over the in-memory transport (a context
    manager: :meth:`close` closes every ledger and removes its own temporary directory).

    ``faults`` is wrapped in :attr:`capture`; ``coordinator_settings`` (default ``settings``)
    lets the coordinator run with other round parameters than the institutions (the
    ``"exact"`` oracle); ``last_rounds[i]`` is party i's budget in rounds; ``segments`` goes
    to the coordinator's metrics. Ledgers and ``roster.toml`` go to ``workdir`` (default: a
    temporary directory). Nodes are roster indices. :attr:`transport` may be replaced before
    :meth:`run` (a test's own transport).
    """

    def __init__(
        self,
        models: Sequence[npt.ArrayLike],
        settings: EngineSettings,
        *,
        seed: int,
        federation: Federation | None = None,
        faults: FaultPlan | None = None,
        similarity_inputs: Sequence[npt.ArrayLike] | None = None,
        coordinator_settings: EngineSettings | None = None,
        last_rounds: Mapping[int, int] | None = None,
        segments: Sequence[int] | None = None,
        workdir: str | os.PathLike[str] | None = None,
        guards: bool = False,
    ) -> None:
        n = len(models)
        self.federation = federation if federation is not None else make_federation(n)
        if self.federation.roster.size != n:
            raise ConfigError(f"the federation has {self.federation.roster.size} clients, not {n}")
        self._temporary: tempfile.TemporaryDirectory[str] | None = None
        if workdir is None:
            self._temporary = tempfile.TemporaryDirectory(prefix="securefed-vectors-")
            workdir = self._temporary.name
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        save_roster(self.federation.roster, self.workdir / "roster.toml", overwrite=True)
        roster = self.federation.roster
        self.settings = settings
        self.config = engine_config(settings, seed=seed, parties=n)
        self.ledgers: dict[str, Ledger] = {
            party.party_id: Ledger.open(
                ledger_path(self.workdir, party.party_id), party.party_id, key
            )
            for party, key in zip(roster.clients, self.federation.client_keys, strict=True)
        }
        self.ledgers[SERVER_ID] = Ledger.open(
            ledger_path(self.workdir, SERVER_ID), SERVER_ID, self.federation.server_key
        )
        budgets = last_rounds or {}
        self.learners = [
            VectorLearner(
                models[i],
                similarity=None if similarity_inputs is None else similarity_inputs[i],
                ledger=self.ledgers[roster.client(i).party_id],
                last_round=budgets.get(i),
            )
            for i in range(n)
        ]
        self.institutions = {
            i: Institution(
                settings=settings,
                roster=roster,
                identity=self.federation.client_keys[i],
                party_id=roster.client(i).party_id,
                learner=self.learners[i],
                ledger=self.ledgers[roster.client(i).party_id],
                random_bytes=seeded_random_bytes_unsafe(party_seed(seed, i)),
                guard_file=self.guard_file(i) if guards else None,
            )
            for i in range(n)
        }
        self.views: list[RoundView] = []
        self.coordinator = Coordinator(
            config=self.config,
            settings=coordinator_settings or settings,
            roster=roster,
            identity=self.federation.server_key,
            ledger=self.ledgers[SERVER_ID],
            transport="memory",
            random_bytes=seeded_random_bytes_unsafe(seed),
            segments=segments,
            on_round_end=self.views.append,
        )
        self.coordinator.record_declared_partition()
        self.capture = faults if isinstance(faults, Capture) else Capture(faults)
        self.transport = MemoryTransport(self.institutions, faults=self.capture)

    def guard_file(self, index: int) -> Path:
        """Where institution ``index`` keeps its round guard (with ``guards=True``)."""
        directory = self.workdir / "state" / self.federation.roster.client(index).party_id
        directory.mkdir(parents=True, exist_ok=True)
        return directory / "round-guard.json"

    def run(self, *, on_exchange: Callable[[int, Coordinator], None] | None = None) -> RunMetrics:
        """Drive the coordinator to the end of the run; its metrics."""
        return drive(self.coordinator, self.transport, on_exchange=on_exchange)

    def close(self) -> None:
        for ledger in self.ledgers.values():
            ledger.close()
        if self._temporary is not None:
            self._temporary.cleanup()
            self._temporary = None

    def __enter__(self) -> VectorFederation:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


# --- one round -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServerView:
    """Every array the server received or computed in the round, each vector its own 1-D ring
    array, parties by roster index: ``masked_inputs[(sender, target)]`` (target None for a
    sum), the ``sketches`` it received, its ``outputs`` (attention: by target, blinded; fedavg:
    ``"sum"``; group mode: by group label -- ring sums), the self seeds and dropped parties' mask
    keys it reconstructed, the broadcast ``weights``, the advertised mask keys and U3."""

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
    """Outcome of :func:`simulate_round`.

    ``personalized``: the model each party received (parties that got none are in ``aborted``
    with a reason). ``weights``: the N x N weights as used (renormalised over the survivors;
    rows of parties without a model are zero), so that
    ``|personalized[i] - weights[i] @ models| <= error_bound`` per coordinate. ``configs``: the
    protocol configuration of each group. ``partition``: group mode's partition. ``refusals``:
    contributors that refused the weights, party -> ((target, rule), ...). ``status``: how the
    run ended (``"failed"`` when the coordinator could not go on -- e.g. a learned partition
    with a group below the minimum size -- with the reason in its ledger); ``metrics``: the
    run's record.
    """

    personalized: dict[int, Vector]
    aborted: dict[int, str]
    weights: Vector
    error_bound: float
    server_view: ServerView
    configs: tuple[RoundConfig, ...] = field(default=(), repr=False)
    partition: tuple[int, ...] | None = None
    refusals: dict[int, tuple[tuple[int, str], ...]] = field(default_factory=dict)
    status: str = "completed"
    metrics: RunMetrics | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class _Params(RoundParams):
    """:func:`simulate_round`'s keyword parameters: the round's, plus where the partition and
    the similarities come from."""

    partition: tuple[int, ...] | str | None = None
    similarity: str = "exact"

    def round_params(self) -> RoundParams:
        names = {f.name for f in dataclasses.fields(RoundParams)}
        return RoundParams(**{k: getattr(self, k) for k in names})


def _params(raw: Mapping[str, Any]) -> _Params:
    names = {f.name for f in dataclasses.fields(_Params)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(f"unknown simulate_round parameters: {', '.join(unknown)}")
    params = _Params(**raw)
    partition = params.partition
    if isinstance(partition, str):
        if partition != "sketch":
            raise ConfigError("partition must be group labels or 'sketch'")
    elif partition is not None:
        labels = {g: k for k, g in enumerate(sorted({int(g) for g in partition}))}
        params = dataclasses.replace(params, partition=tuple(labels[int(g)] for g in partition))
    if params.similarity not in ("exact", "sketch"):
        raise ConfigError("similarity must be 'exact' or 'sketch'")
    return params


def _vectors(models: Sequence[npt.ArrayLike]) -> list[Vector]:
    return [np.asarray(v, dtype=np.float64).reshape(-1) for v in models]


def _similarity_vectors(inputs: Sequence[npt.ArrayLike], n: int) -> list[Vector]:
    vectors = _vectors(inputs)
    if len(vectors) != n or len({v.size for v in vectors}) != 1 or vectors[0].size < 1:
        raise ConfigError(f"need {n} similarity inputs of equal, non-zero length")
    if not all(np.isfinite(v).all() for v in vectors):
        raise ConfigError("similarity inputs hold NaN or infinite values")
    return vectors


def simulate_round(
    models: Sequence[npt.ArrayLike],
    *,
    mode: str,
    seed: int,
    dropouts: Mapping[int, str] | None = None,
    federation: Federation | None = None,
    similarity_inputs: Sequence[npt.ArrayLike] | None = None,
    secure: bool = True,
    workdir: str | os.PathLike[str] | None = None,
    **params: Any,
) -> RoundResult:
    """One round of the engine in ``mode`` over ``models`` (N >= 3 equal-length vectors); see
    the module docstring.

    ``params``: alpha, sigma_scale, self_weight, temperature, groups, sketch_dim, threshold,
    k_min, cap, value_range, fractional_bits, colluders (:class:`RoundParams`); ``partition``
    (group mode: labels, or ``"sketch"``); ``similarity`` (``"exact"`` or ``"sketch"``).
    ``federation``: the roster and identity keys (default: fresh). ``similarity_inputs``: what
    the parties sketch in place of their models (a DP statistic each). ``workdir``: keep the
    ledgers there (default: a temporary directory, removed).

    Raises:
        ConfigError: unknown mode, parameters or phases; models or similarity inputs of
            different lengths or count; fewer than 3 models; group mode without a partition or
            with a group below max(3, k_min + colluders).
    """
    vectors = _vectors(models)
    n = len(vectors)
    if n < 3 or len({v.size for v in vectors}) != 1:
        raise ConfigError("need at least 3 models of equal length")
    try:
        chosen = PersonalizationMode(mode)
    except ValueError:
        names = [p.value for p in PersonalizationMode if p is not PersonalizationMode.LOCAL]
        raise ConfigError(f"unknown mode {mode!r}; modes: {names}") from None
    if chosen is PersonalizationMode.LOCAL:
        raise ConfigError("local mode does not aggregate")
    vanish = Vanish(dropouts or {})
    if not all(0 <= i < n for i in dropouts or {}):
        raise ConfigError(f"dropouts map client indices to phases {sorted(STAGES)}")
    settings_of = _params(params)
    round_params = settings_of.round_params()
    similar = vectors if similarity_inputs is None else _similarity_vectors(similarity_inputs, n)
    declared: tuple[int, ...] | None = None
    learn = False
    if chosen is PersonalizationMode.GROUP:
        partition = settings_of.partition
        if partition == "sketch":
            learn = True
        elif isinstance(partition, tuple) and len(partition) == n:
            declared = partition
        else:
            raise ConfigError(
                "group mode needs a partition: one group label per client, or 'sketch'"
            )
        minimum_group_size(round_params)  # colluders checked even when the partition is learned
    settings = EngineSettings(
        mode=chosen,
        rounds=1,
        secure=secure,
        params=round_params,
        partition=declared,
        learn_partition=learn,
        statistic=similarity_inputs is not None,
    )
    if declared is not None:
        settings.check_partition(declared, n)
    exact = chosen.is_attention and secure and settings_of.similarity == "exact"
    coordinator_settings = None
    if exact:
        coordinator_settings = dataclasses.replace(
            settings, params=dataclasses.replace(round_params, sketch_dim=similar[0].size)
        )
    capture = Capture(vanish, sketches=dict(enumerate(similar)) if exact else None)
    with VectorFederation(
        vectors,
        settings,
        seed=seed,
        federation=federation,
        faults=capture,
        similarity_inputs=similarity_inputs,
        coordinator_settings=coordinator_settings,
        workdir=workdir,
    ) as run:
        metrics = run.run()
        return _result(run, vectors, settings, vanish, metrics)


def _result(
    run: VectorFederation,
    vectors: list[Vector],
    settings: EngineSettings,
    vanish: Vanish,
    metrics: RunMetrics,
) -> RoundResult:
    n = len(vectors)
    view = run.views[0] if run.views else None
    capture = run.capture
    personalized = {
        i: learner.personalized
        for i, learner in enumerate(run.learners)
        if learner.personalized is not None
    }
    members_of: dict[int, tuple[int, ...]] = {}
    for members, _ in view.groups if view is not None else ():
        for i in members:
            members_of[i] = members
    refusals = _refusals(run.learners, members_of)
    failed = run.coordinator.status is m.RunStatus.FAILED
    aborted = {
        i: "the run failed" if failed else _why(i, view, capture, vanish, refusals)
        for i in range(n)
        if i not in personalized
    }
    server_view = _server_view(run, view, settings, members_of)
    used, bound = _used_weights(view, settings, server_view, personalized, vectors)
    configs = tuple(server.config for _, server in view.groups) if view is not None else ()
    partition = None
    if settings.mode is PersonalizationMode.GROUP and view is not None:
        partition = view.partition
    return RoundResult(
        personalized=personalized,
        aborted=aborted,
        weights=used,
        error_bound=bound,
        server_view=server_view,
        configs=configs,
        partition=partition,
        refusals=refusals,
        status=run.coordinator.status.value,
        metrics=metrics,
    )


def _refusals(
    learners: Sequence[VectorLearner], members_of: Mapping[int, tuple[int, ...]]
) -> dict[int, tuple[tuple[int, str], ...]]:
    found: dict[int, tuple[tuple[int, str], ...]] = {}
    for i, learner in enumerate(learners):
        members = members_of.get(i, ())
        for items in learner.refusals.values():
            mapped = tuple((members[t] if 0 <= t < len(members) else t, rule) for t, rule in items)
            found[i] = found.get(i, ()) + mapped
    return found


def _why(
    index: int,
    view: RoundView | None,
    capture: Capture,
    vanish: Vanish,
    refusals: Mapping[int, tuple[tuple[int, str], ...]],
) -> str:
    """Why party ``index`` got no personalized model."""
    if index in refusals:
        rules = sorted({str(getattr(r, "value", r)) for _, r in refusals[index]})
        return f"refused the weights ({', '.join(rules)})"
    if index in vanish.gone:
        phase = STAGES[vanish._start[index]]
        return f"dropped out ({phase})"
    errors = [
        reply.error
        for node, _, reply in capture.replies
        if node == index and isinstance(reply, m.StepReply) and reply.error
    ]
    if errors:
        return errors[-1]
    if view is not None and index in view.refused:
        return f"refused: {view.refused[index]}"
    if view is not None and index in view.dropouts:
        return f"dropped out ({view.dropouts[index]})"
    return "no result"


def _server_view(
    run: VectorFederation,
    view: RoundView | None,
    settings: EngineSettings,
    members_of: Mapping[int, tuple[int, ...]],
) -> ServerView:
    n = run.federation.roster.size
    masked: dict[tuple[int, int | None], npt.NDArray[Any]] = {}
    for node, reply in run.capture.step_replies(m.StepPhase.MASK):
        members = members_of.get(node, ())
        for data in reply.messages:
            message = decode_protocol(data)
            if isinstance(message, MaskedInput):
                target = None if message.target is None else members[message.target]
                masked[(node, target)] = np.asarray(message.vector)
    adverts = {}
    for node, part in run.capture.adverts(1).items():
        if part.advert:
            advert = decode_protocol(part.advert)
            if isinstance(advert, AdvertiseKeys):
                adverts[node] = advert.mask_key
    outputs: dict[Any, npt.NDArray[Any]] = {}
    seeds: dict[int, bytes] = {}
    keys: dict[int, bytes] = {}
    survivors: set[int] = set()
    for label, (members, server) in enumerate(view.groups if view is not None else ()):
        seeds.update({members[u]: s for u, s in server.reconstructed_self_seeds.items()})
        keys.update({members[u]: k for u, k in server.reconstructed_mask_keys.items()})
        survivors.update(members[u] for u in server.survivors)
        outputs.update({members[t]: v for t, v in server.blinded_outputs.items()})
        if server.result is not None:
            outputs["sum" if settings.mode is PersonalizationMode.FEDAVG else label] = (
                server.result.ring_sum
            )
    weights: Vector
    if settings.mode is PersonalizationMode.FEDAVG and settings.secure:
        weights = np.full((n, n), 1.0 / n)
    elif settings.mode is PersonalizationMode.GROUP and settings.secure:
        partition = view.partition if view is not None else None
        weights = (
            np.zeros((n, n))
            if partition is None
            else group_weights(partition, self_weight=settings.params.self_weight)
        )
    else:
        weights = np.zeros((n, n)) if view is None or view.weights is None else view.weights
    return ServerView(
        masked_inputs=masked,
        sketches=dict(view.sketches) if view is not None else {},
        outputs=outputs,
        self_seeds=seeds,
        mask_keys=keys,
        weights=np.asarray(weights, dtype=np.float64),
        advertised_mask_keys=adverts,
        survivors=tuple(sorted(survivors)),
    )


def _used_weights(
    view: RoundView | None,
    settings: EngineSettings,
    server_view: ServerView,
    personalized: Mapping[int, Vector],
    vectors: list[Vector],
) -> tuple[Vector, float]:
    """The weights each completed party's model is the mix of, and the codec's bound on the
    difference (float rounding only in plaintext runs)."""
    n = len(vectors)
    used = np.zeros((n, n))
    if view is None:
        return used, 0.0
    weights = server_view.weights
    if not settings.secure:
        for target in personalized:
            used[target] = weights[target]
        scale = max(float(np.max(np.abs(np.stack(vectors)))), 1.0)
        return used, 4 * n * scale * float(np.finfo(np.float64).eps)
    bound = 0.0
    for members, server in view.groups:
        codec = FixedPointCodec(server.config.codec)
        if settings.attention:
            survivors = [members[u] for u in server.survivors]
            ulp = codec.decode_error_bound(1, sum_kind=SumKind.WEIGHTED)
            for target in personalized:
                contributors = [u for u in survivors if u != target]
                used[target] = renormalise_row(
                    weights[target], target=target, contributors=contributors
                )
                mass = math.fsum(float(weights[target, u]) for u in contributors)
                if mass > 0:
                    share = len(contributors) * ulp * (1.0 - weights[target, target]) / mass
                    bound = max(bound, share)
            continue
        result = server.result
        if result is None:
            continue
        contributors = [members[j] for j in result.contributors]
        done = [i for i in personalized if i in members]
        if settings.mode is not PersonalizationMode.GROUP:
            used[np.ix_(done, contributors)] = 1.0 / len(contributors)
            bound = max(bound, result.error_bound / len(contributors))
            continue
        others = len(contributors) - 1
        for i in done:
            own = float(weights[i, i])
            used[i, [c for c in contributors if c != i]] = (1 - own) / others
            used[i, i] = own
            bound = max(bound, result.error_bound * (1 - own) / others)
    return used, bound
