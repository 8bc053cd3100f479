"""The Flower ClientApp: a relay from the SuperNode to the institution's agent.

Flower starts a ClientApp process for each message. This one takes the engine request
(``content["securefed"]["request"]``, bytes), hands it to the institution's long-lived agent
over the Unix socket in the node's state directory (node config ``state-dir``), and returns the
agent's answer (``content["securefed"]["reply"]``). It holds no secret and parses nothing: the
keys, the shares, the accountant and the ledger stay in the agent
(:mod:`securefed.runtime.flower.agent`). An agent that is down makes the message fail, which
the coordinator counts as silence (a dropout of that phase).

An empty request is an echo: answered with empty bytes here, without the agent, so that the
ServerApp can measure what one exchange costs on Flower alone (``echo_rtt_s``, docs/deploy.md).

Needs the ``flower`` extra (``pip install 'securefed[flower]'``). Imports only flwr and
:mod:`.relay` (the standard library): Flower starts this process once for every message.
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
    """Pass one engine request to the agent and its answer back (an empty one is an echo)."""
    request = message.content[RECORD]["request"]
    if not isinstance(request, bytes):
        raise ConfigError("a securefed message carries bytes")
    if request:
        state_dir = context.node_config.get("state-dir")
        if not isinstance(state_dir, str) or not state_dir:
            raise ConfigError("the SuperNode needs --node-config \"state-dir='DIR'\"")
        reply = ask(Path(state_dir), request, timeout=AGENT_TIMEOUT_S)
    else:
        reply = b""
    return Message(RecordDict({RECORD: ConfigRecord({"reply": reply})}), reply_to=message)
