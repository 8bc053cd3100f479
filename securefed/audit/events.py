"""What the ledger records: the event types, and one typed record per event.

:class:`EventType` names every event; its value is the string written in an entry's ``event``
field. The record classes below fix each event's payload keys, so the runtime that writes events
and the report that reads them agree on the names: ``ledger.record(RoundSpend(...))`` is
``ledger.append(EventType.ROUND_SPEND, {...})`` with the keys spelled once, here. Every payload
still passes :func:`securefed.audit.payload.check_payload` on append.

Payloads hold parameters and decisions only, never data (see :mod:`securefed.audit.payload`):
party ids, roster indices, round numbers, privacy parameters, hex SHA-256 digests, short reasons.
"""

from __future__ import annotations

import dataclasses
import hashlib
from abc import ABC
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import ClassVar

import numpy as np
import numpy.typing as npt

__all__ = [
    "BudgetConfigured",
    "BudgetRefused",
    "EventRecord",
    "EventType",
    "Hazard",
    "InconsistentHeads",
    "KeyRotation",
    "OutputsWithheld",
    "Partition",
    "PolicyRefusal",
    "PreprocessingApplied",
    "RoundSpend",
    "RoundSurvivors",
    "RunConfigured",
    "RunFinished",
    "SketchReleased",
    "SketchSeedDealt",
    "Unmask",
    "UpdateReleased",
]


class EventType(Enum):
    """The events of the ledger; the value is what an entry's ``event`` field holds."""

    RUN_CONFIGURED = "run.configured"
    BUDGET_CONFIGURED = "budget.configured"
    ROUND_SPEND = "round.spend"
    BUDGET_REFUSED = "budget.refused"
    UPDATE_RELEASED = "update.released"
    ROUND_SURVIVORS = "round.survivors"
    UNMASK = "round.unmask"
    POLICY_REFUSAL = "policy.refusal"
    KEY_ROTATION = "key.rotation"
    PARTITION = "group.partition"
    CHECKPOINT = "ledger.checkpoint"
    HAZARD = "hazard"
    RUN_FINISHED = "run.finished"
    INCONSISTENT_HEADS = "coordinator.inconsistent-heads"
    MISBEHAVIOUR = "round.misbehaviour"
    OUTPUTS_WITHHELD = "round.outputs_withheld"
    SKETCH_RELEASED = "sketch.released"
    SKETCH_SEED_DEALT = "sketch.seed_dealt"
    PREPROCESSING_APPLIED = "preprocessing.applied"


@dataclass(frozen=True, slots=True)
class EventRecord(ABC):
    """Base of the typed records: ``event_type`` and a payload built from the fields."""

    event_type: ClassVar[EventType]

    def to_payload(self) -> dict[str, object]:
        """The payload: one key per field, named as the field (tuples stay tuples here; the
        payload guard turns them into JSON arrays)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclass(frozen=True, slots=True)
class RunConfigured(EventRecord):
    """The run's configuration, pinned before any work: written first by every party."""

    event_type: ClassVar[EventType] = EventType.RUN_CONFIGURED
    config_sha256: str
    software_version: str
    cipher_suite: str
    roster_digest: str
    roster_fingerprints: Mapping[str, str]  # party id -> hex identity-key fingerprint
    mode: str


@dataclass(frozen=True, slots=True)
class BudgetConfigured(EventRecord):
    """A client's privacy budget and DP-SGD parameters, written before its first training step."""

    event_type: ClassVar[EventType] = EventType.BUDGET_CONFIGURED
    target_epsilon: float
    delta: float
    accountant: str
    accountant_version: str
    noise_multiplier: float  # sigma
    max_grad_norm: float  # C
    sample_rate: float  # q
    unit_of_privacy: str = "one record of one institution"
    prior_epsilon: float = 0.0  # what earlier participations on the same records had spent
    records_sha256: str = ""  # the records this budget protects (their spend record's digest)


