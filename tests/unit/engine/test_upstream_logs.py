"""pve-manager's replication_test4/5/6: the complete expected logs (spec §8.2, which holds
upstream's replication_testN.log), byte for byte, from pverep's scheduler, job status, state
file and replicate algorithm (upstream_env.py)."""

from __future__ import annotations

from pathlib import Path

from pverep.config.jobs import Job

from .upstream_env import UpstreamEnv

VECTORS = Path(__file__).parent / "vectors"
DISK1, DISK2 = "local-zfs:vm-900-disk-1", "local-zfs:vm-900-disk-2"


def _ticks(env: UpstreamEnv, start: int, count: int) -> int:
    for i in range(count):
        env.track_jobs(start + 60 * i)
    return start + 60 * count


def test_failure_back_off_log_is_upstream_test4(tmp_path: Path) -> None:
    jobs = {"900-1": Job("900-1", "node1"), "900-2": Job("900-2", "node2")}
    env = UpstreamEnv(tmp_path, jobs, [DISK1])
    env.fail_with = "faked replication error"
    _ticks(env, 1000, 120)
    assert env.text() == (VECTORS / "replication_test4.log").read_text()


def test_lifecycle_log_is_upstream_test5(tmp_path: Path) -> None:
    env = UpstreamEnv(tmp_path, {"900-2": Job("900-2", "node2")}, [DISK1])
    env.world.volumes.register(DISK1)
    ctime = _ticks(env, 1000, 15)
    env.world.disks.append(DISK2)  # a new disk whose volume does not exist: the run fails
    ctime = _ticks(env, ctime, 15)
    env.world.volumes.register(DISK2)  # now it does
    ctime = _ticks(env, ctime, 15)
    env.cfg.jobs["900-2"].remove_job = "full"
    _ticks(env, ctime, 15)
    assert env.text() == (VECTORS / "replication_test5.log").read_text()
    assert env.cfg.jobs == {}
    assert env.states.read() == {}
    # the removal asked the target to drop everything of the job on the state's storages
    assert env.world.targets["node2"].calls[-1] == ("prepare", "900-2", "local-zfs", "1", "True")
    assert all(not snaps for snaps in env.world.volumes.registered.values())


def test_removal_to_the_local_node_log_is_upstream_test6(tmp_path: Path) -> None:
    jobs = {"900-1": Job("900-1", "node1", remove_job="full")}
    env = UpstreamEnv(tmp_path, jobs, [DISK1])  # the volume is never registered
    _ticks(env, 1000, 15)
    assert env.text() == (VECTORS / "replication_test6.log").read_text()
    assert env.world.targets == {}  # the target is the local node: never contacted
