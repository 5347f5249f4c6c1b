"""The pure relocation planner, HA transitions, orphan cleanup and the hook's start policy:
strings in (zfs list output, replication.cfg text, manager_status JSON), typed steps out."""

from __future__ import annotations

import json
import socket

from pverep import _core
from pverep.cluster.base import GuestLocation, Member
from pverep.config.jobs import parse_config
from pverep.config.state import JobState
from pverep.reconcile.ha import parse_manager_status, recovered_here
from pverep.reconcile.model import (
    AdoptState,
    ClusterView,
    DeleteTargetSnapshot,
    DestroyTargetVolume,
    ExtendRemovalScan,
    GuestFacts,
    RemoveOrphanJob,
    ReplicaSet,
    Repoint,
    SetSource,
)
from pverep.reconcile.orphans import plan_cleanup
from pverep.reconcile.planner import effective_jobs, plan_reconcile
from pverep.reconcile.service import StartPolicy, start_refusal

VOL = "local-zfs:vm-100-disk-0"
VOL2 = "local-zfs2:vm-100-disk-1"
NODES = ("pve1", "pve2", "pve3")


def snaps(text: str, volid: str = VOL) -> list[_core.SnapshotInfo]:
    """``name guid creation`` lines → SnapshotInfo list (zfs list -Hp shaped)."""
    ds = "rpool/data/" + volid.split(":", 1)[1]
    lines = []
    for n, line in enumerate(text.split(";")):
        if line.strip():
            name, guid, ctime = line.split()
            lines.append(f"{ds}@{name}\t{guid}\t{100 + n}\t{ctime}")
    return list(_core.parse_snapshot_list("\n".join(lines) + "\n").get(ds, []))


def jobs(text: str) -> list:  # type: ignore[type-arg]
    cfg = parse_config(text.encode())
    return [cfg.jobs[i] for i in cfg.sorted_ids()]


def members(offline: tuple[str, ...] = ()) -> dict[str, Member]:
    return {n: Member(n, n not in offline) for n in NODES}


ZFS = {n: ("local-zfs", "local-zfs2") for n in NODES}


def view(**kw: object) -> ClusterView:
    base: dict[str, object] = dict(
        local_node="pve2",
        vmlist={100: GuestLocation(100, "pve2", "qemu")},
        members=members(),
        jobs=jobs("local: 100-0\n\ttarget pve2\n\tsource pve1\n"),
        states={},
        guests={
            100: GuestFacts(
                100,
                "pve2",
                (VOL,),
                (VOL,),
                local_snapshots={VOL: snaps("__replicate_100-0_1000__ 11 1000")},
            )
        },
        zfs_storages=ZFS,
    )
    base.update(kw)
    return ClusterView(**base)  # type: ignore[arg-type]


def test_ha_recovery_to_target_repoints_and_adopts_common_snapshot() -> None:
    replicas = {
        ("pve1", 100): ReplicaSet(
            "pve1", 100,
            {VOL: snaps("__replicate_100-0_1000__ 11 1000;__replicate_100-0_2000__ 22 2000")},
        )
    }  # fmt: skip
    plan = plan_reconcile(view(replicas=replicas))
    assert plan.steps == [
        Repoint("100-0", 100, source_from="pve1", source_to="pve2",
                target_from="pve2", target_to="pve1"),
        AdoptState("100-0", 100, target="pve1", last_sync=1000, storeid_list=("local-zfs",),
                   node="pve2"),
        # pve1 went on after the last sync: its newer snapshot is this job's stale one
        DeleteTargetSnapshot("100-0", 100, node="pve1", volid=VOL,
                             snapshot="__replicate_100-0_2000__"),
    ]  # fmt: skip
    assert any("relocated from pve1 to pve2" in f.text for f in plan.findings)


def test_fan_out_recovery_keeps_the_base_another_job_needs() -> None:
    """Recovered onto job -0's target; job -1 (to pve3) has only -0's snapshot in common:
    recording last_sync for -0 would make its next run delete that base (found in the lab)."""
    both = "__replicate_100-0_1000__ 11 1000;__replicate_100-1_1100__ 12 1100"
    replicas = {
        ("pve1", 100): ReplicaSet("pve1", 100, {VOL: snaps(both)}),
        ("pve3", 100): ReplicaSet("pve3", 100, {VOL: snaps(both)}),
    }
    two = jobs(
        "local: 100-0\n\ttarget pve2\n\tsource pve1\n\nlocal: 100-1\n\ttarget pve3\n\tsource pve1\n"
    )
    plan = plan_reconcile(view(jobs=two, replicas=replicas))
    assert [type(s) for s in plan.steps] == [Repoint, Repoint]  # no AdoptState
    assert any("also the base of job(s) 100-1" in f.text for f in plan.findings)
    # third target offline: its base is unknown, so no state is recorded either
    offline = {**replicas, ("pve3", 100): ReplicaSet("pve3", 100, None, error="offline")}
    plan = plan_reconcile(view(jobs=two, replicas=offline, members=members(("pve3",))))
    assert not any(isinstance(s, AdoptState) for s in plan.steps)


