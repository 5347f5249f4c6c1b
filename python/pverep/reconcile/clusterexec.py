"""Cluster-wide reconcile through any Cluster backend (in practice the API): gather the view,
carry out the config-level steps, verify them by reading the jobs back.

How a step is done through the API, as Proxmox itself does it:

* ``set-source`` and a ``repoint`` that keeps the target: ``PUT /cluster/replication/{id}
  source=<node>`` with the digest just read (optimistic locking: a job changed meanwhile is
  skipped, never overwritten).
* a ``repoint`` that switches the target: ``target`` is a fixed property (PUT refuses to change
  it), so the guest's node does Proxmox's own target switch: every status request there
  (``GET /nodes/<node>/replication``) runs ``job_status``, which re-points all jobs of a
  stolen guest under the replication.cfg lock. It is only asked when the plan wants the switch.

Nothing else is done here; disk-level work is the owning node's (``Plan.deferred``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

from pverep.cluster.base import Cluster
from pverep.errors import PverepError
from pverep.reconcile.clusterplan import ClusterWideView
from pverep.reconcile.executor import Outcome
from pverep.reconcile.ha import parse_ha_status
from pverep.reconcile.model import Plan, Repoint, SetSource, Step

Log = Callable[[str], None]


def gather_cluster(
    cluster: Cluster, only_node: str | None = None, only_vmid: int | None = None
) -> ClusterWideView:
    members = cluster.members()
    if only_node is not None and members and only_node not in members:
        raise PverepError(f"node '{only_node}' is not a member of the cluster")
    return ClusterWideView(
        vmlist=cluster.vmlist(),
        members=members,
        jobs=cluster.jobs(),
        ha=parse_ha_status(cluster.ha_status()),
        only_node=only_node,
        only_vmid=only_vmid,
    )


def _before(step: Step) -> tuple[str | None, str | None]:
    """(source, target) the job must still have for ``step`` to apply."""
    if isinstance(step, Repoint):
        return step.source_from, step.target_from
    return None, None


def _after(step: Step, target: str) -> tuple[str, str]:
    """(source, target) the job has once ``step`` is done."""
    if isinstance(step, Repoint):
        return step.source_to, step.target_to
    assert isinstance(step, SetSource)
    return step.source, target


def execute_cluster(cluster: Cluster, plan: Plan, log: Log) -> Outcome:
    out = Outcome()
    by_guest: dict[int, list[Step]] = defaultdict(list)
    for step in plan.steps:
        if isinstance(step, SetSource | Repoint):
            by_guest[step.vmid].append(step)
    for vmid, steps in sorted(by_guest.items()):
        _guest(cluster, vmid, steps, out, log)
    order = {step: n for n, step in enumerate(plan.steps)}
    out.done.sort(key=lambda s: order.get(s, len(order)))
    return out


def _report(out: Outcome, log: Log, step: Step, failed: str | None = None,
            skipped: str | None = None) -> None:  # fmt: skip
    if failed is not None:
        out.failed.append((step, failed))
        log(f"FAILED: {step.describe()}: {failed}")
    elif skipped is not None:
        out.skipped.append((step, skipped))
        log(f"skipped: {step.describe()}: {skipped}")
    else:
        out.done.append(step)
        log(f"done: {step.describe()}")


def _guest(cluster: Cluster, vmid: int, steps: list[Step], out: Outcome, log: Log) -> None:
    pending: list[tuple[Step, str]] = []  # (step, the job's target when planned)
    try:
        current = {s.jobid: cluster.job(s.jobid) for s in steps}
    except PverepError as err:
        for step in steps:
            _report(out, log, step, failed=str(err))
        return
    for step in steps:
        job, digest = current[step.jobid]
        source, target = _before(step)
        if (job.source or None, job.target if target else None) != (source, target):
            _report(out, log, step, skipped="job changed meanwhile")
            continue
        pending.append((step, job.target))
    if not pending:
        return
    switch = [s for s, _ in pending if isinstance(s, Repoint) and s.target_to != s.target_from]
    try:
        if switch:
            # target is fixed for PUT: the guest's node switches it (pvesr's job_status)
            cluster.replication_status(switch[0].source_to, vmid)
        else:
            for step, _target in pending:
                job, digest = cluster.job(step.jobid)
                cluster.update_job(step.jobid, {"source": _after(step, job.target)[0]}, (), digest)
    except PverepError as err:
        for step, _target in pending:
            _report(out, log, step, failed=str(err))
        return
    for step, planned_target in pending:
        try:
            job, _digest = cluster.job(step.jobid)
        except PverepError as err:
            _report(out, log, step, failed=str(err))
            continue
        if (job.source, job.target) == _after(step, planned_target):
            _report(out, log, step)
        else:
            _report(
                out, log, step,
                failed=f"job is now source {job.source or '-'}, target {job.target} "
                "(not what was planned)",
            )  # fmt: skip
