"""Target side streams on the lab (real zfs-fuse, real sshd): the insecure ``tcp://`` import,
failed imports that must leave the target as it was, and volume destroy on a busy dataset.

The source side is played by the test with the product's pieces: ``pverep export`` on pve1
(its ``zfs send`` writing straight into the fd it is given) and ``pverep import`` on pve2
started through ssh with pvesr's argv. Every test checks the data on the target (content
digest, snapshot guids, datasets present or absent), not only exit codes.
"""

from __future__ import annotations

import ipaddress
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from pverep.lab import guests
from pverep.lab.control import Lab
from pverep.transport.peer import PeerCommands
from pverep.transport.ssh import SshTarget, pvesr_ssh_argv

pytestmark = pytest.mark.lab
PEER = PeerCommands()  # `pverep` on the node's PATH
STORE = "local-zfs"

#: The source end of the insecure channel, run ON the source node: read the target's two
#: announcement lines, connect with the product's tcp module, and exec the export with the
#: socket as its stdout, so `zfs send` writes into the socket itself (no relay in between).
SOURCE_OVER_TCP = """
import os, sys
from pverep.transport import tcp
ip, port = tcp.parse_announcement(sys.argv[1], sys.argv[2])
sock = tcp.connect(ip, port)
os.dup2(sock.fileno(), 1)
sock.close()
os.execvp(sys.argv[3], sys.argv[3:])
"""


def _ssh(lab: Lab, node: str, remote: list[str]) -> list[str]:
    kh = f"/etc/pve/nodes/{node}/ssh_known_hosts"
    return pvesr_ssh_argv(SshTarget(node, lab.node_ip(node), kh), remote)


def _guids(lab: Lab, node: str, ds: str) -> dict[str, str]:
    out = lab.exec(node, ["zfs", "list", "-Hp", "-r", "-t", "snapshot", "-o", "name,guid", ds])
    return {
        line.split("\t")[0].split("@")[1]: line.split("\t")[1]
        for line in out.stdout.splitlines()
        if line
    }


def _exists(lab: Lab, node: str, ds: str) -> bool:
    return lab.exec(node, ["zfs", "list", "-H", "-o", "name", ds]).returncode == 0


def _snapshot(lab: Lab, ds: str, snap: str) -> None:
    lab.exec("pve1", ["zfs", "snapshot", f"{ds}@{snap}"], check=True)


def _stream(lab: Lab, vol: str, snap: str, base: str | None = None) -> bytes:
    """The export stream of pve1, as bytes (to feed it whole, truncated or corrupted)."""
    got = lab.exec("pve1", PEER.export(vol, snap, base), text=False)
    assert got.returncode == 0, got.stderr
    assert len(got.stdout) > 100_000  # a MiB of random data went in
    return bytes(got.stdout)


def _import(
    lab: Lab, vol: str, snap: str, base: str | None, data: bytes
) -> subprocess.CompletedProcess[bytes]:
    """ssh pve2 pverep import … < data (secure mode's receiving half)."""
    return lab.exec("pve1", _ssh(lab, "pve2", PEER.import_(vol, snap, base)), input=data)


