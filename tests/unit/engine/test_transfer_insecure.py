"""engine/transfer.py's insecure path (TCP) when things go wrong, and what every path hands to
the pump and the progress lines.

FAKES as in test_transfer_paths.py: Python processes for ``zfs send`` and the importer (which
announces its address and port as ``pvesm import … tcp://`` does), the real pump in between.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from pverep import _core
from pverep._core import Budget
from pverep.engine import transfer
from pverep.engine.transfer import TransferError, TransferSpec
from pverep.transport import LocalShell

from .test_transfer_paths import DIGEST, SENDER, STREAM, VOLID
from .test_transfer_session import FAILING, STALLING, STUBBORN

#: FAKE insecure importer: ``argv``: digest file, address to listen on, bytes to take (-1: all),
#: a line for stderr, seconds to stay after the stream, file for its pid.
TCP_IMPORTER = """
import hashlib, os, socket, sys, time
digest, ip, take, note, stay, pidfile = sys.argv[1:7]
open(pidfile, "w").write(str(os.getpid()))
srv = socket.socket()
srv.bind((ip, 0))
srv.listen(1)
print(ip, flush=True)
print(srv.getsockname()[1], flush=True)
if note:
    print(note, file=sys.stderr, flush=True)
conn, _ = srv.accept()
data = b""
while int(take) < 0 or len(data) < int(take):
    chunk = conn.recv(65536)
    if not chunk:
        break
    data += chunk
conn.close()
open(digest, "w").write(hashlib.sha256(data).hexdigest())
print("successfully imported 'local-zfs:vm-100-disk-0'", flush=True)
time.sleep(float(stay))
"""


def insecure_spec(
    tmp: Path, sender: str = SENDER, *, ip: str = "127.0.0.1", take: int = -1, note: str = "",
    stay: float = 0,
) -> TransferSpec:  # fmt: skip
    importer = [sys.executable, "-c", TCP_IMPORTER, str(tmp / "digest"), ip, str(take), note,
                str(stay), str(tmp / "pid")]  # fmt: skip
    return TransferSpec(VOLID, [sys.executable, "-c", sender], importer)


def insecure(spec: TransferSpec, **kw: Any) -> str:
    return transfer.transfer_volume(
        LocalShell(), LocalShell("pve2"), spec, rate_bps=kw.pop("rate_bps", None),
        stall_timeout=kw.pop("stall_timeout", 20), log=kw.pop("log", lambda line: None),
        insecure=True, **kw,
    )  # fmt: skip


def test_the_importers_announced_address_is_the_one_connected_to(tmp_path: Path) -> None:
    log: list[str] = []
    spec = insecure_spec(tmp_path, ip="127.0.0.2", note="receiving full stream")
    assert insecure(spec, log=log.append) == VOLID
    assert (tmp_path / "digest").read_text() == DIGEST
    assert "[pve2] receiving full stream" in log  # its stderr, prefixed with its node


def test_an_insecure_sender_that_fails(tmp_path: Path) -> None:
    spec = insecure_spec(tmp_path, FAILING)
    with pytest.raises(TransferError) as exc:
        insecure(spec)
    assert str(exc.value) == (
        f"command '{shlex.join(spec.send_argv)} | {shlex.join(spec.import_argv)}' failed: "
        "exit code 3"
    )


#: FAKE zfs send that fails when its output goes away (EPIPE or ECONNRESET on a socket).
STREAMER = """
import os
out = os.fdopen(1, "wb", buffering=0)
for _ in range(1600):  # 100 MiB: more than any socket buffer holds
    out.write(b"s" * 65536)
