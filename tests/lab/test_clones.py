"""Linked clones on the lab cluster (real zfs-fuse, real sshd): a guest whose disk is a
``zfs clone`` of a template's ``base-<X>-disk-0@__base__``, named as PVE names it
(``local-zfs:base-<X>-disk-0/subvol-<Y>-disk-0``). The replica the source still sends is never
destroyed, and the second run is incremental: data by checksum, snapshots and the replica's
dataset by guid.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from pverep.lab import guests
from pverep.lab.control import Lab

from .replhelp import delete_jobs_of, job_log, pverep, run_job, snapshots


@pytest.fixture
def clone(lab: Lab, vmid: int) -> Iterator[tuple[int, int]]:
    template = vmid + 100_000
    guests.create_linked_clone(lab, template, vmid, "pve1", "lxc")
    # a clone's replication stream (zfs send -R) is a clone stream: like PVE, the template's
    # disk must be on the target first (there the replica is a clone of it again)
    guests.copy_template_disk(lab, template, "pve1", "pve2")
    try:
        yield template, vmid
    finally:
        delete_jobs_of(lab, vmid)
        for node in lab.nodes:
            guests.destroy_template_disk(lab, template, node)


def dataset_guid(lab: Lab, node: str, name: str) -> str:
    out = lab.exec(node, ["zfs", "get", "-Hp", "-o", "value", "guid", name], check=True)
    return out.stdout.strip()


def test_linked_clone_replica_is_kept_and_the_second_run_is_incremental(
    lab: Lab, clone: tuple[int, int]
) -> None:
    template, vmid = clone
    job = f"{vmid}-0"
    volid = f"local-zfs:base-{template}-disk-0/subvol-{vmid}-disk-0"
    ds = guests.dataset(f"subvol-{vmid}-disk-0")
    origin = lab.exec("pve1", ["zfs", "get", "-H", "-o", "value", "origin", ds], check=True)
    assert origin.stdout.strip() == f"{guests.dataset(f'base-{template}-disk-0')}@__base__"

    listed = json.loads(pverep(lab, "pve1", "guests", "--output-format", "json").stdout)
    mine = [g for g in listed if g["vmid"] == vmid]
    assert [g["volumes"] for g in mine] == [[volid]]

    guests.write(lab, vmid, 300_000)
    pverep(lab, "pve1", "create-local-job", job, "pve2")
    run_job(lab, "pve1", job)
    first = job_log(lab, "pve1", job)
    assert any(line.endswith(f"volumes => {volid}") for line in first)
    s1 = next(ln.split("'")[1] for ln in first if "create snapshot '" in ln)
    assert f"{job}: full sync '{volid}' ({s1})" in first
    replica_guid = dataset_guid(lab, "pve2", ds)
    there = lab.exec("pve2", ["zfs", "get", "-H", "-o", "value", "origin", ds], check=True)
    assert there.stdout.strip() == origin.stdout.strip()  # a clone of the same base there
    assert guests.checksum(lab, vmid, "pve2") == guests.checksum(lab, vmid, "pve1")

    guests.write(lab, vmid, 200_000)
    run_job(lab, "pve1", job)
    second = job_log(lab, "pve1", job)
    s2 = next(ln.split("'")[1] for ln in second if "create snapshot '" in ln)
    assert f"{job}: incremental sync '{volid}' ({s1} => {s2})" in second
    assert not [ln for ln in second if "delete stale volume" in ln]
    assert dataset_guid(lab, "pve2", ds) == replica_guid  # the same dataset, never re-created
    src, dst = snapshots(lab, "pve1", vmid), snapshots(lab, "pve2", vmid)
    name = f"subvol-{vmid}-disk-0"
    assert dst[name][s2] == src[name][s2]
    assert s1 not in dst[name]  # finalize removed the previous snapshot on the target
    assert guests.checksum(lab, vmid, "pve2") == guests.checksum(lab, vmid, "pve1")

    # reconcile (dry run) sees the replica under the clone volid: nothing to destroy
    plan = pverep(lab, "pve1", "reconcile", "--dry-run", "--guest", str(vmid))
    assert "destroy" not in plan.stdout.lower(), plan.stdout

    # a full removal still cleans the target; the template's disk there is not the guest's
    pverep(lab, "pve1", "delete", job)
    run_job(lab, "pve1", job)
    gone = lab.exec("pve2", ["zfs", "list", "-H", "-o", "name", ds])
    assert gone.returncode != 0
