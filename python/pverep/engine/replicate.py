"""The replicate algorithm of one job on the source node (spec §4), I/O through injected ports.

Every log text comes from engine/messages.py; the order of side effects is pvesr's: local and
remote prepare, snapshot all volumes, transfer all volumes, record the sync, only then delete the
previous snapshots, then finalize on the target.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pverep.engine import messages
from pverep.engine.planner import (
    SnapshotInfo,
    old_snapshot_volids,
    parse_remote_prepare,
    plan_transfers,
    removal_scan_storages,
    storeids_of,
)
from pverep.engine.ports import GuestView, LocalVolumes, LogFunc, Target, TransportConfig
from pverep.engine.prepare import prepare
from pverep.errors import PverepError
from pverep.validate import is_replication_snapshot


class PartialTransferError(PverepError):
    """A transfer broke and the target kept its partial receive (pverep targets only)."""


class JobLike(Protocol):
    """The job fields the engine reads (config/jobs.py's Job has them)."""

    @property
    def id(self) -> str: ...
    @property
    def guest(self) -> int: ...
    @property
    def target(self) -> str: ...
    @property
    def rate(self) -> str | None: ...  # as written in replication.cfg (MB/s)
    @property
    def rate_mbps(self) -> float | None: ...
    @property
    def remove_job(self) -> str | None: ...


class StateLike(Protocol):
    """The job state fields replicate() reads and updates (config/state.py's JobState)."""

    last_sync: int
    storeid_list: list[str]


def _warn(msg: str) -> None:
    print(msg, file=sys.stderr)


@dataclass
class ReplicateEnv:
    """Everything replicate() touches besides the job and its state."""

    local_node: str
    volumes: LocalVolumes
    load_guest: Callable[[int, bool], GuestView]  # (vmid, cleanup) → guest view
    connect: Callable[[str, str | None], Target]  # (target node, network) → target
    transport: TransportConfig
    storage_exists: Callable[[str], bool]
    delete_job: Callable[[str], None]
    record_sync_end: Callable[[int], None]  # start_time → state.last_sync persisted
    freeze: Callable[[GuestView], None] = lambda guest: None
    thaw: Callable[[GuestView], None] = lambda guest: None
    warn: Callable[[str], None] = field(default=_warn)


def prepare_local(
    env: ReplicateEnv,
    volids: Sequence[str],
    jobid: str,
    last_sync: int,
    parent_snapname: str | None,
    log: LogFunc,
    keep: Mapping[str, str] | None = None,
) -> dict[str, dict[str, SnapshotInfo]]:
    """pvesr ``prepare()`` on the source (§4.3): delete stale job snapshots, return the rest.
    ``keep``: volid → a snapshot a kept partial receive on the target continues (pverep)."""
    return prepare(
        env.volumes, volids, jobid, last_sync, parent_snapname, log, env.warn, keep=keep
    ).snapshots


def replicate(
    env: ReplicateEnv, job: JobLike, state: StateLike, start_time: int, log: LogFunc
) -> list[str]:
    """Run one replication (or removal) of ``job``; returns the replicated volids."""
    if getattr(job, "type", "local") != "local":
        raise PverepError("not implemented - internal error")
    last_sync = int(state.last_sync)
    if start_time <= last_sync:
        raise PverepError(messages.start_before_last_sync(start_time, last_sync))

    guest = env.load_guest(job.guest, job.remove_job is not None)
    volids = sorted(guest.volids)
    log(messages.guest_line(guest.kind, guest.vmid, guest.running))
    log(messages.volumes_line(volids))
    # storages deleted from storage.cfg would make the target fail forever (§9.3, 2023-06)
    state.storeid_list = [s for s in state.storeid_list if env.storage_exists(s)]

    if job.remove_job is not None:
        _remove(env, job, job.remove_job, state, volids, log)
        return []

    target = env.connect(job.target, env.transport.network)
    try:
        return _sync(env, job, state, guest, volids, start_time, target, log)
    finally:
        target.close()


def _remove(
    env: ReplicateEnv, job: JobLike, mode: str, state: StateLike, volids: list[str], log: LogFunc
) -> None:
    log(messages.start_removal(mode))
    if mode == "full" and job.target != env.local_node:
        # The seed change (§9.2) plus its 2022-06 fix: storages of the guest's current disks
        # and the ones remembered in the state, so a stateless node still cleans the target.
        storages = removal_scan_storages(volids, state.storeid_list)
        target = env.connect(job.target, None)  # removals never use the replication network
        try:
            out = target.prepare(
                job.id,
                [],
                scan=storages,
                last_sync=1,
                parent_snapname=None,
                force=True,
                on_stderr=lambda line: log(messages.remote_prepare_line(line)),
            )
        finally:
            target.close()
        parse_remote_prepare(out)
    # A guest config moved by hand to a node that never had its disks: nothing to clean here.
    prepare(env.volumes, volids, job.id, 1, None, log, env.warn, missing_ok=True)
    env.delete_job(job.id)
    log(messages.job_removed())


def _sync(
    env: ReplicateEnv,
    job: JobLike,
    state: StateLike,
    guest: GuestView,
    volids: list[str],
    start_time: int,
    target: Target,
    log: LogFunc,
) -> list[str]:
    jobid = job.id
    last_sync = int(state.last_sync)

    # find_common_replication_snapshot (§4.4). A target that can keep partial receives is
    # asked first (pverep only): the snapshots its partial receives continue must survive
    # the local prepare.
    resumable = target.resume_capable
    if not resumable:
        local_keep = prepare_local(env, volids, jobid, last_sync, guest.parent, log)
    out = target.prepare(
        jobid,
        volids,
        scan=list(state.storeid_list),
        last_sync=last_sync,
        parent_snapname=guest.parent,
        force=False,
        on_stderr=lambda line: log(messages.remote_prepare_line(line)),
    )
    remote = parse_remote_prepare(out)
    if resumable:
        keep = target.check_resumes(volids, log)
        local_keep = prepare_local(env, volids, jobid, last_sync, guest.parent, log, keep)
    plan = plan_transfers(
        volids,
        local_keep,
        remote,
        jobid=jobid,
        last_sync=last_sync,
        start_time=start_time,
        parent_snapname=guest.parent,
        config_snapshots=guest.snapshots,
    )
    last_name, old_volids = old_snapshot_volids(volids, local_keep, jobid, last_sync)

    state.storeid_list = storeids_of(volids)

    sync = plan.sync_snapshot
    created = _snapshot_all(env, guest, volids, sync, log)

    resumed: list[tuple[str, str]] = []  # (volid, snapshot a resumed receive completed)
    in_flight: str | None = None
    try:
        log(messages.transport_line(env.transport.insecure, env.transport.network, job.rate))
        rate = job.rate_mbps
        rate_bps = int(1_000_000 * rate) if rate else None
        insecure = env.transport.insecure
        for volid in volids:
            in_flight = volid
            base = plan.bases[volid]
            done = target.resume(volid, rate_bps=rate_bps, insecure=insecure, log=log)
            if done is not None:
                base = done
                resumed.append((volid, done))
            if base is not None:
                log(messages.incremental_sync(volid, base, sync))
            else:
                log(messages.full_sync(volid, sync))
            # (the local prepare answers for every volume; the target may not know it yet)
            gone = [n for n in remote.get(volid, {}) if n not in local_keep[volid]]
            target.transfer(
                volid,
                snapshot=sync,
                base=base,
                rate_bps=rate_bps,
                insecure=insecure,
                log=log,
                prune=gone,
            )
    except BaseException:
        # the target is not cleaned now: its next prepare removes what is stale (§4.5 step 8);
        # a partial receive kept there needs this run's snapshot to be continued (pverep)
        kept = in_flight if in_flight is not None and target.keeps_partial(in_flight) else None
        _delete_snapshots(env, [v for v in created if v != kept], sync, log)
        if kept is None:
            raise
        error = sys.exc_info()[1]
        if not isinstance(error, PverepError):
            raise
        # the job's state (pverep status) says so, and the next run resumes instead of resending
        note = messages.partial_kept(kept, target.node)
        log(note)
        raise PartialTransferError(f"{error} - {note}") from error

    # the new sync is on record before the previous common snapshot goes (§9.3, 2021-11)
    env.record_sync_end(start_time)
    _delete_snapshots(env, old_volids, last_name, log)
    for volid, snap in resumed:  # the failed run's snapshot kept for resuming
        if is_replication_snapshot(snap, jobid) and snap not in (sync, last_name):
            _delete_snapshots(env, [volid], snap, log)

    try:
        target.finalize(
            jobid, volids, start_time, lambda line: log(messages.remote_finalize_line(line))
        )
    except PverepError as err:
        env.warn(str(err))
        log(messages.delete_stale_snapshot_error(str(err)))
    return volids


def _snapshot_all(
    env: ReplicateEnv, guest: GuestView, volids: Sequence[str], sync: str, log: LogFunc
) -> list[str]:
    created: list[str] = []
    error: BaseException | None = None
    try:
        if guest.freezefs:
            log(messages.freeze())
            env.freeze(guest)
        for volid in volids:
            log(messages.create_snapshot(sync, volid))
            env.volumes.snapshot(volid, sync)
            created.append(volid)
    except BaseException as err:  # thaw first, whatever went wrong (even in the freeze)
        error = err
    if guest.freezefs:
        log(messages.thaw())
        env.thaw(guest)
    if error is not None:
        _delete_snapshots(env, created, sync, log)
        raise error
    return created


def _delete_snapshots(env: ReplicateEnv, volids: Sequence[str], snap: str, log: LogFunc) -> None:
    for volid in sorted(volids):
        log(messages.delete_previous_snapshot(snap, volid))
        try:
            env.volumes.delete_snapshot(volid, snap)
        except PverepError as err:
            env.warn(str(err))
