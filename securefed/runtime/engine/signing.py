"""The signed join: which party answers on a node, proven with its identity key.

The coordinator sends a fresh random 32-byte ``challenge`` to every node it has not mapped yet,
with the node id it addressed and the run's sketch-seed setup session (if any). The institution
answers with a :class:`~securefed.runtime.engine.messages.Joined` and signs, with its roster
identity key,

    DOMAIN || challenge || roster digest || node id || session || the reply without its signature

The coordinator maps a node to a party only if that signature verifies under the pinned roster's
key for the party named, over the challenge, node and session IT sent to that node. So a node
without the party's identity key (a rogue Flower SuperNode) cannot take an institution's place,
a reply recorded for an earlier challenge does not verify (replay), a reply relayed from the node
it was asked on to another node does not verify (the node id), nor one given in another session,
and a party holding another roster refuses to be counted in this one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from securefed.audit import Head
from securefed.crypto import SigningKey
from securefed.errors import ConfigError, CryptoError, RemoteProtocolError, SecureFedError
from securefed.runtime.engine.messages import CHALLENGE_BYTES, Join, Joined
from securefed.secagg.roster import Roster
from securefed.secagg.wire import Writer

__all__ = [
    "FINAL_HEAD_DOMAIN",
    "JOIN_DOMAIN",
    "sign_final_head",
    "sign_joined",
    "verified_party",
    "verify_final_heads",
]

JOIN_DOMAIN = b"securefed/engine/join/v2\x00"
FINAL_HEAD_DOMAIN = b"securefed/engine/final-head/v1\x00"


def _payload(roster: Roster, request: Join | None, reply: Joined) -> bytes:
    if request is None:
        raise RemoteProtocolError("a join reply to no join request")
    w = Writer().fixed(JOIN_DOMAIN, len(JOIN_DOMAIN)).fixed(request.challenge, CHALLENGE_BYTES)
    w.fixed(roster.digest(), 32).u64(request.node).blob(request.setup)
    reply.write_unsigned(w)
    return w.getvalue()


def sign_joined(identity: SigningKey, roster: Roster, request: Join, reply: Joined) -> Joined:
    """``reply`` with its signature over ``request``'s challenge, node and session and
    ``roster``'s digest."""
    signature = identity.sign(_payload(roster, request, reply))
    return dataclasses.replace(reply, signature=signature)


def verified_party(roster: Roster, request: Join | None, reply: Joined) -> int:
    """The roster index of the party a join ``reply`` names, once its signature verifies under
    that party's roster key over ``request`` (the join the coordinator sent to that node).

    Raises:
        RemoteProtocolError: no request, a party not in the roster, or a signature that does not
            verify (forged, another key, another challenge, node, session or roster).
    """
    try:
        index = roster.index_of(reply.party)
        identity = roster.client(index).identity
    except SecureFedError as exc:
        raise RemoteProtocolError(f"unusable join reply: {exc}") from None
    try:
        identity.verify(reply.signature, _payload(roster, request, reply))
    except CryptoError:
        raise RemoteProtocolError(
            f"a join reply claiming {reply.party!r} has a bad signature"
        ) from None
    if reply.head.actor != reply.party:
        raise RemoteProtocolError("a join reply's head names another party")
    return index


def _final_payload(roster: Roster, head: Head) -> bytes:
    return FINAL_HEAD_DOMAIN + roster.digest() + head.to_bytes()


def sign_final_head(identity: SigningKey, roster: Roster, head: Head) -> bytes:
    """A party's signature of its last head, for the run's final checkpoint."""
    return identity.sign(_final_payload(roster, head))


def verify_final_heads(roster: Roster, heads: Sequence[Head], signatures: Sequence[bytes]) -> None:
    """Check that each head's owner (a roster client, or the server) signed it.

    Raises:
        RemoteProtocolError: a head of a party outside the roster, a missing signature, or one
            that does not verify.
    """
    if len(heads) != len(signatures):
        raise RemoteProtocolError("one signature per sealed head")
    for head, signature in zip(heads, signatures, strict=True):
        try:
            if head.actor == roster.server.party_id:
                key = roster.server.identity
            else:
                key = roster.client(roster.index_of(head.actor)).identity
            key.verify(signature, _final_payload(roster, head))
        except (CryptoError, ConfigError):
            raise RemoteProtocolError(
                f"the sealed head of {head.actor} is not signed by it"
            ) from None
