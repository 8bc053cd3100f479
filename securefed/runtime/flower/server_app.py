"""The Flower ServerApp: the engine's coordinator, driven over Flower's grid.

``flwr run`` starts it on the SuperLink's machine. It reads its settings from the Flower run
configuration (the keys of :data:`~securefed.runtime.flower.deployment.SERVER_RUN_CONFIG`,
overridden with ``flwr run -c``) and runs :func:`~securefed.runtime.flower.server.run_server`
over :class:`GridExchange`: every engine request travels as one ``bytes`` value
(``content["securefed"]["request"]``) of a Flower ``query`` message to its node, the reply the
same way back (``["reply"]``). Flower never parses securefed's bytes.

Needs the ``flower`` extra (``pip install 'securefed[flower]'``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

from securefed.runtime.engine.coordinator import Wait
from securefed.runtime.flower.server import ServerSettings, is_join_request, run_server

__all__ = ["RECORD", "GridExchange", "app"]

RECORD = "securefed"

app = ServerApp()


class GridExchange:
    """The coordinator's exchange on a Flower grid.

    It pushes one message per node and pulls the replies every ``poll_interval`` seconds
    itself: Flower's own ``send_and_receive`` waits 3 s between pulls, which would put up to
    3 s on every exchange (docs/deploy.md, "Where the time goes").

    A node whose reply was an error (its ClientApp failed: the agent behind it is down) is left
    out of :meth:`nodes` until the next exchange: the coordinator then forgets which party was
    there, and its next join request finds out whether the agent is back. A node that is merely
    slow stays (silence is a dropout of that phase, not a departure).

    A join request to a node that is not (or no longer) an institution's is waited for at most
    ``join_timeout`` seconds, whatever the exchange's own timeout: a silent rogue node then
    slows an exchange that carries joins by that much, never by a training timeout.
    """

    def __init__(
        self,
        grid: Grid,
        *,
        poll_interval: float = 0.1,
        join_timeout: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._grid = grid
        self._poll = poll_interval
        self._join_timeout = join_timeout
        self._clock = clock
        self._sleep = sleep
        self._failed: set[int] = set()

    def nodes(self) -> list[int]:
        return sorted(set(self._grid.get_node_ids()) - self._failed)

    def exchange(self, requests: Mapping[int, bytes], *, timeout: float) -> dict[int, bytes]:
        """One message to each node, the replies that came within ``timeout`` seconds; a reply
        that is an error (the node's agent is down, its ClientApp failed), malformed or from
        another node than the one asked counts as silence."""
        self._failed = set()
        if not requests:
            return {}
        nodes = list(requests)
        messages = [
            Message(
                RecordDict({RECORD: ConfigRecord({"request": requests[node]})}),
                dst_node_id=node,
                message_type="query",
            )
            for node in nodes
        ]
        pending = {
            message_id: node
            for message_id, node in zip(self._grid.push_messages(messages), nodes, strict=True)
            if message_id
        }
        started = self._clock()
        deadline = started + timeout
        joins = {n for n, data in requests.items() if is_join_request(data)}
        join_deadline = deadline
        if self._join_timeout is not None:
            join_deadline = min(deadline, started + self._join_timeout)
        replies: dict[int, bytes] = {}
        while pending:
            for reply in self._grid.pull_messages(list(pending)):
                node = pending.pop(reply.metadata.reply_to_message_id, None)
                if node is None:
                    continue
                if reply.has_error():
                    self._failed.add(node)
                    continue
                if reply.metadata.src_node_id != node or RECORD not in reply.content:
                    continue
                data = reply.content[RECORD].get("reply")
                if isinstance(data, bytes):
                    replies[node] = data
            now = self._clock()
            waiting_for_joins_only = set(pending.values()) <= joins
            until = join_deadline if waiting_for_joins_only else deadline
            if not pending or now >= until:
                break
            self._sleep(min(self._poll, max(0.0, until - now)))
        return replies


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run the configured deployment; ledger, progress and metrics go to ``state-dir``."""
    settings = ServerSettings.from_run_config(dict(context.run_config))
    exchange = GridExchange(
        grid, poll_interval=settings.poll_interval, join_timeout=settings.timeouts[Wait.JOIN]
    )
    run_server(settings, exchange)
