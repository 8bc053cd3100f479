"""Checks every role applies to a message before acting on it: right round, authentic sender."""

from __future__ import annotations

from securefed.crypto import VerifyKey
from securefed.errors import CryptoError, RemoteProtocolError
from securefed.secagg.config import RoundConfig
from securefed.secagg.messages import Message, SignedBy
from securefed.secagg.roster import Roster

__all__ = [
    "check_round",
    "verify_client_signature",
    "verify_message",
    "verify_server_signature",
]


def check_round(config: RoundConfig, message: Message) -> None:
    """Raise unless ``message`` belongs to this session and round (no replays across rounds)."""
    if message.session_id != config.session_id or message.round != config.round:
        raise RemoteProtocolError(f"{type(message).__name__} from another session or round")


def verify_server_signature(config: RoundConfig, message: Message) -> None:
    """Raise unless ``message`` is a server message signed by the pinned server key."""
    if message.SIGNER is not SignedBy.SERVER:
        raise RemoteProtocolError(f"{type(message).__name__} is not a server message")
    _verify(config.roster.server.identity, message)


def verify_client_signature(config: RoundConfig, message: Message) -> None:
    """Raise unless ``message`` is signed by the roster client it names as sender."""
    sender = getattr(message, "sender", None)
    if message.SIGNER is not SignedBy.CLIENT or not isinstance(sender, int):
        raise RemoteProtocolError(f"{type(message).__name__} is not a client message")
    if not config.roster.is_member(sender):
        raise RemoteProtocolError(f"sender {sender} is not in the roster")
    _verify(config.roster.client(sender).identity, message)


def _verify(key: VerifyKey, message: Message) -> None:
    signature: bytes = getattr(message, "signature")  # noqa: B009
    try:
        key.verify(signature, message.signed_payload())
    except CryptoError as exc:
        raise RemoteProtocolError(f"bad signature on {type(message).__name__}") from exc


def verify_message(roster: Roster, message: Message, *, session_id: bytes, round_: int) -> None:
    """Session-level check (no RoundConfig yet): right session and round, and signed by the
    server or by the roster client the message names as sender."""
    if message.session_id != session_id or message.round != round_:
        raise RemoteProtocolError(f"{type(message).__name__} from another session or round")
    if message.SIGNER is SignedBy.SERVER:
        _verify(roster.server.identity, message)
        return
    sender = getattr(message, "sender", None)
    if not isinstance(sender, int) or not roster.is_member(sender):
        raise RemoteProtocolError(f"sender {sender} is not in the roster")
    _verify(roster.client(sender).identity, message)
