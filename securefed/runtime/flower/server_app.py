"""The Flower ServerApp: the coordinator's protocol, driven over Flower's grid.

``flwr run`` starts it on the SuperLink's machine. It reads its settings from the Flower run
configuration (the keys of :data:`~securefed.runtime.flower.agent.SERVER_RUN_CONFIG`,
overridden with ``flwr run -c``), loads the securefed run configuration, the pinned roster and
the server's identity key, and runs
:class:`~securefed.runtime.flower.coordinator.Coordinator` with :class:`GridExchange`: every
deployment message travels as one ``bytes`` value (``content["securefed"]["request"]``) of a
Flower ``query`` message, the reply the same way back. Flower never parses securefed's bytes.

Needs the ``flower`` extra (``pip install 'securefed[flower]'``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

from securefed.errors import ConfigError
from securefed.runtime.config import load_run_config
from securefed.runtime.flower.agent import SERVER_RUN_CONFIG
from securefed.runtime.flower.coordinator import Coordinator, PhaseTimeouts
from securefed.runtime.flower.identity import load_identity_key
from securefed.secagg.roster import load_roster

__all__ = ["GridExchange", "app"]

RECORD = "securefed"

app = ServerApp()


class GridExchange:
    """The coordinator's :class:`~securefed.runtime.flower.coordinator.Exchange` on a grid."""

    def __init__(self, grid: Grid) -> None:
        self._grid = grid

    def nodes(self) -> list[int]:
        return sorted(self._grid.get_node_ids())

    def exchange(self, requests: Mapping[int, bytes], *, timeout: float) -> dict[int, bytes]:
        """One message to each node, the replies that came within ``timeout`` seconds; a reply
        that is an error (the node's agent is down, its ClientApp failed) counts as silence."""
        messages = [
            Message(
                RecordDict({RECORD: ConfigRecord({"request": data})}),
                dst_node_id=node,
                message_type="query",
            )
            for node, data in requests.items()
        ]
        replies: dict[int, bytes] = {}
        for reply in self._grid.send_and_receive(messages, timeout=timeout):
            if reply.has_error() or RECORD not in reply.content:
                continue
            data = reply.content[RECORD].get("reply")
            if isinstance(data, bytes):
                replies[reply.metadata.src_node_id] = data
        return replies


def _setting(context: Context, key: str) -> str | float | bool:
    value = context.run_config.get(key, SERVER_RUN_CONFIG[key])
    if not isinstance(value, (str, float, int, bool)):
        raise ConfigError(f"run config {key!r} must be a string, number or boolean")
    return value


def _path(context: Context, key: str) -> Path:
    value = _setting(context, key)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"set the run config {key!r} (flwr run -c '{key}=\"...\"')")
    return Path(value)


def _pauses(text: str) -> frozenset[tuple[int, str]]:
    pauses = set()
    for item in filter(None, (part.strip() for part in text.split(","))):
        round_, _, phase = item.partition(":")
        if not round_.isdigit() or not phase:
            raise ConfigError(f"pause-before takes 'round:phase,...', not {item!r}")
        pauses.add((int(round_), phase))
    return frozenset(pauses)


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run every round of the configured deployment; metrics go to ``state-dir``."""
    unsafe = bool(_setting(context, "unsafe-plaintext-key"))
    passphrase_env = None if unsafe else str(_setting(context, "passphrase-env"))
    coordinator = Coordinator(
        config=load_run_config(_path(context, "run-config")),
        roster=load_roster(_path(context, "roster")),
        identity=load_identity_key(
            _path(context, "server-key"), passphrase_env=passphrase_env, unsafe_plaintext=unsafe
        ),
        state_dir=_path(context, "state-dir"),
        exchange=GridExchange(grid),
        timeouts=PhaseTimeouts(
            hello=float(_setting(context, "hello-timeout")),
            train=float(_setting(context, "train-timeout")),
            phase=float(_setting(context, "phase-timeout")),
            join=float(_setting(context, "join-timeout")),
        ),
        pause_before=_pauses(str(_setting(context, "pause-before"))),
        unsafe_key=unsafe,
    )
    coordinator.run()
