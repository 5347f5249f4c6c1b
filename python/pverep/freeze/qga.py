"""A QEMU guest agent client over the VM's ``/var/run/qemu-server/<vmid>.qga`` socket.

The wire protocol PVE's QMPClient speaks to the agent: one connection per command; the command
is preceded by ``guest-sync-delimited`` with a fresh id, the agent answers the sync with a
``0xff`` byte followed by ``{"return": <id>}`` and then the command's own answer, one JSON
document per line. Answers to earlier, abandoned commands (a freeze that timed out is still
queued in the guest) carry a smaller sync id and are skipped.

Every wait is bounded: a hung agent costs at most the given timeout, never the whole run.
Error texts are qemu-server's (``VM <vmid> qga command '<cmd>' failed - got timeout``).
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from pverep.errors import PverepError

_SYNC_MARK = b"\xff"
_ids = itertools.count(1)


class AgentError(PverepError):
    """The agent could not be asked (no socket, no answer in time, broken answer)."""


class AgentTimeout(AgentError):
    """No answer within the timeout (qemu-server's ``error-is-timeout``)."""


def _next_id() -> int:
    # unique per process and call, increasing: the agent echoes it in the sync answer
    return os.getpid() * 1000 + next(_ids)


class GuestAgent:
    """The guest agent of one VM."""

    def __init__(self, vmid: int, socket_path: Path) -> None:
        self.vmid = vmid
        self.socket_path = socket_path

    def _failed(self, command: str, why: str) -> str:
        return f"VM {self.vmid} qga command '{command}' failed - {why}"

    def command(self, command: str, timeout: float, arguments: dict[str, Any] | None = None) -> Any:
        """Run ``command``; returns its ``return`` value, or ``{"error": {...}}`` when the agent
        answered with an error (as qemu-server's mon_cmd does). Raises AgentError when there is
        no answer (AgentTimeout after ``timeout`` seconds)."""
        if not self.socket_path.exists():
            raise AgentError("unable to open monitor socket")
        deadline = time.monotonic() + timeout
        sync_id = _next_id()
        request = (
            json.dumps({"execute": "guest-sync-delimited", "arguments": {"id": sync_id}})
            + "\n"
            + json.dumps({"execute": command, "arguments": arguments or {}})
            + "\n"
        ).encode()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(max(0.001, min(1.0, timeout)))
            try:
                sock.connect(str(self.socket_path))
            except OSError as err:
                raise AgentError(
                    f"unable to connect to VM {self.vmid} qga socket - {err.strerror or err}"
                ) from None
            try:
                sock.sendall(request)
                reply = self._read_reply(sock, sync_id, deadline)
            except TimeoutError:
                raise AgentTimeout(self._failed(command, "got timeout")) from None
            except OSError as err:
                raise AgentError(self._failed(command, str(err.strerror or err))) from None
            except ValueError as err:
                raise AgentError(self._failed(command, f"bad answer: {err}")) from None
        if not isinstance(reply, dict):
            raise AgentError(self._failed(command, "bad answer: not an object"))
        if "return" in reply:
            return reply["return"]
        if "error" in reply:
            return {"error": reply["error"]}
        raise AgentError(self._failed(command, "bad answer: neither return nor error"))

    @staticmethod
    def _read_reply(sock: socket.socket, sync_id: int, deadline: float) -> Any:
        """The command's answer after the sync answer carrying ``sync_id``."""
        buf = b""
        while True:
            # a sync answer: 0xff, then the sync's line, then the command's line
            mark = buf.rfind(_SYNC_MARK)
            if mark >= 0:
                lines = buf[mark + 1 :].split(b"\n")
                if len(lines) >= 3:  # two complete lines
                    got = json.loads(lines[0])
                    got_id = got.get("return") if isinstance(got, dict) else None
                    if not isinstance(got_id, int):
                        raise ValueError("sync answer without id")
                    if got_id == sync_id:
                        return json.loads(lines[1])
                    if got_id > sync_id:
                        raise ValueError(f"got wrong command id '{got_id}' (expected {sync_id})")
                    buf = b"\n".join(lines[2:])  # an abandoned command's answer: skip it
                    continue
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            sock.settimeout(left)
            chunk = sock.recv(65536)
            if not chunk:
                raise OSError("connection closed by the agent")
            buf += chunk
