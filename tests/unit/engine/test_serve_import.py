"""Imports served by ``pverep serve`` (engine/serve.py, engine/servechannel.py) and their
source end (engine/transfer.transfer_volume_session): the data channel listens on 127.0.0.1,
only a connection with the request's key feeds the receive, a dying channel fails only its
request, a channel that cannot be forwarded falls back to the per-verb import."""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Iterator
from typing import IO, Any

import pytest

from pverep.engine import remote, serve, target, transfer
from pverep.engine.servechannel import KEY_BYTES, DataChannel
from pverep.engine.target import ShellTarget
from pverep.errors import PverepError
from pverep.storage.streamform import ImportMode
from pverep.transport.base import Process
from pverep.transport.peer import PeerCommands
from pverep.transport.serveclient import ServeSession
from tests.unit.engine.test_serve import factory
from tests.unit.zfs_fake import FakeZfsShell

VOL = "local-zfs:subvol-100-disk-0"
END = b"END-OF-STREAM"


@pytest.fixture
def received(monkeypatch: pytest.MonkeyPatch) -> dict[str, bytes]:
    """The receive, faked: it reads its fd to the end; a stream without END is incomplete."""
    got: dict[str, bytes] = {}

    def fake_run_import(plan: remote.ImportPlan, stdin: int, **kw: Any) -> str:
        data = b""
        while chunk := os.read(stdin, 65536):
            data += chunk
        got[plan.volname] = data
        if not data.endswith(END):
            raise PverepError(f"import of '{plan.volname}' failed: incomplete stream")
        return f"local-zfs:{plan.volname}"

    monkeypatch.setattr(serve.remote, "run_import", fake_run_import)
    return got


class Served:
    """A ``serve`` loop in a thread, talked to over two pipes."""

    def __init__(self, shell: FakeZfsShell) -> None:
        in_r, self._in_w = os.pipe()
        self._out_r, out_w = os.pipe()
        self._stdin: IO[bytes] = os.fdopen(in_r, "rb")
        self._stdout: IO[bytes] = os.fdopen(out_w, "wb")
        self.replies = os.fdopen(self._out_r, "rb")
        self.thread = threading.Thread(
            target=serve.serve, args=(factory(shell), self._stdin, self._stdout), daemon=True
        )
        self.thread.start()
        assert json.loads(self.replies.readline())["ops"] == ["prepare", "finalize", "import"]

    def send(self, rid: int, op: str, **args: object) -> None:
        os.write(self._in_w, json.dumps({"id": rid, "op": op, "args": args}).encode() + b"\n")

    def reply(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.replies.readline())
        return doc

    def end(self) -> None:
        os.close(self._in_w)
        self.thread.join(10)
        assert not self.thread.is_alive()
        self._stdout.close()


@pytest.fixture
def served() -> Iterator[Served]:
    s = Served(FakeZfsShell())
    yield s
    if s.thread.is_alive():
        s.end()
    s._stdin.close()
    s.replies.close()


