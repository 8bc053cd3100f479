"""``metrics.json``: one typed record of a run, written in one shape by every transport.

The coordinator fills :class:`RunMetrics` from what the institutions report (their own
evaluations, epsilons, record counts and DP settings) and what it saw itself (rounds, dropouts,
exchanges, bytes). ``schema`` is the version of this shape (docs/run-config.md, "metrics.json").
metrics.json is unsigned: the signed ledgers are the record of privacy (docs/audit.md).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from securefed.files import write_atomic

__all__ = [
    "METRICS_SCHEMA",
    "ROUND_STATUSES",
    "BaselineMetrics",
    "ClientCredit",
    "ClientDP",
    "ClientMetrics",
    "DPMetrics",
    "RoundMetrics",
    "RunMetrics",
    "write_metrics",
]

METRICS_SCHEMA = 2
#: The outcomes a round can have (:attr:`RoundMetrics.status`).
ROUND_STATUSES = ("completed", "aborted", "no aggregate")


@dataclass(slots=True)
class RoundMetrics:
    """One round. Round 0 is the initial model.

    ``completed``: parties that got their personalized model; ``refused``: budget refusals;
    ``dropouts``: party -> the phase it was lost in; ``withheld``: attention mode, parties that
    got no output because it would have exposed a party across rounds (docs/fedamp.md, "Across
    rounds"); ``exchanges``: transport round trips the
    round took; ``seconds``: wall time from its first exchange to its last. ``status``: the
    round's outcome, one of :data:`ROUND_STATUSES` -- ``completed`` (an aggregate reached at
    least one party; a local round always), ``aborted`` (every group's protocol aborted) or
    ``no aggregate`` (nobody got an aggregate: no survivors, or every party refused).
    """

    round: int
    mean_test_accuracy: float | None = None
    max_epsilon: float | None = None
    own_segment_weight: float | None = None
    completed: int = 0
    refused: list[str] = field(default_factory=list)
    dropouts: dict[str, str] = field(default_factory=dict)
    withheld: list[str] = field(default_factory=list)
    exchanges: int = 0
    seconds: float = 0.0
    status: str = "completed"


@dataclass(frozen=True, slots=True)
class ClientCredit:
    """Credit metrics of one institution's final model on its own test split, exact (not
    from histograms): ROC-AUC, PR-AUC (average precision), KS, Gini and Brier of P(class 1),
    and the split's class counts. A metric that needs both classes is None when the split has
    one class only. Like accuracy, publishing them is a release that DP training does not
    cover."""

    roc_auc: float | None
    pr_auc: float | None
    ks: float | None
    gini: float | None
    brier: float | None
    positives: int
    negatives: int


@dataclass(frozen=True, slots=True)
class ClientMetrics:
    """One institution in ``metrics.json``. ``credit``: for a binary target with test records,
    the exact credit metrics (:class:`ClientCredit`), filled in by the in-process simulation
    (``securefed run``); None otherwise, and in a Flower deployment (the institutions do not
    report them yet)."""

    id: str
    train_samples: int
    test_samples: int
    test_accuracy: float | None
    epsilon: float | None
    delta: float | None
    tenant: int | None = None
    credit: ClientCredit | None = None


@dataclass(frozen=True, slots=True)
class ClientDP:
    noise_multiplier: float | None
    sample_rate: float | None
    steps_per_round: int


@dataclass(frozen=True, slots=True)
class DPMetrics:
    """The run's DP settings. ``noise_multiplier`` and ``sample_rate`` are the weakest any
    institution used (smallest sigma, largest q); ``by_client`` has each one's own."""

    target_epsilon: float
    delta: float
    noise_multiplier: float | None
    max_grad_norm: float
    sample_rate: float | None
    accountant: str
    accountant_version: str
    statistic_epsilon: float | None
    statistic_noise_multiplier: float | None
    by_client: dict[str, ClientDP]


@dataclass(frozen=True, slots=True)
class BaselineMetrics:
    mean_test_accuracy: float | None
    history: list[RoundMetrics]
    secure: bool
    clients: list[dict[str, Any]]


@dataclass(slots=True)
class RunMetrics:
    """Everything ``metrics.json`` holds (see docs/run-config.md). ``echo_rtt_s``: a Flower
    deployment's median round trip of an empty message to every node before the run (the
    transport's floor for one exchange, docs/deploy.md); None for the in-memory transport.
    ``status``: how the run ended (``run.finished`` in the ledgers, :class:`RunStatus` of
    :mod:`securefed.runtime.engine.messages`): completed, degraded, failed or interrupted.
    ``resumed_at``: the rounds at which a killed run was resumed (``securefed run --resume``;
    ``history`` then holds the rounds run since, the earlier ones are in the ledgers)."""

    mode: str
    rounds: int
    secure: bool
    transport: str
    history: list[RoundMetrics]
    clients: list[ClientMetrics]
    mean_test_accuracy: float | None
    config_sha256: str
    software_version: str
    similarity: str | None
    model: dict[str, Any]
    tenants: int
    dp: DPMetrics | None = None
    partition: list[int] | None = None
    data_directory: str | None = None
    seconds: float = 0.0
    exchanges: int = 0
    bytes_sent: dict[str, int] = field(default_factory=dict)
    bytes_received: dict[str, int] = field(default_factory=dict)
    baselines: dict[str, BaselineMetrics] = field(default_factory=dict)
    echo_rtt_s: float | None = None
    status: str = "completed"
    resumed_at: list[int] = field(default_factory=list)
    schema: int = METRICS_SCHEMA

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def exchanges_per_round(self) -> float | None:
        """Mean exchanges of the rounds after the first (the steady state), None if one round."""
        later = [entry.exchanges for entry in self.history if entry.round >= 2]
        return sum(later) / len(later) if later else None

    def baseline(self) -> BaselineMetrics:
        """This run summarised as a baseline of another."""
        return BaselineMetrics(
            mean_test_accuracy=self.mean_test_accuracy,
            history=self.history,
            secure=self.secure,
            clients=[
                {"id": c.id, "test_accuracy": c.test_accuracy, "epsilon": c.epsilon}
                for c in self.clients
            ],
        )


def write_metrics(path: str | os.PathLike[str], metrics: RunMetrics) -> None:
    """Atomic and durable."""
    text = json.dumps(metrics.to_dict(), indent=2, sort_keys=True) + "\n"
    write_atomic(path, text.encode("utf-8"), overwrite=True)
