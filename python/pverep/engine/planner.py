"""Pure planning for one replication run (spec §4.3 to §4.5): no I/O, no clock.

Given the job, its state and the snapshot sets of both sides, decide what to delete, which base
each volume is sent from, and which old snapshots go afterwards. Conflicts come back as typed
errors whose text is pvesr's.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from pverep._core import (
    BaseSelection,
    PreparePlan,
    SnapshotInfo,
    plan_prepare,
    select_bases,
)
from pverep.engine import messages
from pverep.errors import PverepError

__all__ = [
    "BaseSelection",
    "NoCommonBase",
    "PreparePlan",
    "RemotePrepareError",
    "SnapshotInfo",
    "TransferPlan",
    "old_snapshot_volids",
    "parse_prepare_info",
    "parse_remote_prepare",
    "plan_prepare",
    "plan_transfers",
    "removal_scan_storages",
    "replication_snapshot_name",
    "storeids_of",
]


class NoCommonBase(PverepError):
    """Some volume exists on the target but shares no snapshot with the source (§4.4 step 5)."""

    def __init__(self, volids: Sequence[str], jobid: str) -> None:
        super().__init__(messages.no_common_base(volids, jobid))
        self.volids = list(volids)
        self.jobid = jobid


class RemotePrepareError(PverepError):
    """The target's prepare-local-job answer was missing or not the expected JSON."""


def replication_snapshot_name(jobid: str, start_time: int) -> str:
    return f"__replicate_{jobid}_{start_time}__"


def storage_of(volid: str) -> str:
    # any maxsplit gives the same first part (mutmut's variants of it are equivalent)
    return volid.split(":", 1)[0]  # pragma: no mutate


def storeids_of(volids: Iterable[str]) -> list[str]:
    """Sorted unique storage ids of ``volids`` (state ``storeid_list``, §4.5 step 1)."""
    return sorted({storage_of(v) for v in volids})


def removal_scan_storages(sorted_volids: Iterable[str], storeid_list: Iterable[str]) -> list[str]:
    """Storages the target scans on a full removal: guest config's plus state's (§4.2, §9.2).

    pvesr's order is Perl hash order (unspecified); sorted is one valid order and testable.
    """
    return sorted({storage_of(v) for v in sorted_volids} | set(storeid_list))


#: A pverep target's own part of the answer (engine/remote.py; volids always contain ':').
PVEREP_INFO_KEY = "pverep"


def parse_prepare_info(stdout: str) -> dict[str, object]:
    """The pverep-only part of a prepare answer (empty from a stock peer). Tolerant: a bad
    answer is parse_remote_prepare's to report; the last line that is JSON counts."""
    data: object = None
    for line in stdout.splitlines():
        try:
            data = json.loads(line) if line.strip() else data
        except ValueError:
            continue
    info = data.get(PVEREP_INFO_KEY) if isinstance(data, dict) else None
    return info if isinstance(info, dict) else {}


def parse_remote_prepare(stdout: str) -> dict[str, dict[str, int | None]]:
    """The JSON line of ``prepare-local-job`` → volid → snapshot → guid (None for legacy ``1``).

    Like pvesr, every stdout line is decoded and the last one wins (a line that is not JSON
    is an error, wherever it is).
    """
    data: object = None
    found = False
    for line in stdout.splitlines():
        if not line.strip():
            continue
        try:
            data, found = json.loads(line), True
        except ValueError as err:
            raise RemotePrepareError(
                f"prepare remote node failed - invalid result: {err}"
            ) from None
    if not found:
        raise RemotePrepareError("prepare remote node failed - no result")
    if not isinstance(data, dict):
        raise RemotePrepareError("prepare remote node failed - result is not an object")
    data.pop(PVEREP_INFO_KEY, None)  # a pverep target's own part (parse_prepare_info)
    result: dict[str, dict[str, int | None]] = {}
    for volid, snaps in data.items():
        if not isinstance(snaps, dict):
            raise RemotePrepareError(f"prepare remote node failed - bad entry for '{volid}'")
        entry: dict[str, int | None] = {}
        for name, info in snaps.items():
            if isinstance(info, dict):
                try:
                    entry[name] = int(info["id"])
                except (KeyError, TypeError, ValueError):
                    raise RemotePrepareError(
                        f"prepare remote node failed - bad snapshot id for '{volid}@{name}'"
                    ) from None
            else:  # targets before 2021-10 answer 1: match by name only
                entry[name] = None
        result[volid] = entry
    return result


@dataclass(frozen=True)
class TransferPlan:
    """Per volume, in sorted volid order: the base snapshot, or None for a full send."""

    sync_snapshot: str
    bases: dict[str, str | None]


def plan_transfers(
    sorted_volids: Sequence[str],
    local_keep: Mapping[str, Mapping[str, SnapshotInfo]],
    remote: Mapping[str, Mapping[str, int | None]],
    *,
    jobid: str,
    last_sync: int,
    start_time: int,
    parent_snapname: str | None,
    config_snapshots: Collection[str],
) -> TransferPlan:
    """find_common_replication_snapshot (§4.4) → a transfer plan, or NoCommonBase."""
    local = {v: local_keep.get(v, {}) for v in sorted_volids}
    sel = select_bases(local, remote, jobid, last_sync, parent_snapname, config_snapshots)
    if sel.missing:
        missing = [v for v in sorted_volids if v in set(sel.missing)]
        raise NoCommonBase(missing, jobid)
    bases: dict[str, str | None] = {v: sel.bases.get(v) for v in sorted_volids}
    return TransferPlan(replication_snapshot_name(jobid, start_time), bases)


def old_snapshot_volids(
    sorted_volids: Sequence[str],
    local_keep: Mapping[str, Mapping[str, SnapshotInfo]],
    jobid: str,
    last_sync: int,
) -> tuple[str, list[str]]:
    """The previous sync snapshot's name and the volumes that still carry it (§4.5 step 10)."""
    last_name = replication_snapshot_name(jobid, last_sync)
    return last_name, [v for v in sorted_volids if last_name in local_keep.get(v, {})]
