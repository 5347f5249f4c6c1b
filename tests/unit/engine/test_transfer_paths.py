"""The data paths of engine/transfer.py: secure (the importer's stdin), insecure (TCP) and the
serve session's data channel, with the bytes checked end to end, and their helpers.

Sender, importer, serve session and ``ssh -W`` are FAKES (small Python processes and an
in-process listener): the real ones run in the lab. The importer stores the SHA-256 of what it
received, so every test compares the bytes sent with the bytes that arrived.
"""

from __future__ import annotations

import hashlib
import os
import socket
import struct
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pverep._core import Budget
from pverep.engine import transfer
from pverep.engine.transfer import (
    ChannelUnavailable,
    TransferError,
    TransferSpec,
    _finish,
    _finish_target,
    _Limits,
    _limits,
    _outcome,
    _pipeline_error,
    _read_line,
    _ready_fields,
    _session_answer,
    _set_send_timeout,
    _Watch,
    transfer_volume,
    transfer_volume_session,
)
from pverep.errors import PverepError
from pverep.transport import LocalShell
from pverep.transport.serveclient import Answer, SessionError

VOLID = "local-zfs:vm-100-disk-0"
STREAM = bytes(range(256)) * 1000 + b"tail"
DIGEST = hashlib.sha256(STREAM).hexdigest()

#: FAKE zfs send: the stream on stdout, two lines on stderr.
SENDER = """
import os, sys
sys.stderr.write("full send of rpool/data/vm-100-disk-0@s\\ntotal estimated size is 1K\\n")
sys.stderr.flush()
out = os.fdopen(1, "wb", buffering=0)
out.write(bytes(range(256)) * 1000 + b"tail")
sys.exit(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
"""

#: FAKE importer on stdin: stores the digest in argv[1], exits argv[2].
IMPORTER = """
import hashlib, os, sys
data = sys.stdin.buffer.read()
open(sys.argv[1], "w").write(hashlib.sha256(data).hexdigest())
sys.stderr.write("receiving full stream\\n")
sys.stderr.flush()
code = int(sys.argv[2])
if code == 0:
    print("successfully imported 'local-zfs:vm-100-disk-0'", flush=True)
sys.exit(code)
"""

#: FAKE insecure importer: announces 127.0.0.1 and its port, receives one connection.
TCP_IMPORTER = """
import hashlib, socket, sys
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(1)
print(sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1", flush=True)
print(srv.getsockname()[1], flush=True)
conn, _ = srv.accept()
data = b""
while chunk := conn.recv(65536):
    data += chunk
open(sys.argv[1], "w").write(hashlib.sha256(data).hexdigest())
print("successfully imported 'local-zfs:vm-100-disk-0'", flush=True)
"""


def spec(
    tmp_path: Path, *, send_code: int = 0, recv_code: int = 0, tcp: bool = False
) -> TransferSpec:
    digest = str(tmp_path / "digest")
    importer = [sys.executable, "-c", TCP_IMPORTER, digest] if tcp else [
        sys.executable, "-c", IMPORTER, digest, str(recv_code)]  # fmt: skip
    return TransferSpec(VOLID, [sys.executable, "-c", SENDER, str(send_code)], importer)


def received(tmp_path: Path) -> str:
    return (tmp_path / "digest").read_text()


def summary_ok(line: str) -> bool:
    head = f"{len(STREAM)} bytes (250.0 KiB) copied, "
    return line.startswith(head) and line.endswith(" MB/s") and " s, " in line


@pytest.mark.parametrize("rate", [None, 50_000_000])
def test_secure_transfer_moves_the_stream_and_logs_every_side(
    tmp_path: Path, rate: int | None
) -> None:
    log: list[str] = []
    got = transfer_volume(LocalShell(), LocalShell("pve2"), spec(tmp_path), rate_bps=rate,
                          stall_timeout=20, log=log.append)  # fmt: skip
    assert got == VOLID
    assert received(tmp_path) == DIGEST
    limit = [f"using a bandwidth limit of {rate} bytes per second for transferring '{VOLID}'"]
    assert log[: 1 if rate else 0] == (limit if rate else [])
    summaries = [line for line in log if summary_ok(line)]
    assert len(summaries) == 1
    rest = sorted(set(log) - set(summaries) - set(limit))
    assert rest == [
        "full send of rpool/data/vm-100-disk-0@s",
        "receiving full stream",
        f"successfully imported '{VOLID}'",
        "total estimated size is 1K",
    ]  # the secure path shows the target's lines without a prefix


