"""engine/wiring.py on a tree where this host is the node, as ``pverep run`` finds it:
``dry_run`` (``run --dry-run``, ``delete --dry-run``) and ``build_scheduler``, with both nodes'
zfs played by the FAKE in-memory zfs.

``LocalShell`` and ``SshShell`` are replaced by ``FakeZfsShell`` (a named fake: no zfs command
and no sshd run here; tests/lab/test_dry_run.py drives the real ones). The node is this host,
as ``pverep run`` finds it.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from pverep.config.runconf import DEFAULT_MAX_WORKERS, MAX_WORKERS_LIMIT
from pverep.engine import wiring
from pverep.errors import PverepError
from pverep.lab import gentree
from pverep.paths import Paths
from pverep.storage.zfscaps import ZfsCaps
from pverep.transport.ssh import SshTarget
from tests.unit.zfs_fake import FakeZfsShell

HOST = socket.gethostname().split(".", 1)[0]
NOW = 1_700_000_900
DS0, DS1 = "rpool/data/vm-100-disk-0", "rpool/data/vm-101-disk-0"
V0, V1 = "local-zfs:vm-100-disk-0", "local-zfs:vm-101-disk-0"
JOBS = """\
local: 100-0
\ttarget pve2
\tschedule */5

local: 101-0
\ttarget pve3
"""


class TargetZfs(FakeZfsShell):
    """Stands in for SshShell: the target's zfs, reached at the address it was built with."""

    def __init__(self, target: SshTarget, *, multiplex: bool = True) -> None:
        super().__init__(target.node)
        self.target = target
        self.closed = 0
        made.append(self)

    def close(self) -> None:
        self.closed += 1


made: list[TargetZfs] = []


class Files:
    """The files a dry run must leave alone, as bytes (None: absent)."""

    def __init__(self, paths: Paths) -> None:
        self.paths = (paths.replication_cfg, paths.state_file, paths.job_log_dir)

    def read(self) -> list[object]:
        out: list[object] = []
        for p in self.paths:
            if p.is_dir():
                out.append(sorted(x.name for x in p.iterdir()))
            else:
                out.append(p.read_bytes() if p.exists() else None)
        return out


@pytest.fixture
def local() -> FakeZfsShell:
    shell = FakeZfsShell(HOST)
    shell.add(DS0, kind="volume")
    shell.add(DS1, kind="volume")
    shell.datasets[DS0].props["referenced"] = "5000"
    shell.datasets[DS1].props["referenced"] = "7000"
    return shell


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, local: FakeZfsShell) -> Iterator[Paths]:
    paths = Paths(tmp_path)
    gentree.write_members(paths, HOST, (HOST, "pve2", "pve3"))
    gentree.atomic_write(paths.storage_cfg, gentree.STORAGE_CFG)
    gentree.write_guest(paths, HOST, "qemu", 100, f"scsi0: {V0},size=1G\n")
    gentree.write_guest(paths, HOST, "qemu", 101, f"scsi0: {V1},size=1G\n")
    gentree.atomic_write(paths.replication_cfg, JOBS)
    made.clear()
    monkeypatch.setattr(wiring, "SshShell", TargetZfs)
    monkeypatch.setattr(wiring, "LocalShell", lambda node: local)
    monkeypatch.setattr(wiring, "local_caps", lambda shell, cache=None: ZfsCaps())
    yield paths
    made.clear()


def dry(paths: Paths, **kwargs: object) -> tuple[int, list[str]]:
    said: list[str] = []
    failed = wiring.dry_run(paths, said.append, now=NOW, **kwargs)  # type: ignore[arg-type]
    return failed, said


def test_one_job_by_id_is_planned_and_nothing_is_written(tree: Paths, local: FakeZfsShell) -> None:
    before = Files(tree).read()
    failed, said = dry(tree, jobid="100-0")
    assert failed == 0
    assert said == [
        "job 100-0: guest 100 -> pve2",
        f"would create snapshot '__replicate_100-0_{NOW}__' on {V0} ({HOST})",
        f"would send {V0} to pve2: full, estimated 5000 bytes",
    ]
    assert Files(tree).read() == before
    [target] = made
    assert (target.target.node, target.target.ip) == ("pve2", "10.213.7.12")
    assert target.closed == 1
    assert {argv[1] for argv in local.calls + target.calls} <= {"list", "get"}