"""


@pytest.mark.parametrize("rate", [None, 200_000_000])
def test_an_importer_that_hangs_up_early(tmp_path: Path, rate: int | None) -> None:
    """With a relay (a rate) the pump sees the peer go, while the sender (its pipe closed)
    ends well; without one, zfs send writes into the socket and fails there, and the
    half-close of a socket whose peer is gone fails quietly."""
    spec = insecure_spec(tmp_path, STUBBORN if rate else STREAMER, take=65536)
    with pytest.raises(TransferError) as exc:
        insecure(spec, rate_bps=rate)
    if rate is None:
        assert str(exc.value).startswith("command '") and " failed: exit code " in str(exc.value)
    else:  # the sender ends well: only the pump knows the bytes did not arrive
        assert str(exc.value).startswith(f"transfer of '{VOLID}' failed - ")


def test_an_insecure_stall_drops_the_connection(tmp_path: Path) -> None:
    dropped: list[str] = []
    spec = insecure_spec(tmp_path, STALLING)
    with pytest.raises(TransferError) as exc:
        insecure(spec, rate_bps=200_000_000, stall_timeout=0.3,
                 on_stall=lambda: dropped.append("ssh"))  # fmt: skip
    assert str(exc.value).startswith(f"transfer of '{VOLID}' stalled - ")
    assert dropped == ["ssh"]


def test_an_importer_that_stays_after_the_stream_is_cut_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transfer, "TARGET_EXIT_TIMEOUT", 0.3)
    spec = insecure_spec(tmp_path, stay=60)
    dropped: list[int] = []

    def drop() -> None:  # what ending the ssh master does to the importer
        pid = int((tmp_path / "pid").read_text())
        dropped.append(pid)
        os.kill(pid, signal.SIGTERM)

    with pytest.raises(TransferError) as exc:
        insecure(spec, on_stall=drop)
    assert len(dropped) == 1
    assert str(exc.value).endswith(f"failed: exit code {-signal.SIGTERM}")
    assert (tmp_path / "digest").read_text() == DIGEST  # the stream itself had arrived


# --- what each path hands to the pump and the progress lines ---------------------------------


class PumpSpy:
    def __init__(self) -> None:
        self.kwargs: list[dict[str, Any]] = []

    def __call__(self, src: int, dst: int, **kw: Any) -> Any:
        self.kwargs.append(kw)
        return _core.pump(src, dst, **kw)


@pytest.mark.parametrize("path", ["secure", "insecure"])
def test_the_relay_hands_the_limits_and_the_progress_to_the_pump(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    from .test_transfer_paths import spec as secure_spec

    spy = PumpSpy()
    monkeypatch.setattr(transfer, "pump", spy)
    budget = Budget(500_000_000.0)
    s = secure_spec(tmp_path) if path == "secure" else insecure_spec(tmp_path)
    got = transfer.transfer_volume(LocalShell(), LocalShell("pve2"), s, rate_bps=300_000_000,
                                   stall_timeout=7.5, log=lambda line: None, budget=budget,
                                   insecure=path == "insecure")  # fmt: skip
    assert got == VOLID
    [kw] = spy.kwargs
    assert kw["rate"] == 300_000_000.0 and kw["stall_timeout"] == 7.5
    assert kw["budget"] is budget and budget.bytes == len(STREAM)
    assert kw["progress"].__func__ is transfer._Watch.progress
    assert hashlib.sha256(STREAM).hexdigest() == (tmp_path / "digest").read_text()


@pytest.mark.parametrize("path", ["secure", "insecure"])
@pytest.mark.parametrize("offset", [None, 4096])
def test_progress_counts_from_the_offset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str, offset: int | None
) -> None:
    from .test_transfer_paths import spec as secure_spec

    made: list[tuple[str, int]] = []

    class Watch(transfer._Watch):
        def __init__(self, log: Any, prefix: str = "", offset: int = 0) -> None:
            super().__init__(log, prefix, offset)
            made.append((self.prefix, self.offset))

    monkeypatch.setattr(transfer, "_Watch", Watch)
    s = secure_spec(tmp_path) if path == "secure" else insecure_spec(tmp_path)
    kw = {} if offset is None else {"progress_offset": offset}
    assert transfer.transfer_volume(LocalShell(), LocalShell("pve2"), s, rate_bps=None,
                                    stall_timeout=20, log=lambda line: None,
                                    insecure=path == "insecure", **kw) == VOLID  # fmt: skip
    assert made == [("" if path == "secure" else "[pve2] ", offset or 0)]


def test_the_line_reader_keeps_what_the_target_said() -> None:
    r, w = os.pipe()
    os.write(w, b"one  \r\nbad \xff byte\n\n   \nlast")
    os.close(w)
    lines: list[str] = []
    thread = transfer._reader(os.fdopen(r, "rb"), lines.append)
    assert thread.daemon is True  # a hung target cannot keep pverep from exiting
    thread.join(10)
    assert lines == ["one  ", "bad \ufffd byte", "last"]  # blank lines dropped, spaces kept
