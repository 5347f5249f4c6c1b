"""Reconcile's remote calls per target kind (issue 10): a stock Proxmox VE target gets only
what a stock node has — the storage plugin's ``zfs list`` argv for reads, pvesr's own removal
argv — and the steps it has no verb for are skipped with the reason; a pverep target gets
pverep's verbs. Every argv each node receives is recorded and compared exactly."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pverep.cluster.files import FilesCluster
from pverep.config.jobs import ConfigStore
from pverep.paths import Paths
from pverep.reconcile.executor import execute
from pverep.reconcile.gather import Node, query_replicas
from pverep.reconcile.model import (
    DeleteTargetSnapshot,
    DestroyTargetVolume,
    Plan,
    RemoveOrphanJob,
)
from pverep.storage.zfs import list_images_argv, snapshot_list_argv
from pverep.transport.base import CommandResult, CommandShell

STOCK, PVEREP = "pve3", "pve2"
DISK0, DISK1 = "rpool/data/vm-100-disk-0", "rpool/data/vm-100-disk-1"
SNAP_OLD, SNAP_NEW = "__replicate_100-0_1700000000__", "__replicate_100-0_1700000900__"
SNAPSHOTS = {
    DISK0: [(SNAP_OLD, 111, 10, 1700000000), (SNAP_NEW, 222, 20, 1700000900)],
    DISK1: [(SNAP_OLD, 333, 11, 1700000000)],
}
PEER_INFO = ["pverep", "peer-info"]


@dataclass
class Answers(CommandShell):
    """One node's remote shell: records every argv, answers the few it is meant to get."""

    name: str
    stock: bool
    calls: list[list[str]] = field(default_factory=list)

    @property
    def node(self) -> str:
        return self.name

    def command(self, argv: Sequence[str]) -> list[str]:
        raise AssertionError("not spawned")

    def run(self, argv: Sequence[str], **_: object) -> CommandResult:
        argv = list(argv)
        self.calls.append(argv)
        out, code = self._answer(argv)
        return CommandResult(argv, code, out.encode(), b"" if code == 0 else b"no such verb\n")

    def _answer(self, argv: list[str]) -> tuple[str, int]:
        if argv[0] == "pverep" and self.stock:
            return "", 127  # what the remote shell says: command not found
        if argv == PEER_INFO:
            return json.dumps({"program": "pverep", "version": "0"}) + "\n", 0
        if argv == list_images_argv("rpool/data"):
            rows = [f"{ds}\t8589934592\t-\tvolume\t-" for ds in SNAPSHOTS]
            return "\n".join([*rows, "rpool/data/vm-200-disk-0\t1024\t-\tvolume\t-"]) + "\n", 0
        for ds, snaps in SNAPSHOTS.items():
            if argv == snapshot_list_argv(ds):
                return "".join(f"{ds}@{n}\t{g}\t{t}\t{c}\n" for n, g, t, c in snaps), 0
        if argv[:2] in (["pvesr", "prepare-local-job"], ["pverep", "prepare-local-job"]):
            return "{}\n", 0
        if argv[:2] == ["pverep", "replica-clean"]:
            return f"delete-snapshot local-zfs:vm-100-disk-0@{SNAP_OLD}\n", 0
        if argv[:2] == ["pverep", "replica-info"]:
            doc = {"node": self.name, "guest_local": False, "volumes": {}}
            return json.dumps(doc) + "\n", 0
        return "", 2


class RecordingNode(Node):
    shells: dict[str, Answers]

    def shell(self, node: str) -> Answers:  # type: ignore[override]
        return self.shells[node]


def _node(tmp_path: Path, peers: str = "", guest_on: str = "pve1") -> RecordingNode:
    paths = Paths(tmp_path)
    pve = tmp_path / "etc/pve"
    pve.mkdir(parents=True)
    nodes = ("pve1", PVEREP, STOCK)
    (pve / ".members").write_text(
        json.dumps(
            {
                "nodename": "pve1",
                "nodelist": {
                    n: {"id": i, "online": 1, "ip": f"10.0.0.{i}"}
                    for i, n in enumerate(nodes, start=1)
                },
            }
        )
    )
    (pve / ".vmlist").write_text(
        json.dumps({"version": 1, "ids": {"100": {"node": guest_on, "type": "qemu"}}})
    )
    (pve / "storage.cfg").write_text("zfspool: local-zfs\n\tpool rpool/data\n\n")
    (pve / "replication.cfg").write_text(
        f"local: 100-0\n\ttarget {STOCK}\n\tremove_job full\n\tsource pve1\n\n"
        f"local: 100-1\n\ttarget {PVEREP}\n\tremove_job full\n\tsource pve1\n\n"
    )
    if peers:
        paths.pverep_conf.parent.mkdir(parents=True, exist_ok=True)
        paths.pverep_conf.write_text(f"[peers]\n{peers}\n")
    node = RecordingNode(paths, FilesCluster(paths, "pve1"), "pve1")
    node.shells = {STOCK: Answers(STOCK, stock=True), PVEREP: Answers(PVEREP, stock=False)}
    return node


def test_a_stock_target_is_read_with_the_storage_plugins_zfs_list_only(tmp_path: Path) -> None:
    node = _node(tmp_path)
    found = query_replicas(node, STOCK, 100, ["local-zfs"])
    assert found.error is None and not found.guest_local
    assert node.shells[STOCK].calls == [
        PEER_INFO,  # the probe: exit 127 = stock (no other pverep word reaches it)
        list_images_argv("rpool/data"),
        snapshot_list_argv(DISK0),
        snapshot_list_argv(DISK1),
    ]
    assert found.volumes is not None
    got = {v: [(s.name, s.guid, s.createtxg) for s in snaps] for v, snaps in found.volumes.items()}
    assert got == {
        "local-zfs:vm-100-disk-0": [(SNAP_OLD, 111, 10), (SNAP_NEW, 222, 20)],
        "local-zfs:vm-100-disk-1": [(SNAP_OLD, 333, 11)],
    }  # vm-200's volume is not the guest's
    # asked once per pass: a second query does not probe again
    query_replicas(node, STOCK, 100, ["local-zfs"])
    assert node.shells[STOCK].calls.count(PEER_INFO) == 1


