"""Relocation detection and repair planning: ClusterView → Plan (pure; no I/O, no clock).

Per guest living on the reconciling node, per job (id order):

1. HA still moving the guest (fence/recovery/migrate/relocate) → wait, change nothing.
2. ``source`` missing → set it; ``source`` ≠ the guest's node (stolen: HA recovery or a manual
   move) → Proxmox's target switch for every job of the guest.
3. A job marked for removal → its target scans every zfspool storage available there (the seed,
   §9.2, plus disks removed from the config on another storage, §9.3 2022-06).
4. A job without state here (or just re-pointed) whose target is reachable → find the newest
   common snapshot by guid. If it is this job's own replication snapshot on every volume, record
   it as ``last_sync`` (so stale snapshots are cleaned and removal knows the storages); delete
   this job's other snapshots on the target and destroy target volumes that carry this job's
   snapshots but are no longer part of the guest.

Never planned: anything on the node the guest runs on (its volumes are live), anything on a
node that reports the guest as its own, anything for a job whose target is offline (deferred).
Jobs whose guest no longer exists but which are marked for removal are finished by the job's
source node (or, if that is gone, by its target).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace

from pverep._core import SnapshotInfo, plan_prepare, select_bases
from pverep.config.jobs import JOB_TYPE, Job
from pverep.config.state import JobState
from pverep.reconcile.ha import HaService
from pverep.reconcile.model import (
    AdoptState,
    ClusterView,
    DeleteTargetSnapshot,
    DestroyTargetVolume,
    ExtendRemovalScan,
    GuestFacts,
    Plan,
    RemoveOrphanJob,
    ReplicaSet,
    Repoint,
    RetryRemoval,
    SetSource,
)

_REPL_SNAP = re.compile(r"^__replicate_(\d+-\d+)_(\d+)__$")
#: Errors of a removal that mean "the target could not be reached" (ssh's exit code 255 or
#: the connection texts); only those are retried at once when the target is back.
_UNREACHABLE = re.compile(
    r"^command '\S*ssh |No route to host|Connection (timed out|refused)|Network is unreachable"
)
#: Above this many failures the back-off decides alone (no immediate retries).
_RETRY_NOW_MAX_FAILS = 3


def snapshot_job(name: str) -> tuple[str, int] | None:
    """(jobid, time) of a replication snapshot name, exactly (no pvesr prefix ambiguity)."""
    m = _REPL_SNAP.match(name)
    return (m.group(1), int(m.group(2))) if m else None


def carries_job_snapshot(snaps: Iterable[SnapshotInfo], jobid: str) -> bool:
    return any((sj := snapshot_job(s.name)) is not None and sj[0] == jobid for s in snaps)


def storage_of(volid: str) -> str:
    return volid.split(":", 1)[0]


def tid(target: str) -> str:
    return f"{JOB_TYPE}/{target}"


def effective_jobs(jobs: Sequence[Job], vmid: int, node: str) -> list[tuple[Job, Job]]:
    """(job as configured, job after the source fix-up / target switch) for the guest's jobs,
    with the guest now on ``node`` — what pvesr's job_status would write."""
    mine = [j for j in sorted(jobs, key=lambda j: j.id) if j.guest == vmid and j.type == JOB_TYPE]
    old_sources = {j.source for j in mine if j.source and j.source != node}
    # pvesr switches per stolen job with that job's own old source; all jobs of a guest share
    # one source in practice, and with several we use none (reported by the caller).
    old = next(iter(old_sources)) if len(old_sources) == 1 else None
    out = []
    for job in mine:
        new = replace(job)
        if old is not None:
            if new.target == node:
                new.target = old
            new.source = node
        elif not new.source:
            new.source = node
        out.append((job, new))
    return out


def targets_to_query(
    view_jobs: Sequence[Job], vmlist_node: Mapping[int, str], node: str
) -> set[tuple[str, int]]:
    """(target node, vmid) pairs whose replicas the gatherer should list."""
    out = set()
    for vmid in sorted({j.guest for j in view_jobs if vmlist_node.get(j.guest) == node}):
        for _orig, eff in effective_jobs(view_jobs, vmid, node):
            if eff.target != node:
                out.add((eff.target, vmid))
    return out


def plan_reconcile(view: ClusterView) -> Plan:
    plan = Plan(view.local_node)
    node = view.local_node
    vmids = sorted({j.guest for j in view.jobs})
    for vmid in vmids:
        if view.only_vmid is not None and vmid != view.only_vmid:
            continue
        where = view.vmlist.get(vmid)
        if where is None:
            _orphan_jobs(view, plan, vmid)
            continue
        if where.node != node:
            continue  # the guest's own node repairs its jobs
        _guest(view, plan, vmid)
    return plan


