"""Target side of reconcile and cleanup: what a node holds of a guest, and the validated
clean-up of exactly the steps a plan names.

Both run on the node whose data they read or change (locally or through ``ssh <node> pverep
replica-info|replica-clean``). ``replica_clean`` re-checks every step against the node's own
view before acting, so a stale or forged plan can do no more than delete this job's
replication snapshots or destroy volumes that carry them, and never for a guest living here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from pverep._core import SnapshotInfo
from pverep.engine.remote import TargetNode, refuse_local_guest
from pverep.errors import PverepError, ValidationError
from pverep.reconcile.planner import snapshot_job
from pverep.storage.clones import same_volume
from pverep.validate import (
    check_job_id_param,
    check_storage_id,
    check_vmid,
    parse_job_id,
    parse_volume_id,
)


def list_replicas(
    target: TargetNode, vmid: int, scan: Sequence[str]
) -> dict[str, list[SnapshotInfo]]:
    """Every image of ``vmid`` on the given zfspool storages (disabled/unavailable/other types
    skipped), with its snapshots. Read only."""
    out: dict[str, list[SnapshotInfo]] = {}
    for storeid in sorted(set(scan)):
        check_storage_id(storeid)
        scfg = target.storage.storages.get(storeid)
        if scfg is None or scfg.disabled or not scfg.available_on(target.node):
            continue
        if not scfg.replicatable:
            continue
        for volid in target.volumes.list_images(storeid, vmid):
            out[volid] = target.volumes.snapshot_info(volid)
    return out


def zfs_storages(target: TargetNode) -> list[str]:
    return sorted(
        sid
        for sid, scfg in target.storage.storages.items()
        if scfg.replicatable and not scfg.disabled and scfg.available_on(target.node)
    )


def replica_info_json(target: TargetNode, vmid: int, scan: Sequence[str]) -> str:
    """One JSON line: node, whether the guest lives here, volid → snapshot → guid/txg/time."""
    local = target.guest_node(vmid) == target.node
    volumes = {} if local else list_replicas(target, vmid, scan or zfs_storages(target))
    doc = {
        "node": target.node,
        "guest_local": local,
        "volumes": {
            volid: [[s.name, str(s.guid), s.createtxg, s.creation] for s in snaps]
            for volid, snaps in volumes.items()
        },
    }
    return json.dumps(doc, separators=(",", ":"))


def parse_replica_info(text: str) -> tuple[bool, dict[str, list[SnapshotInfo]]]:
    line = next((ln for ln in text.splitlines() if ln.strip()), "")
    try:
        doc = json.loads(line)
        volumes: dict[str, list[SnapshotInfo]] = {}
        for volid, snaps in doc["volumes"].items():
            ds = volid.split(":", 1)[1]
            volumes[volid] = [
                SnapshotInfo(ds, str(n), int(g), int(t), int(c)) for n, g, t, c in snaps
            ]
        return bool(doc["guest_local"]), volumes
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as err:
        raise PverepError(f"unexpected replica-info answer: {err}") from None


@dataclass(frozen=True)
class CleanRequest:
    jobid: str
    delete: tuple[tuple[str, str], ...]  # (volid, snapshot)
    destroy: tuple[str, ...]  # volids


def _owned(target: TargetNode, vmid: int, volid: str) -> None:
    parse_volume_id(volid)
    owner = target.storage.volume_info(volid).owner
    if owner != vmid:
        raise PverepError(f"volume '{volid}' has wrong owner")


def replica_clean(target: TargetNode, vmid: int, req: CleanRequest) -> list[str]:
    """Carry out the named deletions of job ``req.jobid``; one line per action done."""
    vmid = check_vmid(vmid)
    check_job_id_param(req.jobid)
    if parse_job_id(req.jobid)[0] != vmid:
        raise ValidationError(f"job '{req.jobid}' is not a job of guest {vmid}")
    refuse_local_guest(target, vmid)

    def allowed(snap: str) -> bool:
        sj = snapshot_job(snap)
        if sj is None:
            return False
        return sj[0] == req.jobid

    done: list[str] = []
    for volid, snap in req.delete:
        _owned(target, vmid, volid)
        if not allowed(snap):
            raise ValidationError(f"'{snap}' is not a replication snapshot of job {req.jobid}")
        names = {s.name for s in target.volumes.snapshot_info(volid)}
        if snap not in names:
            continue  # already gone: idempotent
        target.log(f"{req.jobid}: delete stale replication snapshot '{snap}' on {volid}")
        target.volumes.delete_snapshot(volid, snap)
        done.append(f"delete-snapshot {volid}@{snap}")
    for volid in req.destroy:
        _owned(target, vmid, volid)
        storeid, _ = parse_volume_id(volid)
        if not any(same_volume(volid, v) for v in target.volumes.list_images(storeid, vmid)):
            continue
        snaps = target.volumes.snapshot_info(volid)
        if not any(allowed(s.name) for s in snaps):
            raise PverepError(
                f"refusing to destroy '{volid}': it carries no replication snapshot of "
                f"job {req.jobid}"
            )
        target.log(f"{req.jobid}: delete stale volume '{volid}'")
        target.volumes.free(volid)
        done.append(f"destroy-volume {volid}")
    return done


def node_images(target: TargetNode) -> dict[str, list[SnapshotInfo]]:
    """Every image on every zfspool storage of this node, with snapshots (for cleanup)."""
    out: dict[str, list[SnapshotInfo]] = {}
    for storeid in zfs_storages(target):
        for volid in target.volumes.list_images(storeid):
            out[volid] = target.volumes.snapshot_info(volid)
    return out