def test_the_peers_override_means_no_probe_at_all(tmp_path: Path) -> None:
    node = _node(tmp_path, peers=f"{STOCK} = stock")
    assert query_replicas(node, STOCK, 100, []).error is None
    assert PEER_INFO not in node.shells[STOCK].calls
    assert all(argv[0] == "zfs" for argv in node.shells[STOCK].calls)


def test_a_guest_living_on_the_stock_node_is_not_read_there(tmp_path: Path) -> None:
    node = _node(tmp_path, guest_on=STOCK)
    found = query_replicas(node, STOCK, 100, ["local-zfs"])
    assert found.guest_local and found.volumes == {}
    assert node.shells[STOCK].calls == [PEER_INFO]


def test_a_pverep_target_is_asked_replica_info(tmp_path: Path) -> None:
    node = _node(tmp_path)
    assert query_replicas(node, PVEREP, 100, ["local-zfs"]).error is None
    assert node.shells[PVEREP].calls == [
        PEER_INFO,
        ["pverep", "replica-info", "100", "--scan", "local-zfs"],
    ]


def _target_plan(target: str, jobid: str) -> Plan:
    plan = Plan("pve1")
    plan.add(DeleteTargetSnapshot(jobid, 100, node=target, volid="local-zfs:vm-100-disk-0",
                                  snapshot=SNAP_OLD))  # fmt: skip
    plan.add(DestroyTargetVolume(jobid, 100, node=target, volid="local-zfs:vm-100-disk-1",
                                 reason="gone from the guest"))  # fmt: skip
    plan.add(RemoveOrphanJob(jobid, 100, target=target, scan=("local-zfs",)))
    return plan


def test_a_stock_target_gets_pvesrs_removal_and_no_replica_clean(tmp_path: Path) -> None:
    node = _node(tmp_path)
    lines: list[str] = []
    out = execute(node, _target_plan(STOCK, "100-0"), lines.append)
    assert node.shells[STOCK].calls == [
        PEER_INFO,
        ["pvesr", "prepare-local-job", "100-0", "--scan", "local-zfs", "--last_sync", "1",
         "--force"],
    ]  # fmt: skip
    assert out.ok and [type(s).__name__ for s in out.done] == ["RemoveOrphanJob"]
    why = {type(s).__name__: reason for s, reason in out.skipped}
    assert why == {
        "DeleteTargetSnapshot": "pve3 runs stock Proxmox VE (no 'pverep replica-clean' there): "
        "the job's next run deletes this stale snapshot ('pvesr prepare-local-job')",
        "DestroyTargetVolume": "pve3 runs stock Proxmox VE (no 'pverep replica-clean' there): "
        "the job's next run removes it if it scans that storage ('pvesr prepare-local-job')",
    }
    assert sum(line.startswith("skipped: ") for line in lines) == 2
    assert "100-0" not in ConfigStore(node.paths).read().jobs  # the removal finished
    assert "100-1" in ConfigStore(node.paths).read().jobs


def test_a_pverep_target_gets_replica_clean_and_pverep_removal(tmp_path: Path) -> None:
    node = _node(tmp_path)
    out = execute(node, _target_plan(PVEREP, "100-1"), lambda _line: None)
    assert node.shells[PVEREP].calls == [
        PEER_INFO,
        ["pverep", "replica-clean", "100", "--job", "100-1",
         "--delete-snapshot", f"local-zfs:vm-100-disk-0@{SNAP_OLD}",
         "--destroy", "local-zfs:vm-100-disk-1"],
        ["pverep", "prepare-local-job", "100-1", "--scan", "local-zfs", "--last_sync", "1",
         "--force"],
    ]  # fmt: skip
    assert out.ok and not out.skipped[1:]  # the destroy was "already gone" on that fake
    assert "100-1" not in ConfigStore(node.paths).read().jobs


def test_an_undecidable_target_fails_its_steps_without_touching_it(tmp_path: Path) -> None:
    node = _node(tmp_path)
    node.shells[STOCK].stock = False  # answers neither 127 nor pverep's peer-info

    def broken(argv: list[str]) -> tuple[str, int]:
        return "", 255

    node.shells[STOCK]._answer = broken  # type: ignore[method-assign]
    out = execute(node, _target_plan(STOCK, "100-0"), lambda _line: None)
    assert node.shells[STOCK].calls == [PEER_INFO]
    assert len(out.failed) == 3 and not out.done
    assert all("cannot tell whether node 'pve3' runs pverep" in why for _s, why in out.failed)
    assert "100-0" in ConfigStore(node.paths).read().jobs  # nothing dropped


@pytest.mark.parametrize("setting", ["stock", "pverep"])
def test_overrides_pick_the_argv_without_probing(tmp_path: Path, setting: str) -> None:
    node = _node(tmp_path, peers=f"{STOCK} = {setting}")
    node.shells[STOCK].stock = setting == "stock"
    execute(node, _target_plan(STOCK, "100-0"), lambda _line: None)
    calls = node.shells[STOCK].calls
    assert PEER_INFO not in calls
    tools = sorted({argv[0] for argv in calls})
    assert tools == (["pvesr"] if setting == "stock" else ["pverep"])
