"""job_status / next_sync / back-off / run order, against the upstream scenarios of spec §8."""

from __future__ import annotations

from datetime import UTC
from pathlib import Path

import pytest

from pverep.cluster import GuestLocation, Member
from pverep.config.jobs import Job, ReplicationConfig
from pverep.config.state import (
    JobState,
    StateStore,
    read_job_state,
    record_job_end,
    record_job_start,
)
from pverep.paths import Paths
from pverep.schedule import (
    ALWAYS,
    NEVER,
    JobStatus,
    job_status,
    next_job,
    next_sync,
    retry_delay,
    run_order,
)

MEMBERS = {n: Member(n, online=True) for n in ("node1", "node2", "node3")}
VMLIST = {900: GuestLocation(900, "node1", "qemu", 1)}


def config(*jobs: Job) -> ReplicationConfig:
    return ReplicationConfig({j.id: j for j in jobs})


def statuses(cfg: ReplicationConfig, store: StateStore, **kw: object) -> list[JobStatus]:
    result, _ = job_status(cfg, store.read(), VMLIST, MEMBERS, "node1", zone=UTC, **kw)  # type: ignore[arg-type]
    return result


def run_jobs(cfg: ReplicationConfig, store: StateStore, now: int, fail: bool, log: list) -> None:
    """The scheduling skeleton of pvesr's run_jobs with a replicate() that succeeds or fails."""
    iteration = start_time = now
    while (job := next_job(statuses(cfg, store), iteration, start_time)) is not None:
        state = read_job_state(store.read(), job.guest, job.job.tid)
        log.append((job.id, job.state.last_sync, start_time))
        record_job_start(
            store,
            job.guest,
            job.job.tid,
            state,
            start_time=start_time,
            iteration=iteration,
            nodename="node1",
            pid=1,
            ptime="1",
        )
        record_job_end(
            store,
            job.guest,
            job.job.tid,
            state,
            start_time=start_time,
            duration=0.1,
            error="faked replication error\n" if fail else None,
        )


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    return StateStore(Paths(tmp_path))


def test_upstream_test2_scheduler(store: StateStore) -> None:
    cfg = config(Job(id="900-1", target="node2"), Job(id="900-2", target="node1"))
    log: list = []
    for i in range(61):
        run_jobs(cfg, store, i * 60, fail=False, log=log)
    assert log == [
        ("900-1", 0, 900),
        ("900-1", 900, 1800),
        ("900-1", 1800, 2700),
        ("900-1", 2700, 3600),
    ]


def test_upstream_test4_failure_backoff(store: StateStore) -> None:
    cfg = config(Job(id="900-1", target="node2"), Job(id="900-2", target="node1"))
    first = statuses(cfg, store)
    assert [(s.id, s.next_sync) for s in first] == [("900-1", 900)]
    runs, next_syncs = [], []
    for k in range(120):
        log: list = []
        run_jobs(cfg, store, 1000 + 60 * k, fail=True, log=log)
        if log:
            runs.append(log[0][2])
            next_syncs.append(statuses(cfg, store)[0].next_sync)
    assert runs == [1000, 1300, 1900, 2800, 4600, 6400]
    assert next_syncs == [1300, 1900, 2800, 4600, 6400, 8200]
    state = statuses(cfg, store)[0].state
    assert state.fail_count == 6 and state.error == "faked replication error"


def test_backoff_table() -> None:
    assert [retry_delay(n) for n in (1, 2, 3, 4, 48)] == [300, 600, 900, 1800, 1800]


def test_next_sync_meanings() -> None:
    job = Job(id="100-0", target="node2", schedule="*/5")
    assert next_sync(job, JobState(last_try=0), MEMBERS, UTC) == 300
    assert next_sync(Job(id="100-0", target="node2"), JobState(last_try=1000), MEMBERS) == 1800
    assert next_sync(Job(id="100-0", target="node2", remove_job="full"), JobState(), {}) == ALWAYS
    failing = JobState(last_try=1000, fail_count=2)
    assert next_sync(job, failing, MEMBERS) == 1600  # schedule ignored while failing
    offline = {"node2": Member("node2", online=False)}
    assert next_sync(job, failing, offline) == NEVER
    assert next_sync(job, failing, {}) == NEVER
    never = Job(id="100-0", target="node2", schedule="2015-10-21")
    assert next_sync(never, JobState(last_try=1704067200), MEMBERS, UTC) == NEVER


