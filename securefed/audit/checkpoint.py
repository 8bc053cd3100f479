"""Truncation evidence: ledger heads, their transcript binding, and signed checkpoints.

A party's *head* is ``(actor, seq, hash)`` of the last entry of its ledger. A ledger alone cannot
prove that nothing was cut from its end, so heads travel to the other parties in two ways:

* **Transcript binding (every round).** :func:`head_context` / :func:`heads_context` give a
  deterministic byte string for one head / a set of heads; the runtime binds it into the round's
  signed consistency transcript (label :data:`HEADS_CONTEXT_LABEL`), so every party signs which
  heads the others claimed.
* **Checkpoints (in the ledgers).** A ``ledger.checkpoint`` entry lists heads of several parties;
  :func:`securefed.audit.verify.verify_run` checks that every listed party's ledger contains an
  entry at that seq with that hash (else TRUNCATED / EDITED). At the end of a run every party
  appends the same *final* checkpoint listing every party's head
  (:func:`record_final_checkpoint`), which must then be the last entry of every ledger: the final
  checkpoint of a party sits at ``seq + 1`` of the head that all the others recorded for it, so
  deleting it, or anything before it, contradicts the other parties' ledgers.

Payload of a checkpoint (party ids as keys)::

    {"final": true, "heads": {"bank-0": {"hash": "<64 hex>", "seq": 41}, "server": {...}}}
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from securefed.audit.canonical import JsonValue
from securefed.audit.entry import GENESIS_HASH, LedgerEntry
from securefed.audit.events import EventType
from securefed.errors import ConfigError, RemoteProtocolError

if TYPE_CHECKING:
    from securefed.audit.ledger import Ledger

__all__ = [
    "HEADS_CONTEXT_LABEL",
    "Checkpoint",
    "Head",
    "collect_heads",
    "head_context",
    "heads_context",
    "record_checkpoint",
    "record_final_checkpoint",
]

HEADS_CONTEXT_LABEL = "audit/ledger-heads"
_HEAD_LABEL = b"securefed/v1/ledger-head"
_HEADS_LABEL = b"securefed/v1/ledger-heads"
_ACTOR = re.compile(r"[A-Za-z0-9._-]{1,64}")
_HASH = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class Head:
    """The last entry of a party's ledger: ``seq`` -1 and :data:`GENESIS_HASH` when empty.

    Raises:
        ConfigError: a malformed actor, a seq below -1, or a hash that is not 64 lowercase hex.
    """

    actor: str
    seq: int
    hash: str

    def __post_init__(self) -> None:
        if not isinstance(self.actor, str) or not _ACTOR.fullmatch(self.actor):
            raise ConfigError(f"head actor {self.actor!r} is not a party id")
        if isinstance(self.seq, bool) or not isinstance(self.seq, int) or self.seq < -1:
            raise ConfigError(f"head seq must be an integer >= -1, not {self.seq!r}")
        if not isinstance(self.hash, str) or not _HASH.fullmatch(self.hash):
            raise ConfigError("head hash must be 64 lowercase hex digits")
        if self.seq == -1 and self.hash != GENESIS_HASH:
            raise ConfigError("the head of an empty ledger has the genesis hash")

    def to_bytes(self) -> bytes:
        """``label || u8 len(actor) || actor || i64 seq (big-endian) || 32 hash bytes``."""
        actor = self.actor.encode("ascii")
        return b"".join(
            [
                _HEAD_LABEL,
                len(actor).to_bytes(1, "big"),
                actor,
                self.seq.to_bytes(8, "big", signed=True),
                bytes.fromhex(self.hash),
            ]
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Head:
        """The inverse of :meth:`to_bytes`: the one codec of a ledger head on any wire.

        Raises:
            RemoteProtocolError: anything but exactly one well-formed head.
        """
        size = len(_HEAD_LABEL)
        if len(data) < size + 1 + 8 + 32 or data[:size] != _HEAD_LABEL:
            raise RemoteProtocolError("malformed ledger head")
        length = data[size]
        if len(data) != size + 1 + length + 8 + 32:
            raise RemoteProtocolError("malformed ledger head")
        body = data[size + 1 :]
        try:
            return cls(
                body[:length].decode("ascii"),
                int.from_bytes(body[length : length + 8], "big", signed=True),
                body[length + 8 :].hex(),
            )
        except (UnicodeDecodeError, ConfigError):
            raise RemoteProtocolError("malformed ledger head") from None


def head_context(source: Head | Ledger) -> bytes:
    """The deterministic bytes of one party's current head, to bind into a signed transcript."""
    head = source if isinstance(source, Head) else source.head
    return head.to_bytes()