@dataclass(frozen=True, slots=True)
class RoundSpend(EventRecord):
    """Privacy spent by a client up to and including ``round`` (written before it trains).

    ``mechanism`` is ``"dp-sgd"`` for a training round (``steps`` DP-SGD steps) and
    ``"gaussian-statistic"`` for the one release of the similarity statistic (``round`` 0,
    ``steps`` 1, ``sample_rate`` 1: every record, once)."""

    event_type: ClassVar[EventType] = EventType.ROUND_SPEND
    round: int
    epsilon: float  # cumulative epsilon after this round
    delta: float
    noise_multiplier: float  # sigma
    sample_rate: float  # q
    steps: int  # DP-SGD steps taken in this round
    accountant: str
    accountant_version: str
    mechanism: str = "dp-sgd"


@dataclass(frozen=True, slots=True)
class BudgetRefused(EventRecord):
    """A client refused to train ``round`` because its budget would be exceeded."""

    event_type: ClassVar[EventType] = EventType.BUDGET_REFUSED
    round: int
    epsilon_spent: float
    epsilon_would_be: float
    target_epsilon: float
    delta: float


@dataclass(frozen=True, slots=True)
class UpdateReleased(EventRecord):
    """A client sent its masked update (the digest is of the masked bytes, never of the model)."""

    event_type: ClassVar[EventType] = EventType.UPDATE_RELEASED
    round: int
    targets: int
    vector_length: int
    masked_sha256: str

    @classmethod
    def of(cls, round_: int, masked: Sequence[npt.NDArray[np.generic]]) -> UpdateReleased:
        """The record of ``masked`` (one or more masked vectors) leaving a client in
        ``round_``: their count, length and the SHA-256 of their bytes, nothing else."""
        digest = hashlib.sha256()
        for vector in masked:
            digest.update(np.ascontiguousarray(vector).tobytes())
        return cls(
            round=round_,
            targets=len(masked),
            vector_length=int(masked[0].size),
            masked_sha256=digest.hexdigest(),
        )


@dataclass(frozen=True, slots=True)
class RoundSurvivors(EventRecord):
    """Who contributed to ``round`` (U3) and who dropped out, as the server fixed it."""

    event_type: ClassVar[EventType] = EventType.ROUND_SURVIVORS
    round: int
    survivors: tuple[int, ...]
    dropouts: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Unmask(EventRecord):
    """What the server unmasked in ``round`` and whose secrets it reconstructed to do so."""

    event_type: ClassVar[EventType] = EventType.UNMASK
    round: int
    outputs: int  # aggregates unmasked (1 in sum mode; one per target or group otherwise)
    target_blinded: bool  # whether the unmasked outputs are still blinded for their targets
    self_seeds_of: tuple[int, ...]  # survivors whose self-mask seeds were reconstructed
    mask_keys_of: tuple[int, ...]  # dropped clients whose mask keys were reconstructed


@dataclass(frozen=True, slots=True)
class Misbehaviour(EventRecord):
    """The server caught ``party`` misbehaving in ``round``, on evidence signed by that party:
    ``kind`` is ``bad-commitment`` (its share commitments fail the public checks),
    ``bad-shares`` (a holder's complaint proved a share it dealt bad), ``false-complaint`` (it
    complained about good shares) -- each left it out of the round before anything was masked --
    or ``bad-share-revealed`` (a share it revealed at unmasking was off the dealer's polynomial:
    ignored). ``accuser`` is the complaining holder for ``bad-shares``, else -1.
    ``evidence_sha256`` names the file of signed messages the server wrote next to the ledgers
    (``evidence/round-<r>-<party>.bin``; :func:`securefed.secagg.dealing.decode_evidence`)."""

    event_type: ClassVar[EventType] = EventType.MISBEHAVIOUR
    round: int
    party: int
    kind: str
    accuser: int
    evidence_sha256: str


@dataclass(frozen=True, slots=True)
class OutputsWithheld(EventRecord):
    """Attention mode: in ``round`` the ``targets`` (party indices) got no personalized output,
    because with what earlier rounds released to them it would let a coalition read some
    party's model below ``min_exposure``; ``reason`` is ``exposure-across-rounds``
    (securefed/secagg/history.py, docs/fedamp.md "Across rounds"). They still contributed to
    the other outputs."""

    event_type: ClassVar[EventType] = EventType.OUTPUTS_WITHHELD
    round: int
    targets: tuple[int, ...]
    reason: str


