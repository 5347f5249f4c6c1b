"""Guest config parsing and get_replicatable_volumes (spec §7.1/§7.2), incl. the upstream
qemu-server vectors of test_get_replicatable_volumes.pl."""

from __future__ import annotations

import pytest

from pverep.config.storage import parse_storage_cfg
from pverep.errors import PverepError
from pverep.guests import get_replicatable_volumes, parse_guest_config

# vmid 900, `local` = dir, `local-zfs` = zfspool, both non-shared (as upstream).
STORAGE = parse_storage_cfg(
    """dir: local
\tpath /var/lib/vz
\tcontent images,iso,vztmpl,rootdir

zfspool: local-zfs
\tpool rpool/data
\tcontent images,rootdir

nfs: shared-nfs
\tpath /mnt/pve/nfs
\tserver 10.0.0.1
\texport /export
\tcontent images
"""
)


def qemu(text: str) -> list[str]:
    return get_replicatable_volumes(STORAGE, 900, parse_guest_config(text, "qemu"))


UPSTREAM_ERRORS = [
    (
        "scsi0: non-existent-store:vm-103-disk-1,size=8G",
        "storage 'non-existent-store' does not exist",
    ),
    (
        "scsi0: local:900/vm-900-disk-1.qcow2,size=8G",
        "missing replicate feature on volume 'local:900/vm-900-disk-1.qcow2'",
    ),
    (
        "scsi0: /dev/disk/abcdefg,size=8G",
        "unable to replicate local file/device '/dev/disk/abcdefg'",
    ),
    (
        "scsi0: local-zfs:vm-900-disk-1\nunused1: local:900/vm-900-disk-2.raw",
        "missing replicate feature on volume 'local:900/vm-900-disk-2.raw'",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("config", "error"), UPSTREAM_ERRORS)
def test_upstream_error_vectors(config: str, error: str) -> None:
    with pytest.raises(PverepError) as exc:
        qemu(config + "\n")
    assert str(exc.value) == error


UPSTREAM_RESULTS = [
    ("scsi0: local:103/vm-103-disk-1.qcow2,size=8G", []),
    ("scsi0: /dev/disk/abcdefg,size=8G,replicate=0", []),
    ("ide2: local:iso/pve-cd.iso,media=cdrom", []),
    ("ide2: cdrom,media=cdrom", []),
    (
        "scsi0: local-zfs:vm-900-disk-2\n\n[snap1]\nscsi0: local-zfs:vm-900-disk-1",
        ["local-zfs:vm-900-disk-1", "local-zfs:vm-900-disk-2"],
    ),
    (
        "scsi0: local-zfs:vm-900-disk-1,replicate=0\n\n[snap1]\nscsi0: local-zfs:vm-900-disk-1",
        ["local-zfs:vm-900-disk-1"],
    ),
    (
        "scsi0: local-zfs:vm-900-disk-1\nunused1: local-zfs:vm-900-disk-2\n"
        "unused5: local-zfs:vm-900-disk-3",
        ["local-zfs:vm-900-disk-1", "local-zfs:vm-900-disk-2", "local-zfs:vm-900-disk-3"],
    ),
]


@pytest.mark.parametrize(("config", "expected"), UPSTREAM_RESULTS)
def test_upstream_result_vectors(config: str, expected: list[str]) -> None:
    assert qemu(config + "\n") == expected


def test_qemu_pending_vmstate_efidisk_tpm_are_sources() -> None:
    text = """boot: order=scsi0
efidisk0: local-zfs:vm-900-disk-0,efitype=4m,size=1M
scsi0: local-zfs:vm-900-disk-1,size=8G
tpmstate0: local-zfs:vm-900-disk-2,size=4M,version=v2.0
parent: before

[PENDING]
scsi1: local-zfs:vm-900-disk-3,size=1G

[before]
vmstate: local-zfs:vm-900-state-before
scsi0: local-zfs:vm-900-disk-1,size=8G
"""
    conf = parse_guest_config(text, "qemu")
    assert conf.parent == "before"
    assert conf.pending == {"scsi1": "local-zfs:vm-900-disk-3,size=1G"}
    assert set(conf.snapshots) == {"before"}
    assert get_replicatable_volumes(STORAGE, 900, conf) == [
        "local-zfs:vm-900-disk-0",
        "local-zfs:vm-900-disk-1",
        "local-zfs:vm-900-disk-2",
        "local-zfs:vm-900-disk-3",
        "local-zfs:vm-900-state-before",
    ]


def test_qemu_cleanup_includes_replicate_off_and_skips_errors() -> None:
    text = (
        "scsi0: local-zfs:vm-900-disk-1,replicate=0\n"
        "scsi1: /dev/sdb\n"
        "scsi2: local:900/vm-900-disk-2.raw\n"
    )
    conf = parse_guest_config(text, "qemu")
    with pytest.raises(PverepError, match="unable to replicate local file/device '/dev/sdb'"):
        get_replicatable_volumes(STORAGE, 900, conf)
    assert get_replicatable_volumes(STORAGE, 900, conf, cleanup=True) == ["local-zfs:vm-900-disk-1"]
    assert get_replicatable_volumes(STORAGE, 900, conf, noerr=True) == []


def test_qemu_cdrom_only_if_every_reference_is_cdrom() -> None:
    text = "ide2: local-zfs:vm-900-disk-5,media=cdrom\n\n[s]\nscsi0: local-zfs:vm-900-disk-5\n"
    assert qemu(text) == ["local-zfs:vm-900-disk-5"]


def test_qemu_shared_storage_and_foreign_owner_are_skipped() -> None:
    text = "scsi0: shared-nfs:900/vm-900-disk-0.qcow2\nscsi1: local-zfs:vm-901-disk-0\n"
    assert qemu(text) == []


def test_qemu_wrong_vtype_errors_unless_noerr() -> None:
    # an images-owned vmid is needed to reach rule 6; rootdir/<vmid> on a dir storage has one
    text = "scsi0: local:rootdir/900\n"
    with pytest.raises(
        PverepError, match=r"unable to replicate volume 'local:rootdir/900', type 'rootdir'"
    ):
        qemu(text)
    conf = parse_guest_config(text, "qemu")
    assert get_replicatable_volumes(STORAGE, 900, conf, noerr=True) == []


def test_qemu_unparsable_volid_respects_noerr() -> None:
    conf = parse_guest_config("scsi0: x:y\n", "qemu")
    with pytest.raises(PverepError, match="unable to parse volume ID 'x:y'"):
        get_replicatable_volumes(STORAGE, 900, conf)
    assert get_replicatable_volumes(STORAGE, 900, conf, noerr=True) == []


# --- lxc --------------------------------------------------------------------------------------


def lxc(text: str, **kw: bool) -> list[str]:
    return get_replicatable_volumes(STORAGE, 900, parse_guest_config(text, "lxc"), **kw)


def test_lxc_rootfs_mountpoints_snapshots_unused() -> None:
    text = """arch: amd64
rootfs: local-zfs:subvol-900-disk-0,size=8G
mp0: local-zfs:subvol-900-disk-1,mp=/data
mp1: /srv/host,mp=/host,replicate=0
lxc.apparmor.profile: unconfined
unused0: local-zfs:subvol-900-disk-3

[pve:pending]
mp2: local-zfs:subvol-900-disk-9,mp=/p

[old]
rootfs: local-zfs:subvol-900-disk-0,size=8G
mp0: local-zfs:subvol-900-disk-2,mp=/data
"""
    conf = parse_guest_config(text, "lxc")
    assert conf.pending == {"mp2": "local-zfs:subvol-900-disk-9,mp=/p"}
    assert get_replicatable_volumes(STORAGE, 900, conf) == [
        "local-zfs:subvol-900-disk-0",
        "local-zfs:subvol-900-disk-1",
        "local-zfs:subvol-900-disk-2",
        "local-zfs:subvol-900-disk-3",
    ]


def test_lxc_bind_mount_with_replicate_errors_even_in_cleanup() -> None:
    for kw in ({}, {"cleanup": True}, {"noerr": True}):
        with pytest.raises(PverepError, match="unable to replicate mountpoint type 'bind'"):
            lxc("mp0: /srv/host,mp=/host\n", **kw)
    with pytest.raises(PverepError, match="unable to replicate mountpoint type 'device'"):
        lxc("mp0: /dev/sdb1,mp=/host\n")


def test_lxc_replicate_off_only_in_cleanup() -> None:
    text = "rootfs: local-zfs:subvol-900-disk-0,size=8G,replicate=0\n"
    assert lxc(text) == []
    assert lxc(text, cleanup=True) == ["local-zfs:subvol-900-disk-0"]


def test_lxc_non_replicatable_storage() -> None:
    text = "rootfs: local:900/subvol-900-disk-0.subvol,size=8G\n"
    with pytest.raises(PverepError, match="missing replicate feature on volume"):
        lxc(text)
    assert lxc(text, cleanup=True) == []
    assert lxc(text, noerr=True) == []


def test_lxc_wrong_vtype_always_errors() -> None:
    with pytest.raises(PverepError, match="unable to replicate volume 'local:rootdir/900'"):
        lxc("rootfs: local:rootdir/900\n", cleanup=True)