def ha_wait(ha: HaService | None, node: str) -> str | None:
    """Why the jobs of a guest on ``node`` must wait for HA (None: HA is done with it)."""
    if ha is not None and (ha.transient or (ha.node and ha.node != node)):
        return (
            f"HA service {ha.sid} is '{ha.state}' on {ha.node or '?'}: waiting until it is "
            "started before repairing its jobs"
        )
    return None


def check_sources(plan: Plan, vmid: int, pairs: Sequence[tuple[Job, Job]], node: str) -> int:
    """How many different old sources the guest's jobs name (more than one: reported)."""
    old_sources = {o.source for o, _ in pairs if o.source and o.source != node}
    if len(old_sources) > 1:
        plan.note(
            vmid, None, "error",
            f"jobs of guest {vmid} name different sources ({', '.join(sorted(old_sources))}): "
            "not re-pointing automatically",
        )  # fmt: skip
    return len(old_sources)


def repoint_job(plan: Plan, vmid: int, orig: Job, eff: Job, node: str, sources: int,
                ha: HaService | None) -> bool:  # fmt: skip
    """SetSource / Repoint for one job of a guest now on ``node``; True if it was relocated."""
    relocated = bool(orig.source) and orig.source != node and sources == 1
    if not orig.source:
        plan.add(SetSource(orig.id, vmid, source=node))
    elif relocated:
        plan.note(
            vmid, orig.id, "info",
            f"guest {vmid} was relocated from {orig.source} to {node}"
            + (f" (HA: {ha.state})" if ha is not None else ""),
        )  # fmt: skip
        plan.add(
            Repoint(
                orig.id, vmid, source_from=orig.source or "", source_to=node,
                target_from=orig.target, target_to=eff.target,
            )
        )  # fmt: skip
    return relocated


def own_node_target(plan: Plan, vmid: int, job: Job, node: str) -> None:
    plan.note(
        vmid, job.id, "error",
        f"job {job.id} targets {node}, the node the guest runs on, and its old source "
        "is unknown: it cannot run; re-create it with another target",
    )  # fmt: skip


def not_a_member(plan: Plan, vmid: int, job: Job) -> None:
    plan.note(
        vmid, job.id, "warn",
        f"target '{job.target}' of job {job.id} is not a cluster member: the job cannot "
        "run or be removed there (use 'pverep delete --force')",
    )  # fmt: skip


def _guest(view: ClusterView, plan: Plan, vmid: int) -> None:
    node = view.local_node
    ha = view.ha.get(vmid)
    wait = ha_wait(ha, node)
    if wait is not None:
        plan.note(vmid, None, "info", wait)
        return
    pairs = effective_jobs(view.jobs, vmid, node)
    sources = check_sources(plan, vmid, pairs, node)
    facts = view.guests.get(vmid)
    needed = _bases_of_stateless_jobs(view, facts, pairs)
    for orig, eff in pairs:
        relocated = repoint_job(plan, vmid, orig, eff, node, sources, ha)
        if eff.target == node:
            own_node_target(plan, vmid, orig, node)
            continue
        if facts is None or facts.error is not None:
            why = facts.error if facts is not None else "no guest facts"
            plan.note(vmid, orig.id, "warn", f"guest {vmid} not inspected: {why}")
            continue
        if eff.target not in view.members:
            not_a_member(plan, vmid, eff)
            continue
        state = view.states.get((vmid, tid(eff.target)))
        if eff.remove_job is not None:
            _removal(view, plan, facts, eff, state)
            continue
        if eff.disable:
            if relocated:
                plan.note(vmid, orig.id, "info", f"job {orig.id} is disabled: only re-pointed")
            continue
        stateless = state is None or state.last_sync == 0
        if not (relocated or stateless):
            continue
        _resume(view, plan, facts, eff, state, relocated, needed)


def _local_remote(
    facts: GuestFacts, replicas: ReplicaSet
) -> tuple[dict[str, dict[str, SnapshotInfo]], dict[str, dict[str, int]]]:
    assert replicas.volumes is not None
    volids = list(facts.volids)
    local = {v: {s.name: s for s in facts.local_snapshots.get(v, ())} for v in volids}
    remote = {
        v: {s.name: s.guid for s in replicas.volumes[v]} for v in volids if v in replicas.volumes
    }
    return local, remote


