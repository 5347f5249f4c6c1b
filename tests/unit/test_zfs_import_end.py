"""``ZfsPool.import_`` when ``zfs recv`` stops reading before the pump saw its input's end.

``zfs recv`` exits right after a stream's END record; the sender's EOF (TCP FIN, ssh's channel
EOF) can arrive after that, and the pump's splice into the receiver's pipe then fails with
EPIPE although nothing is left (tests/lab/test_target_streams.py hit it intermittently). The
receiver here is a FAKE ``zfs recv`` (a small Python process; real zfs runs in the lab): it
reads a given number of bytes, closes its stdin, says so on stderr and exits with a given
status. The sender waits for that line before it ends the stream, so the race is won by the
receiver every time: deterministic.
"""

from __future__ import annotations

import socket
import sys
import threading
from collections.abc import Sequence

import pytest

from pverep.config.storage import StorageDef
from pverep.storage.zfs import ZfsError, ZfsPool, ZfsRunner
from pverep.transport import LocalShell
from pverep.transport.base import DEVNULL, PIPE, CommandResult, LineSink, Process

DS = "rpool/data/subvol-100-disk-0"
STREAM = bytes(range(256)) * 400  # 100 KiB: fits the pump's pipe, so nothing blocks

#: FAKE zfs recv: read argv[1] bytes (or to EOF), close stdin, report, exit argv[2].
RECEIVER = """
import os, sys
want, code = int(sys.argv[1]), int(sys.argv[2])
got = 0
while got < want:
    chunk = os.read(0, min(65536, want - got))
    if not chunk:
        break
    got += len(chunk)
os.close(0)
sys.stderr.write(f"receiver closed after {got} bytes\\n")
if code:
    sys.stderr.write("cannot receive new filesystem stream: invalid backup stream\\n")
sys.stderr.flush()
sys.exit(code)
"""


class FakeRecvShell:
    """Runs the FAKE receiver for ``zfs recv``; records (and succeeds) every helper call."""

    def __init__(self, read: int, code: int) -> None:
        self.read, self.code = read, code
        self.calls: list[list[str]] = []

    @property
    def node(self) -> str:
        return "pve2"

    def command(self, argv: Sequence[str]) -> list[str]:
        return list(argv)

    def run(
        self, argv: Sequence[str], *, input: bytes | None = None, timeout: float | None = None
    ) -> CommandResult:
        self.calls.append(list(argv))
        return CommandResult(list(argv), 0, b"", b"")

    def spawn(
        self,
        argv: Sequence[str],
        *,
        stdin: int = DEVNULL,
        stdout: int = PIPE,
        on_stderr: LineSink | None = None,
        new_group: bool = False,
    ) -> Process:
        assert list(argv[:2]) == ["zfs", "recv"], argv
        fake = [sys.executable, "-c", RECEIVER, str(self.read), str(self.code)]
        return LocalShell().spawn(
            fake, stdin=stdin, stdout=stdout, on_stderr=on_stderr, new_group=new_group
        )


def _import(
    read: int, code: int, trailer: bytes = b"", base: str | None = "a"
) -> tuple[str | ZfsError, FakeRecvShell, list[str]]:
    """Import STREAM (+ ``trailer`` sent only after the receiver closed) over a socket pair,
    the way the insecure tcp:// import gets it. Returns the volid or the error."""
    shell = FakeRecvShell(read, code)
    pool = ZfsPool(StorageDef("local-zfs", "zfspool", {"pool": "rpool/data"}), ZfsRunner(shell))
    ours, theirs = socket.socketpair()
    lines: list[str] = []
    closed = threading.Event()

    def on_stderr(line: str) -> None:
        lines.append(line)
        if line.startswith("receiver closed"):
            closed.set()

    def sender() -> None:
        with theirs:
            theirs.sendall(STREAM)
            assert closed.wait(20), "the fake receiver never closed its stdin"
            if trailer:
                theirs.sendall(trailer)

    thread = threading.Thread(target=sender)
    thread.start()
    try:
        with ours:
            result: str | ZfsError = pool.import_(
                "subvol-100-disk-0", ours.fileno(), base, on_stderr=on_stderr, stall_timeout=20
            )
    except ZfsError as err:
        result = err
    thread.join(20)
    return result, shell, lines


def _cleanups(shell: FakeRecvShell) -> list[list[str]]:
    return [c for c in shell.calls if c[1] in ("rollback", "destroy")]


def test_receiver_done_before_the_end_of_input_arrives_is_success() -> None:
    result, shell, lines = _import(len(STREAM), 0)
    assert lines == [f"receiver closed after {len(STREAM)} bytes"]
    assert result == "local-zfs:subvol-100-disk-0"
    assert _cleanups(shell) == []  # the received data stays


def test_data_after_the_receivers_end_fails_and_rolls_back() -> None:
    result, shell, _ = _import(len(STREAM), 0, trailer=b"more")
    assert isinstance(result, ZfsError)
    assert str(result) == (
        f"import of '{DS}' failed - the receiver stopped reading before the end of the "
        "stream (more data followed)"
    )
    assert _cleanups(shell) == [["zfs", "rollback", "-r", "--", f"{DS}@a"]]


def test_receiver_leaving_bytes_unread_fails_even_with_exit_0() -> None:
    result, shell, _ = _import(len(STREAM) - 1000, 0, base=None)
    assert isinstance(result, ZfsError)
    # the last 1000 bytes were still in its pipe, or still in the socket: lost either way
    assert str(result).startswith(f"import of '{DS}' failed - the receiver stopped reading")
    assert _cleanups(shell) == [["zfs", "destroy", "-r", "--", DS]]


@pytest.mark.parametrize("trailer", [b"", b"more"])
def test_receiver_failing_early_reports_its_own_error(trailer: bytes) -> None:
    result, shell, _ = _import(1000, 1, trailer=trailer)
    assert isinstance(result, ZfsError)
    assert str(result) == "zfs error: cannot receive new filesystem stream: invalid backup stream"
    assert _cleanups(shell) == [["zfs", "rollback", "-r", "--", f"{DS}@a"]]


def test_receiver_done_but_input_never_ends_is_a_failure() -> None:
    """The sender keeps the connection open without a byte: after the stall timeout that
    is a failure, as it is while the receiver still reads."""
    shell = FakeRecvShell(len(STREAM), 0)
    pool = ZfsPool(StorageDef("local-zfs", "zfspool", {"pool": "rpool/data"}), ZfsRunner(shell))
    ours, theirs = socket.socketpair()
    with ours, theirs:
        theirs.sendall(STREAM)
        with pytest.raises(ZfsError) as err:
            pool.import_("subvol-100-disk-0", ours.fileno(), "a", stall_timeout=0.5)
    # the pump meets the closed pipe (EPIPE) or the watchdog first; both end the same way
    assert str(err.value) in (
        f"import of '{DS}' failed - the receiver stopped reading but the stream did not end "
        "within 0.5 s",
        f"import of '{DS}' stalled - pump stalled: no progress on the read side for 0.5 s",
    )
