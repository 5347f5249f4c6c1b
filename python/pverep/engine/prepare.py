"""pvesr's ``prepare()`` (spec §4.3), shared by the source and the target side.

The decision (which snapshots are stale, which volumes lack the expected ``last_sync``
snapshot) is ``_core.plan_prepare``; this module only carries it out and logs it with pvesr's
texts.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pverep import _core
from pverep.errors import PverepError
from pverep.storage.volumes import Volumes

Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass
class PrepareResult:
    """What remains per volume, and which volumes lost a stale snapshot ("cleaned")."""

    snapshots: dict[str, dict[str, _core.SnapshotInfo]] = field(default_factory=dict)
    cleaned: set[str] = field(default_factory=set)


def prepare(
    volumes: Volumes,
    volids: Sequence[str],
    jobid: str | None,
    last_sync: int,
    parent_snapname: str | None,
    log: Log,
    warn: Log = _stderr,
) -> PrepareResult:
    """Delete this job's stale replication snapshots on ``volids`` and report what is left."""
    infos = {volid: volumes.snapshot_info(volid) for volid in volids}
    plan = _core.plan_prepare(infos, jobid, last_sync, parent_snapname)
    missing = set(plan.missing_keep)
    result = PrepareResult()
    for volid in volids:
        result.snapshots[volid] = dict(plan.keep.get(volid, {}))
        if volid in missing:
            log(f"expected snapshot {plan.keep_name} not present for {volid}, not removing others")
        for snap in plan.stale.get(volid, []):
            log(f"delete stale replication snapshot '{snap}' on {volid}")
            try:
                volumes.delete_snapshot(volid, snap)
            except PverepError as err:
                warn(str(err))
                log(f"delete stale replication snapshot error: {err}")
                continue
            result.cleaned.add(volid)
    return result
