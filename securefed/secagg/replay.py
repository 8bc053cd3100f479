"""A client's memory of the rounds it has joined, so that no round can be run twice (DESIGN §3).

Every signed or derived value binds (session, round), so a message from another round never
verifies. What remains is a server replaying a *whole* round: asking a client to take part in a
(session, round) again, with fresh keys, and so learn two different masked inputs under the same
round parameters. :class:`RoundGuard` refuses that. The runtime persists its ``state_dict`` in the
client's state directory (atomically, before the client sends anything) and reloads it on restart.
"""

from __future__ import annotations

from typing import Any

from securefed.errors import ConfigError, LocalProtocolError

__all__ = ["RoundGuard"]

STATE_VERSION = 1


class RoundGuard:
    """The highest round a client has started, per session."""

    __slots__ = ("_highest",)

    def __init__(self) -> None:
        self._highest: dict[bytes, int] = {}

    def claim(self, session_id: bytes, round_: int) -> None:
        """Record that this client starts ``round_`` of ``session_id``.

        Raises:
            LocalProtocolError: the client already started this round or a later one of the
                same session (a replayed or rewound round). Nothing is recorded.
        """
        highest = self._highest.get(session_id)
        if highest is not None and round_ <= highest:
            raise LocalProtocolError(
                f"round {round_} of this session was already started (highest seen: {highest}); "
                "a round is never run twice"
            )
        self._highest[session_id] = round_

    def highest(self, session_id: bytes) -> int | None:
        """The highest round started in ``session_id``, or None."""
        return self._highest.get(session_id)

    def state_dict(self) -> dict[str, Any]:
        """A JSON-ready copy of the state (session ids in hex)."""
        return {
            "version": STATE_VERSION,
            "highest_round": {s.hex(): r for s, r in sorted(self._highest.items())},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replace the state with ``state`` (from :meth:`state_dict`).

        Raises:
            ConfigError: wrong version or malformed content; the guard is left unchanged.
        """
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise ConfigError(f"round-guard state must have version {STATE_VERSION}")
        raw = state.get("highest_round")
        if not isinstance(raw, dict):
            raise ConfigError("round-guard state has no highest_round table")
        loaded: dict[bytes, int] = {}
        for session_hex, round_ in raw.items():
            try:
                session_id = bytes.fromhex(session_hex)
            except (TypeError, ValueError):
                raise ConfigError("round-guard state holds a malformed session id") from None
            if len(session_id) != 32 or isinstance(round_, bool) or not isinstance(round_, int):
                raise ConfigError("round-guard state holds a malformed entry")
            if round_ < 0:
                raise ConfigError("round-guard state holds a negative round")
            loaded[session_id] = round_
        self._highest = loaded
