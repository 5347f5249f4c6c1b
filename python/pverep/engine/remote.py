"""The target side of the remote protocol (spec §5.2, §5.3, §5.7).

Everything received is validated first (job id, volids, storages, owners, vtypes, snapshot
names), and nothing is touched for a guest that lives on this node: right after a migration or
an HA recovery onto this node, the "replica" volumes ARE the guest's live disks.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace

from pverep import _core
from pverep.config.storage import StorageConfig
from pverep.engine.importclaim import ImportClaim, ImportRegistry
from pverep.engine.planner import PVEREP_INFO_KEY
from pverep.engine.prepare import Log, prepare
from pverep.errors import PverepError, ValidationError
from pverep.storage.clones import spelled_as
from pverep.storage.streamform import ImportMode
from pverep.storage.volumes import Volumes
from pverep.storage.zfs import ZfsPool
from pverep.transport.base import LineSink
from pverep.validate import (
    check_job_id_param,
    check_parent_snapname,
    check_storage_id,
    check_transfer_snapshot_name,
    is_replication_snapshot,
    parse_job_id,
    parse_volume_id,
)

#: The stream formats a zfspool storage exports and imports.
ZFS_FORMAT = "zfs"
_PLUGIN = "PVE::Storage::ZFSPoolPlugin"
#: Seconds without a byte on the import's input before the receive is aborted. Generous: the
#: source's own watchdog (same default) normally ends a stalled transfer first; this one is for
#: a source that vanished without closing the connection (a partition).
DEFAULT_IMPORT_STALL_TIMEOUT = 600.0


@dataclass
class TargetNode:
    """What the target side needs to know about the node it runs on."""

    node: str
    storage: StorageConfig
    volumes: Volumes
    #: The cluster vmlist: vmid → node the guest's config lives on (None: no such guest).
    guest_node: Callable[[int], str | None]
    log: Log
    #: Running imports on this node (None: no superseding, e.g. in unit tests).
    imports: ImportRegistry | None = None


def refuse_local_guest(target: TargetNode, vmid: int) -> None:
    """``guest '<vmid>' is on local node``: never touch the disks of a guest living here."""
    if target.guest_node(vmid) == target.node:
        raise PverepError(f"guest '{vmid}' is on local node")


def check_wanted_volume(target: TargetNode, vmid: int, volid: str) -> str:
    """§5.2 step 6: the storage is enabled here and replicatable, the volume is an image of
    ``vmid``. Returns the storage id."""
    storeid, _ = parse_volume_id(volid)
    scfg = target.storage.check_enabled(storeid, target.node)
    if not scfg.replicatable:
        raise PverepError(f"storage '{storeid}' is not replicatable")
    info = target.storage.volume_info(volid)
    if info.vtype != "images":
        raise PverepError(f"volume '{volid}' has wrong vtype ({info.vtype} != 'images')")
    if not info.owner or info.owner != vmid:
        raise PverepError(f"volume '{volid}' has wrong owner")
    return storeid


def _scan_storages(target: TargetNode, scan: Sequence[str]) -> set[str]:
    selected: set[str] = set()
    for storeid in scan:
        check_storage_id(storeid)
        scfg = target.storage.get(storeid)
        if scfg.disabled or not scfg.available_on(target.node):
            continue  # silently ignored, like pvesr
        if not scfg.replicatable:
            raise PverepError(f"storage '{storeid}' is not replicatable")
        selected.add(storeid)
    return selected


def prepare_local_job(
    target: TargetNode,
    jobid: str,
    volids: Sequence[str],
    *,
    scan: Sequence[str] = (),
    last_sync: int = 0,
    parent_snapname: str | None = None,
    force: bool = False,
    partial: dict[str, str] | None = None,
) -> dict[str, dict[str, _core.SnapshotInfo]]:
    """§5.2: clean this job's stale snapshots and volumes; report what the target has.

    ``partial`` (pverep-only, a dict to fill): the resume token of every wanted volume with a
    kept partial receive; a partial receive on a volume the guest no longer sends is
    discarded (it holds no completed snapshot, so nothing the source still has is lost)."""
    if not volids and not force:
        raise PverepError("no volumes specified")
    jobid = check_job_id_param(jobid)
    vmid, _ = parse_job_id(jobid)
    if last_sync < 0:
        raise ValidationError("last_sync must be >= 0")
    if parent_snapname is not None:
        check_parent_snapname(parent_snapname)
    refuse_local_guest(target, vmid)

    storages = _scan_storages(target, scan)
    wanted: set[str] = set()
    for volid in volids:
        storages.add(check_wanted_volume(target, vmid, volid))
        wanted.add(volid)

    present = _present_images(target, storages, vmid, volids)
    if partial is not None and _partial_receives(target, jobid, present, wanted, partial):
        # a discarded partial first receive took its dataset with it
        present = _present_images(target, storages, vmid, volids)

    result = prepare(target.volumes, present, jobid, last_sync, parent_snapname, target.log)
    snapshots = result.snapshots
    for volid in present:
        if volid in wanted:
            continue
        # (prepare answers for every volume it was given: each present one has an entry)
        stale = volid in result.cleaned or any(
            is_replication_snapshot(name, jobid) for name in snapshots[volid]
        )
        if not stale:
            continue
        target.log(f"{jobid}: delete stale volume '{volid}'")
        target.volumes.free(volid)
        del snapshots[volid]
    for volid in partial or {}:
        if not snapshots.get(volid):  # a partial first sync is no replica yet: report the token
            snapshots.pop(volid, None)
    return snapshots


def _present_images(
    target: TargetNode, storages: set[str], vmid: int, volids: Sequence[str]
) -> list[str]:
    """The guest's images on the scanned storages. A linked clone's replica is listed as a
    plain volume: answer (and keep it) under the clone volid the source asked for, or it
    would be destroyed as stale (storage/clones)."""
    present: list[str] = []
    for storeid in sorted(storages):
        present += target.volumes.list_images(storeid, vmid)
    return spelled_as(present, volids)


def _partial_receives(
    target: TargetNode,
    jobid: str,
    present: Sequence[str],
    wanted: set[str],
    partial: dict[str, str],
) -> bool:
    """Fill ``partial`` with the wanted volumes' tokens; True if a receive was discarded."""
    discarded = False
    for volid in sorted(set(present) | wanted):
        storeid, volname = parse_volume_id(volid)
        pool = target.volumes.pool(storeid)
        token = _settled_token(target, pool, volname)
        if token is None:
            continue
        if volid in wanted:
            partial[volid] = token
        elif pool.abort_partial(volname):
            target.log(f"{jobid}: discard partial receive of '{volid}' (no longer replicated)")
            discarded = True
    return discarded


