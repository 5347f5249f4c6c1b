"""Private stand-in for ``pverep._core``'s planning functions until the Rust versions land.

Same names and semantics as CORE_API.md (plan_prepare, select_bases, SnapshotInfo). The planner
imports from ``pverep._core`` when those exist and falls back to this module otherwise, so the
planner's tests exercise whichever implementation is present.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class SnapshotInfo:
    dataset: str
    name: str
    guid: int
    createtxg: int
    creation: int


@dataclass
class PreparePlan:
    keep: dict[str, dict[str, SnapshotInfo]] = field(default_factory=dict)
    stale: dict[str, list[str]] = field(default_factory=dict)
    missing_keep: list[str] = field(default_factory=list)


@dataclass
class BaseSelection:
    bases: dict[str, str] = field(default_factory=dict)
    full: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def plan_prepare(
    snapshots: Mapping[str, Sequence[SnapshotInfo]],
    jobid: str | None,
    last_sync: int,
    parent_snapname: str | None = None,
) -> PreparePlan:
    prefix = f"__replicate_{jobid}_" if jobid is not None else "__replicate_"
    keep_name = f"__replicate_{jobid}_{last_sync}__" if jobid is not None else None
    plan = PreparePlan()
    for volid, snaps in snapshots.items():
        names = {s.name for s in snaps}
        removal_ok = keep_name is None or keep_name in names
        if last_sync == 0:
            removal_ok = False
        elif last_sync == 1:
            removal_ok = True
        candidates = [
            s.name
            for s in snaps
            if s.name != keep_name and s.name != parent_snapname and s.name.startswith(prefix)
        ]
        if not removal_ok and last_sync > 1 and candidates:
            plan.missing_keep.append(volid)
        kept: dict[str, SnapshotInfo] = {}
        stale: list[str] = []
        for snap in snaps:
            if removal_ok and snap.name in candidates:
                stale.append(snap.name)
            else:
                kept[snap.name] = snap
        plan.keep[volid] = kept
        if stale:
            plan.stale[volid] = stale
    return plan


def select_bases(
    local: Mapping[str, Mapping[str, SnapshotInfo]],
    remote: Mapping[str, Mapping[str, int | None]],
    jobid: str,
    last_sync: int,
    parent_snapname: str | None,
    config_snapshots: Collection[str],
) -> BaseSelection:
    last_name = f"__replicate_{jobid}_{last_sync}__"
    sel = BaseSelection()
    for volid, snaps in local.items():
        if volid not in remote:
            sel.full.append(volid)
            continue
        theirs = remote[volid]

        def common(
            name: str,
            snaps: Mapping[str, SnapshotInfo] = snaps,
            theirs: Mapping[str, int | None] = theirs,
        ) -> bool:
            if name not in snaps or name not in theirs:
                return False
            guid = theirs[name]
            return guid is None or guid == snaps[name].guid

        if common(last_name):
            sel.bases[volid] = last_name
        elif parent_snapname and common(parent_snapname):
            sel.bases[volid] = parent_snapname
        else:
            best: SnapshotInfo | None = None
            for snap in snaps.values():
                if not common(snap.name):
                    continue
                if snap.name not in config_snapshots and not snap.name.startswith("__replicate_"):
                    continue
                if snap.creation > 0 and (best is None or snap.creation > best.creation):
                    best = snap
            if best is None:
                sel.missing.append(volid)
            else:
                sel.bases[volid] = best.name
    return sel


# --- pump stand-in (CORE_API: pump/PumpStats/PumpError/StallError) -------------------------

import os  # noqa: E402
import select  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

from pverep.errors import PverepError  # noqa: E402


class PumpError(PverepError):
    pass


class StallError(PumpError):
    def __init__(self, message: str, side: str) -> None:
        super().__init__(message)
        self.side = side


@dataclass(frozen=True)
class PumpStats:
    bytes: int
    elapsed: float
    rate: float


def pump(
    src_fd: int,
    dst_fd: int,
    *,
    rate: float | None = None,
    burst: int | None = None,
    stall_timeout: float | None = None,
    pipe_size: int | None = None,
    progress: Callable[[PumpStats], None] | None = None,
    progress_interval: float = 1.0,
) -> PumpStats:
    chunk = 1 << 16
    allowance = burst if burst is not None else (int(rate / 10) if rate else 0)
    start = last_data = last_report = time.monotonic()
    total = 0
    last_bytes, last_t = 0, start

    def wait(fd: int, write: bool) -> None:
        while True:
            now = time.monotonic()
            if stall_timeout is not None and now - last_data >= stall_timeout:
                side = "write" if write else "read"
                raise StallError(f"no progress for {stall_timeout:g} s ({side} side)", side)
            r, w, _ = select.select([] if write else [fd], [fd] if write else [], [], 0.2)
            if r or w:
                return

    while True:
        wait(src_fd, False)
        try:
            data = os.read(src_fd, chunk)
        except OSError as err:
            raise PumpError(f"read failed: {err}") from None
        if not data:
            break
        view = memoryview(data)
        while view:
            wait(dst_fd, True)
            try:
                n = os.write(dst_fd, view)
            except OSError as err:
                raise PumpError(f"write failed: {err}") from None
            view = view[n:]
            total += n
            last_data = time.monotonic()
        if rate:
            ahead = (total - allowance) / rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)
        now = time.monotonic()
        if progress is not None and now - last_report >= progress_interval:
            cur = (total - last_bytes) / max(now - last_t, 1e-9)
            last_bytes, last_t, last_report = total, now, now
            progress(PumpStats(total, now - start, cur))
    elapsed = time.monotonic() - start
    return PumpStats(total, elapsed, total / elapsed if elapsed > 0 else 0.0)
