"""Cluster-wide reconcile through the API backend (``pverep --api … reconcile``): the whole
cluster's view → Plan (pure; no I/O, no clock).

From the API one sees where every guest lives, every job, every member and HA's view, but not
a node's job state or its disks. So this plans exactly what replication.cfg holds — the
``source`` fix-up and Proxmox's target switch for relocated guests, the same steps the guest's
own node would plan — and reports the rest (state adoption, stale replicas on the target,
removals of orphaned jobs) as deferred to the node that has to do it, which its own
``pverep reconcile`` (the timer, the HA watcher, the hookscript) then does.

The checks are the node planner's (``planner``): HA still moving the guest → wait; one old
source → re-point; a job targeting the guest's own node with no old source → error; a target
that is no member → warning. A guest on an offline node is left alone: HA may still move it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pverep.cluster.base import GuestLocation, Member
from pverep.config.jobs import Job
from pverep.reconcile.ha import HaService
from pverep.reconcile.model import Deferred, Plan
from pverep.reconcile.planner import (
    check_sources,
    effective_jobs,
    ha_wait,
    not_a_member,
    own_node_target,
    repoint_job,
)

#: Plan.node of a cluster-wide plan (without --node).
CLUSTER = "cluster"


@dataclass(frozen=True)
class ClusterWideView:
    """What the API shows of the whole cluster."""

    vmlist: Mapping[int, GuestLocation]
    members: Mapping[str, Member]
    jobs: Sequence[Job]
    ha: Mapping[int, HaService] = field(default_factory=dict)
    #: restrict to the guests living on this node / to this guest
    only_node: str | None = None
    only_vmid: int | None = None


def plan_cluster(view: ClusterWideView) -> Plan:
    plan = Plan(view.only_node or CLUSTER)
    for vmid in sorted({j.guest for j in view.jobs}):
        if view.only_vmid is not None and vmid != view.only_vmid:
            continue
        where = view.vmlist.get(vmid)
        if where is None:
            _orphan(view, plan, vmid)
        elif view.only_node is None or where.node == view.only_node:
            _guest(view, plan, vmid, where.node)
    return plan


def _online(view: ClusterWideView, node: str) -> bool:
    member = view.members.get(node)
    return member is not None and member.online


def _guest(view: ClusterWideView, plan: Plan, vmid: int, node: str) -> None:
    if view.members and not _online(view, node):
        plan.note(
            vmid, None, "warn",
            f"guest {vmid} lives on {node}, which is offline: its jobs are left alone "
            "(HA may still move it)",
        )  # fmt: skip
        return
    ha = view.ha.get(vmid)
    wait = ha_wait(ha, node)
    if wait is not None:
        plan.note(vmid, None, "info", wait)
        return
    pairs = effective_jobs(view.jobs, vmid, node)
    sources = check_sources(plan, vmid, pairs, node)
    for orig, eff in pairs:
        relocated = repoint_job(plan, vmid, orig, eff, node, sources, ha)
        if eff.target == node:
            own_node_target(plan, vmid, orig, node)
            continue
        if view.members and eff.target not in view.members:
            not_a_member(plan, vmid, eff)
            continue
        if not relocated or eff.remove_job == "local" or (eff.disable and not eff.remove_job):
            continue  # nothing on disk follows from the re-pointing
        if eff.remove_job is not None:
            what = f"job {eff.id}: removal of the replicas on {eff.target} (storages to scan)"
        else:
            what = (
                f"job {eff.id}: state on {node} (newest common snapshot with {eff.target}) "
                f"and stale replicas on {eff.target}"
            )
        plan.deferred.append(Deferred(vmid, eff.id, node, what))


def _orphan(view: ClusterWideView, plan: Plan, vmid: int) -> None:
    """Jobs of a guest that no longer exists: finished by the job's source (or its target)."""
    for job in sorted((j for j in view.jobs if j.guest == vmid), key=lambda j: j.id):
        by = job.source if job.source and _online(view, job.source) else job.target
        if view.only_node is not None and by != view.only_node:
            continue
        if job.remove_job is None:
            plan.note(
                vmid, job.id, "warn",
                f"guest {vmid} of job {job.id} does not exist; 'pverep delete {job.id}' removes "
                f"its replicas on {job.target}",
            )  # fmt: skip
            continue
        if view.members and job.target not in view.members:
            not_a_member(plan, vmid, job)
            continue
        if not _online(view, job.target):
            plan.note(
                vmid, job.id, "warn",
                f"job {job.id}: guest {vmid} is gone; removal waits for {job.target} to come back",
            )  # fmt: skip
            continue
        plan.deferred.append(
            Deferred(
                vmid, job.id, by,
                f"job {job.id}: guest {vmid} no longer exists - remove its replicas on "
                f"{job.target} and delete the job",
            )
        )  # fmt: skip
