"""Run the session setup (the secret sketch seed) in memory, over the wire encoding."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from securefed.errors import ProtocolError
from securefed.secagg.messages import Message, SketchSeedDelivery, decode
from securefed.secagg.session import SessionSetupClient, SessionSetupServer
from securefed.testing.harness import Federation

__all__ = ["run_session_setup"]

DeliveryHook = Callable[[int, SketchSeedDelivery], Sequence[Message]]


def _wire(message: Message) -> Message:
    return decode(message.to_bytes())


def _as_is(recipient: int, message: SketchSeedDelivery) -> Sequence[Message]:
    return (message,)


def run_session_setup(
    federation: Federation,
    *,
    session_id: bytes,
    random_bytes: Callable[[int], bytes] = os.urandom,
    delivery_hook: DeliveryHook = _as_is,
) -> tuple[dict[int, SessionSetupClient], SessionSetupServer, dict[int, ProtocolError]]:
    """All clients and the server through the setup; ``delivery_hook`` may replace deliveries.

    Returns the client objects (``sketch_seed``, ``commitment``), the server, and the errors of
    clients that failed.
    """
    n = federation.roster.size
    clients = {
        i: SessionSetupClient(
            federation.roster,
            session_id=session_id,
            index=i,
            identity=federation.client_keys[i],
            random_bytes=random_bytes,
        )
        for i in range(n)
    }
    server = SessionSetupServer(
        federation.roster, session_id=session_id, identity=federation.server_key
    )
    errors: dict[int, ProtocolError] = {}
    for client in clients.values():
        server.receive(_wire(client.start()))
    directory = server.directory()
    for client in clients.values():
        for offer in client.receive(_wire(directory)):
            server.receive(_wire(offer))
    for recipient, delivery in server.deliveries():
        for message in delivery_hook(recipient, delivery):
            try:
                clients[recipient].receive(_wire(message))
            except ProtocolError as exc:
                errors[recipient] = exc
    return clients, server, errors
