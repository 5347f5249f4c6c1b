"""``run --dry-run`` and ``delete --dry-run`` on the lab: nothing changes anywhere (snapshots
by guid on both nodes, target datasets, state, config, job log, history), and the real run
then does exactly what the plan said."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from pverep.lab import guests
from pverep.lab.control import Lab

from .replhelp import datasets, delete_jobs_of, job_log, pverep, run_job, snapshots

FILES = (
    "/etc/pve/replication.cfg",
    "/var/lib/pve-manager/pve-replication-state.json",
    "/var/lib/pve-manager/pverep-history.jsonl",
)


@pytest.fixture
def guest(lab: Lab, vmid: int) -> Iterator[int]:
    guests.create(lab, vmid, "pve1", "lxc", ["64M"])
    guests.write(lab, vmid, 1_000_000)
    yield vmid
    delete_jobs_of(lab, vmid)


def world(lab: Lab, vmid: int, job: str) -> dict[str, object]:
    """Everything a dry run must leave alone."""
    files = {p: lab.exec("pve1", ["cat", p]).stdout for p in FILES}
    log = lab.exec("pve1", ["cat", f"/var/log/pve/replicate/{job}"]).stdout
    return {
        "snap1": snapshots(lab, "pve1", vmid),
        "snap2": snapshots(lab, "pve2", vmid),
        "ds2": datasets(lab, "pve2", vmid),
        "files": files,
        "log": log,
    }


def dry(lab: Lab, *args: str) -> list[str]:
    before_out = pverep(lab, "pve1", *args).stdout
    return before_out.splitlines()


def deleted(plan: list[str], node: str) -> set[tuple[str, str]]:
    """(dataset, snapshot) pairs the plan would delete on ``node``."""
    out = set()
    for line in plan:
        m = re.fullmatch(rf"would delete snapshot '(\S+)' on \S+:(\S+) \({node}\)", line)
        if m:
            out.add((m[2], m[1]))
    return out


def gone(
    before: dict[str, dict[str, str]], after: dict[str, dict[str, str]]
) -> set[tuple[str, str]]:
    return {(ds, s) for ds, snaps in before.items() for s in snaps if s not in after.get(ds, {})}


def test_dry_run_changes_nothing_and_the_run_follows_the_plan(lab: Lab, guest: int) -> None:
    vmid, job = guest, f"{guest}-0"
    volid, ds = f"local-zfs:subvol-{vmid}-disk-0", f"subvol-{vmid}-disk-0"
    pverep(lab, "pve1", "create-local-job", job, "pve2")

    # 1. first run: full (the scheduler's pass would pick the new job too)
    before = world(lab, vmid, job)
    # (other jobs left on the lab may fail to plan: only this one's line matters here)
    scheduled = pverep(lab, "pve1", "run", "--dry-run", check=False).stdout.splitlines()
    assert f"job {job}: guest {vmid} -> pve2" in scheduled
    plan = dry(lab, "run", "--dry-run", "--id", job)
    assert world(lab, vmid, job) == before
    assert plan[0] == f"job {job}: guest {vmid} -> pve2"
    assert re.fullmatch(rf"would create snapshot '__replicate_{job}_\d+__' on {volid} \(pve1\)",
                        plan[1])  # fmt: skip
    m = re.fullmatch(rf"would send {volid} to pve2: full, estimated (\d+) bytes", plan[2])
    assert m is not None and int(m[1]) > 1_000_000
    assert len(plan) == 3  # nothing to delete yet
    run_job(lab, "pve1", job)
    log = job_log(lab, "pve1", job)
    assert any(re.fullmatch(rf"{job}: full sync '{volid}' \(__replicate_{job}_\d+__\)", ln)
               for ln in log)  # fmt: skip
    first = snapshots(lab, "pve1", vmid)
    [s1] = [s for s in first[ds] if s.startswith(f"__replicate_{job}_")]

    # 2. second run: incremental from s1, which then goes on both sides
    guests.write(lab, vmid, 400_000)
    before = world(lab, vmid, job)
    plan = dry(lab, "run", "--dry-run", "--id", job)
    assert world(lab, vmid, job) == before
    send = [ln for ln in plan if ln.startswith("would send ")]
    assert len(send) == 1 and send[0].startswith(
        f"would send {volid} to pve2: incremental from '{s1}', estimated "
    )
    assert deleted(plan, "pve1") == deleted(plan, "pve2") == {(ds, s1)}
    run_job(lab, "pve1", job)
    assert f"{job}: incremental sync '{volid}' ({s1} => " in "\n".join(job_log(lab, "pve1", job))
    after1, after2 = snapshots(lab, "pve1", vmid), snapshots(lab, "pve2", vmid)
    assert gone(before["snap1"], after1) == deleted(plan, "pve1")  # type: ignore[arg-type]
    assert gone(before["snap2"], after2) == deleted(plan, "pve2")  # type: ignore[arg-type]
    assert guests.checksum(lab, vmid, "pve2") == guests.checksum(lab, vmid, "pve1")

    # 3. delete --dry-run: every job snapshot on both sides and the target's volume
    [s2] = [s for s in after1[ds] if s.startswith(f"__replicate_{job}_")]
    before = world(lab, vmid, job)
    plan = dry(lab, "delete", "--dry-run", job)
    assert world(lab, vmid, job) == before
    assert deleted(plan, "pve1") == deleted(plan, "pve2") == {(ds, s2)}
    assert f"would delete volume {volid} (pve2)" in plan
    assert plan[-1] == f"would remove job '{job}' from replication.cfg"
    pverep(lab, "pve1", "delete", job)
    run_job(lab, "pve1", job)
    assert datasets(lab, "pve2", vmid) == set()
    assert gone(before["snap1"], snapshots(lab, "pve1", vmid)) == {(ds, s2)}  # type: ignore[arg-type]
    assert f"local: {job}" not in lab.exec("pve1", ["cat", FILES[0]]).stdout