def heads_context(heads: Iterable[Head]) -> bytes:
    """The deterministic bytes of a set of heads (sorted by actor), for one transcript item.

    Raises:
        ConfigError: two heads of the same actor.
    """
    ordered = _ordered(heads)
    parts = [_HEADS_LABEL, len(ordered).to_bytes(4, "big")]
    for head in ordered:
        encoded = head.to_bytes()
        parts += [len(encoded).to_bytes(2, "big"), encoded]
    return b"".join(parts)


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The payload of a ``ledger.checkpoint`` entry: some parties' heads, and whether it is final.

    Raises:
        ConfigError: no heads, or two heads of the same actor.
    """

    final: bool
    heads: tuple[Head, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "heads", _ordered(self.heads))
        if not self.heads:
            raise ConfigError("a checkpoint lists at least one head")

    def head_of(self, actor: str) -> Head | None:
        """The head recorded for ``actor``, if any."""
        return next((head for head in self.heads if head.actor == actor), None)

    def to_payload(self) -> dict[str, object]:
        """The entry payload (see the module docstring)."""
        return {
            "final": self.final,
            "heads": {head.actor: {"seq": head.seq, "hash": head.hash} for head in self.heads},
        }

    @classmethod
    def from_payload(cls, payload: Mapping[str, JsonValue]) -> Checkpoint:
        """Parse a checkpoint payload.

        Raises:
            ValueError: the payload does not have the checkpoint format.
        """
        final, heads = payload.get("final"), payload.get("heads")
        if set(payload) != {"final", "heads"} or not isinstance(final, bool):
            raise ValueError("a checkpoint payload has exactly 'final' (bool) and 'heads'")
        if not isinstance(heads, dict) or not heads:
            raise ValueError("checkpoint heads must be a non-empty object")
        parsed = []
        for actor, item in heads.items():
            if not isinstance(item, dict) or set(item) != {"seq", "hash"}:
                raise ValueError(f"checkpoint head of {actor!r} must be {{seq, hash}}")
            seq, digest = item["seq"], item["hash"]
            if type(seq) is not int or not isinstance(digest, str):
                raise ValueError(f"checkpoint head of {actor!r} has a malformed seq or hash")
            try:
                parsed.append(Head(actor, seq, digest))
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        return cls(final, tuple(parsed))


def collect_heads(ledgers: Iterable[Ledger]) -> tuple[Head, ...]:
    """The current heads of ``ledgers`` (sorted by actor)."""
    return _ordered(ledger.head for ledger in ledgers)


def record_checkpoint(ledger: Ledger, heads: Iterable[Head], *, final: bool) -> LedgerEntry:
    """Append a checkpoint of ``heads`` to ``ledger`` (fsync'ed like every append).

    ``ledger``'s own head, if listed, must be one of its entries; a *final* checkpoint must list
    its current head, and seals the ledger (no later append is accepted).

    Raises:
        ConfigError: see :meth:`securefed.audit.ledger.Ledger.append`.
        LedgerIntegrityError: the ledger cannot be appended to.
    """
    return ledger.append(EventType.CHECKPOINT, Checkpoint(final, tuple(heads)).to_payload())


def record_final_checkpoint(ledgers: Iterable[Ledger]) -> tuple[Head, ...]:
    """End of run, in one process: collect every ledger's head, then append to each ledger the
    same final checkpoint listing them all. Returns the heads recorded.

    A deployment does the same in two steps: each party sends its head (signed into the last
    round's transcript), then each appends :func:`record_checkpoint` with ``final=True``.

    Raises:
        ConfigError: no ledgers, or two ledgers of one actor.
    """
    all_ledgers = list(ledgers)
    heads = collect_heads(all_ledgers)
    if not heads:
        raise ConfigError("no ledgers to checkpoint")
    for ledger in all_ledgers:
        record_checkpoint(ledger, heads, final=True)
    return heads


def _ordered(heads: Iterable[Head]) -> tuple[Head, ...]:
    ordered = tuple(sorted(heads, key=lambda head: head.actor))
    actors = [head.actor for head in ordered]
    if len(set(actors)) != len(actors):
        raise ConfigError("two heads of the same actor")
    return ordered
