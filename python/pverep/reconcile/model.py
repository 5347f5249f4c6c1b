"""What reconcile looks at (a snapshot of the cluster as one node sees it) and what it does
(typed steps). Plain frozen dataclasses: the planner is a pure function from one to the other,
and the dry run prints exactly the steps the real run then carries out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

from pverep._core import SnapshotInfo
from pverep.cluster.base import GuestLocation, Member
from pverep.config.jobs import Job
from pverep.config.state import JobState
from pverep.reconcile.ha import HaService

Level = Literal["info", "warn", "error"]


# --- inputs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GuestFacts:
    """A guest living on the node that reconciles, as a replication run would see it."""

    vmid: int
    node: str
    #: replicatable volids of a normal run, and of a removal (``cleanup``: also replicate=0)
    volids: tuple[str, ...]
    cleanup_volids: tuple[str, ...]
    parent: str | None = None
    config_snapshots: frozenset[str] = frozenset()
    #: volid → snapshots on the guest's own node (read only: reconcile never changes them)
    local_snapshots: Mapping[str, Sequence[SnapshotInfo]] = field(default_factory=dict)
    #: set when the config or a volume could not be read; the guest is then left alone
    error: str | None = None


@dataclass(frozen=True)
class ReplicaSet:
    """What one node holds of one guest: every image of the vmid on its zfspool storages."""

    node: str
    vmid: int
    #: volid → snapshots; None when the node could not be asked (offline, error)
    volumes: Mapping[str, Sequence[SnapshotInfo]] | None
    #: the node itself says the guest lives there (then nothing may be touched)
    guest_local: bool = False
    error: str | None = None

    @property
    def reachable(self) -> bool:
        return self.volumes is not None


@dataclass(frozen=True)
class ClusterView:
    """Everything the planner reads. ``states`` is the reconciling node's state file."""

    local_node: str
    vmlist: Mapping[int, GuestLocation]
    members: Mapping[str, Member]
    jobs: Sequence[Job]
    states: Mapping[tuple[int, str], JobState]  # (vmid, tid) → state
    guests: Mapping[int, GuestFacts]
    replicas: Mapping[tuple[str, int], ReplicaSet] = field(default_factory=dict)
    #: node → zfspool storages enabled and available on that node (from storage.cfg)
    zfs_storages: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    ha: Mapping[int, HaService] = field(default_factory=dict)
    #: restrict to one guest (the hookscript); None = every guest of the node
    only_vmid: int | None = None


# --- steps -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One action. ``where`` is the node whose data it changes ("cluster" for replication.cfg)."""

    jobid: str
    vmid: int

    kind = "step"

    @property
    def where(self) -> str:
        return "cluster"

    def describe(self) -> str:
        raise NotImplementedError

    def to_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "where": self.where, "text": self.describe(), **asdict(self)}


@dataclass(frozen=True)
class SetSource(Step):
    """The job has no ``source``: record the node the guest runs on (pvesr's job_status)."""

    source: str = ""
    kind = "set-source"

    def describe(self) -> str:
        return f"job {self.jobid}: set source = {self.source}"


@dataclass(frozen=True)
class Repoint(Step):
    """Proxmox's target switch for a stolen guest: source := the guest's node; a job that
    targeted that node targets the old source instead."""

    source_from: str = ""
    source_to: str = ""
    target_from: str = ""
    target_to: str = ""
    kind = "repoint"

    def describe(self) -> str:
        text = f"job {self.jobid}: source {self.source_from} -> {self.source_to}"
        if self.target_from != self.target_to:
            text += f", target {self.target_from} -> {self.target_to}"
        return text