def connect(port: int, first: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(first)
    return sock


def closed_without_ack(sock: socket.socket) -> bool:
    try:
        return sock.recv(16) == b""
    except ConnectionResetError:  # closed with our bytes unread
        return True


def test_only_the_requests_key_feeds_the_receive(
    served: Served, received: dict[str, bytes]
) -> None:
    served.send(1, "import", volid=VOL, format="zfs", snapshot="__replicate_100-0_1__")
    ready = served.reply()
    assert ready["id"] == 1 and ready["ready"] is True
    key = bytes.fromhex(ready["key"])
    assert len(key) == KEY_BYTES
    wrong = bytes(b ^ 1 for b in key)  # one bit off in every byte
    with connect(ready["port"], wrong + b"intruder" + END) as intruder:
        assert closed_without_ack(intruder)
    with connect(ready["port"], key) as sock:
        assert sock.recv(3) == b"ok\n"
        sock.sendall(b"stream-bytes" + END)
        sock.shutdown(socket.SHUT_WR)
        answer = served.reply()
    assert answer == {
        "id": 1, "ok": True, "stdout": f"successfully imported '{VOL}'",
        "log": ["data channel: refused a connection without this request's key"],
    }  # fmt: skip
    assert received == {"subvol-100-disk-0": b"stream-bytes" + END}  # nothing of the intruder


def test_the_channel_listens_on_loopback_only_with_a_fresh_key() -> None:
    closing = threading.Event()
    with DataChannel(closing) as a, DataChannel(closing) as b:
        assert a._listener.getsockname()[0] == "127.0.0.1"
        assert a.key != b.key and a.port != b.port


def test_a_dying_channel_fails_only_its_request(served: Served, received: dict[str, bytes]) -> None:
    served.send(1, "import", volid=VOL, format="zfs", snapshot="__replicate_100-0_1__")
    first = served.reply()
    served.send(2, "import", volid="local-zfs:subvol-100-disk-1", format="zfs",
                snapshot="__replicate_100-0_1__")  # fmt: skip
    second = served.reply()
    with connect(first["port"], bytes.fromhex(first["key"])) as dying:
        assert dying.recv(3) == b"ok\n"
        dying.sendall(b"half a stream")  # then the channel dies
    assert served.reply() == {
        "id": 1, "ok": False, "log": [],
        "error": "import of 'subvol-100-disk-0' failed: incomplete stream",
    }  # fmt: skip
    with connect(second["port"], bytes.fromhex(second["key"])) as sock:
        assert sock.recv(3) == b"ok\n"
        sock.sendall(END)
        sock.shutdown(socket.SHUT_WR)
        assert served.reply()["ok"] is True
    served.send(3, "finalize", jobid="100-0", volids=[VOL], last_sync=2)
    assert served.reply()["id"] == 3  # the session goes on


def test_an_import_is_validated_before_it_gets_a_channel(served: Served) -> None:
    served.send(1, "import", volid=VOL, format="zfs", snapshot="a;b")
    assert served.reply() == {
        "id": 1, "ok": False, "log": [], "error": "invalid snapshot name 'a;b'",
    }  # fmt: skip


def test_an_import_waiting_for_its_channel_ends_with_the_input(served: Served) -> None:
    served.send(1, "import", volid=VOL, format="zfs", snapshot="__replicate_100-0_1__")
    assert served.reply()["ready"] is True
    served.end()
    assert served.reply()["error"] == "data channel: the session ended"


# --- the source end ---------------------------------------------------------------------------


def serve_process(shell_code: str) -> ServeSession:
    import subprocess
    import sys

    popen = subprocess.Popen(
        [sys.executable, "-c", shell_code],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    proc = Process(popen, ["fake-serve"])
    from pverep.transport.serveclient import _read_hello

    hello = _read_hello(proc, 10)
    assert hello is not None
    return ServeSession(proc, "pve2", hello["ops"])


#: A session that offers a channel for every import and never answers it otherwise.
READY_SERVER = """
import json, sys
sys.stdout.write(json.dumps({"serve": "pverep", "version": 1, "ops": ["import"]}) + "\\n")
sys.stdout.flush()
for line in sys.stdin:
    doc = json.loads(line)
    sys.stdout.write(json.dumps({"id": doc["id"], "ready": True, "port": 9,
                                 "key": "ab" * 32}) + "\\n")
    sys.stdout.flush()
"""


class LocalShell:
    node = "pve1"

    def spawn(self, argv: list[str], **kw: Any) -> Process:
        raise AssertionError("nothing is sent when the channel does not connect")


def test_a_channel_that_cannot_be_forwarded_falls_back_to_the_per_verb_import(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    session = serve_process(READY_SERVER)
    per_verb: list[list[str]] = []

    def fake_transfer(local: Any, remote: Any, spec: transfer.TransferSpec, **kw: Any) -> str:
        per_verb.append(spec.import_argv)
        return spec.volid

    monkeypatch.setattr(target, "transfer_volume", fake_transfer)
    forwards: list[int] = []

    def forward(port: int) -> list[str]:
        forwards.append(port)
        # what ssh prints when sshd forbids forwarding; exit 255
        return ["sh", "-c", "echo 'channel 0: open failed: administratively prohibited' >&2;"
                " exit 255"]  # fmt: skip

    t = ShellTarget(
        node="pve2", remote=object(), local=LocalShell(),  # type: ignore[arg-type]
        send_argv=lambda v, s, b, f: ["zfs", "send"], commands=PeerCommands(kind="pverep"),
        stall_timeout=None, session=lambda: session, forward=forward,
    )  # fmt: skip
    log: list[str] = []
    mode = ImportMode()
    for _ in range(2):
        t._send(VOL, ["zfs", "send"], "__replicate_100-0_1__", None, mode, rate_bps=None,
                insecure=False, log=log.append)  # fmt: skip
    assert forwards == [9]  # tried once; the run's later imports go per verb at once
    assert session.channel_works is False
    assert len(per_verb) == 2 and per_verb[0][:3] == ["pverep", "import", VOL]
    assert log == [
        "no data channel through the serve session on 'pve2' (ssh -W 127.0.0.1:9 did not "
        "connect - channel 0: open failed: administratively prohibited): importing per verb"
    ]
    session.close()