def test_second_run_finds_nothing_to_do() -> None:
    after = view(
        jobs=jobs("local: 100-0\n\ttarget pve1\n\tsource pve2\n"),
        states={(100, "local/pve1"): JobState(last_sync=1000, storeid_list=("local-zfs",))},
    )
    assert plan_reconcile(after).steps == []


def test_target_offline_defers_but_repoints() -> None:
    plan = plan_reconcile(
        view(members=members(offline=("pve1",)),
             replicas={("pve1", 100): ReplicaSet("pve1", 100, None, error="offline")})
    )  # fmt: skip
    assert [type(s) for s in plan.steps] == [Repoint]
    assert any(f.level == "warn" and "not reachable" in f.text for f in plan.findings)


def test_move_to_third_node_keeps_target_and_cleans_removed_disk_replica() -> None:
    v = view(
        local_node="pve3",
        vmlist={100: GuestLocation(100, "pve3", "qemu")},
        guests={
            100: GuestFacts(
                100, "pve3", (VOL,), (VOL,),
                local_snapshots={VOL: snaps("__replicate_100-0_1000__ 11 1000")},
            )
        },
        replicas={
            ("pve2", 100): ReplicaSet("pve2", 100, {
                VOL: snaps("__replicate_100-0_1000__ 11 1000"),
                VOL2: snaps("__replicate_100-0_1000__ 33 1000", VOL2),
                "local-zfs:vm-100-disk-9": snaps("keepme 44 900", "local-zfs:vm-100-disk-9"),
            })
        },
    )  # fmt: skip
    plan = plan_reconcile(v)
    assert plan.steps == [
        Repoint("100-0", 100, source_from="pve1", source_to="pve3",
                target_from="pve2", target_to="pve2"),
        AdoptState("100-0", 100, target="pve2", last_sync=1000, storeid_list=("local-zfs",),
                   node="pve3"),
        DestroyTargetVolume("100-0", 100, node="pve2", volid=VOL2,
                            reason="carries job 100-0's snapshots, no longer a disk of guest 100"),
    ]  # fmt: skip
    # nothing is ever planned on the node the guest runs on, nor on the old source pve1
    assert all(s.where in ("cluster", "pve2", "pve3") for s in plan.steps)
    assert not any(getattr(s, "node", "") == "pve3" and s.where == "pve3"
                   and not isinstance(s, AdoptState) for s in plan.steps)  # fmt: skip


def test_common_base_of_another_job_is_used_but_not_adopted() -> None:
    v = view(
        replicas={
            ("pve1", 100): ReplicaSet("pve1", 100, {VOL: snaps("__replicate_100-1_900__ 9 900")})
        },
        guests={100: GuestFacts(100, "pve2", (VOL,), (VOL,),
                                local_snapshots={VOL: snaps("__replicate_100-1_900__ 9 900")})},
    )  # fmt: skip
    plan = plan_reconcile(v)
    assert [type(s) for s in plan.steps] == [Repoint]
    assert any("__replicate_100-1_900__" in f.text for f in plan.findings)


def test_no_common_base_is_an_error_finding_and_nothing_destroyed() -> None:
    v = view(
        replicas={
            ("pve1", 100): ReplicaSet("pve1", 100, {VOL: snaps("__replicate_100-0_5__ 99 5")})
        }
    )
    plan = plan_reconcile(v)
    assert [type(s) for s in plan.steps] == [Repoint]
    assert any(f.level == "error" and "no common base" in f.text for f in plan.findings)


def test_stale_state_from_an_earlier_stay_is_replaced() -> None:
    replicas = {
        ("pve1", 100): ReplicaSet("pve1", 100, {VOL: snaps("__replicate_100-0_1000__ 11 1000")})
    }
    v = view(replicas=replicas, states={(100, "local/pve1"): JobState(last_sync=500)})
    steps = plan_reconcile(v).steps
    assert AdoptState("100-0", 100, target="pve1", last_sync=1000, storeid_list=("local-zfs",),
                      node="pve2") in steps  # fmt: skip


