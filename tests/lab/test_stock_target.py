"""A mixed cluster: pve1 replicates one guest to a pverep node (pve2) and to a stock-like node
(pve3: no ``pverep`` on its PATH; FAKE ``pvesr``/``pvesm`` from pverep.lab.fakepve record their
argv and do the real work) in the same scheduler run, with default settings. pve3 must receive
exactly pvesr's argv in pvesr's order; the replicas equal the source by checksum and guid.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from pverep.lab import fakepve, guests
from pverep.lab.control import Lab

from .replhelp import align, job_log, pverep, pvesr_incremental_calls, snapshots, written_guest

STOCK, PVEREP = "pve3", "pve2"


@pytest.fixture
def guest(lab: Lab, vmid: int) -> Iterator[int]:
    with written_guest(lab, vmid, ["64M", "32M"], 1_000_000), fakepve.stock_node(lab, STOCK):
        yield vmid


def _sync_time(lab: Lab, jobid: str) -> int:
    found = re.findall(
        r"create snapshot '__replicate_\S+_(\d+)__'", "\n".join(job_log(lab, "pve1", jobid))
    )
    assert found, jobid
    return int(found[-1])


def _scheduler_run(lab: Lab) -> None:
    align()
    pverep(lab, "pve1", "run")  # the timer's pass: every due job of this node, one run


def _same_replica(lab: Lab, vmid: int, node: str, sync: str) -> None:
    assert guests.checksum(lab, vmid, node) == guests.checksum(lab, vmid, "pve1")
    source, replica = snapshots(lab, "pve1", vmid), snapshots(lab, node, vmid)
    assert sorted(replica) == sorted(source) == [f"subvol-{vmid}-disk-0", f"subvol-{vmid}-disk-1"]
    for ds in source:
        assert replica[ds][sync] == source[ds][sync]


def test_stock_and_pverep_targets_in_one_run_full_then_incremental(lab: Lab, guest: int) -> None:
    vmid = guest
    stock_job, pverep_job = f"{vmid}-0", f"{vmid}-1"
    v0, v1 = f"local-zfs:subvol-{vmid}-disk-0", f"local-zfs:subvol-{vmid}-disk-1"
    pverep(lab, "pve1", "create-local-job", stock_job, STOCK)
    pverep(lab, "pve1", "create-local-job", pverep_job, PVEREP)

    _scheduler_run(lab)
    t1 = _sync_time(lab, stock_job)
    s1 = f"__replicate_{stock_job}_{t1}__"
    assert fakepve.recorded(lab, STOCK) == [
        ["pvesr", "prepare-local-job", stock_job, v0, v1, "--last_sync", "0"],
        ["pvesm", "import", v0, "zfs", "-", "-with-snapshots", "1", "-snapshot", s1,
         "-allow-rename", "0"],
        ["pvesm", "import", v1, "zfs", "-", "-with-snapshots", "1", "-snapshot", s1,
         "-allow-rename", "0"],
        ["pvesr", "finalize-local-job", stock_job, v0, v1, "--last_sync", str(t1)],
    ]  # fmt: skip
    _same_replica(lab, vmid, STOCK, s1)
    p1 = f"__replicate_{pverep_job}_{_sync_time(lab, pverep_job)}__"
    _same_replica(lab, vmid, PVEREP, p1)
    assert f"{pverep_job}: full sync '{v0}' ({p1})" in job_log(lab, "pve1", pverep_job)

    guests.write(lab, vmid, 300_000)
    lab.exec("pve1", ["rm", "-f", fakepve.RECORD])
    lab.exec(STOCK, ["rm", "-f", fakepve.RECORD], check=True)
    pverep(lab, "pve1", "schedule-now", stock_job)
    pverep(lab, "pve1", "schedule-now", pverep_job)
    _scheduler_run(lab)
    t2 = _sync_time(lab, stock_job)
    s2 = f"__replicate_{stock_job}_{t2}__"
    assert t2 > t1
    assert fakepve.recorded(lab, STOCK) == pvesr_incremental_calls(
        stock_job, [v0, v1], t1, s1, s2, t2
    )
    log = job_log(lab, "pve1", stock_job)
    assert f"{stock_job}: incremental sync '{v0}' ({s1} => {s2})" in log
    assert f"{stock_job}: successfully imported '{v1}'" in log
    _same_replica(lab, vmid, STOCK, s2)
    assert s1 not in snapshots(lab, STOCK, vmid)[f"subvol-{vmid}-disk-0"]  # finalize cleaned
    p2 = f"__replicate_{pverep_job}_{_sync_time(lab, pverep_job)}__"
    _same_replica(lab, vmid, PVEREP, p2)
    assert fakepve.recorded(lab, PVEREP) == []  # the pverep node was never sent pvesr/pvesm
