"""One ledger entry: its fields, its hash, its signature, and its line in the ledger file.

An entry is one line of JSON (the canonical encoding of :mod:`securefed.audit.canonical`)::

    {"actor":"bank-0","event":"round.spend","hash":"<64 hex>","payload":{...},
     "prev_hash":"<64 hex>","seq":3,"signature":"<128 hex>","time":"2025-01-01T00:00:00.000Z"}

* ``seq``: 0, 1, 2, ... in file order; ``prev_hash``: the previous entry's ``hash``
  (:data:`GENESIS_HASH`, 64 zeros, for seq 0);
* ``hash`` = hex SHA-256 of the canonical encoding of the object with the six fields ``actor``,
  ``event``, ``payload``, ``prev_hash``, ``seq``, ``time`` (everything but ``hash`` and
  ``signature``); an auditor can recompute it with any JSON canonicaliser that follows the rules;
* ``signature`` = hex of the actor's identity-key signature over
  :data:`SIGNATURE_LABEL` ``||`` the 32 raw hash bytes (Ed25519, or ECDSA P-256/SHA-256 for the
  ``fips-p256`` suite). The label separates ledger signatures from every protocol signature made
  with the same identity key;
* ``time``: UTC, ISO-8601 with milliseconds and a ``Z`` suffix. It is the writer's claim: the
  order of the ledger is ``seq`` and the chain, not the clock.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType

from securefed.audit.canonical import JsonValue, decode_canonical, encode_canonical
from securefed.audit.events import EventType
from securefed.crypto import SigningKey, VerifyKey
from securefed.errors import ConfigError, InvalidSignature

__all__ = [
    "GENESIS_HASH",
    "SIGNATURE_LABEL",
    "LedgerEntry",
    "format_time",
    "parse_entry",
]

GENESIS_HASH = "0" * 64
SIGNATURE_LABEL = b"securefed/v1/ledger-entry"
_FIELDS = frozenset({"seq", "time", "actor", "event", "payload", "prev_hash", "hash", "signature"})
_HASH = re.compile(r"[0-9a-f]{64}")
_SIGNATURE = re.compile(r"(?:[0-9a-f]{2}){1,256}")
_ACTOR = re.compile(r"[A-Za-z0-9._-]{1,64}")
_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{3})?Z")
_EVENTS = {event.value: event for event in EventType}


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One signed, hash-chained ledger entry (fields as in the module docstring).

    Construct entries with :meth:`create` (which hashes and signs) or :func:`parse_entry`; the
    constructor itself does not check that ``hash`` and ``signature`` match the content.
    """

    seq: int
    time: str
    actor: str
    event: EventType
    payload: Mapping[str, JsonValue]
    prev_hash: str
    hash: str
    signature: str

    @classmethod
    def create(
        cls,
        *,
        seq: int,
        time: str,
        actor: str,
        event: EventType,
        payload: dict[str, JsonValue],
        prev_hash: str,
        signing_key: SigningKey,
    ) -> LedgerEntry:
        """Hash and sign a new entry. ``payload`` must already have passed the payload guard.

        Raises:
            ConfigError: a malformed actor, seq, time or prev_hash, or a non-canonical payload.
        """
        if not isinstance(actor, str) or not _ACTOR.fullmatch(actor):
            raise ConfigError(f"actor {actor!r} is not a party id (1-64 of [A-Za-z0-9._-])")
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
            raise ConfigError(f"seq must be a non-negative integer, not {seq!r}")
        if not _TIME.fullmatch(time) or not _HASH.fullmatch(prev_hash):
            raise ConfigError("malformed time or prev_hash")
        body = _body(
            seq=seq, time=time, actor=actor, event=event, payload=payload, prev_hash=prev_hash
        )
        digest = hashlib.sha256(encode_canonical(body)).digest()
        signature = signing_key.sign(SIGNATURE_LABEL + digest)
        return cls(
            seq=seq,
            time=time,
            actor=actor,
            event=event,
            payload=MappingProxyType(payload),
            prev_hash=prev_hash,
            hash=digest.hex(),
            signature=signature.hex(),
        )

    def computed_hash(self) -> str:
        """The hex SHA-256 of this entry's content (equal to ``hash`` unless it was edited)."""
        return hashlib.sha256(encode_canonical(self._content())).hexdigest()

    def _content(self) -> dict[str, JsonValue]:
        return _body(
            seq=self.seq,
            time=self.time,
            actor=self.actor,
            event=self.event,
            payload=dict(self.payload),
            prev_hash=self.prev_hash,
        )

    def verify_signature(self, verify_key: VerifyKey) -> None:
        """Check ``signature`` over ``hash`` under ``verify_key``.

        Raises:
            InvalidSignature: the signature does not verify (wrong key, or hash/signature edited).
        """
        try:
            signature = bytes.fromhex(self.signature)
        except ValueError:
            raise InvalidSignature("signature is not hex") from None
        verify_key.verify(signature, SIGNATURE_LABEL + bytes.fromhex(self.hash))

    def to_line(self) -> bytes:
        """The entry's line in the ledger file: its canonical encoding and a newline."""
        whole = self._content()
        whole["hash"] = self.hash
        whole["signature"] = self.signature
        return encode_canonical(whole) + b"\n"