def test_removal_scans_every_zfs_storage_of_the_target() -> None:
    v = view(
        local_node="pve3",
        vmlist={100: GuestLocation(100, "pve3", "qemu")},
        jobs=jobs("local: 100-0\n\ttarget pve2\n\tsource pve3\n\tremove_job full\n\tdisable\n"),
        guests={100: GuestFacts(100, "pve3", (VOL,), (VOL,))},
    )
    assert plan_reconcile(v).steps == [
        ExtendRemovalScan("100-0", 100, target="pve2", storeid_list=("local-zfs2",), node="pve3")
    ]
    done = view(
        local_node="pve3",
        vmlist={100: GuestLocation(100, "pve3", "qemu")},
        jobs=jobs("local: 100-0\n\ttarget pve2\n\tsource pve3\n\tremove_job full\n"),
        guests={100: GuestFacts(100, "pve3", (VOL,), (VOL,))},
        states={(100, "local/pve2"): JobState(storeid_list=("local-zfs2",))},
    )
    assert plan_reconcile(done).steps == []


def test_removal_of_job_whose_guest_is_gone() -> None:
    v = view(
        vmlist={},
        jobs=jobs("local: 100-0\n\ttarget pve1\n\tsource pve2\n\tremove_job full\n"),
        guests={},
    )
    assert plan_reconcile(v).steps == [
        RemoveOrphanJob("100-0", 100, target="pve1", scan=("local-zfs", "local-zfs2"))
    ]
    # only the source handles it
    assert plan_reconcile(view(local_node="pve3", vmlist={}, guests={},
                               jobs=v.jobs)).steps == []  # fmt: skip
    # the target offline: wait
    off = plan_reconcile(view(vmlist={}, guests={}, jobs=v.jobs, members=members(("pve1",))))
    assert off.steps == [] and "waits for pve1" in off.findings[0].text


def test_missing_source_is_filled_and_ha_transient_waits() -> None:
    v = view(
        jobs=jobs("local: 100-0\n\ttarget pve3\n"),
        replicas={("pve3", 100): ReplicaSet("pve3", 100, {})},
        states={(100, "local/pve3"): JobState(last_sync=1000)},
    )
    assert plan_reconcile(v).steps == [SetSource("100-0", 100, source="pve2")]
    ha = parse_manager_status(json.dumps(
        {"service_status": {"vm:100": {"node": "pve2", "state": "recovery"}}}
    ))  # fmt: skip
    waiting = plan_reconcile(view(ha=ha))
    assert waiting.steps == [] and "waiting" in waiting.findings[0].text


def test_effective_jobs_is_pvesrs_target_switch() -> None:
    js = jobs(
        "local: 100-0\n\ttarget pve2\n\tsource pve1\n\nlocal: 100-1\n\ttarget pve3\n\tsource pve1\n"
    )
    eff = {e.id: (e.source, e.target) for _, e in effective_jobs(js, 100, "pve3")}
    assert eff == {"100-0": ("pve3", "pve2"), "100-1": ("pve3", "pve1")}


def test_ha_transitions() -> None:
    def st(state: str, node: str) -> str:
        services = {
            "vm:100": {"state": state, "node": node},
            "ct:200": {"state": "started", "node": "pve2"},
        }
        return json.dumps({"service_status": services})

    before = parse_manager_status(st("recovery", "pve1"))
    after = parse_manager_status(st("started", "pve2"))
    assert recovered_here(before, after, "pve2") == [100]
    assert recovered_here(after, after, "pve2") == []
    assert recovered_here(before, after, "pve1") == []
    assert parse_manager_status("not json") == {}
    assert parse_manager_status('{"service_status": {"bogus": {}}}') == {}


def test_cleanup_only_orphans_and_never_live_guest_volumes() -> None:
    cfg = jobs("local: 101-0\n\ttarget pve2\n\tsource pve1\n")
    vmlist = {101: GuestLocation(101, "pve1", "qemu"), 102: GuestLocation(102, "pve2", "qemu")}
    images = {
        "local-zfs:vm-100-disk-0": snaps("__replicate_100-0_5__ 1 5", "local-zfs:vm-100-disk-0"),
        "local-zfs:vm-101-disk-0": snaps(
            "__replicate_101-0_7__ 2 7;__replicate_101-9_3__ 3 3", "local-zfs:vm-101-disk-0"
        ),
        "local-zfs:vm-102-disk-0": snaps("__replicate_102-0_5__ 4 5", "local-zfs:vm-102-disk-0"),
        "local-zfs:vm-103-disk-0": snaps("user 5 5", "local-zfs:vm-103-disk-0"),
    }
    plan = plan_cleanup("pve2", cfg, vmlist, images)
    assert plan.steps == [
        DestroyTargetVolume("100-0", 100, node="pve2", volid="local-zfs:vm-100-disk-0",
                            reason="only snapshots of deleted job(s) 100-0"),
        DeleteTargetSnapshot("101-9", 101, node="pve2", volid="local-zfs:vm-101-disk-0",
                             snapshot="__replicate_101-9_3__"),
        DeleteTargetSnapshot("102-0", 102, node="pve2", volid="local-zfs:vm-102-disk-0",
                             snapshot="__replicate_102-0_5__"),
    ]  # fmt: skip


