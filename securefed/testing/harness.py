"""The protocol harness for tests: :func:`run_round` (in memory, with hooks) and
:func:`resign`, which scripts a malicious server by re-signing forged messages with its key."""

from __future__ import annotations

import dataclasses
from typing import Any

from securefed.crypto import SigningKey
from securefed.secagg.federation import Federation, make_federation
from securefed.secagg.inmemory import RoundOutcome, run_round
from securefed.secagg.messages import Message, sign_message

__all__ = ["Federation", "RoundOutcome", "make_federation", "resign", "run_round"]


def resign(message: Message, key: SigningKey, **changes: Any) -> Message:
    """A copy of ``message`` with ``changes`` applied and a fresh signature by ``key``."""
    fields = {f.name: getattr(message, f.name) for f in dataclasses.fields(message) if f.init}
    fields.update(changes)
    del fields["signature"]
    session_id, round_ = fields.pop("session_id"), fields.pop("round")
    return sign_message(type(message), key, session_id, round_, **fields)
