"""Secure aggregation, sans-I/O: typed messages, one transition table, client and server objects.

Hardened against a malicious server and malicious clients (docs/protocol.md): a pinned roster of
identity keys (no Sybils), signed messages bound to session and round (no replays), one signed
survivor set per round (R2), a consistency check over a transcript hash before anything is
unmasked, a threshold that satisfies ``2t - N > n_C`` (R1), per-pair directional share-encryption
keys (R3), purpose-labelled keys (R4), an AES-CTR PRG (R5), verifiable (Feldman) sharing whose bad
dealers and bad holders are named and left out (:mod:`securefed.secagg.sharing`,
:mod:`securefed.secagg.dealing`), range-checked encoding (R7).

Drive it with :mod:`securefed.testing` (in memory) or a runtime; see ``docs/protocol.md``.
"""

from securefed.secagg.client import SecAggClient
from securefed.secagg.config import (
    PROTOCOL_VERSION,
    AggregationMode,
    GraphKind,
    MaskGraph,
    RoundConfig,
    default_threshold,
)
from securefed.secagg.events import (
    ClientsDropped,
    ClientsExcluded,
    ComplaintJudged,
    ExclusionReason,
    MessageRejected,
    PolicyRefused,
    ProtocolEvent,
    RoundAborted,
    RoundCompleted,
    ShareRejected,
    UnmaskPerformed,
    UnmaskRefused,
)
from securefed.secagg.messages import Message, MessageType, decode
from securefed.secagg.replay import RoundGuard
from securefed.secagg.roster import (
    ClientParty,
    PublicIdentity,
    Roster,
    ServerParty,
    load_roster,
    save_roster,
)
from securefed.secagg.server import AggregateResult, Envelope, SecAggServer
from securefed.secagg.sharing import ShareScheme
from securefed.secagg.stages import Role, Stage
from securefed.secagg.transcript import ContextItem, transcript_hash

__all__ = [
    "PROTOCOL_VERSION",
    "AggregateResult",
    "AggregationMode",
    "ClientParty",
    "ClientsDropped",
    "ClientsExcluded",
    "ComplaintJudged",
    "ContextItem",
    "Envelope",
    "ExclusionReason",
    "GraphKind",
    "MaskGraph",
    "Message",
    "MessageRejected",
    "MessageType",
    "PolicyRefused",
    "ProtocolEvent",
    "PublicIdentity",
    "Role",
    "Roster",
    "RoundAborted",
    "RoundCompleted",
    "RoundConfig",
    "RoundGuard",
    "SecAggClient",
    "SecAggServer",
    "ServerParty",
    "ShareRejected",
    "ShareScheme",
    "Stage",
    "UnmaskPerformed",
    "UnmaskRefused",
    "decode",
    "default_threshold",
    "load_roster",
    "save_roster",
    "transcript_hash",
]
