"""Target side on the lab (real zfs-fuse, real sshd): export | ssh import, prepare-local-job
and finalize-local-job over ssh with pvesr's exact argv shape, data verified by guid/checksum.

Uses the lab fixtures ``lab`` and ``vmid`` (tests/lab/conftest.py, branch ``lab``).
"""

from __future__ import annotations

import json
import subprocess

import pytest

from pverep.lab import guests
from pverep.lab.control import Lab
from pverep.transport.peer import PeerCommands
from pverep.transport.ssh import SshTarget, pvesr_ssh_argv

pytestmark = pytest.mark.lab
PEER = PeerCommands()  # `pverep` on the node's PATH


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


def _transfer(lab: Lab, vol: str, snap: str, base: str | None = None) -> str:
    """pverep export on pve1 | ssh pve2 pverep import (the secure-mode pipeline)."""
    with lab.popen("pve1", PEER.export(vol, snap, base), stdout=subprocess.PIPE) as export:
        assert export.stdout is not None
        remote = _ssh(lab, "pve2", PEER.import_(vol, snap, base))
        result = lab.exec("pve1", remote, input=export.stdout.read())
    assert export.returncode == 0
    assert result.returncode == 0, result.stderr
    return result.stdout.decode()


def test_full_then_incremental_then_prepare_and_finalize(lab: Lab, vmid: int) -> None:
    guests.create(lab, vmid, "pve1", "lxc", ["32M"])
    vol = f"local-zfs:subvol-{vmid}-disk-0"
    ds = f"rpool/data/subvol-{vmid}-disk-0"
    job = f"{vmid}-0"
    s1, s2 = f"__replicate_{job}_1000__", f"__replicate_{job}_2000__"

    guests.write(lab, vmid)
    lab.exec("pve1", ["zfs", "snapshot", f"{ds}@{s1}"], check=True)
    assert _transfer(lab, vol, s1) == f"successfully imported '{vol}'\n"

    guests.write(lab, vmid)
    lab.exec("pve1", ["zfs", "snapshot", f"{ds}@{s2}"], check=True)
    _transfer(lab, vol, s2, s1)
    assert _guids(lab, "pve2", ds) == _guids(lab, "pve1", ds)
    assert guests.checksum(lab, vmid, "pve2") == guests.checksum(lab, vmid, "pve1")

    fin = lab.exec("pve1", _ssh(lab, "pve2", PEER.finalize_local_job(job, [vol], 2000)))
    assert fin.returncode == 0 and fin.stdout == ""
    assert f"delete stale replication snapshot '{s1}' on {vol}" in fin.stderr
    assert list(_guids(lab, "pve2", ds)) == [s2]

    # the next run's prepare: expected snapshot missing -> nothing removed, JSON has guid+time
    argv = PEER.prepare_local_job(job, [vol], last_sync=3000)
    prep = lab.exec("pve1", _ssh(lab, "pve2", argv))
    assert prep.returncode == 0, prep.stderr
    assert f"expected snapshot __replicate_{job}_3000__ not present for {vol}" in prep.stderr
    assert prep.stdout.count("\n") == 1
    doc = json.loads(prep.stdout)
    assert list(doc[vol]) == [s2]
    assert doc[vol][s2]["id"] == _guids(lab, "pve1", ds)[s2]

    # removal: every volume with the job's snapshots is destroyed on the target
    rm = lab.exec(
        "pve1",
        _ssh(
            lab,
            "pve2",
            PEER.prepare_local_job(job, [], scan=["local-zfs"], last_sync=1, force=True),
        ),
    )
    assert rm.returncode == 0, rm.stderr
    assert json.loads(rm.stdout) == {}
    assert lab.exec("pve2", ["zfs", "list", ds]).returncode != 0


def test_target_refuses_guest_living_on_it(lab: Lab, vmid: int) -> None:
    guests.create(lab, vmid, "pve2", "lxc", ["32M"])
    vol = f"local-zfs:subvol-{vmid}-disk-0"
    ds = f"rpool/data/subvol-{vmid}-disk-0"
    lab.exec("pve2", ["zfs", "snapshot", f"{ds}@__replicate_{vmid}-0_5__"], check=True)
    argv = PEER.prepare_local_job(f"{vmid}-0", [], scan=["local-zfs"], last_sync=1, force=True)
    res = lab.exec("pve1", _ssh(lab, "pve2", argv))
    assert res.returncode == 255
    assert res.stderr.strip().endswith(f"guest '{vmid}' is on local node")
    assert res.stdout == ""
    assert lab.exec("pve2", ["zfs", "list", ds]).returncode == 0  # untouched
    imp = lab.exec("pve1", _ssh(lab, "pve2", PEER.import_(vol, "x")), input="")
    assert imp.returncode == 255 and f"guest '{vmid}' is on local node" in imp.stderr
