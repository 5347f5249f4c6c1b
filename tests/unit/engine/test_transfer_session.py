"""engine/transfer.py: how a serve-session import (``transfer_volume_session``) fails, and a
stall on the secure path.

A stall, a failing sender, a channel that breaks while the sender says all is well, an ack
that cannot be read, and what the transfer hands to its limits and progress. Same FAKES as
test_transfer_paths.py: Python sender processes, an in-process listener for the target's data
channel and a Python stand-in for ``ssh -W``.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

import pytest

from pverep._core import Budget
from pverep.engine import transfer
from pverep.engine.transfer import ChannelUnavailable, TransferError, TransferSpec
from pverep.transport import LocalShell
from pverep.transport.serveclient import Answer

from .test_transfer_paths import KEY, STREAM, VOLID, FakePending, FakeSession, Listener, relay

DONE = Answer(True, f"successfully imported '{VOLID}'", "", [])

#: FAKE zfs send: 64 KiB, then nothing for 2 s (a stall), then the rest; exits 0 even when
#: its reader went away meanwhile.
STALLING = """
import os, sys, time
out = os.fdopen(1, "wb", buffering=0)
out.write(b"x" * 65536)
time.sleep(2)
try:
    out.write(b"y" * 65536)
except BrokenPipeError:
    pass
"""

#: FAKE zfs send: the whole stream, then exit 3.
FAILING = """
import os, sys
os.fdopen(1, "wb", buffering=0).write(bytes(range(256)) * 1000 + b"tail")
sys.exit(3)
"""

#: FAKE zfs send that does not notice its reader going away: exit 0 whatever happens.
STUBBORN = """
import os, sys
out = os.fdopen(1, "wb", buffering=0)
try:
    for _ in range(400):
        out.write(b"z" * 65536)
except BrokenPipeError:
    pass
"""

#: FAKE ``ssh -W``: takes the key and acks like the relay, then reads 64 KiB and goes away.
BREAKS = """
import os, sys
os.read(0, 32)
os.write(1, b"ok\\n")
got = 0
while got < 65536:
    chunk = os.read(0, 65536)
    if not chunk:
        break
    got += len(chunk)
"""


def session_spec(sender: str) -> TransferSpec:
    return TransferSpec(VOLID, [sys.executable, "-c", sender], ["pverep", "import", VOLID])


def run(session: FakeSession, forward: Any, sender: str, **kw: Any) -> str:
    return transfer.transfer_volume_session(
        LocalShell(), session, forward, session_spec(sender), {"volid": VOLID},  # type: ignore[arg-type]
        rate_bps=kw.pop("rate_bps", None), stall_timeout=kw.pop("stall_timeout", 20),
        log=kw.pop("log", lambda line: None), **kw,
    )  # fmt: skip


def listening(answer: Answer = DONE) -> tuple[FakePending, Listener]:
    pending = FakePending(None)
    listener = Listener(pending, answer)
    pending._ready = {"port": listener.port, "key": KEY.hex()}
    return pending, listener


def test_a_stalled_session_stream_fails_with_the_stall(tmp_path: Path) -> None:
    pending, listener = listening()
    session = FakeSession(pending)
    with pytest.raises(TransferError) as exc:
        run(session, relay, STALLING, stall_timeout=0.3)
    assert str(exc.value).startswith(f"transfer of '{VOLID}' stalled - ")
    assert listener.key == KEY and listener.data == b"x" * 65536
    assert session.forgotten == []


def test_a_session_stream_whose_sender_fails(tmp_path: Path) -> None:
    pending, listener = listening()
    with pytest.raises(TransferError) as exc:
        run(FakeSession(pending), relay, FAILING)
    argv = session_spec(FAILING)
    assert str(exc.value) == (
        f"command '{shlex.join(argv.send_argv)} | {shlex.join(argv.import_argv)}' failed: "
        "exit code 3"
    )
    assert listener.data == STREAM


def test_a_channel_that_breaks_mid_stream_fails_the_transfer(tmp_path: Path) -> None:
    pending = FakePending({"port": 9, "key": KEY.hex()})
    pending.result = DONE  # the session even says it imported: the bytes did not all go
    pending.event.set()
    with pytest.raises(TransferError) as exc:
        run(FakeSession(pending), lambda port: [sys.executable, "-c", BREAKS], STUBBORN)
    assert str(exc.value).startswith(f"transfer of '{VOLID}' failed - ")


def test_an_ack_that_cannot_be_read_means_no_channel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(stream: object, timeout: float) -> str:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(transfer, "_read_line", broken)
    session = FakeSession(FakePending({"port": 9, "key": KEY.hex()}))
    with pytest.raises(ChannelUnavailable) as exc:
        run(session, lambda port: [sys.executable, "-c", "import time; time.sleep(1)"], FAILING)
    assert str(exc.value) == "ssh -W 127.0.0.1:9 did not connect"
    assert session.forgotten == [7] and session.channel_works is None


def test_a_session_stream_shares_the_node_budget(tmp_path: Path) -> None:
    pending, listener = listening()
    log: list[str] = []
    got = run(FakeSession(pending), relay, FAILING.replace("sys.exit(3)", ""), log=log.append,
              budget=Budget(50_000_000.0))  # fmt: skip
    assert got == VOLID and listener.data == STREAM
    assert log[0] == "sharing the node's bandwidth budget of 50000000 bytes per second"


@pytest.mark.parametrize("offset", [None, 4096])
def test_a_session_streams_progress_counts_from_the_offset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, offset: int | None
) -> None:
    made: list[int] = []

    class Watch(transfer._Watch):
        def __init__(self, log: Any, prefix: str = "", offset: int = 0) -> None:
            super().__init__(log, prefix, offset)
            made.append(self.offset)

    monkeypatch.setattr(transfer, "_Watch", Watch)
    pending, _listener = listening()
    kw = {} if offset is None else {"progress_offset": offset}
    assert run(FakeSession(pending), relay, FAILING.replace("sys.exit(3)", ""), **kw) == VOLID
    assert made == [offset or 0]


def test_a_stalled_secure_stream_drops_the_connection_and_the_importer(tmp_path: Path) -> None:
    from .test_transfer_paths import IMPORTER

    dropped: list[str] = []
    s = TransferSpec(VOLID, [sys.executable, "-c", STALLING],
                     [sys.executable, "-c", IMPORTER, str(tmp_path / "digest"), "0"])  # fmt: skip
    with pytest.raises(TransferError) as exc:
        transfer.transfer_volume(LocalShell(), LocalShell("pve2"), s, rate_bps=None,
                                 stall_timeout=0.3, log=lambda line: None,
                                 on_stall=lambda: dropped.append("ssh"))  # fmt: skip
    assert str(exc.value).startswith(f"transfer of '{VOLID}' stalled - ")
    assert dropped == ["ssh"]
    assert not (tmp_path / "digest").exists()  # killed before the end of its input