def _settled_token(target: TargetNode, pool: ZfsPool, volname: str) -> str | None:
    """The volume's resume token once no import of it runs any more. An import still
    running here belongs to a run that gave up (a partition leaves it alive until its stall
    timeout); zfs saves the partial state only when that receive ends, so it is stopped
    first, as a superseding import would (importclaim; safe for the same reason: the source
    holds the guest's lock for its whole run, so this prepare's run is the only live one)."""
    if target.imports is None or not pool.flags.caps.resume_target:
        return pool.resume_token(volname)
    with target.imports.claim(pool.dataset(volname)):
        return pool.resume_token(volname)


def prepare_info(target: TargetNode, partial: Mapping[str, str]) -> dict[str, object]:
    """What a pverep target adds to its prepare answer when asked: its zfs stream features
    and the kept partial receives."""
    return {"zfs": target.volumes.flags.caps.to_json(), "partial": dict(partial)}


def format_prepare_result(
    snapshots: Mapping[str, Mapping[str, _core.SnapshotInfo]],
    info: Mapping[str, object] | None = None,
) -> str:
    """The one stdout line: ``{"<volid>":{"<snap>":{"id":"<guid>","timestamp":"<epoch>"}}}``
    (plus ``"pverep":{…}`` when the source asked for it)."""
    doc: dict[str, object] = {
        volid: {
            name: {"id": str(info.guid), "timestamp": str(info.creation)}
            for name, info in snaps.items()
        }
        for volid, snaps in snapshots.items()
    }
    if info is not None:
        doc[PVEREP_INFO_KEY] = dict(info)
    return json.dumps(doc, separators=(",", ":"))


def finalize_local_job(
    target: TargetNode, jobid: str, volids: Sequence[str], *, last_sync: int
) -> None:
    """§5.3: drop this job's older snapshots where the new ``last_sync`` one exists."""
    jobid = check_job_id_param(jobid)
    vmid, _ = parse_job_id(jobid)
    refuse_local_guest(target, vmid)
    if not volids:
        raise PverepError("no volumes specified")
    for volid in volids:
        check_wanted_volume(target, vmid, volid)
    prepare(target.volumes, sorted(volids), jobid, last_sync, None, target.log)


def _check_format(fmt: str, action: str) -> None:
    if fmt != ZFS_FORMAT:
        raise PverepError(f"unsupported {action} stream format for {_PLUGIN}: {fmt}")


def _snap(name: str | None) -> str | None:
    return None if name is None else check_transfer_snapshot_name(name)


@dataclass(frozen=True)
class ImportPlan:
    """A validated import: where the stream goes and what to do after it."""

    pool: ZfsPool
    volname: str
    base: str | None
    allow_rename: bool
    delete_snapshot: str | None
    #: pverep-only options (resumable / raw / resuming / discard / prune).
    mode: ImportMode = field(default_factory=ImportMode)
    #: This import's registration as the one import of the volume (see ``claimed_import``).
    claim: ImportClaim | None = None