def test_which_jobs_a_node_handles(store: StateStore) -> None:
    cfg = config(
        Job(id="900-1", target="node2", disable=True, source="node1"),
        Job(id="900-2", target="node1", source="node1"),  # to the local node
        Job(id="900-3", target="node3", remove_job="full", disable=True, source="node1"),
        Job(id="901-0", target="node2", source="node1"),  # guest does not exist
        Job(id="902-0", target="node1", source="node2"),  # guest on another node
    )
    vmlist = {**VMLIST, 902: GuestLocation(902, "node2", "lxc")}
    got, changed = job_status(cfg, {}, vmlist, MEMBERS, "node1")
    assert [s.id for s in got] == ["900-3"] and not changed
    got, _ = job_status(cfg, {}, vmlist, MEMBERS, "node1", get_disabled=True)
    assert (got[0].id, got[0].vmtype) == ("900-1", "qemu")
    assert [s.id for s in got] == ["900-1", "900-3"]
    assert got[1].next_sync == ALWAYS


def test_source_fixup_and_stolen_guest_switch() -> None:
    cfg = config(
        Job(id="100-0", target="pve2", source="pve1"),
        Job(id="100-1", target="pve3", source="pve1"),
        Job(id="101-0", target="pve3"),
    )
    vmlist = {100: GuestLocation(100, "pve2", "qemu"), 101: GuestLocation(101, "pve2", "lxc")}
    members = {n: Member(n, True) for n in ("pve1", "pve2", "pve3")}
    state = {"100": {"local/pve1": {"last_sync": 5}}}
    got, changed = job_status(cfg, state, vmlist, members, "pve2")
    assert changed
    assert (cfg.jobs["100-0"].target, cfg.jobs["100-0"].source) == ("pve1", "pve2")
    assert (cfg.jobs["100-1"].target, cfg.jobs["100-1"].source) == ("pve3", "pve2")
    assert cfg.jobs["101-0"].source == "pve2"
    assert [(s.id, s.job.tid) for s in got] == [
        ("100-0", "local/pve1"),
        ("100-1", "local/pve3"),
        ("101-0", "local/pve3"),
    ]
    assert got[0].state.last_sync == 5  # state looked up under the switched target
    _, changed_again = job_status(cfg, state, vmlist, members, "pve2")
    assert not changed_again


def test_stolen_guest_with_two_jobs_leaves_other_guests_alone() -> None:
    # Guest 100 lived on pve1 and was stolen by pve2 (HA recovery); guest 200 still lives on pve1
    # and replicates to pve2. Every job has its source already, so only the switch changes cfg.
    # 200-0 comes first in the file: the switch must skip it and still reach 100's jobs.
    cfg = config(
        Job(id="200-0", target="pve2", source="pve1"),
        Job(id="100-0", target="pve2", source="pve1"),
        Job(id="100-1", target="pve3", source="pve1"),
    )
    vmlist = {100: GuestLocation(100, "pve2", "qemu"), 200: GuestLocation(200, "pve1", "qemu")}
    members = {n: Member(n, True) for n in ("pve1", "pve2", "pve3")}
    got, changed = job_status(cfg, {}, vmlist, members, "pve2", zone=UTC)
    assert changed
    jobs = {i: (j.target, j.source) for i, j in cfg.jobs.items()}
    assert jobs == {
        "200-0": ("pve2", "pve1"),  # another guest's job: untouched
        "100-0": ("pve1", "pve2"),  # pointed at the thief: now at the guest's old home
        "100-1": ("pve3", "pve2"),
    }
    assert [(s.id, s.job.tid) for s in got] == [("100-0", "local/pve1"), ("100-1", "local/pve3")]
    # the old home now handles only its own guest's job, and changes nothing
    got_pve1, changed_pve1 = job_status(cfg, {}, vmlist, members, "pve1", zone=UTC)
    assert [s.id for s in got_pve1] == ["200-0"]
    assert not changed_pve1


