"""pverep run on the lab cluster: full and incremental syncs, disks added and removed, rate
limit, a target cut mid-transfer, removal (full, --keep, stateless seed case), the target's
refusal, concurrent runs. Real zfs-fuse, real sshd; data checked by checksum and guid.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator

import pytest

from pverep.lab import guests
from pverep.lab.control import Lab

from .replhelp import (
    add_disk,
    align,
    datasets,
    delete_jobs_of,
    job_log,
    pverep,
    remove_disk_from_config,
    run_and_cut_target,
    run_job,
    snapshots,
    sshd_accepts,
    state,
)

#: lines of the export/import pipeline (zfs -v, pump, importer) — everything else is §4.6
PIPELINE_RE = re.compile(
    r": (sending from |\d+ bytes \(|successfully imported |total estimated size|full send of|"
    r"send from |TIME )"
)


@pytest.fixture
def guest(lab: Lab, vmid: int) -> Iterator[int]:
    guests.create(lab, vmid, "pve1", "lxc", ["64M", "32M"])
    guests.write(lab, vmid, 1_000_000)
    yield vmid
    delete_jobs_of(lab, vmid)


def repl_snaps(snaps: dict[str, dict[str, str]], jobid: str) -> dict[str, dict[str, str]]:
    return {ds: {s: g for s, g in ss.items() if s.startswith(f"__replicate_{jobid}_")}
            for ds, ss in snaps.items()}  # fmt: skip


def catalogue(lines: list[str]) -> list[str]:
    return [ln for ln in lines if not PIPELINE_RE.search(ln)]


def sync_time(lines: list[str]) -> int:
    m = re.search(r"create snapshot '__replicate_\S+_(\d+)__'", "\n".join(lines))
    assert m is not None
    return int(m.group(1))


def test_full_then_incremental_two_disks(lab: Lab, guest: int) -> None:
    vmid, job = guest, f"{guest}-0"
    v0, v1 = f"local-zfs:subvol-{vmid}-disk-0", f"local-zfs:subvol-{vmid}-disk-1"
    pverep(lab, "pve1", "create-local-job", job, "pve2", "--rate", "50")
    accepts = sshd_accepts(lab, "pve2")
    align()
    started = time.monotonic()
    run_job(lab, "pve1", job, aligned=True)
    full_wall = time.monotonic() - started
    first = job_log(lab, "pve1", job)
    t1 = sync_time(first)
    s1 = f"__replicate_{job}_{t1}__"
    assert catalogue(first) == [f"{job}: {m}" for m in [
        "start replication job",
        f"guest => CT {vmid}, running => 0",
        f"volumes => {v0},{v1}",
        f"create snapshot '{s1}' on {v0}",
        f"create snapshot '{s1}' on {v1}",
        "using secure transmission, rate limit: 50 MByte/s",
        f"full sync '{v0}' ({s1})",
        f"using a bandwidth limit of 50000000 bytes per second for transferring '{v0}'",
        f"full sync '{v1}' ({s1})",
        f"using a bandwidth limit of 50000000 bytes per second for transferring '{v1}'",
        "end replication job",
    ]]  # fmt: skip
    assert f"{job}: successfully imported '{v0}'" in first
    assert f"{job}: successfully imported '{v1}'" in first

    guests.write(lab, vmid, 2_000_000)
    align()
    started = time.monotonic()
    run_job(lab, "pve1", job, aligned=True)
    incr_wall = time.monotonic() - started
    second = job_log(lab, "pve1", job)
    t2 = sync_time(second)
    s2 = f"__replicate_{job}_{t2}__"
    assert catalogue(second) == [f"{job}: {m}" for m in [
        "start replication job",
        f"guest => CT {vmid}, running => 0",
        f"volumes => {v0},{v1}",
        f"create snapshot '{s2}' on {v0}",
        f"create snapshot '{s2}' on {v1}",
        "using secure transmission, rate limit: 50 MByte/s",
        f"incremental sync '{v0}' ({s1} => {s2})",
        f"using a bandwidth limit of 50000000 bytes per second for transferring '{v0}'",
        f"incremental sync '{v1}' ({s1} => {s2})",
        f"using a bandwidth limit of 50000000 bytes per second for transferring '{v1}'",
        f"delete previous replication snapshot '{s1}' on {v0}",
        f"delete previous replication snapshot '{s1}' on {v1}",
        f"(remote_finalize_local_job) delete stale replication snapshot '{s1}' on {v0}",
        f"(remote_finalize_local_job) delete stale replication snapshot '{s1}' on {v1}",
        "end replication job",
    ]]  # fmt: skip

    src, dst = snapshots(lab, "pve1", vmid), snapshots(lab, "pve2", vmid)
    want = {f"subvol-{vmid}-disk-{i}": {s2: src[f"subvol-{vmid}-disk-{i}"][s2]} for i in (0, 1)}
    assert repl_snaps(src, job) == want  # one replication snapshot per volume and side
    assert repl_snaps(dst, job) == want  # same guids on the target
    assert guests.checksum(lab, vmid, "pve2") == guests.checksum(lab, vmid, "pve1")
    entry = state(lab, "pve1")[str(vmid)]["local/pve2"]
    assert (entry["last_sync"], entry["fail_count"], entry["storeid_list"]) == (
        t2, 0, ["local-zfs"])  # fmt: skip
    assert "pid" not in entry
    # one multiplexed ssh connection per run (pvesr: prepare + one per volume + finalize)
    assert sshd_accepts(lab, "pve2") - accepts == 2
    print(f"\n[figures] full 2 disks {full_wall:.2f}s, incremental {incr_wall:.2f}s, 1 ssh/run")


def test_added_disk_full_removed_disk_deleted_on_target(lab: Lab, guest: int) -> None:
    vmid, job = guest, f"{guest}-0"
    pverep(lab, "pve1", "create-local-job", job, "pve2")
    run_job(lab, "pve1", job)
    volname = add_disk(lab, vmid, 2)
    guests.write(lab, vmid, 500_000)
    run_job(lab, "pve1", job)
    lines = job_log(lab, "pve1", job)
    s = f"__replicate_{job}_{sync_time(lines)}__"
    assert f"{job}: full sync 'local-zfs:{volname}' ({s})" in lines
    assert sum(" incremental sync " in ln for ln in lines) == 2
    assert guests.checksum(lab, vmid, "pve2") == guests.checksum(lab, vmid, "pve1")

    remove_disk_from_config(lab, vmid, volname)
    run_job(lab, "pve1", job)
    lines = job_log(lab, "pve1", job)
    assert (
        f"{job}: (remote_prepare_local_job) {job}: delete stale volume 'local-zfs:{volname}'"
        in lines
    )
    assert volname not in datasets(lab, "pve2", vmid)
    assert volname in datasets(lab, "pve1", vmid)  # the source's disk is not touched


def test_rate_limit_average_within_ten_percent(lab: Lab, vmid: int) -> None:
    job = f"{vmid}-0"
    rate = 20  # MB/s
    guests.create(lab, vmid, "pve1", "lxc", ["160M"])
    guests.write(lab, vmid, 64 << 20)  # incompressible
    pverep(lab, "pve1", "create-local-job", job, "pve2", "--rate", str(rate))
    align()
    started = time.monotonic()
    run_job(lab, "pve1", job, aligned=True)
    wall = time.monotonic() - started
    summaries = [ln for ln in job_log(lab, "pve1", job) if re.search(r"copied, \d+\.\d+ s, ", ln)]
    assert len(summaries) == 1
    m = re.search(r": (\d+) bytes .* copied, ([\d.]+) s, ", summaries[0])
    assert m is not None
    nbytes, secs = int(m.group(1)), float(m.group(2))
    assert nbytes >= 64 << 20
    measured = nbytes / secs / 1e6
    assert abs(measured - rate) <= 0.1 * rate, f"{measured:.2f} MB/s"
    total = sum(int(re.search(r": (\d+) bytes", s).group(1)) for s in summaries)  # type: ignore[union-attr]
    assert wall >= 0.9 * total / (rate * 1e6)  # the run as a whole was not faster either
    assert guests.checksum(lab, vmid, "pve2") == guests.checksum(lab, vmid, "pve1")
    delete_jobs_of(lab, vmid)
    print(f"\n[figures] rate limit {rate} MB/s: measured {measured:.2f} MB/s, run {wall:.2f}s")


def test_cut_target_mid_transfer_fails_cleanly_then_resumes(lab: Lab, guest: int) -> None:
    vmid, job = guest, f"{guest}-0"
    pverep(lab, "pve1", "create-local-job", job, "pve2", "--rate", "4")
    run_job(lab, "pve1", job)
    s1 = f"__replicate_{job}_{sync_time(job_log(lab, 'pve1', job))}__"
    guests.write(lab, vmid, 24 << 20)
    proc, failed_after = run_and_cut_target(lab, "pve1", "pve2", job, 3, 1.5, 60)
    assert proc.returncode != 0
    lines = job_log(lab, "pve1", job)
    s2 = f"__replicate_{job}_{sync_time(lines)}__"
    assert re.match(rf"^{job}: end replication job with error: transfer of '\S+' stalled - ",
                    lines[-1]), lines[-1]  # fmt: skip
    assert (
        f"{job}: delete previous replication snapshot '{s2}' on local-zfs:subvol-{vmid}-disk-0"
        in lines
    )
    src = repl_snaps(snapshots(lab, "pve1", vmid), job)
    assert all(set(s) == {s1} for s in src.values())  # new one gone, old base kept
    entry = state(lab, "pve1")[str(vmid)]["local/pve2"]
    assert entry["fail_count"] == 1 and entry["last_sync"] == int(s1.split("_")[-3])
    status = pverep(lab, "pve1", "status").stdout
    row = next(ln for ln in status.splitlines() if ln.startswith(job))
    want_next = time.strftime("%Y-%m-%d_%H:%M:%S", time.localtime(entry["last_try"] + 300))
    assert want_next in row

    run_job(lab, "pve1", job)  # after heal: incremental from the old base, no full resend
    lines = job_log(lab, "pve1", job)
    s3 = f"__replicate_{job}_{sync_time(lines)}__"
    assert f"{job}: incremental sync 'local-zfs:subvol-{vmid}-disk-0' ({s1} => {s3})" in lines
    assert not any(" full sync " in ln for ln in lines)
    assert lines[-1] == f"{job}: end replication job"
    assert guests.checksum(lab, vmid, "pve2") == guests.checksum(lab, vmid, "pve1")
    # Whether the old importer was still there depends on whether pve1's retransmitted FIN
    # reached pve2 after the heal; when it was, the new import stopped it (and said so).
    superseded = any("stopping stale import of " in ln for ln in lines)
    print(f"\n[figures] cut target: job failed {failed_after:.1f}s after the cut (stall 3s), "
          f"stale import superseded: {superseded}")  # fmt: skip


def test_delete_full_removes_replicas_and_keep_keeps_them(lab: Lab, guest: int) -> None:
    vmid = guest
    for jobid, target in ((f"{vmid}-0", "pve2"), (f"{vmid}-1", "pve3")):
        pverep(lab, "pve1", "create-local-job", jobid, target)
        run_job(lab, "pve1", jobid)
    pverep(lab, "pve1", "delete", f"{vmid}-0")
    pverep(lab, "pve1", "delete", f"{vmid}-1", "--keep")
    run_job(lab, "pve1", f"{vmid}-0")
    run_job(lab, "pve1", f"{vmid}-1")
    assert job_log(lab, "pve1", f"{vmid}-0")[-2:] == [
        f"{vmid}-0: job removed",
        f"{vmid}-0: end replication job",
    ]
    assert datasets(lab, "pve2", vmid) == set()  # full: every replica volume gone
    assert datasets(lab, "pve3", vmid) == {f"subvol-{vmid}-disk-{i}" for i in (0, 1)}  # --keep
    assert not any(s.startswith("__replicate_") for ss in snapshots(lab, "pve1", vmid).values()
                   for s in ss)  # fmt: skip
    assert str(vmid) not in state(lab, "pve1")
    cfg = (lab.config.etc_pve / "replication.cfg").read_text()
    assert f"{vmid}-0" not in cfg and f"{vmid}-1" not in cfg


def test_seed_stateless_removal_from_the_node_the_guest_moved_to(lab: Lab, guest: int) -> None:
    vmid = guest
    pverep(lab, "pve1", "create-local-job", f"{vmid}-0", "pve2")
    pverep(lab, "pve1", "create-local-job", f"{vmid}-1", "pve3")
    run_job(lab, "pve1", f"{vmid}-0")
    run_job(lab, "pve1", f"{vmid}-1")
    guests.move(lab, vmid, "pve3")  # HA recovery: one rename, no state on pve3
    assert str(vmid) not in state(lab, "pve3")
    pverep(lab, "pve3", "delete", f"{vmid}-0")
    run_job(lab, "pve3", f"{vmid}-0")
    lines = job_log(lab, "pve3", f"{vmid}-0")
    assert lines[-1] == f"{vmid}-0: end replication job", lines
    assert datasets(lab, "pve2", vmid) == set()  # replicas found via the guest's storages
    assert datasets(lab, "pve3", vmid) == {f"subvol-{vmid}-disk-{i}" for i in (0, 1)}
    pverep(lab, "pve3", "create-local-job", f"{vmid}-2", "pve2")
    run_job(lab, "pve3", f"{vmid}-2")
    assert job_log(lab, "pve3", f"{vmid}-2")[-1] == f"{vmid}-2: end replication job"
    assert guests.checksum(lab, vmid, "pve2") == guests.checksum(lab, vmid, "pve3")


def test_prepare_on_the_guests_node_refuses_and_deletes_nothing(lab: Lab, guest: int) -> None:
    vmid, job = guest, f"{guest}-0"
    pverep(lab, "pve1", "create-local-job", job, "pve2")
    run_job(lab, "pve1", job)
    before = snapshots(lab, "pve1", vmid)
    res = pverep(lab, "pve1", "prepare-local-job", job, "--scan", "local-zfs",
                 "--last_sync", "1", "--force", check=False)  # fmt: skip
    assert res.returncode != 0 and f"guest '{vmid}' is on local node" in res.stderr
    assert snapshots(lab, "pve1", vmid) == before
    assert datasets(lab, "pve1", vmid) == {f"subvol-{vmid}-disk-{i}" for i in (0, 1)}


def test_two_runs_at_once_do_the_work_once(lab: Lab, guest: int) -> None:
    vmid, job = guest, f"{guest}-0"
    guests.write(lab, vmid, 8 << 20)
    pverep(lab, "pve1", "create-local-job", job, "pve2", "--rate", "8")
    procs = [lab.popen("pve1", ["pverep", "run"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True) for _ in range(2)]  # fmt: skip
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    assert any("trying to acquire lock" in err for _, err in results)  # one waited
    lines = job_log(lab, "pve1", job)
    assert sum(ln.endswith(": start replication job") for ln in lines) == 1
    src = repl_snaps(snapshots(lab, "pve1", vmid), job)
    assert all(len(s) == 1 for s in src.values())
    assert guests.checksum(lab, vmid, "pve2") == guests.checksum(lab, vmid, "pve1")


def test_ssh_connections_per_run_against_pvesr_pattern(lab: Lab, guest: int) -> None:
    """One multiplexed connection per run; pvesr's pattern (PVEREP_SSH_MULTIPLEX=0 gives the
    same argv, one connection per call) needs prepare + one per volume + finalize."""
    vmid, job = guest, f"{guest}-0"
    pverep(lab, "pve1", "create-local-job", job, "pve2")
    run_job(lab, "pve1", job)
    figures = {}
    for mode in ("1", "0"):
        guests.write(lab, vmid, 200_000)
        before = sshd_accepts(lab, "pve2")
        align()
        started = time.monotonic()
        run_job(lab, "pve1", job, aligned=True, env={"PVEREP_SSH_MULTIPLEX": mode})
        figures[mode] = (sshd_accepts(lab, "pve2") - before, time.monotonic() - started)
        assert job_log(lab, "pve1", job)[-1] == f"{job}: end replication job"
    assert figures["1"][0] == 1
    assert figures["0"][0] == 4  # prepare, 2 imports, finalize
    print(
        f"\n[figures] incremental 2 disks: multiplexed {figures['1'][1]:.2f}s/"
        f"{figures['1'][0]} ssh, pvesr pattern {figures['0'][1]:.2f}s/{figures['0'][0]} ssh"
    )
