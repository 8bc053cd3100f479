"""Typed events that protocol objects emit for the runtime and the audit ledger.

Protocol objects never log or write files; they append events, and whoever drives them (the
in-memory harness, the simulation runtime, later the ledger) drains them with ``drain_events()``.
Events carry indices, phases and reasons -- never keys, seeds, shares or model values.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from securefed.secagg.stages import Stage

__all__ = [
    "ClientsDropped",
    "ClientsExcluded",
    "ComplaintJudged",
    "ExclusionReason",
    "MessageRejected",
    "OutputsWithheld",
    "PolicyRefused",
    "ProtocolEvent",
    "RoundAborted",
    "RoundCompleted",
    "ShareRejected",
    "UnmaskPerformed",
    "UnmaskRefused",
]


@dataclass(frozen=True, slots=True)
class ProtocolEvent:
    """Base of every event: which round, and in which phase it happened."""

    round: int
    stage: Stage


@dataclass(frozen=True, slots=True)
class ClientsDropped(ProtocolEvent):
    """Server: these clients did not (validly) complete ``stage`` and are out of the round."""

    clients: tuple[int, ...]


class ExclusionReason(Enum):
    """Why a client was left out of a round: its neighbourhood (:mod:`securefed.secagg.graph`)
    or its own misbehaviour, proven by signed messages (:mod:`securefed.secagg.dealing`)."""

    LONELY = "lonely"  # fewer than MIN_NEIGHBOURS neighbours in the round's fixed graph
    STARVED = "starved"  # fewer of its holders take part than its threshold
    BAD_COMMITMENT = "bad-commitment"  # its signed commitments fail the public checks
    BAD_SHARES = "bad-shares"  # a holder's complaint proved a dealt share bad
    FALSE_COMPLAINT = "false-complaint"  # it complained about shares that were good


@dataclass(frozen=True, slots=True)
class OutputsWithheld(ProtocolEvent):
    """Attention mode, server and every contributor: these targets get no output this round,
    because together with earlier releases it would let a coalition read some party below
    ``min_exposure`` (:func:`securefed.secagg.history.withheld_targets`). They still contribute
    to the other targets' outputs."""

    targets: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ClientsExcluded(ProtocolEvent):
    """Server: these clients sent valid messages but were left out of the round because it could
    not keep their guarantee (``reason``); each was sent an ``Abort`` naming it."""

    clients: tuple[int, ...]
    reason: ExclusionReason


@dataclass(frozen=True, slots=True)
class ComplaintJudged(ProtocolEvent):
    """Server: ``holder`` complained about ``dealer``'s shares; ``verdict`` is a
    :class:`~securefed.secagg.dealing.Verdict` value. The evidence is the signed messages
    (the holder's receipt, the dealer's commitments and dealt share): anyone can rerun
    :func:`~securefed.secagg.dealing.judge_complaint` on them."""

    dealer: int
    holder: int
    verdict: str


@dataclass(frozen=True, slots=True)
class MessageRejected(ProtocolEvent):
    """Server: a client's message was refused (forged, replayed, late, malformed, duplicate)."""

    sender: int | None
    reason: str


@dataclass(frozen=True, slots=True)
class RoundAborted(ProtocolEvent):
    """Either role: the round ended without output."""

    reason: str


@dataclass(frozen=True, slots=True)
class UnmaskRefused(ProtocolEvent):
    """Client: it refused an unmasking request (e.g. both shares of one client were asked for)."""

    reason: str


@dataclass(frozen=True, slots=True)
class PolicyRefused(ProtocolEvent):
    """Client: it refused the round's weights (docs/fedamp.md: concentration, too few contributors).
    ``violations`` lists the refused rows as ``(target, rule)`` pairs (rule: a PolicyRule value)."""

    reason: str
    violations: tuple[tuple[int, str], ...] = ()


@dataclass(frozen=True, slots=True)
class ShareRejected(ProtocolEvent):
    """Server: shares from these holders failed reconstruction checks for ``owner``."""

    owner: int
    holders: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class UnmaskPerformed(ProtocolEvent):
    """Server: which secrets it reconstructed (self seeds of survivors, mask keys of dropouts)."""

    self_seeds_of: tuple[int, ...]
    mask_keys_of: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class RoundCompleted(ProtocolEvent):
    """Server: an aggregate over ``contributors`` was produced."""

    contributors: tuple[int, ...]
