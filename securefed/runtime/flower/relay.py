"""The local socket between an institution's ClientApp relay and its agent.

One request per connection on ``<state-dir>/agent.sock`` (a Unix socket, mode 0600, in a 0700
directory: only the institution's own account can connect): an 8-byte big-endian length, then
the deployment message; the answer framed the same way. This module is deliberately light
(standard library and :mod:`securefed.errors` only), because Flower starts the ClientApp --
which imports it -- once for every message.
"""

from __future__ import annotations

import socket
import struct
from pathlib import Path

from securefed.errors import RemoteProtocolError

__all__ = ["MAX_FRAME", "SOCKET_NAME", "ask", "read_frame", "socket_path", "write_frame"]

SOCKET_NAME = "agent.sock"
MAX_FRAME = 1 << 31
_FRAME = struct.Struct(">Q")


def socket_path(state_dir: Path) -> Path:
    """Where the agent of ``state_dir`` listens."""
    return Path(state_dir) / SOCKET_NAME


def _recv_exact(conn: socket.socket, size: int) -> bytes:
    chunks, remaining = [], size
    while remaining:
        chunk = conn.recv(min(remaining, 1 << 20))
        if not chunk:
            raise RemoteProtocolError("the connection closed mid-frame")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def read_frame(conn: socket.socket) -> bytes:
    """One frame; RemoteProtocolError if the peer closes early or announces > MAX_FRAME."""
    (size,) = _FRAME.unpack(_recv_exact(conn, _FRAME.size))
    if size > MAX_FRAME:
        raise RemoteProtocolError("frame too large")
    return _recv_exact(conn, size)


def write_frame(conn: socket.socket, data: bytes) -> None:
    """One frame (RemoteProtocolError-free: OSError if the peer is gone)."""
    conn.sendall(_FRAME.pack(len(data)) + data)


def ask(state_dir: Path, request: bytes, *, timeout: float) -> bytes:
    """One request to the agent of ``state_dir``; OSError if it is down or too slow."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(timeout)
        conn.connect(str(socket_path(state_dir)))
        write_frame(conn, request)
        return read_frame(conn)
