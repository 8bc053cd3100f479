"""The protocol harness for tests: :func:`run_round` (in memory, with hooks) and
:func:`resign`, which scripts a malicious server by re-signing forged messages with its key."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, cast

from securefed.crypto import SigningKey, merkle
from securefed.secagg.client import SecAggClient
from securefed.secagg.federation import Federation, make_federation
from securefed.secagg.inmemory import RoundOutcome, run_round
from securefed.secagg.messages import (
    DealtShare,
    Message,
    ShareCommitment,
    ShareKeys,
    SignedBy,
    dealt_leaves,
    sign_message,
)

__all__ = ["Federation", "RoundOutcome", "make_federation", "redeal", "resign", "run_round"]


def resign(message: Message, key: SigningKey, **changes: Any) -> Message:
    """A copy of ``message`` with ``changes`` applied and a fresh signature by ``key`` (a
    message signed through another one, a DealtShare, is only changed: see :func:`redeal`)."""
    if message.SIGNER is SignedBy.COVERED:  # signed through another message: nothing to sign
        return dataclasses.replace(message, **changes)
    fields = {f.name: getattr(message, f.name) for f in dataclasses.fields(message) if f.init}
    fields.update(changes)
    del fields["signature"]
    session_id, round_ = fields.pop("session_id"), fields.pop("round")
    return sign_message(type(message), key, session_id, round_, **fields)


def redeal(
    message: ShareKeys,
    key: SigningKey,
    change: Callable[[DealtShare], DealtShare],
    *,
    dealer: SecAggClient | None = None,
) -> ShareKeys:
    """``message`` (a dealer's ShareKeys) with ``change`` applied to every DealtShare, the
    dealer's commitment re-signed by ``key`` over the new shares' Merkle root, and the ShareKeys
    re-signed: a dishonest dealer that stands by what it dealt. ``dealer``, the dealer's own
    client object, is told the new commitment (an honest client refuses a bundle without the
    commitment it signed, so a dishonest one that re-dealt must know what it re-signed)."""
    dealt = tuple(change(d) for d in message.dealt)
    commitment = resign(message.commitment, key, dealt_root=merkle.root(dealt_leaves(dealt)))
    if dealer is not None:
        dealer._commitment = cast(ShareCommitment, commitment)
    return cast(ShareKeys, resign(message, key, commitment=commitment, dealt=dealt))
