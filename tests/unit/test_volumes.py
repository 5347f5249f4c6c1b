"""``storage.volumes.Volumes``: volume ids resolved to their zfspool storage, against the FAKE
zfs (exact argv, datasets before and after)."""

from __future__ import annotations

import pytest

from pverep.config.storage import parse_storage_cfg
from pverep.errors import PverepError
from pverep.storage.volumes import Volumes
from pverep.storage.zfs import ZfsFlags, ZfsRunner
from tests.unit.zfs_fake import FakeZfsShell

STORAGE_CFG = """zfspool: local-zfs
\tpool rpool/data
\tcontent images,rootdir

zfspool: tank
\tpool tank/pve
\tcontent images

dir: local
\tpath /var/lib/vz
\tcontent iso,vztmpl,backup
"""

D0, D1 = "rpool/data/vm-100-disk-0", "rpool/data/vm-100-disk-1"
V0, V1 = "local-zfs:vm-100-disk-0", "local-zfs:vm-100-disk-1"


def volumes(shell: FakeZfsShell, **kwargs: object) -> Volumes:
    return Volumes(parse_storage_cfg(STORAGE_CFG), ZfsRunner(shell), **kwargs)  # type: ignore[arg-type]


def test_one_pool_per_storage_with_the_nodes_flags() -> None:
    flags = ZfsFlags(encryption_aware=True)
    vols = volumes(FakeZfsShell(), flags=flags)
    pool = vols.pool("local-zfs")
    assert vols.pool("local-zfs") is pool
    assert pool.pool == "rpool/data" and pool.flags is flags
    assert vols.pool("tank").pool == "tank/pve"
    assert volumes(FakeZfsShell()).pool("tank").flags == ZfsFlags()


def test_a_storage_that_is_not_zfspool_is_refused_with_pvesrs_message() -> None:
    vols = volumes(FakeZfsShell())
    with pytest.raises(PverepError) as err:
        vols.snapshot("local:100/vm-100-disk-0.qcow2", "s")
    assert str(err.value) == "storage 'local' is not replicatable"
    with pytest.raises(PverepError) as err:
        vols.pool("local")
    assert str(err.value) == "storage 'local' is not replicatable"


def test_snapshot_delete_and_free_act_on_the_volumes_dataset() -> None:
    shell = FakeZfsShell()
    shell.add(D0, "a", kind="volume")
    shell.add(D1, kind="volume")
    vols = volumes(shell)
    vols.snapshot(V1, "b")
    assert shell.calls[-1] == ["zfs", "snapshot", f"{D1}@b"]
    assert shell.snapshot_names(D1) == ["b"] and shell.snapshot_names(D0) == ["a"]
    vols.delete_snapshot(V0, "a")
    assert shell.snapshot_names(D0) == []
    vols.free(V0)
    assert D0 not in shell.datasets and D1 in shell.datasets
    assert [i.name for i in vols.snapshot_info(V1)] == ["b"]


def test_a_busy_volume_is_retried_with_the_given_sleep() -> None:
    shell = FakeZfsShell()
    shell.add(D0, kind="volume", busy=2)
    slept: list[float] = []
    volumes(shell, sleep=slept.append).free(V0)
    assert D0 not in shell.datasets and slept == [1.0, 1.0]


def test_snapshot_infos_lists_each_dataset_once_and_disks_without_snapshots_empty() -> None:
    shell = FakeZfsShell()
    shell.add(D0, "a", "b")
    shell.add(D1)
    batch = volumes(shell).snapshot_infos([V0, V1, V0])
    assert shell.calls == [
        ["zfs", "list", "-Hp", "-r", "-t", "snapshot", "-o", "name,guid,createtxg,creation",
         D0, D1]
    ]  # fmt: skip
    assert batch is not None
    assert {v: [i.name for i in infos] for v, infos in batch.items()} == {
        V0: ["a", "b"],
        V1: [],
    }


def test_snapshot_infos_gives_up_on_a_storage_that_is_not_replicatable() -> None:
    shell = FakeZfsShell()
    shell.add(D0, "a")
    assert volumes(shell).snapshot_infos([V0, "local:100/vm-100-disk-0.qcow2"]) is None
    assert shell.calls == []


def test_list_images_sorted_like_vdisk_list_and_by_owner() -> None:
    shell = FakeZfsShell()
    for name in ["vm-101-disk-0", "base-100-disk-1", "vm-100-disk-0", "subvol-100-disk-2"]:
        shell.add(f"rpool/data/{name}", kind="filesystem" if "subvol" in name else "volume")
    shell.add(
        "rpool/data/vm-100-disk-9", kind="volume", origin="rpool/data/base-100-disk-1@__base__"
    )
    shell.add("tank/pve/vm-100-disk-5", kind="volume")
    vols = volumes(shell)
    assert vols.list_images("local-zfs", 100) == [
        "local-zfs:base-100-disk-1",
        "local-zfs:base-100-disk-1/vm-100-disk-9",
        "local-zfs:subvol-100-disk-2",
        "local-zfs:vm-100-disk-0",
    ]
    assert vols.list_images("local-zfs") == [
        "local-zfs:base-100-disk-1",
        "local-zfs:base-100-disk-1/vm-100-disk-9",
        "local-zfs:subvol-100-disk-2",
        "local-zfs:vm-100-disk-0",
        "local-zfs:vm-101-disk-0",
    ]


def test_list_images_sorts_without_regard_to_case() -> None:
    shell = FakeZfsShell()
    for name in ["vm-100-disk-b", "vm-100-disk-A", "vm-100-disk-C"]:
        shell.add(f"rpool/data/{name}", kind="volume")
    assert volumes(shell).list_images("local-zfs") == [
        "local-zfs:vm-100-disk-A",
        "local-zfs:vm-100-disk-b",
        "local-zfs:vm-100-disk-C",
    ]
