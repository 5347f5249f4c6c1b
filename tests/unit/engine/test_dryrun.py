"""engine/dryrun.py: the plan of a run or a removal, printed from the real algorithm while
nothing is written anywhere.

Both nodes' zfs are the FAKE in-memory zfs (tests/unit/zfs_fake.py), so every call a plan makes
is on record: a dry run may list and get, never snapshot, destroy, send or receive. The lab's
tests/lab/test_dry_run.py checks the same plans against real zfs-fuse and the real run after.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from pverep.config.storage import parse_storage_cfg
from pverep.engine import dryrun, remote
from pverep.engine.ports import GuestView, TransportConfig
from pverep.engine.replicate import ReplicateEnv
from pverep.lab.gentree import STORAGE_CFG
from pverep.storage.volumes import Volumes
from pverep.storage.zfs import ZfsRunner
from tests.unit.engine.fakes import FakeJob, FakeState, World
from tests.unit.zfs_fake import FakeZfsShell

JOB = "100-0"
VOLID, DATASET = "local-zfs:vm-100-disk-0", "rpool/data/vm-100-disk-0"
T1, NOW = 1_700_000_100, 1_700_000_900
SYNC1, SYNC_NOW = f"__replicate_{JOB}_{T1}__", f"__replicate_{JOB}_{NOW}__"
STALE = f"__replicate_{JOB}_1600000000__"  # an older sync that a prepare removes
READS = {"list", "get"}


def volumes(shell: FakeZfsShell) -> Volumes:
    return Volumes(parse_storage_cfg(STORAGE_CFG), ZfsRunner(shell), sleep=lambda _: None)


def verbs(shell: FakeZfsShell) -> set[str]:
    return {argv[1] for argv in shell.calls}


def guest(*, freezefs: bool = False) -> GuestView:
    return GuestView(100, "VM", 1, freezefs, (VOLID,), None, frozenset())


class Nodes:
    """pve1 (the source) and pve2 (the target), each with its FAKE zfs."""

    def __init__(self) -> None:
        self.pve1 = FakeZfsShell("pve1")
        self.pve2 = FakeZfsShell("pve2")
        self.pve1.add(DATASET, kind="volume")
        self.said: list[str] = []
        self.connected: list[str] = []
        self.freezefs = False

    def same_snapshot(self, snap: str) -> None:
        """``snap`` on both sides with one guid, as a received snapshot has."""
        self.pve1.add(DATASET, snap, kind="volume")
        self.pve2.add(DATASET, kind="volume")
        [local] = [s for s in self.pve1.datasets[DATASET].snapshots if s[0] == snap]
        self.pve2.datasets[DATASET].snapshots.append(local)

    def connect_volumes(self, node: str) -> Volumes:
        self.connected.append(node)
        assert node == "pve2"
        return volumes(self.pve2)

    def env(self, tmp: Path) -> ReplicateEnv:
        base = dataclasses.replace(
            World(tmp).env(lambda start: None),
            local_node="pve1",
            volumes=volumes(self.pve1),
            load_guest=lambda vmid, cleanup: guest(freezefs=self.freezefs),
            transport=TransportConfig(),
        )
        return dryrun.dry_env(base, self.said.append, self.connect_volumes, lambda vmid: "pve1")

    def plan(self, tmp: Path, job: FakeJob, state: FakeState) -> list[str]:
        return dryrun.plan(self.env(tmp), job, state, NOW, self.said.append)


# --- the plans ------------------------------------------------------------------------------


def test_first_run_plans_a_snapshot_and_a_full_send(tmp_path: Path) -> None:
    nodes = Nodes()
    nodes.pve1.datasets[DATASET].props["referenced"] = "1048576"
    state = FakeState()
    assert nodes.plan(tmp_path, FakeJob(JOB, 100, "pve2"), state) == [VOLID]
    assert nodes.said == [
        f"job {JOB}: guest 100 -> pve2",
        f"would create snapshot '{SYNC_NOW}' on {VOLID} (pve1)",
        f"would send {VOLID} to pve2: full, estimated 1048576 bytes",
    ]
    assert nodes.connected == ["pve2"]
    assert verbs(nodes.pve1) <= READS and verbs(nodes.pve2) <= READS
    assert nodes.pve1.snapshot_names(DATASET) == [] and DATASET not in nodes.pve2.datasets
    assert nodes.pve1.calls[-1] == ["zfs", "get", "-Hp", "-o", "value", "referenced", DATASET]


def test_next_run_plans_an_incremental_send_and_the_deletes_on_both_sides(
    tmp_path: Path,
) -> None:
    nodes = Nodes()
    nodes.same_snapshot(SYNC1)
    nodes.pve1.add(DATASET, STALE, kind="volume")
    nodes.pve1.datasets[DATASET].props[f"written@{SYNC1}"] = "4096"
    state = FakeState(last_sync=T1, storeid_list=["local-zfs"])
    before1 = list(nodes.pve1.datasets[DATASET].snapshots)
    before2 = list(nodes.pve2.datasets[DATASET].snapshots)

    assert nodes.plan(tmp_path, FakeJob(JOB, 100, "pve2"), state) == [VOLID]
    assert nodes.said == [
        f"job {JOB}: guest 100 -> pve2",
        f"would delete snapshot '{STALE}' on {VOLID} (pve1)",
        f"would create snapshot '{SYNC_NOW}' on {VOLID} (pve1)",
        f"would send {VOLID} to pve2: incremental from '{SYNC1}', estimated 4096 bytes",
        f"would delete snapshot '{SYNC1}' on {VOLID} (pve1)",
        f"would delete snapshot '{SYNC1}' on {VOLID} (pve2)",
    ]
    assert verbs(nodes.pve1) <= READS and verbs(nodes.pve2) <= READS
    assert nodes.pve1.datasets[DATASET].snapshots == before1
    assert nodes.pve2.datasets[DATASET].snapshots == before2


def test_freeze_of_a_guest_with_a_guest_agent_is_a_plan_line(tmp_path: Path) -> None:
    nodes = Nodes()
    nodes.freezefs = True
    nodes.plan(tmp_path, FakeJob(JOB, 100, "pve2"), FakeState())
    assert nodes.said[1:3] == [
        "would freeze and thaw the guest's filesystems",
        f"would create snapshot '{SYNC_NOW}' on {VOLID} (pve1)",
    ]
    assert nodes.said.count("would freeze and thaw the guest's filesystems") == 1


def test_full_removal_plans_the_deletes_and_the_config_change(tmp_path: Path) -> None:
    nodes = Nodes()
    nodes.same_snapshot(SYNC1)
    state = FakeState(last_sync=T1, storeid_list=["local-zfs"])
    job = FakeJob(JOB, 100, "pve2", remove_job="full")

    assert nodes.plan(tmp_path, job, state) == []
    assert nodes.said == [
        f"job {JOB}: guest 100 -> pve2",
        f"would delete snapshot '{SYNC1}' on {VOLID} (pve2)",
        f"would delete volume {VOLID} (pve2)",
        f"would delete snapshot '{SYNC1}' on {VOLID} (pve1)",
        f"would remove job '{JOB}' from replication.cfg",
    ]
    assert verbs(nodes.pve1) <= READS and verbs(nodes.pve2) <= READS
    assert DATASET in nodes.pve2.datasets


def test_local_removal_never_asks_the_target(tmp_path: Path) -> None:
    nodes = Nodes()
    nodes.same_snapshot(SYNC1)
    job = FakeJob(JOB, 100, "pve2", remove_job="local")
    nodes.plan(tmp_path, job, FakeState(last_sync=T1))
    assert nodes.said == [
        f"job {JOB}: guest 100 -> pve2",
        f"would delete snapshot '{SYNC1}' on {VOLID} (pve1)",
        f"would remove job '{JOB}' from replication.cfg",
    ]
    assert nodes.connected == [] and nodes.pve2.calls == []


# --- the pieces -----------------------------------------------------------------------------


def test_dry_env_replaces_every_writing_port(tmp_path: Path) -> None:
    nodes = Nodes()
    env = nodes.env(tmp_path)
    assert isinstance(env.volumes, dryrun.RecordingVolumes)
    assert env.volumes.where == "pve1" and env.volumes.say == nodes.said.append
    env.record_sync_end(NOW)
    env.thaw(guest(freezefs=True))
    env.freeze(guest(freezefs=False))
    assert nodes.said == []
    env.delete_job("100-7")
    assert nodes.said == ["would remove job '100-7' from replication.cfg"]
    target = env.connect("pve2", "10.0.0.0/24")
    assert isinstance(target, dryrun.DryTarget)
    assert (target.node, target.say, target.local) == ("pve2", nodes.said.append, env.volumes.inner)
    side = target.side
    assert isinstance(side.volumes, dryrun.RecordingVolumes) and side.volumes.where == "pve2"
    assert (side.node, side.storage) == ("pve2", side.volumes.inner.storage)
    assert side.guest_node(100) == "pve1" and side.imports is None
    side.log("not shown")
    assert nodes.said[-1] == "would remove job '100-7' from replication.cfg"
    target.close()


def test_dry_env_needs_a_nodes_real_volumes(tmp_path: Path) -> None:
    with pytest.raises(TypeError) as err:
        dryrun.dry_env(
            World(tmp_path).env(lambda t: None), print, lambda n: volumes(FakeZfsShell(n)),
            lambda v: None,
        )  # fmt: skip
    assert str(err.value) == "dry runs read a node's real volumes"


def test_recording_volumes_read_through_and_record_changes() -> None:
    shell = FakeZfsShell("pve1")
    shell.add(DATASET, "a", "b", kind="volume")
    shell.add(DATASET[:-1] + "1", "c", kind="volume")
    said: list[str] = []
    rec = dryrun.RecordingVolumes(volumes(shell), said.append, "pve1")
    assert [s.name for s in rec.snapshot_info(VOLID)] == ["a", "b"]
    infos = rec.snapshot_infos([VOLID, VOLID[:-1] + "1"])
    assert infos is not None
    assert {v: [s.name for s in snaps] for v, snaps in infos.items()} == {
        VOLID: ["a", "b"],
        VOLID[:-1] + "1": ["c"],
    }
    assert rec.list_images("local-zfs", 100) == [VOLID, VOLID[:-1] + "1"]
    assert rec.list_images("local-zfs", 101) == []
    rec.snapshot(VOLID, "c")
    rec.delete_snapshot(VOLID, "a")
    rec.free(VOLID)
    assert said == [
        f"would create snapshot 'c' on {VOLID} (pve1)",
        f"would delete snapshot 'a' on {VOLID} (pve1)",
        f"would delete volume {VOLID} (pve1)",
    ]
    assert shell.snapshot_names(DATASET) == ["a", "b"] and verbs(shell) <= READS


@pytest.mark.parametrize(
    ("base", "prop", "value", "expected"),
    [(None, "referenced", "123", 123), ("s1", "written@s1", "77", 77),
     ("s1", "written@s1", "-", None), (None, "referenced", "", None)],
)  # fmt: skip
def test_estimate_reads_the_size_property(
    base: str | None, prop: str, value: str, expected: int | None
) -> None:
    shell = FakeZfsShell("pve1")
    shell.add(DATASET, kind="volume")
    shell.datasets[DATASET].props[prop] = value
    assert dryrun.estimate(volumes(shell), VOLID, base) == expected
    assert shell.calls == [["zfs", "get", "-Hp", "-o", "value", prop, DATASET]]


def test_estimate_of_a_platform_that_cannot_tell_is_unknown() -> None:
    shell = FakeZfsShell("pve1")  # the dataset is missing: zfs fails, as zfs-fuse on written@
    assert dryrun.estimate(volumes(shell), VOLID, "s1") is None


def dry_target(shell: FakeZfsShell, said: list[str]) -> dryrun.DryTarget:
    side = remote.TargetNode("pve2", parse_storage_cfg(STORAGE_CFG), volumes(shell),
                             lambda v: None, lambda m: None)  # fmt: skip
    return dryrun.DryTarget("pve2", side, volumes(shell), said.append)


def test_transfer_line_of_an_unknown_estimate() -> None:
    said: list[str] = []
    target = dry_target(FakeZfsShell("pve1"), said)
    target.transfer(VOLID, snapshot="s2", base="s1", rate_bps=None, insecure=False, log=print)
    assert said == [f"would send {VOLID} to pve2: incremental from 's1', estimated "
                    "unknown (no estimate on this platform)"]  # fmt: skip
    assert target.resume_capable is False


def test_finalize_plans_the_deletes_of_this_jobs_older_snapshots_only() -> None:
    said: list[str] = []
    target = dry_target(FakeZfsShell("pve2"), said)
    other = "local-zfs:vm-100-disk-1"
    info = remote.format_prepare_result({})
    assert info == "{}"
    target.kept = {
        other: {SYNC1: None, "__replicate_100-1_5__": None},  # type: ignore[dict-item]
        VOLID: {"manual": None, STALE: None},  # type: ignore[dict-item]
    }
    target.finalize(JOB, [other, VOLID, "local-zfs:vm-100-disk-9"], NOW, print)
    assert said == [
        f"would delete snapshot '{STALE}' on {VOLID} (pve2)",
        f"would delete snapshot '{SYNC1}' on {other} (pve2)",
    ]
