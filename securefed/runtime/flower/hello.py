"""The signed ``hello``: which party answers on a Flower node, proven with its identity key.

Each round the coordinator asks every connected node who it is, with a fresh random 32-byte
``challenge``. The institution answers with its party id, ledger head and model size (and, in
attention mode, its session key) and signs, with its roster identity key,

    DOMAIN || challenge || the canonical encoding of the reply without its ``signature``

The coordinator maps a node to a party only if that signature verifies under the pinned roster's
key for the party named. So a node without the party's identity key -- a rogue SuperNode, which
the SuperLink admits because SuperNode authentication is not switched on -- cannot take an
institution's place in a round, and a hello recorded in an earlier round or exchange does not
verify against a new challenge (replay). Guarantees rest on the roster being pinned (what
``securefed keys`` produces) and on the identity keys staying at the institutions.
"""

from __future__ import annotations

import os

from securefed.crypto import SigningKey
from securefed.errors import CryptoError, RemoteProtocolError, SecureFedError
from securefed.runtime.flower.wire import DeployMessage
from securefed.secagg.roster import Roster

__all__ = ["CHALLENGE_BYTES", "HELLO_DOMAIN", "new_challenge", "sign_hello", "verified_party"]

HELLO_DOMAIN = b"securefed/deploy/hello/v1\x00"
CHALLENGE_BYTES = 32
SIGNATURE_FIELD = "signature"


def new_challenge() -> bytes:
    """A fresh hello challenge (``os.urandom``)."""
    return os.urandom(CHALLENGE_BYTES)


def _payload(challenge: bytes, reply: DeployMessage) -> bytes:
    unsigned = {k: v for k, v in reply.fields.items() if k != SIGNATURE_FIELD}
    return HELLO_DOMAIN + challenge + DeployMessage(reply.kind, unsigned).to_bytes()


def sign_hello(identity: SigningKey, challenge: bytes, reply: DeployMessage) -> DeployMessage:
    """``reply`` with its ``signature`` field added.

    Raises:
        RemoteProtocolError: the challenge is not ``CHALLENGE_BYTES`` long (a malformed or
            missing request field: the institution refuses to answer it).
    """
    if len(challenge) != CHALLENGE_BYTES:
        raise RemoteProtocolError(f"a hello challenge is {CHALLENGE_BYTES} bytes")
    signature = identity.sign(_payload(challenge, reply))
    return DeployMessage(reply.kind, {**reply.fields, SIGNATURE_FIELD: signature})


def verified_party(roster: Roster, challenge: bytes, reply: DeployMessage) -> str:
    """The party id a hello ``reply`` to ``challenge`` names, once its signature verifies under
    that party's roster identity key.

    Raises:
        RemoteProtocolError: no party field, a party not in the roster, no signature, or a
            signature that does not verify (forged, made with another key, or made for another
            challenge). Nothing is recorded; the caller leaves the node unmapped.
    """
    try:
        party = reply.text("party")
        signature = reply.get(SIGNATURE_FIELD)
        identity = roster.client(roster.index_of(party)).identity
    except SecureFedError as exc:
        raise RemoteProtocolError(f"unusable hello: {exc}") from None
    try:
        identity.verify(signature, _payload(challenge, reply))
    except CryptoError:
        raise RemoteProtocolError(f"hello claiming {party!r} has a bad signature") from None
    return party
