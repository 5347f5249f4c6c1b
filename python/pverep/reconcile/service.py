"""One reconcile pass (gather → plan → execute → record), the hook's start check, cleanup of
one node, and the HA watcher loop. Shared by the CLI verbs; no click here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pverep.cluster.base import Cluster
from pverep.cluster.files import FilesCluster
from pverep.config.jobs import ConfigStore
from pverep.engine import notify
from pverep.engine.remote import TargetNode
from pverep.errors import PverepError
from pverep.paths import Paths
from pverep.reconcile import journal
from pverep.reconcile.clusterexec import execute_cluster, gather_cluster
from pverep.reconcile.clusterplan import plan_cluster
from pverep.reconcile.executor import Outcome, execute
from pverep.reconcile.gather import (
    Node,
    gather_view,
    query_replicas,
    read_ha,
    zfs_storages_by_node,
)
from pverep.reconcile.ha import recovered_here
from pverep.reconcile.model import GuestFacts, Plan, Repoint
from pverep.reconcile.orphans import plan_cleanup
from pverep.reconcile.planner import plan_reconcile, snapshot_job
from pverep.reconcile.target import node_images
from pverep.transport.local import LocalShell

Log = Callable[[str], None]


@dataclass
class Result:
    plan: Plan
    outcome: Outcome | None = None  # None for a dry run
    lines: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        doc = self.plan.to_dict()
        if self.outcome is not None:
            doc["done"] = [s.describe() for s in self.outcome.done]
            doc["skipped"] = [f"{s.describe()}: {why}" for s, why in self.outcome.skipped]
            doc["failed"] = [f"{s.describe()}: {why}" for s, why in self.outcome.failed]
        return doc


def make_node(paths: Paths, deadline: float | None = None) -> Node:
    cluster = FilesCluster(paths)
    return Node(paths, cluster, cluster.local_node(), deadline=deadline)


def reconcile(
    node: Node,
    *,
    only_vmid: int | None = None,
    dry_run: bool = False,
    log: Log | None = None,
    now: Callable[[], float] = time.time,
) -> Result:
    view = gather_view(node, only_vmid)
    plan = plan_reconcile(view)
    result = Result(plan)
    if dry_run or plan.empty:
        return result
    lines: list[str] = [f"reconcile on {node.local_node}: {len(plan.steps)} step(s)"]
    lines += [f"found [{f.level}] {f.text}" for f in plan.findings]

    def sink(line: str) -> None:
        lines.append(line)
        if log is not None:
            log(line)

    outcome = execute(node, plan, sink)
    result.outcome = outcome
    result.lines = lines
    journal.append_log(node.paths, lines, now())
    done: dict[str, list[str]] = {}
    for step in outcome.done:
        done.setdefault(step.jobid, []).append(step.describe())
    journal.record_repairs(node.paths, node.local_node, done, now())
    if outcome.failed:
        _notify(node, outcome)
    return result


def reconcile_cluster(
    cluster: Cluster,
    *,
    only_node: str | None = None,
    only_vmid: int | None = None,
    dry_run: bool = False,
    log: Log | None = None,
) -> Result:
    """The cluster-wide pass through the API: config-level repairs for every node's guests,
    the rest reported as deferred to the guest's node (see ``clusterplan``). Nothing is
    written on the machine it runs on (it need not be a cluster node)."""
    plan = plan_cluster(gather_cluster(cluster, only_node, only_vmid))
    result = Result(plan)
    if dry_run or plan.empty:
        return result
    result.outcome = execute_cluster(cluster, plan, log or (lambda _line: None))
    return result


def _notify(node: Node, outcome: Outcome) -> None:
    """Failures are mailed like replication failures (engine.notify), one per job."""
    send = notify.mailer(LocalShell(node.local_node))
    jobs = ConfigStore(node.paths, node.warn).read().jobs
    seen = set()
    for step, why in outcome.failed:
        if step.jobid in seen:
            continue
        seen.add(step.jobid)
        job = jobs.get(step.jobid)
        try:
            send(
                notify.Failure(
                    step.jobid,
                    job.target if job else "-",
                    (job.schedule if job else None) or "*/15",
                    0,
                    1,
                    f"reconcile: {step.describe()}: {why}",
                    node.local_node,
                )
            )
        except PverepError as err:
            node.warn(f"{step.jobid}: sending failure notification failed - {err}")


# --- the hook's start check --------------------------------------------------------------------


@dataclass(frozen=True)
class StartPolicy:
    """Opt-ins of the hookscript (default: never refuse a start)."""

    require_replica: bool = False
    max_replica_age: int | None = None  # seconds; only checked for a relocated guest


def start_refusal(
    facts: GuestFacts | None,
    relocated: bool,
    policy: StartPolicy,
    now: float,
    missing: list[str],
) -> str | None:
    """Why a start must be refused under ``policy`` (None: start). Pure."""
    if facts is None:
        return None
    if policy.require_replica and missing:
        return (
            f"refusing to start guest {facts.vmid} on {facts.node}: no replica of "
            f"{', '.join(missing)} on this node"
        )
    if policy.max_replica_age is not None and relocated:
        for volid, snaps in sorted(facts.local_snapshots.items()):
            times = [s.creation for s in snaps if snapshot_job(s.name)]
            newest = max(times) if times else None
            if newest is None or now - newest > policy.max_replica_age:
                age = "none" if newest is None else f"{int(now - newest)}s old"
                return (
                    f"refusing to start guest {facts.vmid} on {facts.node}: replica of {volid} "
                    f"is {age} (limit {policy.max_replica_age}s)"
                )
    return None


def hook_check(node: Node, vmid: int, result: Result | None, policy: StartPolicy) -> str | None:
    if not policy.require_replica and policy.max_replica_age is None:
        return None
    view = gather_view(node, vmid)
    facts = view.guests.get(vmid)
    missing: list[str] = []
    if facts is not None and facts.error is not None:
        # a volume that cannot be listed here is a volume without a replica here
        missing = [facts.error]
        facts = GuestFacts(vmid, node.local_node, (), ())
    relocated = bool(result and any(isinstance(s, Repoint) for s in result.plan.steps))
    if not relocated:
        entries = journal.read_journal(node.paths)
        relocated = any(
            e.get("node") == node.local_node
            and any("source" in line for line in e.get("done", []))
            and time.time() - float(e.get("time", 0)) < 86400
            for jobid, e in entries.items()
            if jobid.split("-", 1)[0] == str(vmid)
        )
    return start_refusal(facts, relocated, policy, time.time(), missing)


# --- cleanup of one node -----------------------------------------------------------------------


def cleanup_local(node: Node, target: TargetNode, dry_run: bool, log: Log) -> Result:
    jobs = ConfigStore(node.paths, node.warn).read().jobs.values()
    plan = plan_cleanup(node.local_node, list(jobs), node.cluster.vmlist(), node_images(target))
    result = Result(plan)
    if dry_run or plan.empty:
        return result
    out = Outcome()
    from pverep.reconcile.model import DeleteTargetSnapshot, DestroyTargetVolume

    for step in plan.steps:
        try:
            if isinstance(step, DeleteTargetSnapshot):
                target.volumes.delete_snapshot(step.volid, step.snapshot)
            elif isinstance(step, DestroyTargetVolume):
                target.volumes.free(step.volid)
            out.done.append(step)
            log(f"done: {step.describe()}")
        except PverepError as err:
            out.failed.append((step, str(err)))
            log(f"FAILED: {step.describe()}: {err}")
    result.outcome = out
    journal.append_log(node.paths, [f"cleanup: {s.describe()}" for s in out.done])
    return result


# --- the HA watcher ----------------------------------------------------------------------------


def watch(
    paths: Paths,
    *,
    interval: float,
    duration: float | None,
    log: Log,
    run: Callable[[int | None], None],
    sleep: Callable[[float], object] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    stopped: Callable[[], bool] = lambda: False,
) -> None:
    """Poll manager_status; on recovery → started (or a move) onto this node, reconcile that
    guest at once. A full pass runs first, so nothing that happened before is missed.
    Ends after ``duration`` or once ``stopped()`` (never in the middle of a pass)."""
    node = FilesCluster(paths).local_node()
    run(None)
    before = read_ha(paths)
    log(f"watching {paths.ha_manager_status} on {node} every {interval:g}s")
    end = None if duration is None else clock() + duration
    while not stopped() and (end is None or clock() < end):
        sleep(interval)
        if stopped():
            break
        after = read_ha(paths)
        for vmid in recovered_here(before, after, node):
            log(
                f"HA: guest {vmid} started on {node} after "
                f"'{before[vmid].state if vmid in before else 'new'}' - reconciling"
            )
            run(vmid)
        before = after


# --- what `delete --force` leaves behind -------------------------------------------------------


def leftovers(paths: Paths, jobid: str, timeout: float = 10.0) -> list[str]:
    """Lines naming every volume and replication snapshot of ``jobid`` that stays behind when
    the job is dropped without clean-up (on its target and on the guest's node)."""
    try:
        node = make_node(paths, time.monotonic() + timeout)
        job = ConfigStore(paths, node.warn).read().jobs.get(jobid)
        if job is None:
            return []
        vmid = job.guest
        lines = []
        where = node.cluster.vmlist().get(vmid)
        places = [job.target] + ([where.node] if where is not None else [])
        zfs = zfs_storages_by_node(node.storage(), places)
        for place in places:
            if place != node.local_node and not paths.node_known_hosts(place).exists():
                # BatchMode ssh cannot verify an unknown host: do not even try
                lines.append(f"left behind on {place}: unknown (no ssh host key for {place})")
                continue
            rs = query_replicas(node, place, vmid, zfs.get(place, ()))
            if rs.volumes is None:
                lines.append(
                    f"left behind on {place}: unknown ({rs.error}); run 'pverep cleanup "
                    f"--target {place}' once it is back"
                )
                continue
            if rs.guest_local and place != node.local_node:
                continue
            for volid, snaps in sorted(rs.volumes.items()):
                mine = [s.name for s in snaps if (sj := snapshot_job(s.name)) and sj[0] == jobid]
                if not mine:
                    continue
                kind = (
                    "snapshots on the guest's disk"
                    if place == (where and where.node)
                    else ("replica volume")
                )
                lines.append(f"left behind on {place}: {kind} {volid} ({', '.join(mine)})")
        if lines:
            lines.append("'pverep cleanup --target <node>' removes these once the job is gone")
        else:
            lines.append(f"job {jobid}: no replication data found on {', '.join(places)}")
        return lines
    except PverepError as err:
        return [f"job {jobid}: could not list what is left behind: {err}"]
