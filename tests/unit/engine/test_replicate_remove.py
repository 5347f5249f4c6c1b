"""engine/replicate.py's job removal (``remove_job``, spec §4.1 and §9.2): what is deleted on
which side, what the target's messages look like in the log, and what a node that never had
the disks does. On the engine's in-memory fakes (tests/unit/engine/fakes.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pverep.engine.planner import SnapshotInfo
from pverep.engine.replicate import replicate
from pverep.errors import PverepError, VolumeMissingError

from .fakes import FakeJob, FakeState, FakeTarget, FakeVolumes, World

V0, V1 = "local-zfs:vm-900-disk-0", "local-zfs:vm-900-disk-1"
OWN, OTHER = "__replicate_900-0_1000__", "__replicate_900-1_1000__"


@dataclass
class Volumes(FakeVolumes):
    """FakeVolumes with volumes that do not exist here and deletes that fail."""

    missing: set[str] = field(default_factory=set)
    undeletable: set[str] = field(default_factory=set)

    def snapshot_info(self, volid: str) -> Sequence[SnapshotInfo]:
        if volid in self.missing:
            raise VolumeMissingError(f"zfs error: cannot open '{volid}': dataset does not exist")
        return super().snapshot_info(volid)

    def delete_snapshot(self, volid: str, snap: str) -> None:
        if volid in self.undeletable:
            raise PverepError(f"zfs error: cannot destroy '{volid}@{snap}': dataset is busy")
        super().delete_snapshot(volid, snap)


@dataclass
class TalkingTarget(FakeTarget):
    """A target whose prepare prints lines on stderr (as ``pvesr prepare-local-job`` does)."""

    said: tuple[str, ...] = ()

    def prepare(self, jobid: str, volids: Sequence[str], **kw: object) -> str:  # type: ignore[override]
        on_stderr = kw["on_stderr"]
        for line in self.said:
            on_stderr(line)  # type: ignore[operator]
        return super().prepare(jobid, volids, **kw)  # type: ignore[arg-type]


def world(tmp: Path, volumes: Volumes, *disks: str) -> tuple[World, list[str]]:
    w = World(tmp, volumes=volumes, disks=list(disks))
    warnings: list[str] = []
    env = w.env(lambda t: None)
    env.warn = warnings.append
    w.env = lambda rse: env  # type: ignore[method-assign]
    return w, warnings


def snapped(volumes: Volumes, volid: str, *names: str) -> None:
    volumes.register(volid)
    for name in names:
        volumes.snapshot(volid, name)


def remove(w: World, mode: str, state: FakeState | None = None) -> list[str]:
    log: list[str] = []
    job = FakeJob("900-0", 900, "node2", remove_job=mode)
    assert replicate(w.env(None), job, state or FakeState(), 2000, log.append) == []
    return log


def test_local_removal_deletes_only_this_jobs_snapshots(tmp_path: Path) -> None:
    vols = Volumes()
    snapped(vols, V0, OWN, OTHER, "manual")
    w, warnings = world(tmp_path, vols, V0)
    log = remove(w, "local")
    assert [s.name for s in vols.snapshot_info(V0)] == [OTHER, "manual"]
    assert log == [
        "guest => VM 900, running => 0",
        f"volumes => {V0}",
        "start job removal - mode 'local'",
        f"delete stale replication snapshot '{OWN}' on {V0}",
        "job removed",
    ]
    assert w.deleted_jobs == ["900-0"] and w.targets == {} and warnings == []


def test_full_removal_shows_the_targets_lines(tmp_path: Path) -> None:
    vols = Volumes()
    snapped(vols, V0, OWN)
    w, _ = world(tmp_path, vols, V0)
    target = TalkingTarget("node2", said=("delete stale volume 'local-zfs:vm-900-disk-0'",))
    w.targets["node2"] = target
    log = remove(w, "full", FakeState(storeid_list=["local-zfs"]))
    assert log[3] == "(remote_prepare_local_job) delete stale volume 'local-zfs:vm-900-disk-0'"
    assert target.calls == [("prepare", "900-0", "local-zfs", "1", "True")]
    assert vols.snapshot_info(V0) == []


def test_removal_on_a_node_that_never_had_the_disks(tmp_path: Path) -> None:
    vols = Volumes(missing={V0})
    snapped(vols, V1, OWN)
    w, warnings = world(tmp_path, vols, V0, V1)
    log = remove(w, "local")
    assert log[-2:] == [f"delete stale replication snapshot '{OWN}' on {V1}", "job removed"]
    assert vols.snapshot_info(V1) == [] and w.deleted_jobs == ["900-0"] and warnings == []


def test_removal_goes_on_when_a_snapshot_cannot_be_deleted(tmp_path: Path) -> None:
    vols = Volumes(undeletable={V0})
    snapped(vols, V0, OWN)
    snapped(vols, V1, OWN)
    w, warnings = world(tmp_path, vols, V0, V1)
    log = remove(w, "local")
    busy = f"zfs error: cannot destroy '{V0}@{OWN}': dataset is busy"
    assert warnings == [busy]
    assert f"delete stale replication snapshot error: {busy}" in log
    assert [s.name for s in vols.snapshot_info(V0)] == [OWN] and vols.snapshot_info(V1) == []
    assert w.deleted_jobs == ["900-0"]


def test_full_removal_scans_only_storages_that_still_exist_and_not_over_the_network(
    tmp_path: Path,
) -> None:
    from pverep.engine.ports import TransportConfig

    vols = Volumes()
    snapped(vols, V0, OWN)
    w, _ = world(tmp_path, vols, V0)
    env = w.env(None)
    env.transport = TransportConfig(False, "10.9.0.0/24")
    asked: list[tuple[str, str | None]] = []
    env.connect = lambda node, network: (asked.append((node, network)), w.target(node, None))[1]
    state = FakeState(storeid_list=["local-zfs", "tank"])  # tank: gone from storage.cfg
    remove(w, "full", state)
    assert asked == [("node2", None)]
    assert w.targets["node2"].calls == [("prepare", "900-0", "local-zfs", "1", "True")]
    assert state.storeid_list == ["local-zfs"]
