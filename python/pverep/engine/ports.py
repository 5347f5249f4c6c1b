"""What the engine needs from the world, as small protocols (design: inject seams, no mocks).

Real implementations wrap storage/zfs.py, transport/ and the cluster files (engine/wiring.py);
unit tests use in-memory ones that reproduce pvesr's upstream test environment (§8.1).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from pverep.engine.planner import SnapshotInfo

LogFunc = Callable[[str], None]


class LocalVolumes(Protocol):
    """Snapshot operations on the source node's own volumes."""

    def snapshot_info(self, volid: str) -> Sequence[SnapshotInfo]:
        """Snapshots of ``volid`` in creation order; raises PverepError if it does not exist."""

    def snapshot(self, volid: str, snap: str) -> None: ...

    def delete_snapshot(self, volid: str, snap: str) -> None: ...


class Target(Protocol):
    """One replication target, reached over one (multiplexed) connection for the whole run."""

    node: str

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
        """Run ``prepare-local-job`` there; returns its stdout (one JSON line)."""

    def finalize(self, jobid: str, volids: Sequence[str], last_sync: int, on_line: LogFunc) -> None:
        """Run ``finalize-local-job`` there; every output line goes to ``on_line``."""

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
        """storage_migrate (§5.6): send ``volid@snapshot`` (incremental from ``base``).
        ``prune``: target snapshots the source no longer has (a stream form without -R
        removes them explicitly)."""

    # Resumable transfers (pverep targets only; a stock target has none of this).
    @property
    def resume_capable(self) -> bool:
        """The target may keep partial receives: ask it before the local prepare."""

    def check_resumes(self, volids: Sequence[str], log: LogFunc) -> dict[str, str]:
        """After prepare: volid → snapshot a usable partial receive continues."""

    def resume(
        self, volid: str, *, rate_bps: int | None, insecure: bool, log: LogFunc
    ) -> str | None:
        """Continue ``volid``'s partial receive; the snapshot it completed, or None."""

    def keeps_partial(self, volid: str) -> bool:
        """A broken transfer of ``volid`` leaves a partial receive to continue."""

    def close(self) -> None: ...


class NeverResumes:
    """The resume part of Target for a target on pvesr's path: it never keeps or continues a
    partial receive (a dry run's recorder, a stock peer's test double)."""

    @property
    def resume_capable(self) -> bool:
        return False

    def check_resumes(self, volids: Sequence[str], log: LogFunc) -> dict[str, str]:
        return {}

    def resume(
        self, volid: str, *, rate_bps: int | None, insecure: bool, log: LogFunc
    ) -> str | None:
        return None

    def keeps_partial(self, volid: str) -> bool:
        return False


@dataclass(frozen=True)
class GuestView:
    """What one run needs to know about the guest (§4.1 steps 4 and 5)."""

    vmid: int
    kind: str  # "VM" (qemu) or "CT" (lxc)
    running: int
    freezefs: bool
    volids: tuple[str, ...]  # replicatable volumes, sorted as strings
    parent: str | None  # the config's current snapshot parent
    snapshots: frozenset[str]  # config snapshot names


@dataclass(frozen=True)
class TransportConfig:
    """datacenter.cfg ``replication``/``migration`` (§1.6)."""

    insecure: bool = False
    network: str | None = None