def test_delete_dry_run_plans_the_removal(tree: Paths, local: FakeZfsShell) -> None:
    snap = "__replicate_100-0_1700000100__"
    local.add(DS0, snap, kind="volume")
    failed, said = dry(tree, jobid="100-0", remove="local")
    assert failed == 0
    assert said == [
        "job 100-0: guest 100 -> pve2",
        f"would delete snapshot '{snap}' on {V0} ({HOST})",
        "would remove job '100-0' from replication.cfg",
    ]
    assert made == [] and local.snapshot_names(DS0) == [snap]
    assert "local: 100-0" in tree.replication_cfg.read_text()


def test_an_unknown_job(tree: Paths) -> None:
    with pytest.raises(PverepError) as err:
        dry(tree, jobid="100-9")
    assert str(err.value) == "no such job '100-9'"


def test_without_an_id_every_due_job_in_the_schedulers_order(tree: Paths) -> None:
    # 101-0 ran last at an older iteration than 100-0: the scheduler takes it first
    states = {
        "100": {"local/pve2": {"last_iteration": 1_700_000_000, "last_sync": 0}},
        "101": {"local/pve3": {"last_iteration": 1_600_000_000, "last_sync": 0}},
    }
    tree.state_file.parent.mkdir(parents=True, exist_ok=True)
    tree.state_file.write_text(json.dumps(states))
    failed, said = dry(tree)
    assert failed == 0
    assert [line for line in said if line.startswith("job ")] == [
        "job 101-0: guest 101 -> pve3",
        "job 100-0: guest 100 -> pve2",
    ]
    assert [t.target.node for t in made] == ["pve3", "pve2"]
    assert [t.closed for t in made] == [1, 1]


def test_no_job_due(tree: Paths) -> None:
    last = NOW - 60  # synced a minute ago: the next */15 slot is later
    states = {
        "100": {"local/pve2": {"last_iteration": last, "last_try": last, "last_sync": last}},
        "101": {"local/pve3": {"last_iteration": last, "last_try": last, "last_sync": last}},
    }
    tree.state_file.parent.mkdir(parents=True, exist_ok=True)
    tree.state_file.write_text(json.dumps(states))
    assert dry(tree) == (0, ["no replication job is due"])
    assert made == []


def test_a_job_that_cannot_be_planned_is_counted_and_the_rest_go_on(tree: Paths) -> None:
    members = json.loads(tree.members.read_text())
    members["nodelist"]["pve3"]["ip"] = ""
    tree.members.write_text(json.dumps(members))
    failed, said = dry(tree)
    assert failed == 1
    assert "job 101-0: would fail - no IP address for node 'pve3'" in said
    assert "job 100-0: guest 100 -> pve2" in said
    assert [t.target.node for t in made] == ["pve2"] and made[0].closed == 1


# --- build_scheduler -------------------------------------------------------------------------


def test_scheduler_statuses_record_the_source_once(tree: Paths) -> None:
    sched = wiring.build_scheduler(tree)
    assert sched.local_node == HOST and sched.max_workers == DEFAULT_MAX_WORKERS
    found = sched.job_status()
    assert [(s.job.id, s.last_iteration, s.next_sync) for s in found] == [
        ("100-0", 0, 300), ("101-0", 0, 900)]  # fmt: skip
    text = tree.replication_cfg.read_text()
    assert text.count(f"\tsource {HOST}\n") == 2  # pvesr records where the job runs
    inode = tree.replication_cfg.stat().st_ino
    assert len(sched.job_status()) == 2
    assert tree.replication_cfg.stat().st_ino == inode  # nothing changed: not rewritten


def test_scheduler_reads_jobs_and_vmlist_fresh(tree: Paths) -> None:
    sched = wiring.build_scheduler(tree)
    assert sorted(sched.read_jobs()) == ["100-0", "101-0"]
    assert sorted(sched.vmlist()) == [100, 101]
    gentree.atomic_write(tree.replication_cfg, "local: 100-0\n\ttarget pve2\n")
    gentree.write_guest(tree, "pve2", "qemu", 105, "memory: 512\n")
    assert sorted(sched.read_jobs()) == ["100-0"]
    assert sched.vmlist()[105].node == "pve2"