def test_secure_transfer_with_a_node_budget_says_so(tmp_path: Path) -> None:
    log: list[str] = []
    budget = Budget(80_000_000.0)
    assert transfer_volume(LocalShell(), LocalShell("pve2"), spec(tmp_path), rate_bps=None,
                           stall_timeout=20, log=log.append, budget=budget) == VOLID  # fmt: skip
    assert log[0] == "sharing the node's bandwidth budget of 80000000 bytes per second"
    assert received(tmp_path) == DIGEST


def test_secure_transfer_fails_with_the_rightmost_failing_exit(tmp_path: Path) -> None:
    s = spec(tmp_path, send_code=2, recv_code=3)
    with pytest.raises(TransferError) as exc:
        transfer_volume(LocalShell(), LocalShell("pve2"), s, rate_bps=None, stall_timeout=20,
                        log=lambda line: None)  # fmt: skip
    import shlex

    assert str(exc.value) == (
        f"command '{shlex.join(s.send_argv)} | {shlex.join(s.import_argv)}' failed: exit code 3"
    )


def test_secure_transfer_of_a_failing_sender(tmp_path: Path) -> None:
    s = spec(tmp_path, send_code=4)
    with pytest.raises(TransferError) as exc:
        transfer_volume(LocalShell(), LocalShell("pve2"), s, rate_bps=None, stall_timeout=20,
                        log=lambda line: None)  # fmt: skip
    assert str(exc.value).endswith("' failed: exit code 4")


@pytest.mark.parametrize("rate", [None, 50_000_000])
def test_insecure_transfer_goes_over_tcp(tmp_path: Path, rate: int | None) -> None:
    log: list[str] = []
    got = transfer_volume(LocalShell(), LocalShell("pve2"), spec(tmp_path, tcp=True),
                          rate_bps=rate, stall_timeout=20, log=log.append,
                          insecure=True)  # fmt: skip
    assert got == VOLID
    assert received(tmp_path) == DIGEST
    assert f"[pve2] successfully imported '{VOLID}'" in log  # the target's lines are prefixed
    assert ("total estimated size is 1K" in log) and ("[pve2] 127.0.0.1" not in log)
    # a relay (rate limit) shows the closing summary; zfs send writing into the socket does not
    assert len([line for line in log if summary_ok(line)]) == (1 if rate else 0)


def test_insecure_transfer_without_stall_timeout(tmp_path: Path) -> None:
    assert transfer_volume(LocalShell(), LocalShell("pve2"), spec(tmp_path, tcp=True),
                           rate_bps=None, stall_timeout=None, log=lambda line: None,
                           insecure=True) == VOLID  # fmt: skip
    assert received(tmp_path) == DIGEST


def test_insecure_transfer_with_a_bad_announcement(tmp_path: Path) -> None:
    s = spec(tmp_path, tcp=True)
    s = TransferSpec(VOLID, s.send_argv, [*s.import_argv, "no-ip"])
    aborted: list[str] = []
    with pytest.raises(TransferError) as exc:
        transfer_volume(LocalShell(), LocalShell("pve2"), s, rate_bps=None, stall_timeout=20,
                        log=lambda line: None, insecure=True,
                        on_stall=lambda: aborted.append("x"))  # fmt: skip
    assert str(exc.value) == "failed to run insecure migration: no tunnel IP received, got 'no-ip'"
    assert exc.value.__cause__ is None and exc.value.__suppress_context__
    assert aborted == []


# --- the serve session's data channel ---------------------------------------------------------

