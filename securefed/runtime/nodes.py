"""One institution's local side: :class:`ClientNode`, the engine's learner of every real run.

A client node owns its tenant data, its :class:`~securefed.dp.PrivateTrainer` (one Opacus engine
for its whole participation, accountant state in its own state directory) and its audit ledger.
It writes its events *before* the action takes effect: a spend before its training starts
(through ``train_round(on_charge=...)``), a budget refusal before the round goes on without it.
The engine (:mod:`securefed.runtime.engine`) drives it through the
:class:`~securefed.runtime.engine.learner.Learner` protocol.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np
import numpy.typing as npt
import opacus
import torch

from securefed.audit import (
    BudgetConfigured,
    BudgetRefused,
    Hazard,
    Ledger,
    PolicyRefusal,
    RoundSpend,
    UpdateReleased,
)
from securefed.data import TenantData
from securefed.data.statistics import StatisticsLayout, record_contributions
from securefed.dp import EPSILON_TOLERANCE, PrivateTrainer
from securefed.dp import RoundSpend as TrainerSpend
from securefed.errors import ConfigError, PrivacyBudgetExceeded
from securefed.files import write_atomic
from securefed.models import (
    ModelSpec,
    evaluate,
    feature_scaler,
    flat_parameters,
    load_flat_parameters,
    load_model,
)
from securefed.models.credit import credit_metrics, score_histogram
from securefed.models.metrics import positive_scores
from securefed.personalize.statistic import label_projection_contributions
from securefed.runtime.engine.messages import ClientInfo
from securefed.runtime.engine.metrics import ClientCredit

__all__ = ["MODEL_FILE", "STATISTIC_FILE", "ClientNode", "TrainOutcome"]

#: In a party's state directory: its model after every local training and personalized update,
#: and its released DP similarity statistic (float64, little-endian).
MODEL_FILE = "model.safetensors"
STATISTIC_FILE = "statistic.f64"

Vector = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class TrainOutcome:
    """What one client's local round did: trained (with its spend, None without DP) or refused
    for budget (``refused`` holds the reason; nothing was charged or trained)."""

    trained: bool
    spend: TrainerSpend | None = None
    refused: str | None = None


class ClientNode:
    """One institution: data, private trainer, ledger. ``index`` is its roster index.
    ``spec``: the architecture of the trainer's model, recorded in every model file saved from
    it (:attr:`model_spec`; None: files without it)."""

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
        spec: ModelSpec | None = None,
    ) -> None:
        self.index = index
        self.model_spec = spec
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

    def release_federation_statistics(self, layout: StatisticsLayout) -> Vector:
        """This institution's share of the federation-wide statistics: the sum of its training
        records' vectors (:func:`~securefed.data.statistics.record_contributions`) through the
        trainer's Gaussian release -- charged and ledgered (``round.spend``, mechanism
        ``gaussian-statistic``, round 0) before the noise is drawn. What it adds to the secure
        sum (:mod:`securefed.runtime.preprocess`). Raises what
        :meth:`PrivateTrainer.release_statistic` raises."""
        rows = record_contributions(layout, self.tenant.train_x, self.tenant.train_y)
        return self.trainer.release_statistic(0, rows, on_charge=self._record_spend)

    def apply_scaler(
        self, shift: npt.ArrayLike, scale: npt.ArrayLike, indicator: npt.ArrayLike
    ) -> None:
        """Set the federation-wide statistics in the model's feature scaler. Raises ConfigError
        for a model built without one (``scaled=False``) or values it refuses."""
        scaler = feature_scaler(self.trainer.model())
        if scaler is None:
            raise ConfigError("this institution's model has no feature scaler to set")
        scaler.set(shift, scale, indicator)

    def open_state(
        self, state: Path, *, fresh: bool, statistic: tuple[int, int] | None = None
    ) -> None:
        """Start this party's participation from its state directory ``state``: on a ``fresh``
        ledger ledger the budget and hazards (:meth:`record_setup`), on a continued one reload
        the model kept there (``model.safetensors``); then, with ``statistic`` = (number of
        classes, dimension), release the DP similarity statistic once or read it back."""
        if fresh:
            self.record_setup()
        elif (state / MODEL_FILE).exists():
            load_model(self.trainer.model(), state / MODEL_FILE)
        if statistic is not None:
            classes, dim = statistic
            self.load_or_release_statistic(state / STATISTIC_FILE, num_classes=classes, dim=dim)

    def load_or_release_statistic(self, path: Path, *, num_classes: int, dim: int) -> None:
        """The DP similarity statistic: released once (charged and ledgered before its noise is
        drawn, :meth:`release_statistic`) and kept in ``path`` (0600); a restart reads it back
        instead of releasing it again. Raises ConfigError for a file that holds no statistic."""
        if path.exists():
            values = np.frombuffer(path.read_bytes(), dtype="<f8").astype(np.float64)
            if values.size == 0 or not np.isfinite(values).all():
                raise ConfigError(f"{path} does not hold a similarity statistic")
            self.statistic = values
            return
        self.release_statistic(num_classes=num_classes, dim=dim)
        assert self.statistic is not None  # noqa: S101 - set by release_statistic
        write_atomic(path, np.ascontiguousarray(self.statistic, dtype="<f8").tobytes(), mode=0o600)

    def record_setup(self) -> None:
        """Ledger the budget and the hazards of this client's training, before any round."""
        if self.ledger is None:
            return
        trainer = self.trainer
        state = trainer.accountant_state
        spend = trainer.spend
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
                    prior_epsilon=trainer.epsilon() or 0.0,
                    records_sha256="" if spend is None else spend.records_sha256,
                )
            )
        for text in trainer.hazards():
            self.ledger.record(Hazard(text=text))
        for reset in () if spend is None else spend.opened.resets:
            before = "unbounded" if reset.epsilon_before is None else f"{reset.epsilon_before:.4g}"
            self.ledger.record(
                Hazard(
                    text=f"the privacy budget of these records was reset on {reset.time} "
                    f"(reason: {reset.reason}); epsilon {before} spent before the reset is not "
                    "counted in this run's epsilon"
                )
            )
        if spend is None and state is not None:
            self.ledger.record(
                Hazard(
                    text="no spend record next to the records: this budget is accounted for "
                    "this participation only, not across runs on the same records"
                )
            )

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
        self.ledger.record(UpdateReleased.of(round_, masked))

    def record_refusals(self, round_: int, refusals: Sequence[tuple[int, str]]) -> None:
        """Ledger that this contributor refused the weights of these targets (rule names only;
        target -1 when the protocol did not say which row)."""
        if self.ledger is None:
            return
        for target, rule in refusals:
            reason = rule.value if isinstance(rule, Enum) else str(rule)
            self.ledger.record(PolicyRefusal(round=round_, target=target, reason=reason))

    def test_accuracy(self) -> float:
        """Accuracy of the current model on this client's own test split (0.0 without test
        records)."""
        if len(self._test_y) == 0:
            return 0.0
        return evaluate(self.trainer.model(), self._test_x, self._test_y)

    def _binary_scores(self) -> npt.NDArray[np.float64] | None:
        """P(class 1) of the current model on the test split; None without test records or
        when the model is not binary."""
        if len(self._test_y) == 0:
            return None
        model = self.trainer.model()
        with torch.no_grad():
            was_training = model.training
            model.eval()
            try:
                columns = model(self._test_x[:1]).shape[-1]
            finally:
                model.train(was_training)
        if columns != 2 or int(self._test_y.max()) > 1:
            return None
        return np.asarray(positive_scores(model, self._test_x), dtype=np.float64)

    def evaluation_vector(self, bins: int) -> Vector | None:
        """What this institution adds to the pooled credit metrics
        (:mod:`securefed.runtime.evaluation`): its test scores' histogram per class (negatives,
        then positives, ``bins`` each), its sum of squared errors and its number of test
        records. None when :meth:`credit` would be None."""
        scores = self._binary_scores()
        if scores is None:
            return None
        labels = self._test_y.numpy()
        histogram = score_histogram(scores, labels, bins=bins)
        squared = float(np.sum((scores - labels) ** 2))
        return np.asarray(
            [*histogram.negatives, *histogram.positives, squared, float(len(labels))],
            dtype=np.float64,
        )

    def credit(self) -> ClientCredit | None:
        """Exact ROC-AUC, PR-AUC, KS, Gini and Brier of the current model's P(class 1) on this
        client's own test split (:func:`securefed.models.credit.credit_metrics`; NaN, for a
        split with one class, becomes None). None without test records or when the model is
        not binary (its logits do not have two columns)."""
        scores = self._binary_scores()
        if scores is None:
            return None
        metrics = credit_metrics(scores, self._test_y.numpy())
        return ClientCredit(
            roc_auc=_finite(metrics.roc_auc),
            pr_auc=_finite(metrics.pr_auc),
            ks=_finite(metrics.ks),
            gini=_finite(metrics.gini),
            brier=_finite(metrics.brier),
            positives=metrics.positives,
            negatives=metrics.negatives,
        )

    # -- the engine's Learner protocol -------------------------------------------------------

    def accuracy(self) -> float | None:
        """The test accuracy, or None without test records (an empty test split is allowed:
        metrics.json then says ``test_accuracy: null`` and means leave this client out)."""
        if len(self._test_y) == 0:
            return None
        return self.test_accuracy()

    def epsilon(self) -> float | None:
        return self.trainer.epsilon()

    def similarity_input(self) -> Vector | None:
        return self.statistic

    def budget_refusal(self, round_: int) -> str | None:
        """Why round ``round_`` would exceed the budget (ledgered as ``budget.refused``), or
        None if it fits: asked before this party advertises keys for the round."""
        after = self.trainer.epsilon_after_next_round()
        state = self.trainer.accountant_state
        if after is None or state is None:
            return None
        if after <= state.target_epsilon + EPSILON_TOLERANCE:
            return None
        self._record_refusal(round_)
        return (
            f"round {round_} would raise epsilon to {after:.6g} at delta={state.delta:g}, above "
            f"the budget {state.target_epsilon:g}"
        )

    def info(self) -> ClientInfo:
        state = self.trainer.accountant_state
        return ClientInfo(
            train_samples=len(self.tenant.train_y),
            test_samples=len(self.tenant.test_y),
            noise_multiplier=self.trainer.noise_multiplier,
            sample_rate=self.trainer.sample_rate,
            steps_per_round=self.trainer.steps_per_round,
            statistic_noise_multiplier=None if state is None else state.statistic_noise_multiplier,
        )


def _finite(value: float | None) -> float | None:
    """None for NaN (a metric undefined on a split with one class) and None."""
    return None if value is None or math.isnan(value) else value
