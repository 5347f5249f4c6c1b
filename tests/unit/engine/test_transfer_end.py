"""``transfer_volume`` (secure mode) when the importer stops reading before the pump saw the
end of ``zfs send``'s output: an importer whose ``zfs recv`` reads the stream itself (pvesm
import) exits right after the END record, and the pump's next splice into its pipe fails
with EPIPE although nothing is left.

Sender and importer are FAKES (small Python processes; the real pair runs in the lab): the
importer reads a given number of bytes, closes its stdin, prints pvesm's success line, drops a
marker file and exits with a given status; the sender writes the stream and keeps its stdout
open until the marker exists, so the importer wins the race every time: deterministic.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pverep.engine.transfer import TransferError, TransferSpec, transfer_volume
from pverep.transport import LocalShell

STREAM_LEN = 100_000
VOLID = "local-zfs:vm-100-disk-0"

#: FAKE sender: STREAM_LEN bytes, wait for the marker, then the optional trailer, exit 0.
SENDER = """
import os, sys, time
marker, trailer = sys.argv[1], sys.argv[2].encode()
out = os.fdopen(1, "wb", buffering=0)
out.write(bytes(range(256)) * 390 + bytes(160))
deadline = time.monotonic() + 20
while not os.path.exists(marker) and time.monotonic() < deadline:
    time.sleep(0.01)
if trailer:
    out.write(trailer)
"""

#: FAKE importer: read argv[1] bytes, close stdin, report, drop the marker, exit argv[3].
IMPORTER = """
import os, sys
want, marker, code = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
got = 0
while got < want:
    chunk = os.read(0, min(65536, want - got))
    if not chunk:
        break
    got += len(chunk)
os.close(0)
if code == 0:
    print("successfully imported 'local-zfs:vm-100-disk-0'", flush=True)
else:
    print("zfs error: cannot receive: invalid backup stream", file=sys.stderr, flush=True)
open(marker, "w").close()
sys.exit(code)
"""


def _transfer(tmp_path: Path, read: int, code: int, trailer: str = "") -> str | TransferError:
    marker = str(tmp_path / "importer-done")
    spec = TransferSpec(
        VOLID,
        [sys.executable, "-c", SENDER, marker, trailer],
        [sys.executable, "-c", IMPORTER, str(read), marker, str(code)],
    )
    lines: list[str] = []
    try:
        return transfer_volume(
            LocalShell(),
            LocalShell("pve2"),
            spec,
            rate_bps=None,
            stall_timeout=20,
            log=lines.append,
        )
    except TransferError as err:
        return err


def test_importer_done_before_the_senders_end_is_success(tmp_path: Path) -> None:
    assert _transfer(tmp_path, STREAM_LEN, 0) == VOLID


def test_sender_data_after_the_importers_end_fails(tmp_path: Path) -> None:
    result = _transfer(tmp_path, STREAM_LEN, 0, trailer="more")
    assert str(result) == (
        f"transfer of '{VOLID}' failed - the receiver stopped reading before the end of the "
        "stream (more data followed)"
    )


def test_importer_leaving_bytes_unread_fails(tmp_path: Path) -> None:
    result = _transfer(tmp_path, STREAM_LEN - 1000, 0)
    assert isinstance(result, TransferError)
    assert str(result).startswith(f"transfer of '{VOLID}' failed - the receiver stopped reading")


@pytest.mark.parametrize("trailer", ["", "more"])
def test_importer_failing_early_is_the_pipelines_failure(tmp_path: Path, trailer: str) -> None:
    result = _transfer(tmp_path, 1000, 1, trailer=trailer)
    assert isinstance(result, TransferError)
    assert str(result).startswith("command '") and str(result).endswith("failed: exit code 1")