#: FAKE ``ssh -W 127.0.0.1:<port>``: stdin to the port, the port's answer to stdout.
RELAY = """
import os, socket, sys, threading
sock = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
def back():
    while chunk := sock.recv(65536):
        os.write(1, chunk)
t = threading.Thread(target=back); t.start()
while chunk := os.read(0, 65536):
    sock.sendall(chunk)
sock.shutdown(socket.SHUT_WR)
t.join()
"""

KEY = bytes(range(32))


class FakePending:
    def __init__(self, ready: dict[str, object] | None, done: bool = False) -> None:
        self.rid = 7
        self._ready = ready
        self.done = done
        self.result: Answer | Exception = Answer(False, "", "no answer set", [])
        self.timeouts: list[float | None] = []
        self.event = threading.Event()

    def wait_ready(self, timeout: float) -> dict[str, object] | None:
        self.timeouts.append(timeout)
        return self._ready

    def answer(self, timeout: float | None = None) -> Answer:
        self.timeouts.append(timeout)
        self.event.wait(10)
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


class FakeSession:
    def __init__(self, pending: FakePending) -> None:
        self.pending = pending
        self.started: list[tuple[str, dict[str, object]]] = []
        self.forgotten: list[int] = []
        self.channel_works: bool | None = None

    def start(self, op: str, args: dict[str, object]) -> FakePending:
        self.started.append((op, args))
        return self.pending

    def forget(self, rid: int) -> None:
        self.forgotten.append(rid)


class Listener:
    """The target's data channel, faked: checks the key, says ok, stores what it got."""

    def __init__(self, pending: FakePending, answer: Answer, ack: bytes = b"ok\n") -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.port = self.sock.getsockname()[1]
        self.data = b""
        self.key = b""
        self.thread = threading.Thread(target=self._run, args=(pending, answer, ack), daemon=True)
        self.thread.start()

    def _run(self, pending: FakePending, answer: Answer, ack: bytes) -> None:
        with self.sock:
            conn, _ = self.sock.accept()
        with conn:
            while len(self.key) < len(KEY):
                self.key += conn.recv(len(KEY) - len(self.key))
            conn.sendall(ack)
            while chunk := conn.recv(65536):
                self.data += chunk
        pending.result = answer
        pending.event.set()


def session_transfer(tmp_path: Path, session: FakeSession, forward: Any, **kw: Any) -> str:
    return transfer_volume_session(
        LocalShell(), session, forward, spec(tmp_path), {"volid": VOLID},  # type: ignore[arg-type]
        rate_bps=kw.pop("rate_bps", None), stall_timeout=20, log=kw.pop("log", lambda line: None),
        **kw,
    )  # fmt: skip


def relay(port: int) -> list[str]:
    return [sys.executable, "-c", RELAY, str(port)]


def test_a_session_import_sends_the_key_then_the_stream(tmp_path: Path) -> None:
    pending = FakePending({"port": 1, "key": KEY.hex()})
    done = Answer(True, f"successfully imported '{VOLID}'", "", ["receiving full stream"])
    listener = Listener(pending, done)
    pending._ready = {"port": listener.port, "key": KEY.hex()}
    session = FakeSession(pending)
    log: list[str] = []
    ports: list[int] = []

    def forward(port: int) -> list[str]:
        ports.append(port)
        return relay(port)

    assert (
        session_transfer(tmp_path, session, forward, log=log.append, rate_bps=90_000_000) == VOLID
    )
    assert ports == [listener.port]
    assert listener.key == KEY and listener.data == STREAM
    assert session.started == [("import", {"volid": VOLID})] and session.forgotten == []
    assert session.channel_works is True
    assert pending.timeouts == [transfer.SESSION_READY_TIMEOUT, transfer.SESSION_ANSWER_TIMEOUT]
    assert (
        log[0] == f"using a bandwidth limit of 90000000 bytes per second for transferring '{VOLID}'"
    )
    assert log[-2:] == ["receiving full stream", f"successfully imported '{VOLID}'"]
    assert len([line for line in log if summary_ok(line)]) == 1