def parse_entry(line: bytes) -> LedgerEntry:
    """Parse one ledger line (without its newline) into an entry; hash and signature unchecked.

    Raises:
        ValueError: the line is not canonical JSON, or a field is missing, unknown or malformed
            (the message says which); the verifier reports this as MALFORMED.
    """
    value = decode_canonical(line)
    if not isinstance(value, dict):
        raise ValueError("an entry must be a JSON object")
    keys = set(value)
    if keys != _FIELDS:
        missing, unknown = sorted(_FIELDS - keys), sorted(keys - _FIELDS)
        raise ValueError(
            f"fields differ from the entry format: missing {missing}, unknown {unknown}"
        )
    seq, time, actor = value["seq"], value["time"], value["actor"]
    event, payload = value["event"], value["payload"]
    prev_hash, digest, signature = value["prev_hash"], value["hash"], value["signature"]
    if type(seq) is not int or seq < 0:
        raise ValueError("seq must be a non-negative integer")
    if not isinstance(time, str) or not _valid_time(time):
        raise ValueError("time must be UTC ISO-8601 (YYYY-MM-DDTHH:MM:SS[.mmm]Z)")
    if not isinstance(actor, str) or not _ACTOR.fullmatch(actor):
        raise ValueError("actor must be a party id")
    if not isinstance(event, str) or event not in _EVENTS:
        raise ValueError(f"unknown event {event!r}")
    if not isinstance(payload, dict):
        raise ValueError("payload must be an object")
    if not isinstance(prev_hash, str) or not _HASH.fullmatch(prev_hash):
        raise ValueError("prev_hash must be 64 lowercase hex digits")
    if not isinstance(digest, str) or not _HASH.fullmatch(digest):
        raise ValueError("hash must be 64 lowercase hex digits")
    if not isinstance(signature, str) or not _SIGNATURE.fullmatch(signature):
        raise ValueError("signature must be lowercase hex")
    return LedgerEntry(
        seq, time, actor, _EVENTS[event], MappingProxyType(payload), prev_hash, digest, signature
    )


def format_time(moment: datetime) -> str:
    """``moment`` as the ledger writes it: UTC, milliseconds, ``Z`` (e.g. ``...T12:00:00.250Z``).

    Raises:
        ConfigError: ``moment`` is naive (has no time zone).
    """
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ConfigError("ledger times must be timezone-aware datetimes")
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def _valid_time(text: str) -> bool:
    if not _TIME.fullmatch(text):
        return False
    try:
        datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def _body(
    *,
    seq: int,
    time: str,
    actor: str,
    event: EventType,
    payload: dict[str, JsonValue],
    prev_hash: str,
) -> dict[str, JsonValue]:
    return {
        "seq": seq,
        "time": time,
        "actor": actor,
        "event": event.value,
        "payload": payload,
        "prev_hash": prev_hash,
    }
