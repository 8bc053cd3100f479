"""What both protocol roles share: the round, an identity, a stage, events, the graph, signing."""

from __future__ import annotations

from typing import Any, TypeVar

from securefed.crypto import SigningKey
from securefed.errors import LocalProtocolError
from securefed.secagg.config import RoundConfig
from securefed.secagg.events import ProtocolEvent
from securefed.secagg.graph import MaskingGraph
from securefed.secagg.messages import Message, sign_message
from securefed.secagg.stages import Stage

__all__ = ["ProtocolParty"]

M = TypeVar("M", bound=Message)


class ProtocolParty:
    """Base of :class:`~securefed.secagg.client.SecAggClient` and the server."""

    def __init__(self, config: RoundConfig, identity: SigningKey, stage: Stage) -> None:
        self.config = config
        self._identity = identity
        self._stage = stage
        self._events: list[ProtocolEvent] = []
        self._graph: MaskingGraph | None = None

    @property
    def stage(self) -> Stage:
        return self._stage

    def drain_events(self) -> list[ProtocolEvent]:
        """Events since the last call (oldest first)."""
        events, self._events = self._events, []
        return events

    @property
    def _mask_graph(self) -> MaskingGraph:
        if self._graph is None:
            raise LocalProtocolError("the masking graph exists only after the key directory")
        return self._graph

    def _sign(self, cls: type[M], **fields: Any) -> M:
        """A ``cls`` message of this round with ``fields``, signed with this party's identity."""
        config = self.config
        return sign_message(cls, self._identity, config.session_id, config.round, **fields)