@contextmanager
def _tcp_importer(lab: Lab, remote: list[str]) -> Iterator[tuple[subprocess.Popen[str], str, str]]:
    """``pverep import … tcp://…`` on pve2 (started from pve1 over ssh); yields the process and
    the two lines it announces (address, port)."""
    with lab.popen(
        "pve1",
        _ssh(lab, "pve2", remote),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as target:
        assert target.stdout is not None and target.stderr is not None
        yield target, target.stdout.readline(), target.stdout.readline()


def _tcp_transfer(
    lab: Lab, vol: str, snap: str, base: str | None = None
) -> tuple[str, int, str, str]:
    """Insecure mode end to end; returns (announced ip, port, import stdout rest, stderr)."""
    cidr = str(ipaddress.ip_network(f"{lab.node_ip('pve2')}/24", strict=False))
    remote = PEER.import_(vol, snap, base, filename=f"tcp://{cidr}")
    with _tcp_importer(lab, remote) as (target, first, second):
        export = PEER.export(vol, snap, base)
        source = lab.exec(
            "pve1", [lab.config.python, "-c", SOURCE_OVER_TCP, first, second, *export], timeout=120
        )
        assert source.returncode == 0, source.stderr
        rest, err = target.communicate(timeout=120)
    assert target.returncode == 0, err
    return first.strip(), int(second), rest, err


# --- 1a: the insecure tcp:// channel ----------------------------------------------------------


def test_tcp_import_full_then_incremental(lab: Lab, vmid: int) -> None:
    guests.create(lab, vmid, "pve1", "lxc", ["32M"])
    vol = f"{STORE}:subvol-{vmid}-disk-0"
    ds = guests.dataset(f"subvol-{vmid}-disk-0")
    s1, mid, s2 = f"__replicate_{vmid}-0_1000__", "config-snap", f"__replicate_{vmid}-0_2000__"

    guests.write(lab, vmid)
    _snapshot(lab, ds, s1)
    ip, port, rest, _ = _tcp_transfer(lab, vol, s1)
    # the target announced its own address inside the CIDR and a migration port
    assert ip == lab.node_ip("pve2")
    assert 60000 <= port <= 60050
    assert rest == f"successfully imported '{vol}'\n"
    assert _guids(lab, "pve2", ds) == _guids(lab, "pve1", ds) and len(_guids(lab, "pve2", ds)) == 1
    assert guests.checksum(lab, vmid, "pve2") == guests.checksum(lab, vmid, "pve1")

    # incremental with an intermediate snapshot (-I carries it along)
    guests.write(lab, vmid)
    _snapshot(lab, ds, mid)
    guests.write(lab, vmid)
    _snapshot(lab, ds, s2)
    *_, rest, _ = _tcp_transfer(lab, vol, s2, s1)
    assert rest == f"successfully imported '{vol}'\n"
    source_guids = _guids(lab, "pve1", ds)
    assert list(source_guids) == [s1, mid, s2]
    assert _guids(lab, "pve2", ds) == source_guids
    assert guests.checksum(lab, vmid, "pve2") == guests.checksum(lab, vmid, "pve1")
    # the port was given back: nothing listens on the migration range any more
    listening = lab.exec("pve2", ["ss", "-Htln"], check=True).stdout
    assert f"{ip}:{port}" not in listening


# --- 1b: failed imports leave the target as it was --------------------------------------------


def test_failed_full_import_destroys_what_it_created(lab: Lab, vmid: int) -> None:
    guests.create(lab, vmid, "pve1", "lxc", ["32M", "32M"])
    vol0, vol1 = (f"{STORE}:subvol-{vmid}-disk-{n}" for n in (0, 1))
    ds0, ds1 = (guests.dataset(f"subvol-{vmid}-disk-{n}") for n in (0, 1))
    snap = f"__replicate_{vmid}-0_1000__"
    guests.write(lab, vmid)
    for ds in (ds0, ds1):
        _snapshot(lab, ds, snap)
    # disk-1 is already on the target: it must survive disk-0's failure untouched
    assert _import(lab, vol1, snap, None, _stream(lab, vol1, snap)).returncode == 0
    before = guests.checksum(lab, vmid, "pve2")
    assert before[vol0] is None and before[vol1] == guests.checksum(lab, vmid, "pve1")[vol1]
    guids1 = _guids(lab, "pve2", ds1)

    stream = _stream(lab, vol0, snap)
    truncated = _import(lab, vol0, snap, None, stream[: len(stream) // 2])
    assert truncated.returncode != 0
    assert b"successfully imported" not in truncated.stdout
    assert truncated.stderr.decode().strip().splitlines()[-1].startswith("zfs error:")
    assert not _exists(lab, "pve2", ds0)  # the half-received volume was destroyed

    corrupt = bytearray(stream)
    middle = len(corrupt) // 2
    corrupt[middle : middle + 4096] = bytes(4096)
    assert _import(lab, vol0, snap, None, bytes(corrupt)).returncode != 0
    assert not _exists(lab, "pve2", ds0)

    assert guests.checksum(lab, vmid, "pve2") == before
    assert _guids(lab, "pve2", ds1) == guids1
    # and the complete stream still goes in afterwards
    assert _import(lab, vol0, snap, None, stream).returncode == 0
    assert guests.checksum(lab, vmid, "pve2") == guests.checksum(lab, vmid, "pve1")


def test_failed_incremental_rolls_back_to_the_base(lab: Lab, vmid: int) -> None:
    guests.create(lab, vmid, "pve1", "lxc", ["32M"])
    vol = f"{STORE}:subvol-{vmid}-disk-0"
    ds = guests.dataset(f"subvol-{vmid}-disk-0")
    s1, mid, s2 = (f"__replicate_{vmid}-0_{t}__" for t in (1000, 1500, 2000))
    guests.write(lab, vmid)
    _snapshot(lab, ds, s1)
    assert _import(lab, vol, s1, None, _stream(lab, vol, s1)).returncode == 0
    at_base = guests.checksum(lab, vmid, "pve2")
    base_guids = _guids(lab, "pve2", ds)
    for snap in (mid, s2):
        guests.write(lab, vmid)
        _snapshot(lab, ds, snap)
    stream = _stream(lab, vol, s2, s1)

    def unchanged() -> None:
        assert _guids(lab, "pve2", ds) == base_guids
        assert guests.checksum(lab, vmid, "pve2") == at_base

    # cut after the first sub-stream began: whatever got in is rolled back to the base
    for cut in (len(stream) // 3, len(stream) * 3 // 4):
        failed = _import(lab, vol, s2, s1, stream[:cut])
        assert failed.returncode != 0 and b"successfully imported" not in failed.stdout
        unchanged()

    # the base the source names is missing on the target: refused before anything is touched
    missing = _import(lab, vol, s2, f"__replicate_{vmid}-0_999__", stream)
    assert missing.returncode == 255
    assert f"base snapshot '{ds}@__replicate_{vmid}-0_999__' doesn't exist" in (
        missing.stderr.decode()
    )
    unchanged()


@pytest.mark.xfail(
    strict=True,
    reason="zfs recv -F of a replication (-R) stream destroys a target dataset none of whose "
    "snapshots are in the stream (libzfs recv_incremental_replication, also OpenZFS); pvesm "
    "behaves the same. pvesr's source avoids it by picking the base by name AND guid; the "
    "target would have to read the stream header to refuse it itself.",
)
def test_incremental_on_a_same_named_foreign_base_keeps_the_target(lab: Lab, vmid: int) -> None:
    same_named_foreign_base_keeps_the_target(lab, vmid)


def same_named_foreign_base_keeps_the_target(lab: Lab, vmid: int) -> None:
    """An incremental whose base exists on the target by name only (other guid) must leave
    the target as it was (also run on real OpenZFS by tests/openzfs)."""
    guests.create(lab, vmid, "pve1", "lxc", ["32M"])
    vol = f"{STORE}:subvol-{vmid}-disk-0"
    ds = guests.dataset(f"subvol-{vmid}-disk-0")
    s1, s2 = (f"__replicate_{vmid}-0_{t}__" for t in (1000, 2000))
    guests.write(lab, vmid)
    _snapshot(lab, ds, s1)
    assert _import(lab, vol, s1, None, _stream(lab, vol, s1)).returncode == 0
    at_base = guests.checksum(lab, vmid, "pve2")
    guests.write(lab, vmid)
    _snapshot(lab, ds, s2)
    # same name, other snapshot (guid differs) on the target
    lab.exec("pve2", ["zfs", "destroy", f"{ds}@{s1}"], check=True)
    lab.exec("pve2", ["zfs", "snapshot", f"{ds}@{s1}"], check=True)
    impostor = _guids(lab, "pve2", ds)
    assert impostor[s1] != _guids(lab, "pve1", ds)[s1]
    failed = _import(lab, vol, s2, s1, _stream(lab, vol, s2, s1))
    assert failed.returncode != 0 and b"successfully imported" not in failed.stdout
    assert _guids(lab, "pve2", ds) == impostor
    assert guests.checksum(lab, vmid, "pve2") == at_base


def test_failed_tcp_import_rolls_back(lab: Lab, vmid: int) -> None:
    """A source that dies mid-stream on the insecure channel: the target cleans up too."""
    guests.create(lab, vmid, "pve1", "lxc", ["32M"])
    vol = f"{STORE}:subvol-{vmid}-disk-0"
    ds = guests.dataset(f"subvol-{vmid}-disk-0")
    snap = f"__replicate_{vmid}-0_1000__"
    guests.write(lab, vmid)
    _snapshot(lab, ds, snap)
    remote = PEER.import_(vol, snap, None, filename=f"tcp://{lab.node_ip('pve2')}")
    with _tcp_importer(lab, remote) as (target, first, second):
        # `head -c` stands for a source that dies after a few hundred KiB
        half = ["sh", "-c", 'pverep "$@" | head -c 300000', "sh", *PEER.export(vol, snap)]
        lab.exec("pve1", [lab.config.python, "-c", SOURCE_OVER_TCP, first, second, *half])
        rest, err = target.communicate(timeout=120)
    assert target.returncode == 255, err
    assert "successfully imported" not in rest
    assert not _exists(lab, "pve2", ds)


# --- 1c: volume destroy on a busy dataset -----------------------------------------------------


def _hold_busy(lab: Lab, node: str, ds: str, seconds: float) -> subprocess.Popen[str]:
    """A process whose cwd is inside the mounted dataset: unmounting it fails (EBUSY)."""
    mountpoint = lab.exec(node, ["zfs", "get", "-H", "-o", "value", "mountpoint", ds], check=True)
    lab.exec(node, ["zfs", "mount", ds])  # mounted already after create/recv; make sure
    holder = lab.popen(
        node,
        ["sh", "-c", 'cd "$1" && echo ready && exec sleep "$2"', "sh",
         mountpoint.stdout.strip(), str(seconds)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout is not None
    assert holder.stdout.readline() == "ready\n"
    return holder


def _removal(lab: Lab, vmid: int) -> list[str]:
    argv = PEER.prepare_local_job(f"{vmid}-0", [], scan=[STORE], last_sync=1, force=True)
    return _ssh(lab, "pve2", argv)


def test_stale_volume_destroy_retries_while_the_dataset_is_busy(lab: Lab, vmid: int) -> None:
    guests.create(lab, vmid, "pve1", "lxc", ["32M"])
    vol = f"{STORE}:subvol-{vmid}-disk-0"
    ds = guests.dataset(f"subvol-{vmid}-disk-0")
    snap = f"__replicate_{vmid}-0_1000__"
    guests.write(lab, vmid)
    _snapshot(lab, ds, snap)
    assert _import(lab, vol, snap, None, _stream(lab, vol, snap)).returncode == 0
    assert _exists(lab, "pve2", ds)

    hold = 4.0
    with _hold_busy(lab, "pve2", ds, hold) as holder:
        busy_until = time.monotonic() + hold
        assert lab.exec("pve2", ["zfs", "umount", ds]).returncode != 0  # really busy
        removal = lab.exec("pve1", _removal(lab, vmid), timeout=60)
        done = time.monotonic()
        holder_rc = holder.poll()
    assert removal.returncode == 0, removal.stderr
    assert f"{vmid}-0: delete stale volume '{vol}'" in removal.stderr
    assert not _exists(lab, "pve2", ds)
    # started while the dataset was busy for seconds more, done only once the holder had
    # left: the destroy kept retrying in between
    assert holder_rc == 0 and done >= busy_until


def test_destroy_gives_up_after_six_tries_and_keeps_the_data(lab: Lab, vmid: int) -> None:
    guests.create(lab, vmid, "pve1", "lxc", ["32M"])
    vol = f"{STORE}:subvol-{vmid}-disk-0"
    ds = guests.dataset(f"subvol-{vmid}-disk-0")
    snap = f"__replicate_{vmid}-0_1000__"
    guests.write(lab, vmid)
    _snapshot(lab, ds, snap)
    assert _import(lab, vol, snap, None, _stream(lab, vol, snap)).returncode == 0
    before = guests.checksum(lab, vmid, "pve2")

    with _hold_busy(lab, "pve2", ds, 9.0) as holder:
        started = time.monotonic()
        removal = lab.exec("pve1", _removal(lab, vmid), timeout=90)
        took = time.monotonic() - started
        still_busy = holder.poll() is None
        holder.wait()  # the holder leaves on its own (a kill would only reach nsenter)
    assert still_busy
    assert removal.returncode == 255
    assert removal.stderr.strip().splitlines()[-1].endswith("dataset is busy")
    assert took >= 5.0  # six tries, a second apart
    assert _exists(lab, "pve2", ds)
    assert guests.checksum(lab, vmid, "pve2") == before