@dataclass(frozen=True, slots=True)
class SketchReleased(EventRecord):
    """A party sent the server its secret sketch of ``round`` (attention mode, or the round that
    learns group mode's partition), under the S_0 of sketch epoch ``epoch``: epoch j covers
    rounds j·per_seed + 1 to (j + 1)·per_seed, so at most ``per_seed`` sketches of a party share
    one S_0 (docs/fedamp.md, "Sketch epochs")."""

    event_type: ClassVar[EventType] = EventType.SKETCH_RELEASED
    round: int
    epoch: int
    per_seed: int


@dataclass(frozen=True, slots=True)
class SketchSeedDealt(EventRecord):
    """A sketch seed was dealt, shared by ``members`` (party ids) and committed to by
    ``commitment`` (hex; the value every round's transcript binds). The server records it when
    the seed is delivered (``deal``: the how-many-th seed of the run), a party when it holds
    the seed (``deal``: the how-many-th seed this party accepted, which ``max_seed_deals``
    bounds). Deal 1 is the setup at the join, later ones follow a change of membership
    (docs/fedamp.md, "Sketch epochs")."""

    event_type: ClassVar[EventType] = EventType.SKETCH_SEED_DEALT
    deal: int
    members: tuple[str, ...]
    commitment: str


@dataclass(frozen=True, slots=True)
class PreprocessingApplied(EventRecord):
    """The institution set the federation-wide statistics in its model's feature scaler before
    round 1 (``[data] standardize = "federation"``): their SHA-256 (of
    ``preprocessing/statistics.json``), the institutions whose released sums the secure sum
    added, and how many numeric features are standardised (docs/tabular.md). The release itself
    is the ``round.spend`` of round 0 before it."""

    event_type: ClassVar[EventType] = EventType.PREPROCESSING_APPLIED
    statistics_sha256: str
    contributors: tuple[str, ...]
    numeric_features: int


@dataclass(frozen=True, slots=True)
class PolicyRefusal(EventRecord):
    """A contributor refused a target's weights (``reason`` is a PolicyRule value)."""

    event_type: ClassVar[EventType] = EventType.POLICY_REFUSAL
    round: int
    target: int
    reason: str


@dataclass(frozen=True, slots=True)
class KeyRotation(EventRecord):
    """A party's identity key was replaced (fingerprints in hex)."""

    event_type: ClassVar[EventType] = EventType.KEY_ROTATION
    party: str
    old_fingerprint: str
    new_fingerprint: str
    reason: str


@dataclass(frozen=True, slots=True)
class Partition(EventRecord):
    """Group mode: the partition's group sizes (not its members' data) and how it was chosen."""

    event_type: ClassVar[EventType] = EventType.PARTITION
    round: int
    group_sizes: tuple[int, ...]
    method: str


@dataclass(frozen=True, slots=True)
class Hazard(EventRecord):
    """A condition an auditor must know about (e.g. an unencrypted key, DP off). Fixed text only:
    never data-derived text."""

    event_type: ClassVar[EventType] = EventType.HAZARD
    text: str


@dataclass(frozen=True, slots=True)
class InconsistentHeads(EventRecord):
    """The coordinator sent this party ledger heads to checkpoint for ``round`` that do not
    match the party's own transcript (the heads bound into the round's signed transcript, or
    the head it reported itself): the party checkpointed nothing. ``heads_sha256`` is the
    SHA-256 of the heads as sent (:meth:`Head.to_bytes`, in order), so the claim can be matched
    against the coordinator's own ledger. Evidence that the coordinator equivocated, not that
    any chain was edited (``securefed audit verify``: EQUIVOCATED)."""

    event_type: ClassVar[EventType] = EventType.INCONSISTENT_HEADS
    round: int
    reason: str
    heads_sha256: str


@dataclass(frozen=True, slots=True)
class RunFinished(EventRecord):
    """The party's run ended (``status``: e.g. completed, aborted, budget-exhausted)."""

    event_type: ClassVar[EventType] = EventType.RUN_FINISHED
    rounds: int
    status: str