def test_start_policy() -> None:
    facts = GuestFacts(
        100, "pve3", (VOL,), (VOL,), local_snapshots={VOL: snaps("__replicate_100-0_1000__ 1 1000")}
    )
    assert start_refusal(facts, True, StartPolicy(), 5000, [VOL]) is None
    assert "no replica" in (
        start_refusal(facts, False, StartPolicy(require_replica=True), 0, [VOL]) or ""
    )
    old = start_refusal(facts, True, StartPolicy(max_replica_age=3600), 1000 + 7200, [])
    assert old is not None and "7200s old" in old
    assert start_refusal(facts, True, StartPolicy(max_replica_age=3600), 1000 + 60, []) is None
    assert start_refusal(facts, False, StartPolicy(max_replica_age=3600), 99999, []) is None


def test_removal_retried_at_once_when_unreachable_target_is_back() -> None:
    from pverep.reconcile.model import RetryRemoval

    js = jobs("local: 100-0\n\ttarget pve1\n\tsource pve2\n\tremove_job full\n")
    err = "command '/usr/bin/ssh -e none root@10.0.0.1 -- pverep prepare-local-job' failed: x"
    state = JobState(last_try=50, fail_count=1, error=err, storeid_list=("local-zfs", "local-zfs2"))
    v = view(jobs=js, states={(100, "local/pve1"): state})
    assert plan_reconcile(v).steps == [RetryRemoval("100-0", 100, target="pve1", node="pve2")]
    # still offline, or failing for another reason, or already many failures: back-off rules
    assert plan_reconcile(view(jobs=js, states=v.states, members=members(("pve1",)))).steps == []
    other = {(100, "local/pve1"): JobState(last_try=50, fail_count=1, error="zfs error: x",
                                           storeid_list=state.storeid_list)}  # fmt: skip
    assert plan_reconcile(view(jobs=js, states=other)).steps == []


def test_removal_back_off_waits_for_offline_target() -> None:
    from pverep.schedule import NEVER, next_sync

    job = jobs("local: 100-0\n\ttarget pve1\n\tremove_job full\n")[0]
    assert next_sync(job, JobState(), members()) == 1  # due every run until it fails
    failing = JobState(last_try=1000, fail_count=2)
    assert next_sync(job, failing, members(("pve1",))) == NEVER
    assert next_sync(job, failing, members()) == 1000 + 600


def test_watcher_reacts_to_recovery_on_this_node(tmp_path: object, monkeypatch: object) -> None:
    from pathlib import Path

    from pverep.paths import Paths
    from pverep.reconcile.service import watch

    root = Path(str(tmp_path))
    monkeypatch.setattr(socket, "gethostname", lambda: "pve2")  # type: ignore[attr-defined]
    paths = Paths.from_env(root)
    paths.ha_manager_status.parent.mkdir(parents=True)
    status = {"vm:100": {"state": "recovery", "node": "pve1"}}
    paths.ha_manager_status.write_text(json.dumps({"service_status": status}))
    calls: list[int | None] = []
    ticks = iter(range(100))

    def sleep(_: float) -> None:
        n = next(ticks)
        if n == 1:  # the CRM recovers the guest onto pve2
            paths.ha_manager_status.write_text(
                json.dumps({"service_status": {"vm:100": {"state": "started", "node": "pve2"}}})
            )

    clock = iter(float(x) for x in range(100))
    watch(paths, interval=0, duration=5, log=lambda _: None, run=calls.append, sleep=sleep,
          clock=lambda: next(clock))  # fmt: skip
    assert calls == [None, 100]  # a full pass first, then the recovered guest exactly once
    # stopped (SIGTERM) during the sleep: no further pass, the loop ends at once
    calls.clear()
    paths.ha_manager_status.write_text(json.dumps({"service_status": status}))
    stop: list[bool] = []
    watch(paths, interval=0, duration=None, log=lambda _: None, run=calls.append,
          sleep=lambda _: stop.append(True), stopped=lambda: bool(stop))  # fmt: skip
    assert calls == [None] and stop == [True]
