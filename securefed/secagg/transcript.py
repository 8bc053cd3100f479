"""The transcript hash every client signs in the consistency check (docs/protocol.md).

It covers: the round config digest (roster, every parameter, suite, codec, graph), the
advertisements of U1 (their full signed encodings), the commitments of U2, the members U2' who
masked together (U2 less the clients left out at the share check), the survivor set U3,
and an extensible *signed context*: labelled byte strings that higher layers bind into the round
(the FedAMP weights, the sketch-seed commitment, each party's ledger head). Two parties that saw
different U1, U2, U3, parameters or context compute different hashes, so their signatures do not
count for each other and the round aborts before any secret is revealed.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from securefed.errors import ConfigError
from securefed.secagg.config import RoundConfig
from securefed.secagg.messages import AdvertiseKeys, ShareCommitment
from securefed.secagg.wire import Writer

__all__ = ["ContextItem", "transcript_hash"]

_LABEL = re.compile(r"^[a-z0-9][a-z0-9._/-]{0,63}$")
MAX_CONTEXT_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class ContextItem:
    """One labelled value in the signed context, e.g. ``("fedamp/weights", <encoded xi>)``."""

    label: str
    value: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.label, str) or not _LABEL.match(self.label):
            raise ConfigError("context labels are 1-64 chars of [a-z0-9._/-]")
        if not isinstance(self.value, bytes) or len(self.value) > MAX_CONTEXT_BYTES:
            raise ConfigError("context values are bytes of at most 1 MiB")


def transcript_hash(
    config: RoundConfig,
    *,
    advertisements: Sequence[AdvertiseKeys],
    commitments: Sequence[ShareCommitment],
    members: Sequence[int],
    survivors: Sequence[int],
    context: Sequence[ContextItem] = (),
) -> bytes:
    """SHA-256 over the canonical encoding of everything listed in the module docstring.

    Raises:
        ConfigError: duplicate context labels.
    """
    labels = [item.label for item in context]
    if len(set(labels)) != len(labels):
        raise ConfigError("duplicate context labels")
    w = Writer().blob(b"securefed/v2/transcript").fixed(config.digest(), 32)
    w.items(
        sorted(advertisements, key=lambda a: a.sender),
        lambda w, a: w.fixed(a.digest(), 32),
        limit=1 << 16,
    )
    w.items(
        sorted(commitments, key=lambda c: c.sender),
        lambda w, c: w.fixed(c.digest(), 32),
        limit=1 << 16,
    )
    w.indices(sorted(members), limit=1 << 16)
    w.indices(sorted(survivors), limit=1 << 16)
    ordered = sorted(context, key=lambda item: item.label)
    w.items(
        ordered,
        lambda w, item: w.blob(item.label.encode()).blob(item.value, limit=MAX_CONTEXT_BYTES),
        limit=1 << 10,
    )
    return hashlib.sha256(w.getvalue()).digest()