def test_a_session_import_that_fails_on_the_target(tmp_path: Path) -> None:
    pending = FakePending(None)
    listener = Listener(pending, Answer(False, "", "cannot receive: boom", ["a line"]))
    pending._ready = {"port": listener.port, "key": KEY.hex()}
    log: list[str] = []
    with pytest.raises(TransferError) as exc:
        session_transfer(tmp_path, FakeSession(pending), relay, log=log.append)
    s = spec(tmp_path)
    import shlex

    assert str(exc.value) == (
        f"command '{shlex.join(s.import_argv)}' (serve session) failed: cannot receive: boom"
    )
    assert "a line" in log and listener.data == STREAM


def test_a_session_whose_answer_never_comes(tmp_path: Path) -> None:
    pending = FakePending(None)
    listener = Listener(pending, Answer(True, "", "", []))
    pending._ready = {"port": listener.port, "key": KEY.hex()}

    def gone() -> None:
        listener.thread.join(10)
        pending.result = SessionError("session on 'pve2': it ended")

    pending.answer = lambda timeout=None: (gone(), FakePending.answer(pending, timeout))[1]  # type: ignore[method-assign]
    with pytest.raises(TransferError) as exc:
        session_transfer(tmp_path, FakeSession(pending), relay)
    assert str(exc.value).endswith("(serve session) failed: session on 'pve2': it ended")


def test_a_session_that_refuses_before_ready(tmp_path: Path) -> None:
    pending = FakePending(None, done=True)
    pending.result = Answer(False, "", "invalid snapshot name 'a;b'", ["why"])
    pending.event.set()
    session = FakeSession(pending)
    log: list[str] = []
    with pytest.raises(TransferError) as exc:
        session_transfer(tmp_path, session, relay, log=log.append)
    assert not isinstance(exc.value, ChannelUnavailable)
    assert str(exc.value).endswith("(serve session) failed: invalid snapshot name 'a;b'")
    assert log == ["why"]
    assert pending.timeouts == [transfer.SESSION_READY_TIMEOUT, 0.0]
    assert session.forgotten == []


def test_a_session_that_never_gets_ready(tmp_path: Path) -> None:
    session = FakeSession(FakePending(None, done=False))
    with pytest.raises(TransferError) as exc:
        session_transfer(tmp_path, session, relay)
    assert not isinstance(exc.value, ChannelUnavailable)
    assert str(exc.value) == f"import of '{VOLID}': the session did not get ready"
    assert session.forgotten == [7]


@pytest.mark.parametrize(
    "ready",
    [{"port": 0, "key": KEY.hex()}, {"port": 5, "key": "zz"}, {"port": 5}],
)
def test_a_session_without_a_usable_channel(tmp_path: Path, ready: dict[str, object]) -> None:
    session = FakeSession(FakePending(ready))
    asked: list[int] = []
    with pytest.raises(ChannelUnavailable) as exc:
        session_transfer(tmp_path, session, lambda port: asked.append(port) or ["true"])
    assert str(exc.value) == "no data channel offered"
    assert asked == [] and session.forgotten == [7]


def test_a_forward_that_offers_nothing(tmp_path: Path) -> None:
    session = FakeSession(FakePending({"port": 5, "key": KEY.hex()}))
    with pytest.raises(ChannelUnavailable, match=r"^no data channel offered$"):
        session_transfer(tmp_path, session, lambda port: None)
    assert session.forgotten == [7]


@pytest.mark.parametrize(
    ("script", "why"),
    [
        ("import sys; sys.stdin.buffer.read(32); print('ok', flush=True); sys.stdin.buffer.read()",
         None),  # would have worked
        ("import sys; sys.stdin.buffer.read(32); print('no', flush=True)", ""),
        ("import sys; print('e1', file=sys.stderr); print('e2', file=sys.stderr); "
         "print('e3', file=sys.stderr); sys.exit(255)", " - e2; e3"),
    ],
)  # fmt: skip
def test_a_channel_that_does_not_say_ok(tmp_path: Path, script: str, why: str | None) -> None:
    pending = FakePending({"port": 9, "key": KEY.hex()})
    session = FakeSession(pending)
    if why is None:  # control: this stand-in acks; the transfer then goes on (and finishes)
        pending.result = Answer(True, f"successfully imported '{VOLID}'", "", [])
        pending.event.set()
        assert (
            session_transfer(tmp_path, session, lambda port: [sys.executable, "-c", script])
            == VOLID
        )
        return
    with pytest.raises(ChannelUnavailable) as exc:
        session_transfer(tmp_path, session, lambda port: [sys.executable, "-c", script])
    assert str(exc.value) == f"ssh -W 127.0.0.1:9 did not connect{why}"
    assert session.forgotten == [7] and session.channel_works is None