def _bases_of_stateless_jobs(
    view: ClusterView, facts: GuestFacts | None, pairs: Sequence[tuple[Job, Job]]
) -> dict[str, set[str] | None]:
    """jobid → the snapshots a job without a valid state will use as its base (the newest
    common ones with its target; None: unknown, its target could not be asked). Adopting
    ``last_sync`` for another job would make that job's next run delete its own old snapshot,
    which may be exactly this base (fan-out after a recovery onto one of the targets)."""
    out: dict[str, set[str] | None] = {}
    if facts is None or facts.error is not None:
        return out
    for _orig, job in pairs:
        if job.remove_job is not None or job.target == view.local_node:
            continue
        state = view.states.get((facts.vmid, tid(job.target)))
        last_sync = state.last_sync if state is not None else 0
        replicas = view.replicas.get((job.target, facts.vmid))
        if replicas is None or not replicas.reachable:
            if last_sync <= 1:
                out[job.id] = None
            continue
        local, remote = _local_remote(facts, replicas)
        if last_sync > 1 and _common_everywhere(job.id, last_sync, facts.volids, local, remote):
            continue  # a valid state: its base is its own last_sync snapshot
        sel = select_bases(local, remote, job.id, 0, facts.parent, facts.config_snapshots)
        out[job.id] = set(sel.bases.values())
    return out


def _removal(
    view: ClusterView, plan: Plan, facts: GuestFacts, job: Job, state: JobState | None
) -> None:
    if job.remove_job != "full":
        return
    known = set(state.storeid_list if state else ()) | {storage_of(v) for v in facts.cleanup_volids}
    available = set(view.zfs_storages.get(job.target, ()))
    member = view.members.get(job.target)
    online = member is not None and member.online
    if state is not None and state.fail_count:
        plan.note(
            facts.vmid, job.id, "info",
            f"removal of job {job.id} failed {state.fail_count} time(s)"
            + ("" if online else f"; waiting for {job.target} to come back"),
        )  # fmt: skip
    if (
        state is not None
        and online
        and 0 < state.fail_count <= _RETRY_NOW_MAX_FAILS
        and state.last_try != 0
        and _UNREACHABLE.search(state.error or "")
    ):
        plan.add(RetryRemoval(job.id, facts.vmid, target=job.target, node=view.local_node))
    missing = available - known
    if missing:
        keep = set(state.storeid_list) if state else set()
        plan.add(
            ExtendRemovalScan(
                job.id, facts.vmid, target=job.target,
                storeid_list=tuple(sorted(keep | missing)), node=view.local_node,
            )
        )  # fmt: skip


def _resume(
    view: ClusterView,
    plan: Plan,
    facts: GuestFacts,
    job: Job,
    state: JobState | None,
    relocated: bool,
    needed: Mapping[str, set[str] | None],
) -> None:
    vmid = facts.vmid
    replicas = view.replicas.get((job.target, vmid))
    member = view.members.get(job.target)
    if replicas is None or not replicas.reachable or member is None or not member.online:
        why = (replicas.error if replicas is not None else None) or "offline"
        plan.note(
            vmid, job.id, "warn",
            f"target {job.target} of job {job.id} is not reachable ({why}): state and target "
            "clean-up are repaired once it is back",
        )  # fmt: skip
        return
    if replicas.guest_local:
        plan.note(
            vmid, job.id, "error",
            f"{job.target} reports guest {vmid} as its own: nothing is touched there",
        )  # fmt: skip
        return
    volids = list(facts.volids)
    local, remote = _local_remote(facts, replicas)
    sel = select_bases(local, remote, job.id, 0, facts.parent, facts.config_snapshots)
    if sel.missing:
        plan.note(
            vmid, job.id, "error",
            f"no common base snapshot on {', '.join(sorted(sel.missing))} between "
            f"{view.local_node} "
            f"and {job.target}: the next run fails; remove those volumes on {job.target} or "
            f"re-create job {job.id}",
        )  # fmt: skip
    adopt = _adoptable(job.id, volids, sel.bases, remote, sel.missing)
    if adopt is not None:
        snap = f"__replicate_{job.id}_{adopt}__"
        blocked = sorted(k for k, b in needed.items() if k != job.id and (b is None or snap in b))
        if blocked:
            # with last_sync recorded, this job's next run deletes `snap`; the other job(s)
            # still need it as their base: stay stateless (pvesr's last_sync 0 keeps it)
            plan.note(
                vmid, job.id, "info",
                f"job {job.id}: no state recorded: its snapshot {snap} is also the base of "
                f"job(s) {', '.join(blocked)} (or may be); the job goes on without state",
            )  # fmt: skip
            adopt = None
    if sel.bases and not sel.missing:
        bases = sorted(set(sel.bases.values()))
        plan.note(
            vmid, job.id, "info",
            f"newest common snapshot with {job.target}: {', '.join(bases)} "
            "(replication continues incrementally)",
        )  # fmt: skip
    last_sync = state.last_sync if state is not None else 0
    if last_sync > 1 and _common_everywhere(job.id, last_sync, volids, local, remote):
        effective = last_sync  # a valid state (e.g. left by a migration): keep it
    else:
        effective = adopt or 0
        if adopt is not None or last_sync > 0:
            # no state, or one that does not match the disks (stale state of an earlier stay
            # on this node would delete the common base, §9.3 2022-06): record what is true
            plan.add(
                AdoptState(
                    job.id, vmid, target=job.target, last_sync=effective,
                    storeid_list=tuple(sorted({storage_of(v) for v in volids})),
                    node=view.local_node,
                )
            )  # fmt: skip
        elif remote and not sel.missing:
            plan.note(
                vmid, job.id, "info",
                f"job {job.id} has no state on {view.local_node}; its next run picks the common "
                "snapshot itself",
            )  # fmt: skip
    _target_cleanup(plan, replicas, job, volids, effective)


