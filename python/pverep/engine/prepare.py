"""pvesr's ``prepare()`` (spec §4.3), shared by the source and the target side.

The decision (which snapshots are stale, which volumes lack the expected ``last_sync``
snapshot) is ``_core.plan_prepare``; this module only carries it out and logs it with pvesr's
texts. Volumes are handled one after the other (read, then delete), in the given order, as pvesr
does: a volume that does not exist aborts after the earlier ones were cleaned.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pverep import _core
from pverep.engine import messages
from pverep.errors import PverepError, VolumeMissingError

Log = Callable[[str], None]


class SnapshotVolumes(Protocol):
    """What prepare() needs of a node's volumes (storage.volumes.Volumes; the engine's ports)."""

    def snapshot_info(self, volid: str) -> Sequence[_core.SnapshotInfo]: ...

    def delete_snapshot(self, volid: str, snap: str) -> None: ...


def _list_at_once(
    volumes: SnapshotVolumes, volids: Sequence[str]
) -> dict[str, list[_core.SnapshotInfo]] | None:
    """All volumes' snapshots from one listing where the volumes offer it (storage.volumes:
    one ``zfs list`` for a job's disks); None: list them one by one (also when the batch
    failed, so a missing volume is reported exactly as pvesr's per-volume order does)."""
    batch = getattr(volumes, "snapshot_infos", None)
    return batch(volids) if batch is not None else None


def _stderr(msg: str) -> None:
    # zfs errors end with a newline already (like Perl's warn, print the line once)
    print(msg.rstrip("\n"), file=sys.stderr, flush=True)


@dataclass
class PrepareResult:
    """What remains per volume, and which volumes lost a stale snapshot ("cleaned")."""

    snapshots: dict[str, dict[str, _core.SnapshotInfo]] = field(default_factory=dict)
    cleaned: set[str] = field(default_factory=set)


def prepare(
    volumes: SnapshotVolumes,
    volids: Sequence[str],
    jobid: str | None,
    last_sync: int,
    parent_snapname: str | None,
    log: Log,
    warn: Log = _stderr,
    keep: Mapping[str, str] | None = None,
    *,
    missing_ok: bool = False,
) -> PrepareResult:
    """Delete this job's stale replication snapshots on ``volids`` and report what is left.

    ``keep``: volid → one snapshot not to delete (the base of a partial receive to resume).
    ``missing_ok``: a volume whose dataset does not exist here is skipped (a job removal on a
    node that never had the disks has nothing to clean there); otherwise it aborts, as pvesr.
    """
    result = PrepareResult()
    keep = keep or {}
    listed = _list_at_once(volumes, volids)
    for volid in volids:
        try:
            infos = {volid: listed[volid] if listed else list(volumes.snapshot_info(volid))}
        except VolumeMissingError:
            if not missing_ok:
                raise
            continue
        plan = _core.plan_prepare(infos, jobid, last_sync, parent_snapname)
        # plan_prepare answers for every volid it was given, and names keep whenever it
        # reports one missing: the fallbacks below are never used (mutants there: equivalent).
        result.snapshots[volid] = dict(plan.keep.get(volid, {}))  # pragma: no mutate
        if volid in plan.missing_keep:
            expected = plan.keep_name or ""  # pragma: no mutate
            log(messages.expected_snapshot_missing(expected, volid))
        for snap in plan.stale.get(volid, []):  # pragma: no mutate
            if keep.get(volid) == snap:
                continue
            log(messages.delete_stale_snapshot(snap, volid))
            try:
                volumes.delete_snapshot(volid, snap)
            except PverepError as err:
                warn(str(err))
                log(messages.delete_stale_snapshot_error(str(err)))
                continue
            result.cleaned.add(volid)
    return result
