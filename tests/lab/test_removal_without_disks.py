"""Issue 10 item 8: a guest config moved by hand to a node that never had its disks, then the
job deleted there. The removal cleans the target and the job goes; the missing local datasets
are nothing to clean, not an error that keeps the job "marked for removal" forever.
Real zfs-fuse and sshd; the source's disks (pve1) must stay untouched."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pverep.lab import guests
from pverep.lab.control import Lab

from .replhelp import datasets, job_log, pverep, run_job, snapshots, written_guest


@pytest.fixture
def guest(lab: Lab, vmid: int) -> Iterator[int]:
    with written_guest(lab, vmid, ["32M", "32M"], 300_000) as new:
        yield new


def test_removal_on_a_node_without_the_disks_cleans_the_target_and_drops_the_job(
    lab: Lab, guest: int
) -> None:
    vmid, job = guest, f"{guest}-0"
    disks = {f"subvol-{vmid}-disk-{i}" for i in (0, 1)}
    pverep(lab, "pve1", "create-local-job", job, "pve3")
    run_job(lab, "pve1", job)
    assert datasets(lab, "pve3", vmid) == disks
    on_pve1 = snapshots(lab, "pve1", vmid)

    guests.move(lab, vmid, "pve2")  # the admin's manual move; pve2 never had these disks
    assert datasets(lab, "pve2", vmid) == set()
    pverep(lab, "pve2", "delete", job)
    run_job(lab, "pve2", job)

    lines = job_log(lab, "pve2", job)
    assert lines[-2:] == [f"{job}: job removed", f"{job}: end replication job"], lines
    assert datasets(lab, "pve3", vmid) == set()  # the target was cleaned
    assert job not in (lab.config.etc_pve / "replication.cfg").read_text()  # the job went
    listed = pverep(lab, "pve2", "list").stdout
    assert job not in listed
    assert snapshots(lab, "pve1", vmid) == on_pve1  # nothing touched where the disks are
