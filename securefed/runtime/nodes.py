"""The parties of a simulated federation: :class:`ClientNode` (one institution) and
:class:`ServerNode` (the coordinator).

A client node owns its tenant data, its :class:`~securefed.dp.PrivateTrainer` (one Opacus engine
for its whole participation, accountant state in its own state directory) and its audit ledger.
The server node owns the aggregation step -- the real protocol objects through
:func:`~securefed.runtime.simulate.simulate_round`, or the plaintext reference with
``secure=False`` -- and its own ledger. Both write their events *before* the action takes effect:
a client's spend before its training starts (through ``train_round(on_charge=...)``), the
server's unmask record before the personalized models are handed to the clients.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum

import numpy as np
import numpy.typing as npt
import opacus
import torch

from securefed.audit import (
    BudgetConfigured,
    BudgetRefused,
    Hazard,
    Ledger,
    Partition,
    PolicyRefusal,
    RoundSpend,
    RoundSurvivors,
    Unmask,
    UpdateReleased,
)
from securefed.data import TenantData
from securefed.dp import PrivateTrainer
from securefed.dp import RoundSpend as TrainerSpend
from securefed.errors import ConfigError, PrivacyBudgetExceeded
from securefed.models import evaluate, flat_parameters, load_flat_parameters
from securefed.personalize import (
    fedamp_weights,
    fedavg_weights,
    group_weights,
    heurfedamp_weights,
    partition_from_distances,
    personalized_models,
    squared_distances,
)
from securefed.personalize.statistic import label_projection_contributions
from securefed.runtime.config import RunMode
from securefed.runtime.simulate import RoundResult, SimulationParams, simulate_round
from securefed.secagg.transcript import ContextItem
from securefed.testing import Federation

__all__ = [
    "AggregationOutcome",
    "ClientNode",
    "ServerNode",
    "TrainOutcome",
    "own_segment_weight",
]

Vector = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class TrainOutcome:
    """What one client's local round did: trained (with its spend, None without DP) or refused
    for budget (``refused`` holds the reason; nothing was charged or trained)."""

    trained: bool
    spend: TrainerSpend | None = None
    refused: str | None = None


class ClientNode:
    """One institution: data, private trainer, ledger. ``index`` is its roster index."""

    def __init__(
        self,
        *,
        index: int,
        party_id: str,
        tenant: TenantData,
        trainer: PrivateTrainer,
        ledger: Ledger | None,
        test_x: torch.Tensor,
        test_y: torch.Tensor,
    ) -> None:
        self.index = index
        self.party_id = party_id
        self.tenant = tenant
        self.trainer = trainer
        self.ledger = ledger
        self._test_x = test_x
        self._test_y = test_y
        self._anchor: Vector | None = None
        self.statistic: Vector | None = None

    def release_statistic(self, *, num_classes: int, dim: int) -> None:
        """Release this institution's DP similarity statistic once, before round 1 (round 0):
        the label-conditional input projection of its training records
        (:mod:`securefed.personalize.statistic`), through the trainer's Gaussian release --
        charged and ledgered (``round.spend``, mechanism ``gaussian-statistic``) before the
        noise is drawn. :attr:`statistic` is the released sum divided by the number of records
        (post-processing: the record count is treated as public, as the expected batch size is
        in DP-SGD). Raises what :meth:`PrivateTrainer.release_statistic` raises."""
        rows = label_projection_contributions(
            self.tenant.train_x, self.tenant.train_y, num_classes=num_classes, dim=dim
        )
        released = self.trainer.release_statistic(0, rows, on_charge=self._record_spend)
        self.statistic = released / len(rows)

    def record_setup(self) -> None:
        """Ledger the budget and the hazards of this client's training, before any round."""
        if self.ledger is None:
            return
        trainer = self.trainer
        state = trainer.accountant_state
        if state is not None:
            self.ledger.record(
                BudgetConfigured(
                    target_epsilon=state.target_epsilon,
                    delta=state.delta,
                    accountant=state.accountant.value,
                    accountant_version=f"opacus {opacus.__version__}",
                    noise_multiplier=state.noise_multiplier,
                    max_grad_norm=state.max_grad_norm,
                    sample_rate=state.sample_rate,
                )
            )
        for text in trainer.hazards():
            self.ledger.record(Hazard(text=text))

    def train(self, round_: int) -> TrainOutcome:
        """Train one local round from the current model (FedAMP: with the proximal term towards
        the last personalized model). The spend is ledgered after the charge is durable and
        before the first step; a budget refusal is ledgered and returned, never raised."""
        try:
            spend = self.trainer.train_round(
                round_, anchor=self._anchor, on_charge=self._record_spend
            )
        except PrivacyBudgetExceeded as exc:
            self._record_refusal(round_)
            return TrainOutcome(trained=False, refused=str(exc))
        return TrainOutcome(trained=True, spend=spend)

    def _record_spend(self, spend: TrainerSpend) -> None:
        if self.ledger is None:
            return
        self.ledger.record(
            RoundSpend(
                round=spend.round,
                epsilon=spend.epsilon,
                delta=spend.delta,
                noise_multiplier=spend.noise_multiplier,
                sample_rate=spend.sample_rate,
                steps=spend.steps,
                accountant=spend.accountant,
                accountant_version=f"opacus {spend.opacus_version}",
                mechanism=spend.mechanism,
            )
        )

    def _record_refusal(self, round_: int) -> None:
        if self.ledger is None:
            return
        spent = self.trainer.epsilon()
        after = self.trainer.epsilon_after_next_round()
        state = self.trainer.accountant_state
        if spent is None or after is None or state is None:  # pragma: no cover - DP only
            return
        self.ledger.record(
            BudgetRefused(
                round=round_,
                epsilon_spent=spent,
                epsilon_would_be=after,
                target_epsilon=state.target_epsilon,
                delta=state.delta,
            )
        )

    def parameters(self) -> Vector:
        """The current model as one float64 vector (what this client contributes)."""
        return flat_parameters(self.trainer.model())

    def receive(self, personalized: Vector, *, anchor: bool) -> None:
        """Replace the model by its personalized aggregate; with ``anchor`` also keep it as the
        proximal anchor u_i of the next round (FedAMP)."""
        load_flat_parameters(self.trainer.model(), personalized)
        self._anchor = np.array(personalized, dtype=np.float64) if anchor else None

    def record_release(self, round_: int, masked: Sequence[npt.NDArray[np.generic]]) -> None:
        """Ledger that this client's masked update left it (digest of the masked bytes only)."""
        if self.ledger is None or not masked:
            return
        digest = hashlib.sha256()
        for vector in masked:
            digest.update(np.ascontiguousarray(vector).tobytes())
        self.ledger.record(
            UpdateReleased(
                round=round_,
                targets=len(masked),
                vector_length=int(masked[0].size),
                masked_sha256=digest.hexdigest(),
            )
        )

    def record_refusals(self, round_: int, refusals: Sequence[tuple[int, str]]) -> None:
        """Ledger that this contributor refused the weights of these targets (rule names only;
        target -1 when the protocol did not say which row)."""
        if self.ledger is None:
            return
        for target, rule in refusals:
            reason = rule.value if isinstance(rule, Enum) else str(rule)
            self.ledger.record(PolicyRefusal(round=round_, target=target, reason=reason))

    def test_accuracy(self) -> float:
        """Accuracy of the current model on this client's own test split."""
        return evaluate(self.trainer.model(), self._test_x, self._test_y)


