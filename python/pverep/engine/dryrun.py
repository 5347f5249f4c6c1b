"""``pverep run --dry-run`` / ``pverep delete --dry-run``: the real algorithm, acting on nothing.

The plan comes from the same ``replicate()`` a real run executes, over ports that read for
real and record instead of writing: local snapshots are listed but never created or
destroyed; the target is asked only read-only questions (``zfs list``/``zfs get`` over ssh)
and its side of the protocol (``prepare-local-job``'s decisions) is computed here by the very
code the target would run, on recording volumes. No state, no job log, no config is written.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from pverep import _core
from pverep.engine import remote
from pverep.engine.joblog import LogFunc
from pverep.engine.ports import GuestView, NeverResumes, Target
from pverep.engine.replicate import JobLike, ReplicateEnv, replicate
from pverep.errors import PverepError
from pverep.storage.volumes import Volumes
from pverep.storage.zfs import send_estimate_argv
from pverep.validate import is_replication_snapshot, parse_volume_id

PREFIX = "would "


@dataclass
class RecordingVolumes:
    """Reads pass through; every change becomes a plan line (and is not made)."""

    inner: Volumes
    say: LogFunc
    where: str

    def snapshot_info(self, volid: str) -> Sequence[_core.SnapshotInfo]:
        return self.inner.snapshot_info(volid)

    def snapshot_infos(self, volids: Sequence[str]) -> dict[str, list[_core.SnapshotInfo]] | None:
        return self.inner.snapshot_infos(volids)

    def list_images(self, storeid: str, vmid: int | None = None) -> list[str]:
        return self.inner.list_images(storeid, vmid)

    def snapshot(self, volid: str, snap: str) -> None:
        self.say(f"{PREFIX}create snapshot '{snap}' on {volid} ({self.where})")

    def delete_snapshot(self, volid: str, snap: str) -> None:
        self.say(f"{PREFIX}delete snapshot '{snap}' on {volid} ({self.where})")

    def free(self, volid: str) -> None:
        self.say(f"{PREFIX}delete volume {volid} ({self.where})")


def estimate(volumes: Volumes, volid: str, base: str | None) -> int | None:
    """Bytes a send of ``volid`` (from ``base``) would carry now; None where the platform
    cannot tell (zfs-fuse has no ``written@``)."""
    storeid, volname = parse_volume_id(volid)
    dataset = volumes.pool(storeid).dataset(volname)
    try:
        out = volumes.runner.run(send_estimate_argv(dataset, base)).strip()
    except PverepError:
        return None
    return int(out) if out.isdigit() else None


@dataclass
class DryTarget(NeverResumes):
    """A Target that answers prepare from read-only queries and transfers nothing. A dry run
    plans pvesr's path: it neither keeps nor continues partial receives."""

    node: str
    side: remote.TargetNode  # its volumes are RecordingVolumes over the target's zfs
    local: Volumes
    say: LogFunc
    kept: dict[str, dict[str, _core.SnapshotInfo]] = field(default_factory=dict)

    def prepare(
        self,
        jobid: str,
        volids: Sequence[str],
        *,
        scan: Sequence[str],
        last_sync: int,
        parent_snapname: str | None,
        force: bool,
        on_stderr: LogFunc,
    ) -> str:
        self.kept = remote.prepare_local_job(
            self.side, jobid, volids, scan=scan, last_sync=last_sync,
            parent_snapname=parent_snapname, force=force,
        )  # fmt: skip
        return remote.format_prepare_result(self.kept)

    def transfer(
        self,
        volid: str,
        *,
        snapshot: str,
        base: str | None,
        rate_bps: int | None,
        insecure: bool,
        log: LogFunc,
        prune: Sequence[str] = (),
    ) -> None:
        size = estimate(self.local, volid, base)
        shown = "unknown (no estimate on this platform)" if size is None else f"{size} bytes"
        mode = f"incremental from '{base}'" if base else "full"
        self.say(f"{PREFIX}send {volid} to {self.node}: {mode}, estimated {shown}")

    def finalize(self, jobid: str, volids: Sequence[str], last_sync: int, on_line: LogFunc) -> None:
        # finalize keeps only the new sync snapshot of this job on each volume
        for volid in sorted(volids):
            for name in self.kept.get(volid, {}):
                if is_replication_snapshot(name, jobid):
                    self.say(f"{PREFIX}delete snapshot '{name}' on {volid} ({self.node})")

    def close(self) -> None:
        pass


def dry_env(
    env: ReplicateEnv,
    say: LogFunc,
    connect_volumes: Callable[[str], Volumes],
    guest_node: Callable[[int], str | None],
) -> ReplicateEnv:
    """``env`` with every writing port replaced by a recorder (reads stay real)."""
    local = env.volumes
    if not isinstance(local, Volumes):
        raise TypeError("dry runs read a node's real volumes")

    def connect(node: str, network: str | None) -> Target:
        vols = connect_volumes(node)
        side = remote.TargetNode(
            node=node,
            storage=vols.storage,
            volumes=RecordingVolumes(vols, say, node),  # type: ignore[arg-type]
            guest_node=guest_node,
            log=lambda line: None,  # its messages duplicate the recorded actions
        )
        return DryTarget(node, side, local, say)

    def noop_freeze(guest: GuestView) -> None:
        if guest.freezefs:
            say(f"{PREFIX}freeze and thaw the guest's filesystems")

    return replace(
        env,
        volumes=RecordingVolumes(local, say, env.local_node),
        connect=connect,
        delete_job=lambda jobid: say(f"{PREFIX}remove job '{jobid}' from replication.cfg"),
        record_sync_end=lambda start_time: None,
        freeze=noop_freeze,
        thaw=lambda guest: None,
    )


def plan(env: ReplicateEnv, job: JobLike, state: Any, start_time: int, say: LogFunc) -> list[str]:
    """Print the plan of one job through ``say``; returns the volids it would replicate."""
    say(f"job {job.id}: guest {job.guest} -> {job.target}")
    return replicate(env, job, state, start_time, lambda msg: None)