@dataclass(frozen=True)
class AdoptState(Step):
    """Write this node's state for a stateless job: ``last_sync`` = the replication snapshot
    both sides share (by guid), the storages to scan, and ``last_try = 0`` (due now)."""

    target: str = ""
    last_sync: int = 0
    storeid_list: tuple[str, ...] = ()
    node: str = ""
    kind = "adopt-state"

    @property
    def where(self) -> str:
        return self.node

    def describe(self) -> str:
        sync = f"last_sync = {self.last_sync}" if self.last_sync else "last_sync unknown (0)"
        return (
            f"job {self.jobid}: record state on {self.node}: {sync}, "
            f"storages {','.join(self.storeid_list) or '-'}"
        )


@dataclass(frozen=True)
class ExtendRemovalScan(Step):
    """A job marked for removal: make its target scan every storage that can hold a replica
    (the seed's stateless case plus disks removed from the config on other storages)."""

    target: str = ""
    storeid_list: tuple[str, ...] = ()
    node: str = ""
    kind = "extend-removal-scan"

    @property
    def where(self) -> str:
        return self.node

    def describe(self) -> str:
        return (
            f"job {self.jobid}: removal on {self.target} scans storages "
            f"{','.join(self.storeid_list)}"
        )


@dataclass(frozen=True)
class RetryRemoval(Step):
    """A removal that failed because its target was unreachable: the target is back, so make
    it due at once instead of waiting out the back-off."""

    target: str = ""
    node: str = ""
    kind = "retry-removal"

    @property
    def where(self) -> str:
        return self.node

    def describe(self) -> str:
        return f"job {self.jobid}: {self.target} is back - retry the removal at the next run"


@dataclass(frozen=True)
class DeleteTargetSnapshot(Step):
    """Delete one of this job's stale replication snapshots on the target."""

    node: str = ""
    volid: str = ""
    snapshot: str = ""
    kind = "delete-snapshot"

    @property
    def where(self) -> str:
        return self.node

    def describe(self) -> str:
        return f"{self.node}: delete stale replication snapshot '{self.snapshot}' on {self.volid}"


@dataclass(frozen=True)
class DestroyTargetVolume(Step):
    """Destroy a replica volume the job no longer needs (it carries this job's snapshots)."""

    node: str = ""
    volid: str = ""
    reason: str = ""
    kind = "destroy-volume"

    @property
    def where(self) -> str:
        return self.node

    def describe(self) -> str:
        return f"{self.node}: destroy stale replica volume '{self.volid}' ({self.reason})"


@dataclass(frozen=True)
class RemoveOrphanJob(Step):
    """A job marked for removal whose guest no longer exists: clean the target, drop the job."""

    target: str = ""
    scan: tuple[str, ...] = ()
    kind = "remove-orphan-job"

    def describe(self) -> str:
        return (
            f"job {self.jobid}: guest {self.vmid} no longer exists - remove replicas on "
            f"{self.target} (storages {','.join(self.scan) or '-'}) and delete the job"
        )


@dataclass(frozen=True)
class Finding:
    """What was found (and, for warnings/errors, why nothing is done about it now)."""

    vmid: int
    jobid: str | None
    level: Level
    text: str

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class Deferred:
    """Work that only the guest's own node can do (it needs that node's job state and disks):
    the cluster-wide reconcile reports it and leaves it to that node's reconcile."""

    vmid: int
    jobid: str | None
    node: str
    what: str

    def describe(self) -> str:
        return f"deferred to {self.node}: {self.what}"

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "text": self.describe()}


@dataclass
class Plan:
    node: str
    steps: list[Step] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    deferred: list[Deferred] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.steps

    def add(self, step: Step) -> None:
        if step not in self.steps:
            self.steps.append(step)

    def note(self, vmid: int, jobid: str | None, level: Level, text: str) -> None:
        self.findings.append(Finding(vmid, jobid, level, text))

    def to_dict(self) -> dict[str, object]:
        return {
            "node": self.node,
            "steps": [s.to_dict() for s in self.steps],
            "findings": [f.to_dict() for f in self.findings],
            "deferred": [d.to_dict() for d in self.deferred],
        }