def test_scheduler_purge_keeps_the_states_of_this_nodes_jobs(tree: Paths) -> None:
    gentree.write_guest(tree, "pve2", "qemu", 105, "memory: 512\n")
    gentree.atomic_write(tree.replication_cfg, JOBS + "\nlocal: 105-0\n\ttarget pve3\n")
    entry = {"last_sync": 1700000000}
    states = {
        "100": {"local/pve2": entry, "local/pve9": entry},  # pve9: no such job
        "101": {"local/pve3": entry},
        "102": {"local/pve2": entry},  # no job at all
        "105": {"local/pve3": entry},  # the guest lives on pve2: its node keeps the state
    }
    tree.state_file.parent.mkdir(parents=True, exist_ok=True)
    tree.state_file.write_text(json.dumps(states))
    wiring.build_scheduler(tree).purge_old_states()
    assert json.loads(tree.state_file.read_text()) == {
        "100": {"local/pve2": entry}, "101": {"local/pve3": entry}}  # fmt: skip


def test_scheduler_workers_from_the_flag_over_pverep_conf(tree: Paths) -> None:
    tree.pverep_conf.parent.mkdir(parents=True, exist_ok=True)
    tree.pverep_conf.write_text("[run]\nmax_workers = 2\n")
    assert wiring.build_scheduler(tree).max_workers == 2
    assert wiring.build_scheduler(tree, max_workers=3).max_workers == 3
    with pytest.raises(PverepError) as err:
        wiring.build_scheduler(tree, max_workers=0)
    assert str(err.value) == f"--max-workers: max_workers must be 1..{MAX_WORKERS_LIMIT}, got 0"


def test_scheduler_run_lock_and_the_end_of_run(tree: Paths) -> None:
    sched = wiring.build_scheduler(tree)
    tree.run_lock.parent.mkdir(parents=True, exist_ok=True)
    with sched.run_lock(1.0):
        assert tree.run_lock.exists()
    assert isinstance(sched.end_of_run.__self__, wiring.SshSessions)  # type: ignore[attr-defined]
    assert sched.after_run is not None and sched.notify is not None


@pytest.mark.parametrize(
    ("jobid", "target", "schedule", "count"),
    [("100-0", "pve2", "*/5", 2), ("101-0", "pve3", "*/15", 1)],  # 101-0: no schedule written
)
def test_scheduler_fail_count_and_mail(
    tree: Paths, monkeypatch: pytest.MonkeyPatch, jobid: str, target: str, schedule: str,
    count: int,
) -> None:  # fmt: skip
    sent: list[object] = []
    monkeypatch.setattr(wiring.pvenotify, "sender", lambda shell, paths: sent.append)
    states = {jobid.split("-")[0]: {f"local/{target}": {"fail_count": count,
                                                        "last_sync": 1700000000}}}  # fmt: skip
    tree.state_file.parent.mkdir(parents=True, exist_ok=True)
    tree.state_file.write_text(json.dumps(states))
    sched = wiring.build_scheduler(tree)
    job = sched.read_jobs()[jobid]
    assert sched.fail_count(job) == count
    assert sched.notify is not None
    sched.notify(job, "boom", count + 1)
    assert sent == [
        wiring.notify.Failure(jobid, target, schedule, 1700000000, count + 1, "boom", HOST)
    ]


def test_a_job_due_right_now_is_planned_and_every_failure_counted(tree: Paths) -> None:
    # both jobs last synced one slot ago: 100-0 (*/5) is due at NOW exactly, 101-0 (*/15) not
    def synced(t: int) -> dict[str, int]:
        return {"last_iteration": t, "last_try": t, "last_sync": t}

    states = {"100": {"local/pve2": synced(NOW - 300)}, "101": {"local/pve3": synced(NOW - 60)}}
    tree.state_file.parent.mkdir(parents=True, exist_ok=True)
    tree.state_file.write_text(json.dumps(states))
    failed, said = dry(tree)
    assert [line for line in said if line.startswith("job ")][:1] == [
        "job 100-0: guest 100 -> pve2"]  # fmt: skip
    assert "job 101-0: guest 101 -> pve3" not in said
    members = json.loads(tree.members.read_text())
    members["nodelist"]["pve2"]["ip"] = ""
    members["nodelist"]["pve3"]["ip"] = ""
    tree.members.write_text(json.dumps(members))
    tree.state_file.write_text("{}")
    failed, said = dry(tree)
    assert failed == 2 and len([s for s in said if "would fail" in s]) == 2