# --- helpers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ready", "fields"),
    [
        ({"port": 1, "key": "ab" * 32}, (1, bytes([0xAB]) * 32)),
        ({"port": 65535, "key": "0f" * 32}, (65535, bytes([0x0F]) * 32)),
        ({"port": 65536, "key": "ab" * 32}, (0, b"")),
        ({"port": 0, "key": "ab" * 32}, (0, b"")),
        ({"port": True, "key": "ab" * 32}, (0, b"")),
        ({"port": "22", "key": "ab" * 32}, (0, b"")),
        ({"key": "ab" * 32}, (0, b"")),
        ({"port": 22, "key": "AB" * 32}, (0, b"")),
        ({"port": 22, "key": "ab" * 31}, (0, b"")),
        ({"port": 22, "key": "ab" * 33}, (0, b"")),
        ({"port": 22, "key": 5}, (0, b"")),
        ({"port": 22}, (0, b"")),
    ],
)
def test_ready_fields(ready: dict[str, object], fields: tuple[int, bytes]) -> None:
    assert _ready_fields(ready) == fields


def test_send_timeout_is_set_in_seconds_and_microseconds() -> None:
    with socket.socket() as sock:
        _set_send_timeout(sock, 2.5)
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.calcsize("ll"))
        assert struct.unpack("ll", raw) == (2, 500000)


def test_read_line_reads_one_line_at_a_time() -> None:
    r, w = os.pipe()
    with os.fdopen(r, "rb", buffering=0) as stream:
        os.write(w, b" 10.0.0.2 \n4711\npartial\xff")
        assert _read_line(stream, 5) == "10.0.0.2"
        assert _read_line(stream, 5) == "4711"
        os.close(w)
        assert _read_line(stream, 5) == "partial\ufffd"  # the end of the input ends it
        assert _read_line(stream, 5) == ""


def test_read_line_gives_up_at_its_timeout() -> None:
    r, w = os.pipe()
    with os.fdopen(r, "rb", buffering=0) as stream:
        os.write(w, b"half")
        start = time.monotonic()
        assert _read_line(stream, 0.3) == "half"
        waited = time.monotonic() - start
        assert 0.3 <= waited < 5
        start = time.monotonic()
        assert _read_line(stream, 0) == ""
        assert time.monotonic() - start < 0.2
    os.close(w)


def test_limits_log_what_the_pump_enforces() -> None:
    log: list[str] = []
    budget = Budget(1_500_000.4)
    s = TransferSpec(VOLID, [], [])
    assert _limits(s, 1000, budget, 3.0, log.append) == _Limits(1000, budget, 3.0)
    assert log == [
        f"using a bandwidth limit of 1000 bytes per second for transferring '{VOLID}'",
        "sharing the node's bandwidth budget of 1500000 bytes per second",
    ]
    assert _limits(s, None, None, None, log.append) == _Limits(None, None, None)
    assert len(log) == 2
    assert _Limits(None, None, 1.0).unlimited
    assert not _Limits(1, None, None).unlimited and not _Limits(None, budget, None).unlimited


