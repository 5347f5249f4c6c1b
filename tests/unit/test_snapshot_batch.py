"""prepare() lists a job's disks with one ``zfs list`` (issue 13: less fixed cost per job), and
falls back to pvesr's volume-by-volume listing when that call fails - against the FAKE zfs."""

from __future__ import annotations

import pytest

from pverep.config.storage import parse_storage_cfg
from pverep.engine.prepare import prepare
from pverep.errors import VolumeMissingError
from pverep.storage.volumes import Volumes
from pverep.storage.zfs import ZfsRunner
from tests.unit.zfs_fake import FakeZfsShell

STORAGE_CFG = """zfspool: local-zfs
\tpool rpool/data
\tcontent images,rootdir

zfspool: tank
\tpool tank/pve
\tcontent images
"""

D0, D1, D2 = "rpool/data/vm-100-disk-0", "rpool/data/vm-100-disk-1", "tank/pve/vm-100-disk-2"
V0, V1, V2 = "local-zfs:vm-100-disk-0", "local-zfs:vm-100-disk-1", "tank:vm-100-disk-2"
OLD, NEW = "__replicate_100-0_1000__", "__replicate_100-0_2000__"


def volumes(shell: FakeZfsShell) -> Volumes:
    return Volumes(parse_storage_cfg(STORAGE_CFG), ZfsRunner(shell), sleep=lambda _: None)


def snapshot_lists(shell: FakeZfsShell) -> list[list[str]]:
    return [c for c in shell.calls if c[1] == "list" and "snapshot" in c]


def test_one_listing_for_all_disks_same_answer_as_one_by_one() -> None:
    shell = FakeZfsShell()
    shell.add(D0, "a", OLD)
    shell.add(D1, OLD, "b")
    shell.add(D2)
    vols = volumes(shell)
    batch = vols.snapshot_infos([V0, V1, V2])
    assert len(snapshot_lists(shell)) == 1
    assert snapshot_lists(shell)[0][-3:] == [D0, D1, D2]
    assert batch is not None
    for volid in (V0, V1, V2):
        one = vols.snapshot_info(volid)
        assert [(i.name, i.guid) for i in batch[volid]] == [(i.name, i.guid) for i in one]
    assert [i.name for i in batch[V1]] == [OLD, "b"]  # each disk's own, in zfs's order


def test_prepare_lists_once_and_still_cleans_each_disk() -> None:
    shell = FakeZfsShell()
    shell.add(D0, OLD, NEW)
    shell.add(D1, OLD, NEW)
    result = prepare(volumes(shell), [V0, V1], "100-0", 2000, None, lambda _: None)
    assert len(snapshot_lists(shell)) == 1
    assert shell.snapshot_names(D0) == [NEW] and shell.snapshot_names(D1) == [NEW]
    assert set(result.snapshots[V0]) == {NEW} and result.cleaned == {V0, V1}


def test_a_missing_disk_falls_back_to_pvesrs_order_and_error() -> None:
    shell = FakeZfsShell()
    shell.add(D0, OLD, NEW)
    vols = volumes(shell)
    assert vols.snapshot_infos([V0, V1]) is None
    with pytest.raises(VolumeMissingError, match="vm-100-disk-1"):
        prepare(vols, [V0, V1], "100-0", 2000, None, lambda _: None)
    assert shell.snapshot_names(D0) == [NEW]  # the first disk was handled, as pvesr does
    # a removal on a node without some disks: the others are still cleaned
    shell.add(D0, OLD)
    result = prepare(vols, [V1, V0], "100-0", 2000, None, lambda _: None, missing_ok=True)
    assert shell.snapshot_names(D0) == [NEW] and set(result.snapshots) == {V0}


def test_a_single_disk_keeps_the_one_volume_listing() -> None:
    shell = FakeZfsShell()
    shell.add(D0, OLD)
    assert volumes(shell).snapshot_infos([V0]) is None
    prepare(volumes(shell), [V0], "100-0", 1000, None, lambda _: None)
    assert snapshot_lists(shell) == [
        ["zfs", "list", "-Hp", "-r", "-t", "snapshot", "-o", "name,guid,createtxg,creation", D0]
    ]