def test_a_removal_by_id_of_a_job_already_synced(tree: Paths, local: FakeZfsShell) -> None:
    snap = f"__replicate_100-0_{NOW - 300}__"
    local.add(DS0, snap, kind="volume")
    states = {"100": {"local/pve2": {"last_sync": NOW - 300, "storeid_list": ["local-zfs"]}}}
    tree.state_file.parent.mkdir(parents=True, exist_ok=True)
    tree.state_file.write_text(json.dumps(states))
    before = tree.state_file.read_bytes()
    failed, said = dry(tree, jobid="100-0", remove="local")
    assert failed == 0 and f"would delete snapshot '{snap}' on {V0} ({HOST})" in said
    assert tree.state_file.read_bytes() == before  # the plan's state was a copy


# --- what the scheduler's runner and a dry run are built from --------------------------------


def test_the_schedulers_runner_works_on_this_node_with_the_runs_sessions(tree: Paths) -> None:
    from pverep.bandwidth import BandwidthPlan

    tree.pverep_conf.parent.mkdir(parents=True, exist_ok=True)
    tree.pverep_conf.write_text("[run]\nbandwidth = 10MB\n")
    sched = wiring.build_scheduler(tree)
    env = sched.runner.make_env(lambda t: None)
    n = env.connect.__self__  # type: ignore[attr-defined]
    assert isinstance(n, wiring.Node)
    assert n.paths is tree and n.local_node == HOST and n.cluster.paths == tree
    assert n.sessions is sched.end_of_run.__self__  # type: ignore[attr-defined]
    assert n.budget.plan == BandwidthPlan(10_000_000)  # pverep.conf's [run]
    assert isinstance(sched.runner.store, wiring.StateRecorder)
    assert isinstance(sched.runner.store.states, wiring.StateStore)
    assert sched.runner.store.states.paths == tree
    flag = BandwidthPlan(5_000_000)
    over = wiring.build_scheduler(tree, bandwidth=flag).runner.make_env(lambda t: None)
    assert over.connect.__self__.budget.plan is flag  # type: ignore[attr-defined]


def test_the_scheduler_retries_a_failing_job_while_its_target_is_online(tree: Paths) -> None:
    states = {"100": {"local/pve2": {"fail_count": 1, "last_try": NOW, "last_sync": 0}}}
    tree.state_file.parent.mkdir(parents=True, exist_ok=True)
    tree.state_file.write_text(json.dumps(states))
    found = {s.job.id: s.next_sync for s in wiring.build_scheduler(tree).job_status()}
    assert found["100-0"] == NOW + 300  # the first retry, 5 min after the failed try


def test_the_schedulers_mail_goes_out_from_this_node(
    tree: Paths, monkeypatch: pytest.MonkeyPatch
) -> None:
    shells: list[object] = []

    def sender(shell: object, paths: Paths) -> object:
        shells.append((shell, paths))
        return lambda failure: None

    monkeypatch.setattr(wiring, "LocalShell", lambda node: ("shell of", node))
    monkeypatch.setattr(wiring.pvenotify, "sender", sender)
    wiring.build_scheduler(tree)
    assert shells == [(("shell of", HOST), tree)]