def _common_everywhere(
    jobid: str,
    last_sync: int,
    volids: Sequence[str],
    local: Mapping[str, Mapping[str, SnapshotInfo]],
    remote: Mapping[str, Mapping[str, int | None]],
) -> bool:
    """``__replicate_<jobid>_<last_sync>__`` exists with the same guid on both sides of every
    volume the target has."""
    name = f"__replicate_{jobid}_{last_sync}__"
    for volid, snaps in remote.items():
        mine = local.get(volid, {}).get(name)
        if mine is None or name not in snaps:
            return False
        guid = snaps[name]
        if guid is not None and guid != mine.guid:
            return False
    return True


def _adoptable(
    jobid: str,
    volids: Sequence[str],
    bases: Mapping[str, str],
    remote: Mapping[str, Mapping[str, int | None]],
    missing: Sequence[str],
) -> int | None:
    """The time T if ``__replicate_<jobid>_T__`` is the base of every volume the target has."""
    if missing or not remote:
        return None
    times = set()
    for volid in volids:
        if volid not in remote:
            continue
        sj = snapshot_job(bases.get(volid, ""))
        if sj is None or sj[0] != jobid:
            return None
        times.add(sj[1])
    return times.pop() if len(times) == 1 and min(times) > 1 else None


def _target_cleanup(
    plan: Plan, replicas: ReplicaSet, job: Job, volids: Sequence[str], last_sync: int | None
) -> None:
    assert replicas.volumes is not None
    wanted = set(volids)
    vmid = replicas.vmid
    for volid, snaps in sorted(replicas.volumes.items()):
        if volid in wanted:
            continue
        if carries_job_snapshot(snaps, job.id):
            plan.add(
                DestroyTargetVolume(
                    job.id, vmid, node=replicas.node, volid=volid,
                    reason=f"carries job {job.id}'s snapshots, no longer a disk of guest {vmid}",
                )
            )  # fmt: skip
    if not last_sync or last_sync <= 1:
        return
    present = {v: list(s) for v, s in replicas.volumes.items() if v in wanted}
    prep = plan_prepare(present, job.id, last_sync, None)
    for volid in sorted(prep.stale):
        for snap in prep.stale[volid]:
            if (sj := snapshot_job(snap)) is not None and sj[0] == job.id:
                plan.add(
                    DeleteTargetSnapshot(
                        job.id, vmid, node=replicas.node, volid=volid, snapshot=snap
                    )
                )


def _orphan_jobs(view: ClusterView, plan: Plan, vmid: int) -> None:
    """Jobs of a guest that no longer exists; handled by one node only (see module doc)."""
    node = view.local_node
    for job in sorted((j for j in view.jobs if j.guest == vmid), key=lambda j: j.id):
        src = view.members.get(job.source or "")
        responsible = job.source == node or ((src is None or not src.online) and job.target == node)
        if not responsible:
            continue
        if job.remove_job is None:
            plan.note(
                vmid, job.id, "warn",
                f"guest {vmid} of job {job.id} does not exist; 'pverep delete {job.id}' removes "
                f"its replicas on {job.target}",
            )  # fmt: skip
            continue
        tgt = view.members.get(job.target)
        if tgt is None:
            plan.note(
                vmid, job.id, "warn",
                f"job {job.id}: target '{job.target}' is not a cluster member; "
                "'pverep delete --force' drops the job",
            )  # fmt: skip
            continue
        if not tgt.online:
            plan.note(
                vmid, job.id, "warn",
                f"job {job.id}: guest {vmid} is gone; removal waits for {job.target} to come back",
            )  # fmt: skip
            continue
        plan.add(
            RemoveOrphanJob(
                job.id, vmid, target=job.target, scan=tuple(view.zfs_storages.get(job.target, ()))
            )
        )
