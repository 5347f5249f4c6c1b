"""Job-log details around upstream's test 5 environment (spec §8.2): the log file, a failed
transfer, the start-time check. The complete upstream logs of tests 4-6 are compared byte for
byte in test_upstream_logs.py.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from pverep.errors import PverepError

from .fakes import FakeJob, World

JOB = "job_900_to_node2"


def _run(world: World, job: FakeJob, t: int, out: list[str]) -> None:
    with contextlib.suppress(PverepError):
        world.runner().run_replication(job, t, t, lambda m: out.append(f"{t} {job.id}: {m}"))


def test_job_log_file_holds_the_last_run_only(tmp_path: Path) -> None:
    world = World(tmp_path, disks=["local-zfs:vm-900-disk-1"])
    world.volumes.register("local-zfs:vm-900-disk-1")
    job = FakeJob(JOB, 900, "node2")
    _run(world, job, 1000, [])
    _run(world, job, 1840, [])
    lines = (tmp_path / JOB).read_text().splitlines()
    assert lines[0].endswith(f" {JOB}: start replication job")
    assert lines[0].startswith("1970-01-01 ") or lines[0][4] == "-"
    assert sum("start replication job" in ln for ln in lines) == 1
    assert "__replicate_job_900_to_node2_1840__" in lines[3]


def test_failed_transfer_removes_only_the_new_snapshot(tmp_path: Path) -> None:
    world = World(tmp_path, disks=["local-zfs:vm-900-disk-1", "local-zfs:vm-900-disk-2"])
    for d in world.disks:
        world.volumes.register(d)
    job = FakeJob(JOB, 900, "node2", rate="1.5")
    out: list[str] = []
    _run(world, job, 1000, out)
    world.targets["node2"].fail_transfer = "local-zfs:vm-900-disk-2"
    out.clear()
    _run(world, job, 2000, out)
    assert "1000 job_900_to_node2: using secure transmission, rate limit: 1.5 MByte/s" not in out
    assert f"2000 {JOB}: using secure transmission, rate limit: 1.5 MByte/s" in out
    assert out[-3:] == [
        f"2000 {JOB}: delete previous replication snapshot '__replicate_{JOB}_2000__' on "
        "local-zfs:vm-900-disk-1",
        f"2000 {JOB}: delete previous replication snapshot '__replicate_{JOB}_2000__' on "
        "local-zfs:vm-900-disk-2",
        f"2000 {JOB}: end replication job with error: transfer of 'local-zfs:vm-900-disk-2' failed",
    ]
    names = {s.name for d in world.disks for s in world.volumes.registered[d]}
    assert names == {f"__replicate_{JOB}_1000__"}  # the old base survives
    state = world.store.states[JOB]
    assert (state.last_sync, state.fail_count) == (1000, 1)


def test_start_time_not_after_last_sync_aborts(tmp_path: Path) -> None:
    world = World(tmp_path, disks=["local-zfs:vm-900-disk-1"])
    world.volumes.register("local-zfs:vm-900-disk-1")
    job = FakeJob(JOB, 900, "node2")
    _run(world, job, 1000, [])
    with pytest.raises(PverepError, match=r"^start time before last sync \(1000 <= 1000\)"):
        world.runner().run_replication(job, 1000, 1000)
