"""Target side after a lost sender: a newer ``pverep import`` of a volume supersedes a stale
one, and an import whose input stops aborts its receive by itself (watchdog). Real zfs-fuse,
real sshd; data verified by guid and checksum on the target.

The stale import is made the way a partition makes it: the stream reaches the importer
through ssh, and its sender simply stops writing without closing anything (this test process
is the relay in the middle and pauses).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from pverep.lab import guests
from pverep.lab.control import Lab
from pverep.transport.peer import PeerCommands
from pverep.transport.ssh import SshTarget, pvesr_ssh_argv, ssh_options

pytestmark = pytest.mark.lab
PEER = PeerCommands()
REGISTRY = "/run/pverep/imports"


@dataclass
class Volume:
    vmid: int
    vol: str
    ds: str
    base: str
    sync: str
    stream: bytes  # incremental base -> sync, exported on pve1


def _ssh(lab: Lab, node: str, remote: list[str]) -> list[str]:
    kh = f"/etc/pve/nodes/{node}/ssh_known_hosts"
    return pvesr_ssh_argv(SshTarget(node, lab.node_ip(node), kh), remote)


def _guids(lab: Lab, node: str, ds: str) -> dict[str, str]:
    out = lab.exec(node, ["zfs", "list", "-Hp", "-r", "-t", "snapshot", "-o", "name,guid", ds])
    return {ln.split("\t")[0].split("@")[1]: ln.split("\t")[1] for ln in out.stdout.splitlines()}


def _export(lab: Lab, vol: str, snap: str, base: str | None = None) -> bytes:
    res = lab.exec("pve1", PEER.export(vol, snap, base), text=False)
    assert res.returncode == 0, res.stderr
    return bytes(res.stdout)


def _record(lab: Lab, ds: str) -> dict[str, object] | None:
    path = f"{REGISTRY}/{urllib.parse.quote(ds, safe='')}.json"
    res = lab.exec("pve2", ["cat", path])
    return json.loads(res.stdout) if res.returncode == 0 else None


def _running(lab: Lab, node: str, pid: int, start: int) -> bool:
    """Same process (pid + start time) still alive and not a zombie, on ``node``."""
    res = lab.exec(node, ["cat", f"/proc/{pid}/stat"])
    if res.returncode != 0:
        return False
    rest = res.stdout[res.stdout.rindex(")") + 2 :].split()
    return int(rest[19]) == start and rest[0] != "Z"


def _wait_receiver(lab: Lab, ds: str, timeout: float = 30.0) -> dict[str, object]:
    """The stale import's registry record once its zfs recv is running."""
    deadline = time.monotonic() + timeout
    while True:
        rec = _record(lab, ds)
        if rec is not None and rec["receiver"] is not None:
            return rec
        assert time.monotonic() < deadline, f"no import of {ds} registered on pve2"
        time.sleep(0.1)


@pytest.fixture
def volume(lab: Lab, vmid: int) -> Iterator[Volume]:
    """A guest on pve1 replicated once to pve2 (base), plus an incremental stream to resend."""
    guests.create(lab, vmid, "pve1", "lxc", ["64M"])
    vol, ds = f"local-zfs:subvol-{vmid}-disk-0", f"rpool/data/subvol-{vmid}-disk-0"
    base, sync = f"__replicate_{vmid}-0_1000__", f"__replicate_{vmid}-0_2000__"
    guests.write(lab, vmid, 1_000_000)
    lab.exec("pve1", ["zfs", "snapshot", f"{ds}@{base}"], check=True)
    full = lab.exec("pve2", PEER.import_(vol, base), input=_export(lab, vol, base))
    assert full.returncode == 0, full.stderr
    guests.write(lab, vmid, 8 << 20)
    lab.exec("pve1", ["zfs", "snapshot", f"{ds}@{sync}"], check=True)
    yield Volume(vmid, vol, ds, base, sync, _export(lab, vol, sync, base))