def test_the_schedulers_mail_for_a_job_without_a_schedule_field(
    tree: Paths, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Bare:  # a JobLike with only the engine's fields: no schedule attribute at all
        id, guest, target, rate, rate_mbps, remove_job = "101-0", 101, "pve3", None, None, None

    sent: list[object] = []
    monkeypatch.setattr(wiring.pvenotify, "sender", lambda shell, paths: sent.append)
    sched = wiring.build_scheduler(tree)
    assert sched.notify is not None
    sched.notify(Bare(), "boom", 1)  # type: ignore[arg-type]
    assert sent == [wiring.notify.Failure("101-0", "pve3", "*/15", 0, 1, "boom", HOST)]


def test_the_schedulers_run_lock_gives_up_at_its_timeout(tree: Paths) -> None:
    import threading

    from pverep.errors import LockError
    from pverep.locking import flock

    tree.run_lock.parent.mkdir(parents=True, exist_ok=True)
    sched = wiring.build_scheduler(tree)
    errors: list[BaseException] = []

    def other() -> None:
        try:
            with sched.run_lock(0.2):
                pass
        except LockError as err:
            errors.append(err)

    with flock(tree.run_lock, 1.0):
        t = threading.Thread(target=other, daemon=True)
        t.start()
        t.join(10)
    assert not t.is_alive() and len(errors) == 1


def test_the_schedulers_after_run_records_the_pass_in_this_tree(tree: Paths) -> None:
    from pverep.observe import collect

    sched = wiring.build_scheduler(tree)
    assert sched.after_run is not None
    sched.after_run(12.5)
    line = f'pverep_node_last_cycle_duration_seconds{{node="{HOST}"}} 12.5'
    assert line in collect.metrics_text(tree, NOW).splitlines()


def test_a_dry_run_by_id_keeps_the_removal_written_in_replication_cfg(tree: Paths) -> None:
    gentree.atomic_write(tree.replication_cfg, "local: 100-0\n\ttarget pve2\n\tremove_job full\n")
    failed, said = dry(tree, jobid="100-0")
    assert failed == 0
    assert said[-1] == "would remove job '100-0' from replication.cfg"
    assert not any(line.startswith("would send") for line in said)


def test_a_dry_run_of_a_failing_job_is_due_at_its_retry_exactly(tree: Paths) -> None:
    # fail_count 1: retried 5 min after its last try, while the target is online
    states = {
        "100": {"local/pve2": {"fail_count": 1, "last_try": NOW - 300, "last_sync": 0}},
        "101": {"local/pve3": {"last_iteration": NOW, "last_try": NOW, "last_sync": NOW}},
    }
    tree.state_file.parent.mkdir(parents=True, exist_ok=True)
    tree.state_file.write_text(json.dumps(states))
    assert [s for s in dry(tree)[1] if s.startswith("job ")] == ["job 100-0: guest 100 -> pve2"]
    said: list[str] = []
    wiring.dry_run(tree, said.append, now=NOW - 1)
    assert said == ["no replication job is due"]


def test_a_dry_run_plans_from_the_jobs_own_state(
    tree: Paths, local: FakeZfsShell, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the state's last_sync names the base; an older replication snapshot is stale on both
    last = NOW - 300
    snap, old = f"__replicate_100-0_{last}__", f"__replicate_100-0_{last - 300}__"
    local.add(DS0, old, kind="volume")
    local.add(DS0, snap, kind="volume")

    class Synced(TargetZfs):  # pve2 holds both
        def __init__(self, target: SshTarget, *, multiplex: bool = True) -> None:
            super().__init__(target, multiplex=multiplex)
            self.add(DS0, old, kind="volume")
            self.add(DS0, snap, kind="volume")

    monkeypatch.setattr(wiring, "SshShell", Synced)
    states = {"100": {"local/pve2": {"last_sync": last, "storeid_list": ["local-zfs"]}}}
    tree.state_file.parent.mkdir(parents=True, exist_ok=True)
    tree.state_file.write_text(json.dumps(states))
    failed, said = dry(tree, jobid="100-0")
    assert failed == 0
    assert said == [
        "job 100-0: guest 100 -> pve2",
        f"would delete snapshot '{old}' on {V0} ({HOST})",
        f"would delete snapshot '{old}' on {V0} (pve2)",
        f"would create snapshot '__replicate_100-0_{NOW}__' on {V0} ({HOST})",
        f"would send {V0} to pve2: incremental from '{snap}', "
        "estimated unknown (no estimate on this platform)",
        f"would delete snapshot '{snap}' on {V0} ({HOST})",
        f"would delete snapshot '{snap}' on {V0} (pve2)",
    ]


def test_a_dry_run_without_an_id_plans_a_removal_marked_in_replication_cfg(tree: Paths) -> None:
    # a job marked for removal is due on every run (its next_sync is ALWAYS, 1)
    gentree.atomic_write(tree.replication_cfg, "local: 100-0\n\ttarget pve2\n\tremove_job full\n")
    said = ["job 100-0: guest 100 -> pve2", "would remove job '100-0' from replication.cfg"]
    assert dry(tree) == (0, said)
