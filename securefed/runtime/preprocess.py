"""Federation-wide standardisation before round 1, without pooling data (docs/tabular.md).

With ``[data] standardize = "federation"`` every institution of a run on imported tables:

1. turns its training records into the vectors of :mod:`securefed.data.statistics` and releases
   their sum through its DP trainer's Gaussian mechanism (charged to its budget and ledgered as
   ``round.spend``, mechanism ``gaussian-statistic``, round 0, BEFORE the noise is drawn; without
   DP the exact sum, and the trainer's hazards say DP is off);
2. adds that released sum to the others' by **secure aggregation on the engine**: a one-round
   secure FedAvg run of its own (:func:`secure_sum`), with its own signed ledgers in
   ``RUN/preprocessing/ledgers/`` -- the server sees only masked vectors and their total;
3. derives the federation's statistics from the total it received (every institution gets the
   same total, so the same statistics) and sets them in its model's
   :class:`~securefed.models.FeatureScaler`: numeric features standardised by the federation's
   mean and deviation, a missing cell imputed by the mean. The scaler travels with the model
   (saved with it, applied by ``securefed predict`` and the ONNX export).

Each institution ledgers ``preprocessing.applied`` in the run's ledger (the statistics' SHA-256
and who contributed), and ``RUN/preprocessing/statistics.json`` keeps the statistics (a DP
release, post-processed) so that a resumed run applies them again without a second release.

What the server learns: the total, i.e. the federation's statistics (under DP, noisy), never an
institution's own. What it does not cover: a Flower deployment (the agents do not run this
step yet; docs/tabular.md says so); dropouts in this step (it runs without the configuration's
simulated dropouts).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from securefed.audit import Hazard, Ledger, PreprocessingApplied, UpdateReleased
from securefed.data.schema import schema_from_canonical
from securefed.data.statistics import (
    FederationStatistics,
    StatisticsLayout,
    statistics_from_sum,
)
from securefed.data.tabular_store import load_import_record
from securefed.errors import ConfigError
from securefed.files import write_atomic
from securefed.personalize.modes import PersonalizationMode
from securefed.runtime.config import RunConfig
from securefed.runtime.engine import messages as m
from securefed.runtime.engine.coordinator import Coordinator, RoundView
from securefed.runtime.engine.institution import Institution
from securefed.runtime.engine.memory import MemoryTransport, drive
from securefed.runtime.engine.settings import EngineSettings
from securefed.runtime.seeded import seeded_random_bytes_unsafe
from securefed.secagg.federation import Federation
from securefed.secagg.roster import save_roster

if TYPE_CHECKING:
    from securefed.runtime.nodes import ClientNode
    from securefed.runtime.tenants import Tenants

__all__ = [
    "PREPROCESSING_DIR",
    "STATISTICS_FILE",
    "VALUE_RANGE",
    "apply_federation_statistics",
    "secure_sum",
    "statistics_layout",
]

PREPROCESSING_DIR = "preprocessing"
STATISTICS_FILE = "statistics.json"
#: Each institution's released sum, in its state directory (0600).
RELEASED_FILE = "federation-statistics.f64"
_FORMAT = "securefed/federation-statistics"
#: The secure sum's bound on |value| of a released sum (about 2 million records' vectors, at
#: least: each record adds at most 1/sqrt(5) to an entry).
VALUE_RANGE = float(2**20)
#: The bits of the protocol's 32-bit ring the sum may use (one is the sign).
_RING_BITS = 31

Vector = npt.NDArray[np.float64]


@dataclass
class _Outcome:
    trained: bool = True
    refused: str | None = None


@dataclass
class _SumLearner:
    """A :class:`~securefed.runtime.engine.learner.Learner` over one fixed vector (the
    institution's released sum): nothing trains, the received total is kept, masked releases
    are ledgered as a real institution's are (digests only)."""

    vector: Vector
    ledger: Ledger
    received: Vector | None = None
    rounds: list[int] = field(default_factory=list)

    def train(self, round_: int) -> _Outcome:
        self.rounds.append(round_)
        return _Outcome()

    def budget_refusal(self, round_: int) -> str | None:
        return None

    def parameters(self) -> Vector:
        return self.vector.copy()

    def receive(self, personalized: Vector, *, anchor: bool) -> None:
        self.received = np.array(personalized, dtype=np.float64)

    def similarity_input(self) -> Vector | None:
        return None

    def accuracy(self) -> float | None:
        return None

    def epsilon(self) -> float | None:
        return None

    def info(self) -> m.ClientInfo:
        return m.ClientInfo(train_samples=0, test_samples=0)

    def record_release(self, round_: int, masked: Sequence[npt.NDArray[np.generic]]) -> None:
        if masked:
            self.ledger.record(UpdateReleased.of(round_, masked))

    def record_refusals(self, round_: int, refusals: Sequence[tuple[int, str]]) -> None:
        return None


def _sum_config(config: RunConfig) -> RunConfig:
    """The secure sum's own configuration: one secure FedAvg round, no DP of its own (what is
    summed was released by each institution's trainer), a codec bound for counts."""
    return RunConfig(
        name=f"{config.name}-preprocessing",
        mode=PersonalizationMode.FEDAVG,
        rounds=1,
        secure=True,
        seed=config.seed,
        value_range=VALUE_RANGE,
        data=config.data,
        dp=None,
    )


def secure_sum(
    config: RunConfig,
    directory: Path,
    federation: Federation,
    vectors: Sequence[Vector],
    *,
    note: str | None = None,
) -> tuple[list[Vector | None], int]:
    """Add ``vectors`` (one per roster index) by one round of secure aggregation on the engine,
    with signed ledgers under ``directory`` (``note``, if given, ledgered by every party as a
    hazard: what the sum discloses). Returns what each institution received -- the average over
    the contributors (None where it got nothing) -- and the number of contributors (0 if the
    round gave no sum). The server's view is the protocol's: masked vectors and their total.

    Raises ConfigError when fewer than 3 vectors, vectors of different sizes, or a ledger
    directory that exists already."""
    n = federation.roster.size
    if len(vectors) != n or n < 3 or len({v.shape for v in vectors}) != 1:
        raise ConfigError(f"a secure sum needs one vector of one size per party ({n} parties)")
    if (directory / "ledgers").exists():
        raise ConfigError(f"{directory} holds ledgers of an earlier secure sum")
    largest = max(float(np.max(np.abs(v), initial=0.0)) for v in vectors)
    if largest > VALUE_RANGE:
        raise ConfigError(
            f"a released statistics sum reaches {largest:.3g}, beyond the secure sum's bound "
            f"{VALUE_RANGE:g} (more records than one institution may bring to this step)"
        )
    sub = _sum_config(config)
    # the simulation's seeded streams, distinct per secure sum (the directory names it): two
    # sums of one run never reuse a session id or a mask
    stream = config.seed ^ int.from_bytes(hashlib.sha256(directory.name.encode()).digest()[:8])
    settings = EngineSettings.from_run_config(sub, parties=n)
    # the ring is 32 bits: the integer part takes log2(VALUE_RANGE), the sum of n terms
    # log2(n); the rest is resolution (a quarter of a record's worth at n = 100)
    bits = _RING_BITS - int(np.log2(VALUE_RANGE)) - int(np.ceil(np.log2(n + 1)))
    params = dataclasses.replace(settings.params, fractional_bits=max(bits, 0))
    settings = dataclasses.replace(settings, params=params)
    from securefed.runtime.federated import (  # noqa: PLC0415 - avoids a cycle
        SERVER_ID,
        open_ledgers,
        run_configured,
    )

    directory.mkdir(parents=True, exist_ok=True)
    save_roster(federation.roster, directory / "roster.toml", overwrite=True)
    ledgers = open_ledgers(directory, federation)
    try:
        event = run_configured(sub, federation.roster)
        for ledger in ledgers.values():
            ledger.record(event)
            if note is not None:
                ledger.record(Hazard(text=note))
        learners = [
            _SumLearner(np.asarray(v, dtype=np.float64).reshape(-1), ledgers[p.party_id])
            for v, p in zip(vectors, federation.roster.clients, strict=True)
        ]
        institutions = {
            i: Institution(
                settings=settings,
                roster=federation.roster,
                identity=federation.client_keys[i],
                party_id=federation.roster.client(i).party_id,
                learner=learners[i],
                ledger=ledgers[federation.roster.client(i).party_id],
                random_bytes=seeded_random_bytes_unsafe(stream ^ 0x57A7 ^ (i << 8)),
            )
            for i in range(n)
        }
        contributors: list[int] = [0]

        def count(view: RoundView) -> None:
            result = view.groups[0][1].result if view.groups else None
            contributors[0] = 0 if result is None else len(result.contributors)

        coordinator = Coordinator(
            config=sub,
            settings=settings,
            roster=federation.roster,
            identity=federation.server_key,
            ledger=ledgers[SERVER_ID],
            transport="memory",
            random_bytes=seeded_random_bytes_unsafe(stream ^ 0x57A8),
            on_round_end=count,
        )
        drive(coordinator, MemoryTransport(institutions))
    finally:
        for ledger in ledgers.values():
            ledger.close()
    return [learner.received for learner in learners], contributors[0]


def statistics_layout(data: Tenants) -> StatisticsLayout:
    """The statistics layout of the run's imported tables (every institution's import record
    names the same schema: checked before anything trains). Raises ConfigError for data that
    was not imported by ``securefed data import``, or numeric columns without a range."""
    try:
        record = load_import_record(data.directory, data.tenants[0].index)
    except ConfigError as exc:
        raise ConfigError(
            'data.standardize = "federation" needs tables imported with `securefed data '
            f"import` (their schema says what to standardise): {exc}"
        ) from None
    return StatisticsLayout.of(schema_from_canonical(record.schema, where="the import record"))


def _digest(document: Any) -> str:
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


def _load(path: Path, layout: StatisticsLayout) -> dict[str, Any] | None:
    if not path.exists():
        return None
    document = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(document, dict) or document.get("format") != _FORMAT:
        raise ConfigError(f"{path} does not hold federation-wide statistics")
    if len(document.get("total", [])) != layout.length:
        raise ConfigError(f"{path} holds statistics of another schema")
    return document


def apply_federation_statistics(
    config: RunConfig,
    run_dir: Path,
    federation: Federation,
    clients: Sequence[ClientNode],
    data: Tenants,
) -> dict[str, Any]:
    """Steps 1-3 of the module docstring for every institution of ``clients`` (roster order);
    a resumed run whose ``preprocessing/statistics.json`` exists applies it again instead.
    Returns the statistics as recorded (``metrics.json``'s ``preprocessing``).

    Raises ConfigError (data not imported, a numeric column without a range, fewer than 3
    institutions got the total), PrivacyBudgetExceeded (a release the budget refuses: nothing
    is charged then)."""
    layout = statistics_layout(data)
    directory = run_dir / PREPROCESSING_DIR
    path = directory / STATISTICS_FILE
    document = _load(path, layout)
    if document is None:
        released = [_released(client, layout, run_dir) for client in clients]
        if (directory / "ledgers").exists():  # a secure sum a stop interrupted: kept aside
            _set_aside(directory)
        received, _ = secure_sum(config, directory, federation, released)
        got = [i for i, total in enumerate(received) if total is not None]
        if len(got) < 3:
            raise ConfigError(
                f"the federation-wide statistics reached {len(got)} institutions; standardising "
                "needs every institution's model on the same statistics"
            )
        total = received[got[0]]
        assert total is not None  # noqa: S101 - got holds the non-None ones
        stats = statistics_from_sum(layout, total)
        document = {
            "format": _FORMAT,
            "total": [float(v) for v in total],
            "contributors": [federation.roster.client(i).party_id for i in got],
            "statistics": stats.to_json(layout),
        }
        directory.mkdir(parents=True, exist_ok=True)
        write_atomic(path, (json.dumps(document, indent=2) + "\n").encode())
    stats = statistics_from_sum(layout, np.asarray(document["total"], dtype=np.float64))
    _apply(stats, layout, clients, document)
    return {
        "statistics": document["statistics"],
        "contributors": document["contributors"],
        "sha256": _digest(document),
    }


def _released(client: ClientNode, layout: StatisticsLayout, run_dir: Path) -> Vector:
    """The institution's released sum: released once (charged before its noise is drawn) and
    kept in its state (0600), so that a run resumed before the secure sum ended does not
    release (and charge) again."""
    path = run_dir / "state" / client.party_id / RELEASED_FILE
    if path.exists():
        values = np.frombuffer(path.read_bytes(), dtype="<f8").astype(np.float64)
        if values.shape != (layout.length,) or not np.isfinite(values).all():
            raise ConfigError(f"{path} does not hold this schema's released statistics")
        return values
    released = client.release_federation_statistics(layout)
    write_atomic(path, np.ascontiguousarray(released, dtype="<f8").tobytes(), mode=0o600)
    return released


def _set_aside(directory: Path) -> None:
    """Keep an interrupted secure sum's ledgers (evidence) under a new name."""
    for k in range(1, 1000):
        target = directory.with_name(f"{directory.name}.interrupted-{k}")
        if not target.exists():
            directory.rename(target)
            return
    raise ConfigError(f"too many interrupted secure sums next to {directory}")


def _apply(
    stats: FederationStatistics,
    layout: StatisticsLayout,
    clients: Sequence[ClientNode],
    document: dict[str, Any],
) -> None:
    shift, scale, indicator = stats.scaler(layout)
    digest = _digest(document)
    for client in clients:
        client.apply_scaler(shift, scale, indicator)
        if client.ledger is not None:
            for fallback in stats.fallbacks:
                client.ledger.record(Hazard(text=f"federation-wide statistics: {fallback}"))
            client.ledger.record(
                PreprocessingApplied(
                    statistics_sha256=digest,
                    contributors=tuple(document["contributors"]),
                    numeric_features=len(layout.numeric),
                )
            )