def test_run_order_and_pick() -> None:
    def st(jobid: str, last_iteration: int, nxt: int) -> JobStatus:
        return JobStatus(
            Job(id=jobid, target="n2"), JobState(last_iteration=last_iteration), "qemu", nxt
        )

    items = [
        st("200-0", 5, 100),
        st("100-10", 5, 100),
        st("100-2", 5, 100),
        st("300-0", 1, 900),
        st("150-0", 5, 50),
        st("160-0", 0, NEVER),
    ]
    assert [s.id for s in run_order(items)] == [
        "160-0",
        "300-0",
        "150-0",
        "100-10",
        "100-2",
        "200-0",
    ]
    picked = next_job(items, iteration=10, start_time=100)
    assert picked is not None and picked.id == "150-0"  # 160-0 never, 300-0 not yet due
    assert next_job(items, iteration=5, start_time=10_000) is not None
    assert next_job(items, iteration=1, start_time=10_000) is None  # only 160-0 left: never due
    assert next_job([st("400-0", 0, NEVER)], iteration=9, start_time=9) is None


def test_removal_back_off_and_offline_target() -> None:
    """A failing removal waits for an offline target, else follows the back-off table."""
    job = Job(id="900-0", target="node2", remove_job="full")
    assert next_sync(job, JobState(), MEMBERS) == ALWAYS
    for fails in (1, 2, 4):
        state = JobState(last_try=1_000_000, fail_count=fails)
        assert next_sync(job, state, MEMBERS) == 1_000_000 + retry_delay(fails)
        offline = {**MEMBERS, "node2": Member("node2", online=False)}
        assert next_sync(job, state, offline) == NEVER
        assert next_sync(job, state, {}) == 1_000_000 + retry_delay(fails)  # no such member
    assert retry_delay(1) == 300 and retry_delay(3) == 900 and retry_delay(4) == 1800


def test_next_sync_uses_the_given_zone() -> None:
    from zoneinfo import ZoneInfo

    job = Job(id="900-0", target="node2", schedule="0:00")
    last = 1_704_067_200  # 2024-01-01 00:00 UTC = 01:00 in Vienna
    assert next_sync(job, JobState(last_try=last), MEMBERS, UTC) == last + 86_400
    vienna = next_sync(job, JobState(last_try=last), MEMBERS, ZoneInfo("Europe/Vienna"))
    assert vienna == last + 86_400 - 3_600  # midnight local time is 23:00 UTC


def test_job_status_passes_the_zone_and_refuses_unknown_types() -> None:
    from zoneinfo import ZoneInfo

    from pverep.errors import ConfigError

    last = 1_704_067_200  # 2024-01-01 00:00 UTC
    cfg = config(Job(id="900-0", target="node2", schedule="0:00", source="node1"))
    state = {"900": {"local/node2": {"last_try": last, "last_sync": last}}}
    for zone, due in ((UTC, last + 86_400), (ZoneInfo("Europe/Vienna"), last + 86_400 - 3_600)):
        result, changed = job_status(cfg, state, VMLIST, MEMBERS, "node1", zone=zone)
        assert [(s.id, s.next_sync) for s in result] == [("900-0", due)]
        assert changed is False
    odd = config(Job(id="900-0", target="node2", type="remote"))
    with pytest.raises(ConfigError, match=r"^internal error - not implemented$"):
        job_status(odd, {}, VMLIST, MEMBERS, "node1", zone=UTC)


def test_job_status_skips_foreign_guests_and_reports_a_filled_source() -> None:
    vmlist = {**VMLIST, 800: GuestLocation(800, "node2", "qemu", 1)}
    cfg = config(Job(id="800-0", target="node3", source="node2"), Job(id="900-0", target="node2"))
    result, changed = job_status(cfg, {}, vmlist, MEMBERS, "node1", zone=UTC)
    assert [s.id for s in result] == ["900-0"]  # 800 lives on node2; 900's job still counts
    assert changed is True  # 900-0 had no source: it was filled in
    assert cfg.jobs["900-0"].source == "node1"
    result, changed = job_status(cfg, {}, vmlist, MEMBERS, "node1", zone=UTC)
    assert changed is False
