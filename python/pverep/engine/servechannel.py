"""The data channel of one import served by ``pverep serve`` (engine/serve.py).

The session listens on 127.0.0.1 only, on a port of its own per import request, and tells the
source the port and a one-time random key in its ``ready`` message (over the session's ssh
channel, which only the source holds). The source reaches the port through its ssh master
(``ssh -W 127.0.0.1:<port>``) and sends the key as the channel's first bytes: a connection
without it (another local process on the target) is refused and never feeds the receive. The
session then writes ``ok`` back, so the source knows the forwarding works before it sends a
byte of the stream (and falls back to the per-verb import when it does not).
"""

from __future__ import annotations

import hmac
import secrets
import select
import socket
import threading
import time
from collections.abc import Callable

from pverep.errors import PverepError

KEY_BYTES = 32
ACK = b"ok\n"
#: How long the source may take to connect once it was told the port.
ACCEPT_TIMEOUT = 60.0
#: How long a connection may take to send the key.
KEY_TIMEOUT = 10.0
_POLL = 0.2


class DataChannel:
    """A listener for one import; ``accept`` returns the one connection that proved the key."""

    def __init__(self, closing: threading.Event, *, accept_timeout: float = ACCEPT_TIMEOUT) -> None:
        self.key = secrets.token_bytes(KEY_BYTES)
        self._closing = closing
        self._accept_timeout = accept_timeout
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(4)
        self.port: int = self._listener.getsockname()[1]

    def accept(self, log: Callable[[str], None]) -> socket.socket:
        deadline = time.monotonic() + self._accept_timeout
        fd = self._listener.fileno()
        while time.monotonic() < deadline:
            if self._closing.is_set():
                raise PverepError("data channel: the session ended")
            if not select.select([fd], [], [], _POLL)[0]:
                continue
            conn, _ = self._listener.accept()
            if self._authenticated(conn):
                conn.sendall(ACK)
                return conn
            log("data channel: refused a connection without this request's key")
            conn.close()
        raise PverepError(f"data channel: no connection within {self._accept_timeout:g} s")

    def _authenticated(self, conn: socket.socket) -> bool:
        conn.settimeout(KEY_TIMEOUT)
        got = b""
        try:
            while len(got) < KEY_BYTES:
                chunk = conn.recv(KEY_BYTES - len(got))
                if not chunk:
                    return False
                got += chunk
        except OSError:
            return False
        finally:
            conn.settimeout(None)
        return hmac.compare_digest(got, self.key)

    def close(self) -> None:
        self._listener.close()

    def __enter__(self) -> DataChannel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