def validate_import(
    target: TargetNode,
    volid: str,
    fmt: str,
    *,
    snapshot: str | None = None,
    base: str | None = None,
    allow_rename: bool = False,
    delete_snapshot: str | None = None,
    mode: ImportMode | None = None,
) -> ImportPlan:
    """Validate an import without touching zfs: format, snapshot names, storage, owner
    (refusing a guest living on this node: ``zfs recv -F`` would roll back or overwrite its
    live disk)."""
    _check_format(fmt, "import")
    _snap(snapshot)
    base = _snap(base)
    delete_snapshot = _snap(delete_snapshot)
    mode = mode or ImportMode()
    for name in mode.prune:
        _snap(name)
    storeid, volname = parse_volume_id(volid)
    target.storage.check_enabled(storeid, target.node)
    pool = target.volumes.pool(storeid)
    owner = target.storage.volume_info(volid).owner
    if owner is None:
        raise PverepError(f"volume '{volid}' has wrong owner")
    refuse_local_guest(target, owner)
    return ImportPlan(pool, volname, base, allow_rename, delete_snapshot, mode)


def check_import(plan: ImportPlan) -> None:
    """The plugin's pre-checks (base exists / volume does not)."""
    plan.pool.check_import(plan.volname, plan.base, plan.allow_rename, plan.mode)


@contextlib.contextmanager
def claimed_import(
    target: TargetNode, plan: ImportPlan, *, hosted: bool = False
) -> Iterator[ImportPlan]:
    """Register ``plan`` as the one import of its volume on this node for the block, first
    stopping a stale import of the same volume (``importclaim``: safe because a second import
    of a volume can only come from a run that gave up on the first), then run the pre-checks
    against what that import left behind. Validate first: nothing is stopped for a request
    that would be refused anyway. ``hosted``: the import is a ``pverep serve`` request (a
    superseding import then stops only its receiver, importclaim)."""
    if target.imports is None:
        check_import(plan)
        yield plan
        return
    with target.imports.claim(plan.pool.dataset(plan.volname), hosted=hosted) as claim:
        check_import(plan)
        yield replace(plan, claim=claim)


def run_import(
    plan: ImportPlan,
    stdin: int,
    *,
    on_stderr: LineSink | None = None,
    stall_timeout: float | None = DEFAULT_IMPORT_STALL_TIMEOUT,
) -> str:
    """Receive the stream from the fd ``stdin``; returns the imported volid. ``stall_timeout``
    seconds without input abort the receive (None: wait forever)."""
    pool = plan.pool
    imported = pool.import_(
        plan.volname,
        stdin,
        plan.base,
        allow_rename=plan.allow_rename,
        on_stderr=on_stderr,
        stall_timeout=stall_timeout,
        on_receiver=None if plan.claim is None else plan.claim.set_receiver,
        mode=plan.mode,
    )
    if plan.delete_snapshot is not None:
        pool.delete_snapshot(parse_volume_id(imported)[1], plan.delete_snapshot)
    return imported


def import_volume(
    target: TargetNode,
    volid: str,
    fmt: str,
    stdin: int,
    *,
    snapshot: str | None = None,
    base: str | None = None,
    allow_rename: bool = False,
    delete_snapshot: str | None = None,
    on_stderr: LineSink | None = None,
    stall_timeout: float | None = DEFAULT_IMPORT_STALL_TIMEOUT,
    mode: ImportMode | None = None,
) -> str:
    """§5.7 ``import`` from an already open fd: validate, claim the volume, check, receive."""
    plan = validate_import(
        target,
        volid,
        fmt,
        snapshot=snapshot,
        base=base,
        allow_rename=allow_rename,
        delete_snapshot=delete_snapshot,
        mode=mode,
    )
    with claimed_import(target, plan) as claimed:
        return run_import(claimed, stdin, on_stderr=on_stderr, stall_timeout=stall_timeout)


def export_volume(
    target: TargetNode,
    volid: str,
    fmt: str,
    stdout: int,
    *,
    snapshot: str | None = None,
    base: str | None = None,
    with_snapshots: bool = False,
    on_stderr: LineSink | None = None,
) -> None:
    """§5.7 ``export``: ``zfs send`` of ``volid`` straight into the fd ``stdout``."""
    _check_format(fmt, "export")
    snapshot = _snap(snapshot)
    base = _snap(base)
    storeid, volname = parse_volume_id(volid)
    target.storage.check_enabled(storeid, target.node)
    pool = target.volumes.pool(storeid)
    proc = pool.export(
        volname, snapshot, base, with_snapshots=with_snapshots, stdout=stdout, on_stderr=on_stderr
    )
    pool.runner.finish(proc)