@dataclass(frozen=True, slots=True)
class AggregationOutcome:
    """One round's aggregation: personalized models by client index (completed clients only),
    the clients that did not complete with the reason, the partition in group mode, and the
    N x N weights xi as used (rows of clients that did not complete are zero)."""

    personalized: dict[int, Vector]
    aborted: dict[int, str]
    partition: tuple[int, ...] | None
    weights: Vector | None = None
    refusals: dict[int, tuple[tuple[int, str], ...]] = field(default_factory=dict)
    masked: dict[int, list[npt.NDArray[np.generic]]] = field(default_factory=dict)


@dataclass
class ServerNode:
    """The coordinator: aggregates with the run's mode and ledgers what it learned.

    ``params`` are :func:`simulate_round`'s parameters (weights, sketches, policy); their
    ``partition`` is ignored in favour of :attr:`partition`.
    ``partition`` is group mode's partition: group labels, or ``"sketch"`` until the first
    round has chosen one from the clients' secret sketches (then fixed for the session).
    """

    mode: RunMode
    secure: bool
    federation: Federation
    ledger: Ledger | None
    seed: int
    params: SimulationParams
    partition: tuple[int, ...] | str | None = None

    def aggregate(
        self,
        round_: int,
        models: Sequence[Vector],
        *,
        absent: Mapping[int, str],
        context: Sequence[ContextItem] = (),
        similarity_inputs: Sequence[Vector] | None = None,
    ) -> AggregationOutcome:
        """Aggregate one round. ``absent[i] = phase`` makes client i drop out before that
        protocol phase (``"advertise"``: it does not take part at all). ``similarity_inputs``
        (one per client) replace the models in the similarities: the DP statistics."""
        if self.mode is RunMode.LOCAL:
            raise ConfigError("local mode does not aggregate")
        if not self.secure:
            return self._plaintext(round_, models, absent, similarity_inputs)
        params = {f.name: getattr(self.params, f.name) for f in dataclasses.fields(self.params)}
        params["partition"] = self.partition if self.mode is RunMode.GROUP else None
        result = simulate_round(
            models,
            mode=self.mode.value,
            seed=_round_seed(self.seed, round_),
            dropouts=dict(absent),
            federation=self.federation,
            context=context,
            similarity_inputs=similarity_inputs,
            **params,
        )
        self.record_secure_round(round_, len(models), absent, result)
        return AggregationOutcome(
            personalized=result.personalized,
            aborted=result.aborted,
            partition=result.partition,
            weights=result.weights,
            refusals=result.refusals,
            masked=_masked_by_client(result),
        )

    def record_secure_round(
        self, round_: int, n: int, absent: Mapping[int, str], result: RoundResult
    ) -> None:
        """Ledger a secure round: survivors and dropouts, then what was unmasked (the
        deployment's coordinator calls this with the round it ran over the network)."""
        if self.mode is RunMode.GROUP and not isinstance(self.partition, tuple):
            assert result.partition is not None  # noqa: S101 - group rounds report it
            self.partition = result.partition
            self._record_partition(round_, result.partition, method="learned from sketches")
        if self.ledger is None:
            return
        view = result.server_view
        dropped = sorted(set(absent) | set(result.aborted))
        self.ledger.record(
            RoundSurvivors(
                round=round_,
                survivors=tuple(i for i in range(n) if i not in dropped),
                dropouts=tuple(dropped),
            )
        )
        self.ledger.record(
            Unmask(
                round=round_,
                outputs=len(view.outputs),
                target_blinded=self.mode in (RunMode.FEDAMP, RunMode.HEURFEDAMP),
                self_seeds_of=tuple(sorted(view.self_seeds)),
                mask_keys_of=tuple(sorted(view.mask_keys)),
            )
        )

    def record_declared_partition(self) -> None:
        """Ledger a partition given by configuration (group mode), before the first round."""
        if isinstance(self.partition, tuple):
            self._record_partition(0, self.partition, method="declared")

    def _record_partition(self, round_: int, partition: Sequence[int], *, method: str) -> None:
        if self.ledger is None:
            return
        sizes = tuple(sorted(partition.count(g) for g in set(partition)))
        self.ledger.record(Partition(round=round_, group_sizes=sizes, method=method))

    def _plaintext(
        self,
        round_: int,
        models: Sequence[Vector],
        absent: Mapping[int, str],
        similarity_inputs: Sequence[Vector] | None,
    ) -> AggregationOutcome:
        """The plaintext reference (comparison only: the server would see every model)."""
        present = [i for i in range(len(models)) if i not in absent]
        stacked = np.stack([models[i] for i in present])
        similar = models if similarity_inputs is None else similarity_inputs
        weights = self._plaintext_weights(np.stack([similar[i] for i in present]), present)
        mixed = personalized_models(weights, stacked)
        personalized = {i: mixed[k] for k, i in enumerate(present)}
        full = np.zeros((len(models), len(models)))
        full[np.ix_(present, present)] = weights
        return AggregationOutcome(
            personalized=personalized,
            aborted=dict.fromkeys(absent, "absent"),
            partition=self.partition if isinstance(self.partition, tuple) else None,
            weights=full,
        )

    def _plaintext_weights(self, stacked: Vector, present: Sequence[int]) -> Vector:
        """xi from ``stacked`` (the present clients' similarity vectors: models or statistics)."""
        m = len(present)
        params = self.params
        if self.mode is RunMode.FEDAVG:
            return fedavg_weights(m)
        if self.mode is RunMode.FEDAMP:
            return fedamp_weights(stacked, alpha=params.alpha, sigma_scale=params.sigma_scale)
        if self.mode is RunMode.HEURFEDAMP:
            self_weight = 0.5 if params.self_weight is None else params.self_weight
            return heurfedamp_weights(
                stacked, self_weight=self_weight, sigma=params.temperature, centred=params.centred
            )
        if not isinstance(self.partition, tuple):
            distances = squared_distances(stacked)
            self.partition = partition_from_distances(distances, groups=params.groups)
        labels = [self.partition[i] for i in present]
        return group_weights(labels, self_weight=params.self_weight)


def own_segment_weight(weights: Vector, segments: Sequence[int]) -> float | None:
    """Mean over clients with off-diagonal weight of the share of it that goes to clients of
    the same (latent) segment; None if no row has off-diagonal weight. Chance is about
    (segment size - 1) / (N - 1)."""
    shares = []
    for i, row in enumerate(np.asarray(weights, dtype=np.float64)):
        others = [j for j in range(len(row)) if j != i]
        total = float(sum(row[j] for j in others))
        if total <= 0:
            continue
        same = float(sum(row[j] for j in others if segments[j] == segments[i]))
        shares.append(same / total)
    return float(np.mean(shares)) if shares else None


def _round_seed(seed: int, round_: int) -> int:
    digest = hashlib.sha256(f"securefed/runtime/round/{seed}/{round_}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def _masked_by_client(result: RoundResult) -> dict[int, list[npt.NDArray[np.generic]]]:
    by_client: dict[int, list[tuple[int, npt.NDArray[np.generic]]]] = {}
    for (sender, target), vector in result.server_view.masked_inputs.items():
        by_client.setdefault(sender, []).append((-1 if target is None else target, vector))
    return {u: [v for _, v in sorted(items, key=lambda t: t[0])] for u, items in by_client.items()}
