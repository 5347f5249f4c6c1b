"""``pverep cleanup``: orphaned replication snapshots and replica volumes on one node (pure).

Orphaned = a ``__replicate_<jobid>_<t>__`` snapshot whose job no longer exists in
replication.cfg. A volume is destroyed only if every replication snapshot on it is orphaned, it
belongs to no guest living on this node, and no existing job of its guest targets this node
(its first run may still use it as a base). On a guest living here only the orphaned snapshots
go. Volumes without replication snapshots are never touched.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence

from pverep._core import SnapshotInfo
from pverep.cluster.base import GuestLocation
from pverep.config.jobs import Job
from pverep.reconcile.model import DeleteTargetSnapshot, DestroyTargetVolume, Plan
from pverep.reconcile.planner import snapshot_job

_OWNER = re.compile(r"^(?:vm|base|subvol|basevol)-([1-9][0-9]*)-\S+$")


def volume_owner(volid: str) -> int | None:
    """The guest owning the image: a linked clone ``base-<X>-…/vm-<Y>-…`` belongs to Y."""
    m = _OWNER.match(volid.split(":", 1)[-1].rsplit("/", 1)[-1])
    return int(m.group(1)) if m else None


def plan_cleanup(
    node: str,
    jobs: Collection[Job],
    vmlist: Mapping[int, GuestLocation],
    images: Mapping[str, Sequence[SnapshotInfo]],
) -> Plan:
    plan = Plan(node)
    existing = {j.id for j in jobs}
    targeted = {(j.guest, j.target) for j in jobs}
    for volid in sorted(images):
        vmid = volume_owner(volid)
        if vmid is None:
            continue
        repl = [(s.name, sj[0]) for s in images[volid] if (sj := snapshot_job(s.name))]
        if not repl:
            continue
        orphaned = [(name, jobid) for name, jobid in repl if jobid not in existing]
        if not orphaned:
            continue
        where = vmlist.get(vmid)
        live = where is not None and where.node == node
        if not live and len(orphaned) == len(repl) and (vmid, node) not in targeted:
            jobs_text = ", ".join(sorted({j for _, j in orphaned}))
            plan.add(
                DestroyTargetVolume(
                    orphaned[0][1], vmid, node=node, volid=volid,
                    reason=f"only snapshots of deleted job(s) {jobs_text}",
                )
            )  # fmt: skip
            continue
        if not live and (vmid, node) in targeted and len(orphaned) == len(repl):
            plan.note(
                vmid, None, "info",
                f"{volid}: kept (an existing job of guest {vmid} targets {node}); only its "
                "orphaned snapshots go",
            )  # fmt: skip
        for name, jobid in orphaned:
            plan.add(DeleteTargetSnapshot(jobid, vmid, node=node, volid=volid, snapshot=name))
    return plan