def test_newer_import_supersedes_a_stale_one(lab: Lab, volume: Volume) -> None:
    v = volume
    assert len(v.stream) > 4 << 20
    argv = _ssh(lab, "pve2", PEER.import_(v.vol, v.sync, v.base))
    stale = lab.popen("pve1", argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                      stderr=subprocess.PIPE)  # fmt: skip
    try:
        assert stale.stdin is not None
        stale.stdin.write(v.stream[: len(v.stream) // 2])  # then the sender "vanishes"
        stale.stdin.flush()
        rec = _wait_receiver(lab, v.ds)
        importer, receiver = rec["importer"], rec["receiver"]
        assert isinstance(importer, list) and isinstance(receiver, list)
        assert _running(lab, "pve2", *importer) and _running(lab, "pve2", *receiver)

        newer = lab.exec("pve1", argv, input=v.stream, text=False, timeout=120)
        err = newer.stderr.decode()
        assert newer.returncode == 0, err
        assert newer.stdout.decode() == f"successfully imported '{v.vol}'\n"
        assert f"stopping stale import of '{v.ds}' (pid {importer[0]}, " in err
        assert f"zfs recv pid {receiver[0]}" in err
        assert not _running(lab, "pve2", *importer)
        assert not _running(lab, "pve2", *receiver)
        stale.communicate(timeout=30)  # its ssh session ended with it
        assert stale.returncode != 0
    finally:
        if stale.poll() is None:
            stale.kill()
            stale.wait()
    assert _guids(lab, "pve2", v.ds) == _guids(lab, "pve1", v.ds)
    assert list(_guids(lab, "pve2", v.ds)) == [v.base, v.sync]
    assert guests.checksum(lab, v.vmid, "pve2") == guests.checksum(lab, v.vmid, "pve1")
    assert _record(lab, v.ds) is None  # the finished import unregistered itself


def test_import_watchdog_aborts_a_receive_whose_input_stops(lab: Lab, volume: Volume) -> None:
    v = volume
    env = {**os.environ, "PVEREP_IMPORT_STALL_TIMEOUT": "2"}
    with lab.popen("pve2", PEER.import_(v.vol, v.sync, v.base), env=env, stdin=subprocess.PIPE,
                   stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:  # fmt: skip
        try:
            assert proc.stdin is not None
            proc.stdin.write(v.stream[: len(v.stream) // 2])
            proc.stdin.flush()
            rec = _wait_receiver(lab, v.ds)
            receiver = rec["receiver"]
            assert isinstance(receiver, list)
            proc.wait(timeout=60)  # stdin stays open (communicate would close it)
            assert proc.stdout is not None and proc.stderr is not None
            out, err = proc.stdout.read(), proc.stderr.read()
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode != 0
    assert out == b""
    last = err.decode().strip().splitlines()[-1]
    assert last == (f"import of '{v.ds}' stalled - pump stalled: "
                    "no progress on the read side for 2.0 s"), err  # fmt: skip
    assert not _running(lab, "pve2", *receiver)
    assert list(_guids(lab, "pve2", v.ds)) == [v.base]  # rolled back to the base
    assert _record(lab, v.ds) is None
    # the dataset is free again: the complete stream goes through
    again = lab.exec("pve2", PEER.import_(v.vol, v.sync, v.base), input=v.stream, timeout=120)
    assert again.returncode == 0, again.stderr
    assert _guids(lab, "pve2", v.ds) == _guids(lab, "pve1", v.ds)
    assert guests.checksum(lab, v.vmid, "pve2") == guests.checksum(lab, v.vmid, "pve1")


def test_a_newer_import_stops_only_the_receiver_of_a_session_hosted_one(
    lab: Lab, volume: Volume
) -> None:
    """The stale import is a request of a ``pverep serve`` session (its stream over ``ssh
    -W`` to the session's loopback port, the key first): the newer import stops its
    ``zfs recv`` only, the stale request fails, and the session answers its next request."""
    v = volume
    target = SshTarget("pve2", lab.node_ip("pve2"), "/etc/pve/nodes/pve2/ssh_known_hosts")
    session = lab.popen("pve1", _ssh(lab, "pve2", ["pverep", "serve"]), stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    chan: subprocess.Popen[bytes] | None = None
    assert session.stdin is not None and session.stdout is not None
    try:
        assert json.loads(session.stdout.readline())["serve"] == "pverep"
        args = {"volid": v.vol, "format": "zfs", "snapshot": v.sync, "base": v.base}
        session.stdin.write(json.dumps({"id": 1, "op": "import", "args": args}).encode() + b"\n")
        session.stdin.flush()
        ready = json.loads(session.stdout.readline())
        assert ready["id"] == 1 and ready["ready"] is True
        forward = [*ssh_options(target), "-W", f"127.0.0.1:{ready['port']}", f"root@{target.ip}"]
        chan = lab.popen("pve1", forward, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)  # fmt: skip
        assert chan.stdin is not None and chan.stdout is not None
        chan.stdin.write(bytes.fromhex(ready["key"]))
        chan.stdin.flush()
        assert chan.stdout.read(3) == b"ok\n"
        chan.stdin.write(v.stream[: len(v.stream) // 2])  # then the sender "vanishes"
        chan.stdin.flush()
        rec = _wait_receiver(lab, v.ds)
        assert rec["hosted"] is True
        importer, receiver = rec["importer"], rec["receiver"]
        assert isinstance(importer, list) and isinstance(receiver, list)

        argv = _ssh(lab, "pve2", PEER.import_(v.vol, v.sync, v.base))
        newer = lab.exec("pve1", argv, input=v.stream, text=False, timeout=120)
        err = newer.stderr.decode()
        assert newer.returncode == 0, err
        assert f"(serve session pid {importer[0]}, zfs recv pid {receiver[0]}" in err
        assert not _running(lab, "pve2", *receiver)
        assert _running(lab, "pve2", *importer)  # the session lives on
        stale = json.loads(session.stdout.readline())
        assert stale["id"] == 1 and stale["ok"] is False, stale
        finalize = {"jobid": f"{v.vmid}-0", "volids": [v.vol], "last_sync": 2000}
        session.stdin.write(json.dumps({"id": 2, "op": "finalize", "args": finalize}).encode()
                            + b"\n")  # fmt: skip
        session.stdin.flush()
        assert json.loads(session.stdout.readline()) == {
            "id": 2, "ok": True, "stdout": "", "log": [
                f"delete stale replication snapshot '{v.base}' on {v.vol}"
            ],
        }  # fmt: skip
    finally:
        for proc in (chan, session):
            if proc is None:
                continue
            if proc.poll() is None:
                proc.kill()
            # reaps it and closes its pipes: an unclosed pipe is a ResourceWarning, an error
            # under filterwarnings=error whenever the garbage collector finds it
            proc.communicate(timeout=30)
    assert list(_guids(lab, "pve2", v.ds)) == [v.sync]
    assert _guids(lab, "pve2", v.ds)[v.sync] == _guids(lab, "pve1", v.ds)[v.sync]
    assert guests.checksum(lab, v.vmid, "pve2") == guests.checksum(lab, v.vmid, "pve1")
