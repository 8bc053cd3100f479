"""The Flower ClientApp: a relay from the SuperNode to the institution's agent.

Flower starts a ClientApp process for each message. This one takes the deployment message
(``content["securefed"]["request"]``, bytes), hands it to the institution's long-lived agent
over the Unix socket in the node's state directory (node config ``state-dir``), and returns the
agent's answer (``content["securefed"]["reply"]``). It holds no secret and parses nothing: the
keys, the shares, the accountant and the ledger stay in the agent
(:mod:`securefed.runtime.flower.institution`). An agent that is down makes the message fail,
which the coordinator counts as silence (a dropout of that phase).

Needs the ``flower`` extra (``pip install 'securefed[flower]'``).
"""

from __future__ import annotations

from pathlib import Path

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from securefed.errors import ConfigError
from securefed.runtime.flower.relay import ask

__all__ = ["RECORD", "app"]

RECORD = "securefed"
AGENT_TIMEOUT_S = 900.0  # one local training round at most; the coordinator's own timeout rules

app = ClientApp()


@app.query()
def relay(message: Message, context: Context) -> Message:
    """Pass one deployment message to the agent and its answer back."""
    state_dir = context.node_config.get("state-dir")
    if not isinstance(state_dir, str) or not state_dir:
        raise ConfigError("the SuperNode needs --node-config \"state-dir='DIR'\"")
    request = message.content[RECORD]["request"]
    if not isinstance(request, bytes):
        raise ConfigError("a securefed message carries bytes")
    reply = ask(Path(state_dir), request, timeout=AGENT_TIMEOUT_S)
    return Message(RecordDict({RECORD: ConfigRecord({"reply": reply})}), reply_to=message)
