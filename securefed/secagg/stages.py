"""The one transition table of the protocol, for both roles (the h11 pattern).

Both roles move through the same phases. A client in phase P has sent its P-message and waits for
the server's message that closes P; the server in phase P collects the clients' P-messages until
the driver calls ``advance()``. Every legal (role, stage, message type) triple is listed here and
nowhere else; anything not listed is an illegal message in that stage.
"""

from __future__ import annotations

from enum import Enum

from securefed.errors import LocalProtocolError, RemoteProtocolError
from securefed.secagg.messages import MessageType

__all__ = ["Role", "Stage", "advance_stage", "next_stage", "settle", "start_stage"]


class Role(Enum):
    CLIENT = "client"
    SERVER = "server"


class Stage(Enum):
    IDLE = "idle"
    ADVERTISE = "advertise"
    SHARE = "share"
    VERIFY = "verify"  # holders check their shares; receipts with complaints
    MASK = "mask"
    CONSISTENCY = "consistency"
    UNMASK = "unmask"
    DONE = "done"
    ABORTED = "aborted"

    @property
    def terminal(self) -> bool:
        return self in (Stage.DONE, Stage.ABORTED)


T = MessageType
_TRANSITIONS: dict[tuple[Role, Stage, MessageType], Stage] = {
    # client: the server's message that closes a phase moves the client to the next phase
    (Role.CLIENT, Stage.ADVERTISE, T.KEY_DIRECTORY): Stage.SHARE,
    (Role.CLIENT, Stage.SHARE, T.SHARE_BUNDLE): Stage.VERIFY,
    (Role.CLIENT, Stage.VERIFY, T.MASK_REQUEST): Stage.MASK,
    (Role.CLIENT, Stage.MASK, T.CONSISTENCY_REQUEST): Stage.CONSISTENCY,
    (Role.CLIENT, Stage.CONSISTENCY, T.UNMASK_REQUEST): Stage.UNMASK,
    (Role.CLIENT, Stage.UNMASK, T.BLINDED_OUTPUT): Stage.DONE,
    # server: clients' messages are collected within a phase
    (Role.SERVER, Stage.ADVERTISE, T.ADVERTISE_KEYS): Stage.ADVERTISE,
    (Role.SERVER, Stage.SHARE, T.SHARE_KEYS): Stage.SHARE,
    (Role.SERVER, Stage.VERIFY, T.SHARE_RECEIPT): Stage.VERIFY,
    (Role.SERVER, Stage.MASK, T.MASKED_INPUT): Stage.MASK,
    (Role.SERVER, Stage.CONSISTENCY, T.CONSISTENCY_SIGNATURE): Stage.CONSISTENCY,
    (Role.SERVER, Stage.UNMASK, T.UNMASK_RESPONSE): Stage.UNMASK,
}
# An authentic Abort from the server ends any live client stage.
for _stage in (
    Stage.ADVERTISE,
    Stage.SHARE,
    Stage.VERIFY,
    Stage.MASK,
    Stage.CONSISTENCY,
    Stage.UNMASK,
):
    _TRANSITIONS[(Role.CLIENT, _stage, T.ABORT)] = Stage.ABORTED

_ADVANCE = {
    Stage.ADVERTISE: Stage.SHARE,
    Stage.SHARE: Stage.VERIFY,
    Stage.VERIFY: Stage.MASK,
    Stage.MASK: Stage.CONSISTENCY,
    Stage.CONSISTENCY: Stage.UNMASK,
    Stage.UNMASK: Stage.DONE,
}


def start_stage(role: Role, stage: Stage) -> Stage:
    """The stage after a party starts the round. Raises LocalProtocolError if not IDLE."""
    if stage is not Stage.IDLE:
        raise LocalProtocolError(f"a {role.value} can only start from IDLE, not {stage.value}")
    return Stage.ADVERTISE


def next_stage(role: Role, stage: Stage, message_type: MessageType) -> Stage:
    """The stage after receiving ``message_type``. Raises RemoteProtocolError if illegal."""
    try:
        return _TRANSITIONS[(role, stage, message_type)]
    except KeyError:
        raise RemoteProtocolError(
            f"{message_type.name} is not allowed for a {role.value} in stage {stage.value}"
        ) from None


def settle(role: Role, stage: Stage, *, awaiting_output: bool) -> Stage:
    """A client that answered the unmask request is DONE unless it waits for its own output
    (attention mode: the target's blinded personalized output)."""
    if role is Role.CLIENT and stage is Stage.UNMASK and not awaiting_output:
        return Stage.DONE
    return stage


def advance_stage(role: Role, stage: Stage) -> Stage:
    """The server's next collection phase. Raises LocalProtocolError if there is none."""
    if role is not Role.SERVER or stage not in _ADVANCE:
        raise LocalProtocolError(f"a {role.value} cannot advance from stage {stage.value}")
    return _ADVANCE[stage]
