"""FAKE QEMU guest agent: stands in for qemu-ga behind a VM's ``.qga`` socket (no VMs run here).

It serves the agent's wire protocol on a unix socket (``guest-sync-delimited`` answered with
``0xff`` + ``{"return": id}``, then the command's answer), keeps a frozen/thawed state, records
every command it receives (in order, also appended to a file when asked), and can misbehave:
``hang`` commands are never answered, ``fail`` commands answer with an agent error.

    python -m pverep.lab.fakeqga SOCKET [--record FILE] [--hang CMD]... [--fail CMD=DESC]...
                                 [--frozen] [--pidfile FILE]

``--pidfile`` writes this process's pid there, so pverep sees the "VM" as running.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any


class FakeGuestAgent:
    """A fake agent on ``path``; ``start()`` serves it from a thread, ``close()`` stops it."""

    def __init__(
        self,
        path: Path,
        *,
        hang: frozenset[str] = frozenset(),
        fail: Mapping[str, str] | None = None,
        frozen: bool = False,
        record: Path | None = None,
    ) -> None:
        self.path = path
        self.hang = set(hang)
        self.fail = dict(fail or {})
        self.frozen = frozen
        self.record = record
        self.commands: list[str] = []
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._conns: list[socket.socket] = []

    def start(self) -> FakeGuestAgent:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(self.path))
        sock.listen(8)
        self._sock = sock
        self._thread = threading.Thread(target=self.serve, daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()
        for conn in list(self._conns):
            with contextlib.suppress(OSError):
                conn.close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def __enter__(self) -> FakeGuestAgent:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.close()

    def serve(self) -> None:
        assert self._sock is not None
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self._conns.append(conn)
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _note(self, command: str) -> None:
        with self._lock:
            self.commands.append(command)
            if self.record is not None:
                with self.record.open("a") as f:
                    f.write(command + "\n")

    def _answer(self, command: str) -> dict[str, Any]:
        if command in self.fail:
            return {"error": {"class": "GenericError", "desc": self.fail[command]}}
        if command == "guest-fsfreeze-freeze":
            self.frozen = True
            return {"return": 2}  # number of frozen filesystems
        if command == "guest-fsfreeze-thaw":
            self.frozen = False
            return {"return": 2}
        if command == "guest-fsfreeze-status":
            return {"return": "frozen" if self.frozen else "thawed"}
        if command == "guest-ping":
            return {"return": {}}
        return {"error": {"class": "CommandNotFound", "desc": f"The command {command} "
                          "has not been found"}}  # fmt: skip

    def _handle(self, conn: socket.socket) -> None:
        buf = b""
        sync_id: int | None = None
        with conn:
            while True:
                try:
                    chunk = conn.recv(65536)
                except OSError:
                    return
                if not chunk:
                    return
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if not line.strip():
                        continue
                    try:
                        request = json.loads(line)
                    except ValueError:
                        return
                    command = str(request.get("execute"))
                    if command == "guest-sync-delimited":
                        sync_id = int(request["arguments"]["id"])
                        continue
                    self._note(command)
                    if command in self.hang:
                        continue  # never answered, like a command lost in a rebooting guest
                    reply = json.dumps(self._answer(command)).encode()
                    head = b"\xff" + json.dumps({"return": sync_id}).encode() + b"\n"
                    with contextlib.suppress(OSError):
                        conn.sendall(head + reply + b"\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fakeqga", description=__doc__)
    parser.add_argument("socket", type=Path)
    parser.add_argument("--record", type=Path, default=None)
    parser.add_argument("--hang", action="append", default=[])
    parser.add_argument("--fail", action="append", default=[], metavar="CMD=DESC")
    parser.add_argument("--frozen", action="store_true")
    parser.add_argument("--pidfile", type=Path, default=None)
    args = parser.parse_args(argv)
    fail = dict(item.split("=", 1) for item in args.fail)
    agent = FakeGuestAgent(
        args.socket, hang=frozenset(args.hang), fail=fail, frozen=args.frozen, record=args.record
    )
    agent.start()
    if args.pidfile is not None:
        args.pidfile.parent.mkdir(parents=True, exist_ok=True)
        args.pidfile.write_text(f"{os.getpid()}\n")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        agent.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