def test_watch_counts_from_the_offset() -> None:
    log: list[str] = []
    watch = _Watch(log.append, prefix="[pve2] ", offset=1000)
    watch.send_line("total estimated size is 2K")
    assert watch.thinner.estimate == 2048 + 1000
    watch.send_line("something else")
    assert watch.thinner.estimate == 3048
    watch.target_line("receiving")
    watch.target_line(f"successfully imported '{VOLID}'")
    assert watch.imported == VOLID
    watch.target_line("after it")
    assert watch.imported == VOLID
    watch.progress(SimpleNamespace(bytes=524, elapsed=3.2, rate=2048.0))  # type: ignore[arg-type]
    watch.progress(SimpleNamespace(bytes=600, elapsed=3.9, rate=2048.0))  # type: ignore[arg-type]
    watch.summary(SimpleNamespace(bytes=2_000_000, elapsed=2.0, rate=0.0))  # type: ignore[arg-type]
    assert log == [
        "total estimated size is 2K",
        "something else",
        "[pve2] receiving",
        f"[pve2] successfully imported '{VOLID}'",
        "[pve2] after it",
        "1524 bytes (1.5 KiB) copied, 3 s, 2.0 KiB/s, 50% of 3.0 KiB",
        "2000000 bytes (1.9 MiB) copied, 2.000 s, 1.00 MB/s",
    ]
    plain = _Watch(log.append)
    assert (plain.prefix, plain.offset, plain.imported) == ("", 0, None)


class Proc:
    def __init__(self, argv: list[str], code: int | None = 0, hangs: bool = False) -> None:
        self.argv = argv
        self.returncode = code
        self.hangs = hangs
        self.waited: list[float | None] = []

    def wait(self, timeout: float | None = None) -> int:
        self.waited.append(timeout)
        if self.hangs:
            raise PverepError("timeout")
        return self.returncode or 0


def test_finish_reports_a_killed_process_as_minus_9() -> None:
    a, b = Proc(["a"], 0), Proc(["b"], hangs=True)
    assert _finish([a, b]) == [0, -9]
    assert a.waited == [30.0] and b.waited == [30.0]
    assert _finish([a], 5) == [0] and a.waited[-1] == 5


def test_finish_target_cuts_off_an_importer_that_does_not_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(transfer, "TARGET_EXIT_TIMEOUT", 0.3)
    aborted: list[float] = []
    ended = Proc(["recv"], 3)
    start = time.monotonic()
    assert _finish_target(ended, lambda: aborted.append(1)) == 3
    assert aborted == [] and time.monotonic() - start < 0.3
    hung = Proc(["recv"], None, hangs=True)
    start = time.monotonic()
    assert _finish_target(hung, lambda: aborted.append(time.monotonic() - start)) == -9
    assert len(aborted) == 1 and 0.3 <= aborted[0] < 5


def test_pipeline_error_names_both_commands_and_the_rightmost_failure() -> None:
    send = Proc(["zfs", "send", "a b"])
    assert _pipeline_error(send, [2, 0], ["pverep", "import"]) == (
        "command 'zfs send 'a b' | pverep import' failed: exit code 2"
    )
    assert _pipeline_error(send, [2, 5], ["r"]).endswith("failed: exit code 5")
    assert _pipeline_error(send, [0, 0], ["r"]).endswith("failed: exit code 0")


def test_outcome_in_order_of_precedence() -> None:
    s = TransferSpec(VOLID, ["send"], ["recv"])
    send = Proc(["send"])
    watch = _Watch(lambda line: None)
    with pytest.raises(TransferError, match=r"^unable to get ID of the migrated volume$"):
        _outcome(s, watch, send, [0, 0], None)
    watch.imported = VOLID
    assert _outcome(s, watch, send, [0, 0], None) == VOLID
    with pytest.raises(TransferError) as exc:
        _outcome(s, watch, send, [0, 0], "the receiver stopped reading")
    assert str(exc.value) == f"transfer of '{VOLID}' failed - the receiver stopped reading"
    with pytest.raises(TransferError) as exc:
        _outcome(s, watch, send, [0, 1], "x")
    assert str(exc.value) == "command 'send | recv' failed: exit code 1"


def test_session_answer_turns_a_session_error_into_a_failed_answer() -> None:
    pending = FakePending(None)
    pending.result = SessionError("session on 'pve2': gone")
    pending.event.set()
    assert _session_answer(pending) == Answer(False, "", "session on 'pve2': gone", [])  # type: ignore[arg-type]
    assert pending.timeouts == [0.0]
    pending.result = Answer(True, "x", "", ["l"])
    assert _session_answer(pending, 3.0) == Answer(True, "x", "", ["l"])  # type: ignore[arg-type]
    assert pending.timeouts == [0.0, 3.0]
