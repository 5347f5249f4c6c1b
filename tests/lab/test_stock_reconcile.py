"""Reconcile in a mixed cluster (issue 10): pve3 is stock-like (no ``pverep`` on its PATH;
FAKE ``pvesr``/``pvesm`` from pverep.lab.fakepve record their argv). A guest moved from pve1
to pve2 is reconciled on pve2: pve3 is only read (zfs list) and receives no pverep verb, the
state is adopted from what pve3 holds, a clean-up step pve3 has no verb for is skipped with its
reason and then done by the next run's ``pvesr prepare-local-job``, which continues
incrementally (data by checksum and guid). An orphaned job's removal reaches pve3 as pvesr's
own argv; ``pverep cleanup --target pve3`` is refused in one line.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from pverep.lab import fakepve, guests
from pverep.lab.control import Lab

from .replhelp import (
    align,
    datasets,
    job_log,
    pverep,
    pvesr_incremental_calls,
    run_job,
    snapshots,
    written_guest,
)

STOCK, PVEREP = "pve3", "pve2"


@pytest.fixture
def guest(lab: Lab, vmid: int) -> Iterator[int]:
    with written_guest(lab, vmid, ["64M", "32M"], 1_000_000), fakepve.stock_node(lab, STOCK):
        yield vmid


def _sync_time(lab: Lab, node: str, jobid: str) -> int:
    found = re.findall(
        r"create snapshot '__replicate_\S+_(\d+)__'", "\n".join(job_log(lab, node, jobid))
    )
    assert found, jobid
    return int(found[-1])


def _forget_recorded(lab: Lab) -> None:
    lab.exec(STOCK, ["rm", "-f", fakepve.RECORD], check=True)


def _reconcile(lab: Lab, node: str) -> dict[str, Any]:
    """A dry run, then the real one: it does the planned steps (exit 0)."""
    dry = json.loads(pverep(lab, node, "reconcile", "--dry-run", "--output-format", "json").stdout)
    res = pverep(lab, node, "reconcile", "--output-format", "json", check=False)
    real = json.loads(res.stdout)
    assert res.returncode == 0, res.stderr
    assert [s["text"] for s in real["steps"]] == [s["text"] for s in dry["steps"]]
    return dict(real)


def test_reconcile_of_a_moved_guest_only_reads_the_stock_target(lab: Lab, guest: int) -> None:
    vmid = guest
    to_stock, to_pverep = f"{vmid}-0", f"{vmid}-1"
    v0, v1 = f"local-zfs:subvol-{vmid}-disk-0", f"local-zfs:subvol-{vmid}-disk-1"
    pverep(lab, "pve1", "create-local-job", to_stock, STOCK)
    pverep(lab, "pve1", "create-local-job", to_pverep, PVEREP)
    run_job(lab, "pve1", to_stock)
    run_job(lab, "pve1", to_pverep)  # pve2 gets to_stock's snapshot, too (-R)
    t1 = _sync_time(lab, "pve1", to_stock)
    s1 = f"__replicate_{to_stock}_{t1}__"
    # a stale snapshot of the job on the stock target: reconcile plans its deletion
    stale = f"__replicate_{to_stock}_1000__"
    lab.exec(STOCK, ["zfs", "snapshot", f"{guests.DATA}/subvol-{vmid}-disk-0@{stale}"], check=True)
    _forget_recorded(lab)

    guests.move(lab, vmid, PVEREP)  # a manual move onto the pverep replica
    real = _reconcile(lab, PVEREP)
    kinds = [(s["kind"], s["text"]) for s in real["steps"]]
    assert (
        "adopt-state",
        f"job {to_stock}: record state on {PVEREP}: last_sync = {t1}, storages local-zfs",
    ) in kinds, kinds
    deletions = [t for k, t in kinds if k == "delete-snapshot"]
    assert len(deletions) == 1 and stale in deletions[0] and STOCK in deletions[0], kinds
    assert real["failed"] == []
    assert real["skipped"] == [
        f"{deletions[0]}: {STOCK} runs stock Proxmox VE (no 'pverep replica-clean' there): "
        "the job's next run deletes this stale snapshot ('pvesr prepare-local-job')"
    ]
    assert len(real["done"]) == len(real["steps"]) - 1
    assert fakepve.recorded(lab, STOCK) == []  # read with zfs list only: no pvesr, no pverep
    cfg = json.loads(pverep(lab, "pve1", "read", to_stock, "--output-format", "json").stdout)
    assert (cfg["source"], cfg["target"]) == (PVEREP, STOCK)
    state = json.loads(lab.exec(PVEREP, ["cat", "/var/lib/pve-manager/pve-replication-state.json"],
                                check=True).stdout)  # fmt: skip
    assert state[str(vmid)][f"local/{STOCK}"]["last_sync"] == t1

    guests.write(lab, vmid, 300_000)  # the guest runs on pve2 now
    align()
    pverep(lab, PVEREP, "run", "--id", to_stock)
    t2 = _sync_time(lab, PVEREP, to_stock)
    s2 = f"__replicate_{to_stock}_{t2}__"
    assert fakepve.recorded(lab, STOCK) == pvesr_incremental_calls(
        to_stock, [v0, v1], t1, s1, s2, t2
    )
    assert f"{to_stock}: incremental sync '{v0}' ({s1} => {s2})" in job_log(lab, PVEREP, to_stock)
    assert guests.checksum(lab, vmid, STOCK) == guests.checksum(lab, vmid, PVEREP)
    source, replica = snapshots(lab, PVEREP, vmid), snapshots(lab, STOCK, vmid)
    for ds in (f"subvol-{vmid}-disk-0", f"subvol-{vmid}-disk-1"):
        assert replica[ds][s2] == source[ds][s2]
        assert stale not in replica[ds] and s1 not in replica[ds]


def test_an_orphaned_jobs_removal_reaches_the_stock_target_as_pvesrs_argv(
    lab: Lab, guest: int
) -> None:
    vmid = guest
    jobid = f"{vmid}-0"
    pverep(lab, "pve1", "create-local-job", jobid, STOCK)
    run_job(lab, "pve1", jobid)
    assert datasets(lab, STOCK, vmid) == {f"subvol-{vmid}-disk-0", f"subvol-{vmid}-disk-1"}
    refused = pverep(lab, "pve1", "cleanup", "--target", STOCK, check=False)
    assert refused.returncode != 0
    assert refused.stderr.strip().splitlines() == [
        f"node '{STOCK}' runs stock Proxmox VE: 'pverep cleanup' runs on pverep nodes only "
        "(on a stock node the jobs' own runs and 'pvesr delete' clean up)"
    ]
    _forget_recorded(lab)

    pverep(lab, "pve1", "delete", jobid)  # marked for removal ...
    guests.find(lab, vmid).config.unlink()  # ... and the guest is gone before the job ran
    lab.refresh_vmlist()
    real = _reconcile(lab, "pve1")
    assert [s["kind"] for s in real["steps"]] == ["remove-orphan-job"]
    assert real["done"] == [real["steps"][0]["text"]] and real["skipped"] == []
    assert fakepve.recorded(lab, STOCK) == [
        ["pvesr", "prepare-local-job", jobid, "--scan", "local-zfs,local-zfs2",
         "--last_sync", "1", "--force"],
    ]  # fmt: skip
    assert datasets(lab, STOCK, vmid) == set()
    listed = pverep(lab, "pve1", "list").stdout
    assert jobid not in listed


def test_dry_runs_and_delete_force_only_read_the_stock_target(lab: Lab, guest: int) -> None:
    vmid = guest
    jobid = f"{vmid}-0"
    v0, v1 = f"local-zfs:subvol-{vmid}-disk-0", f"local-zfs:subvol-{vmid}-disk-1"
    pverep(lab, "pve1", "create-local-job", jobid, STOCK)
    run_job(lab, "pve1", jobid)
    snap = f"__replicate_{jobid}_{_sync_time(lab, 'pve1', jobid)}__"
    _forget_recorded(lab)
    planned = pverep(lab, "pve1", "run", "--dry-run", "--id", jobid).stdout
    assert f"would send {v0} to {STOCK}: incremental from '{snap}'" in planned, planned
    removal = pverep(lab, "pve1", "delete", "--dry-run", jobid).stdout
    assert f"would delete volume {v1} ({STOCK})" in removal, removal
    assert fakepve.recorded(lab, STOCK) == []  # zfs list only

    dropped = pverep(lab, "pve1", "delete", jobid, "--force")
    assert f"left behind on {STOCK}: replica volume {v0} ({snap})" in dropped.stderr
    assert f"left behind on {STOCK}: replica volume {v1} ({snap})" in dropped.stderr
    assert fakepve.recorded(lab, STOCK) == []
    assert datasets(lab, STOCK, vmid) == {f"subvol-{vmid}-disk-0", f"subvol-{vmid}-disk-1"}


def test_a_job_removal_reaches_the_stock_target_as_pvesrs_argv(lab: Lab, guest: int) -> None:
    vmid = guest
    jobid = f"{vmid}-0"
    pverep(lab, "pve1", "create-local-job", jobid, STOCK)
    run_job(lab, "pve1", jobid)
    _forget_recorded(lab)
    pverep(lab, "pve1", "delete", jobid)  # pvesr delete: marked, removed at the next run
    run_job(lab, "pve1", jobid)
    assert fakepve.recorded(lab, STOCK) == [
        ["pvesr", "prepare-local-job", jobid, "--scan", "local-zfs", "--last_sync", "1",
         "--force"],
    ]  # fmt: skip
    assert datasets(lab, STOCK, vmid) == set()
    assert datasets(lab, "pve1", vmid) == {f"subvol-{vmid}-disk-0", f"subvol-{vmid}-disk-1"}
    assert jobid not in pverep(lab, "pve1", "list").stdout
