"""pvesr's upstream regression tests 5 and 6 (spec §8.2), job-log lines byte for byte.

The scheduler's choice of run times is tested separately (test_scheduler.py); here the runs
happen at the times the upstream log shows, against the upstream mock environment.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from pverep.errors import PverepError

from .fakes import FakeJob, World

JOB = "job_900_to_node2"
#: the job-log lines of upstream replication_test{5,6}.log (track_jobs lines dropped)
VECTORS = Path(__file__).parent / "vectors"

TEST5_LOG = (VECTORS / "replication_test5.joblog").read_text()


def _run(world: World, job: FakeJob, t: int, out: list[str]) -> None:
    with contextlib.suppress(PverepError):
        world.runner().run_replication(job, t, t, lambda m: out.append(f"{t} {job.id}: {m}"))


def test_lifecycle_log_matches_upstream_test5(tmp_path: Path) -> None:
    world = World(tmp_path, disks=["local-zfs:vm-900-disk-1"])
    world.volumes.register("local-zfs:vm-900-disk-1")
    job = FakeJob(JOB, 900, "node2")
    out: list[str] = []
    for t in (1000, 1840):
        _run(world, job, t, out)
    world.disks.append("local-zfs:vm-900-disk-2")  # phase b: disk added, volume missing
    _run(world, job, 2740, out)
    state = world.store.states[JOB]
    assert (state.fail_count, state.last_sync) == (1, 1840)
    world.volumes.register("local-zfs:vm-900-disk-2")  # phase c
    for t in (3040, 3640):
        _run(world, job, t, out)
    job.remove_job = "full"  # phase d
    _run(world, job, 3700, out)

    assert "\n".join(out) + "\n" == TEST5_LOG
    assert world.deleted_jobs == [JOB]
    assert JOB not in world.store.states
    # the removal asked the target to drop everything of the job on the state's storages
    assert world.targets["node2"].calls[-1] == ("prepare", JOB, "local-zfs", "1", "True")
    assert all(not snaps for snaps in world.volumes.registered.values())


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


TEST6_LOG = (VECTORS / "replication_test6.joblog").read_text()


def test_removal_to_local_node_matches_upstream_test6(tmp_path: Path) -> None:
    world = World(tmp_path, disks=["local-zfs:vm-900-disk-1"])  # volume not registered
    job = FakeJob("job_900_to_node1", 900, "node1", remove_job="full")
    out: list[str] = []
    _run(world, job, 1000, out)
    assert "\n".join(out) + "\n" == TEST6_LOG
    assert world.targets == {}  # no remote call: the target is the local node
    assert world.deleted_jobs == ["job_900_to_node1"]


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
