"""storage.cfg parsing, volume ids and the plugins' volume-name grammar."""

from __future__ import annotations

from pathlib import Path

import pytest

from pverep.config.storage import (
    StorageDef,
    VolumeInfo,
    parse_storage_cfg,
    parse_volname,
    parse_volume_id,
    read_storage_cfg,
    zfs_dataset,
)
from pverep.errors import ConfigError, PverepError, ValidationError

CFG = """# comment
dir: local
\tpath /var/lib/vz
\tcontent iso,vztmpl,backup

zfspool: local-zfs
\tpool rpool/data
\tsparse
\tcontent images,rootdir
\tnodes pve1,pve2

zfspool: off-zfs
\tpool tank/x
\tdisable

btrfs: local-btrfs
\tpath /var/lib/pve/local-btrfs
\tcontent images,rootdir

lvmthin: local-lvm
\tthinpool data
\tvgname pve

nfs: nas
\tserver 10.0.0.9
\texport /e
\tpath /mnt/pve/nas

rbd: ceph
\tpool vms

dir: flagged
\tpath /srv
\tshared 1
"""


def test_parse_types_and_flags() -> None:
    warnings: list[str] = []
    cfg = parse_storage_cfg(CFG + "\nbogus line\n", warnings.append)
    zfs = cfg.get("local-zfs")
    assert (zfs.type, zfs.pool, zfs.shared, zfs.disabled) == ("zfspool", "rpool/data", False, False)
    assert zfs.nodes == frozenset({"pve1", "pve2"})
    assert zfs.content == frozenset({"images", "rootdir"})
    assert zfs.replicatable
    assert cfg.get("off-zfs").disabled
    assert cfg.get("nas").shared and cfg.get("ceph").shared  # shared by type
    assert cfg.get("flagged").shared  # shared by property
    assert not cfg.get("local-btrfs").shared and not cfg.get("local-btrfs").replicatable
    assert cfg.get("local").path == "/var/lib/vz"
    assert any("ignore config line: bogus line" in w for w in warnings)


def test_local_dir_storage_always_exists() -> None:
    cfg = parse_storage_cfg("zfspool: tank\n\tpool tank\n")
    assert cfg.get("local").type == "dir" and cfg.get("local").path == "/var/lib/vz"


def test_enabled_and_availability_errors() -> None:
    cfg = parse_storage_cfg(CFG)
    assert cfg.check_enabled("local-zfs", "pve1").storeid == "local-zfs"
    with pytest.raises(PverepError, match=r"^storage 'local-zfs' is not available on node 'pve3'$"):
        cfg.check_enabled("local-zfs", "pve3")
    with pytest.raises(PverepError, match=r"^storage 'off-zfs' is disabled$"):
        cfg.check_enabled("off-zfs", "pve1")
    with pytest.raises(PverepError, match=r"^storage 'nope' does not exist$"):
        cfg.check_enabled("nope", "pve1")
    assert not cfg.is_enabled("off-zfs", "pve1")


def test_volume_ids() -> None:
    assert parse_volume_id("local-zfs:vm-100-disk-0") == ("local-zfs", "vm-100-disk-0")
    for bad in ("x:vm-1", "local-zfs", "1abc:vm-100-disk-0", ":x"):
        with pytest.raises(ValidationError, match="unable to parse volume ID"):
            parse_volume_id(bad)


ZFS = StorageDef("local-zfs", "zfspool", {"pool": "rpool/data"})
DIR = StorageDef("local", "dir", {"path": "/var/lib/vz"})
THIN = StorageDef("local-lvm", "lvmthin", {})


@pytest.mark.parametrize(
    ("storage", "volname", "vtype", "owner", "fmt", "is_base"),
    [
        (ZFS, "vm-100-disk-0", "images", 100, "raw", False),
        (ZFS, "subvol-101-disk-1", "images", 101, "subvol", False),
        (ZFS, "base-102-disk-0", "images", 102, "raw", True),
        (ZFS, "basevol-103-disk-0", "images", 103, "subvol", True),
        (ZFS, "base-102-disk-0/vm-104-disk-0", "images", 104, "raw", False),
        (DIR, "100/vm-100-disk-0.qcow2", "images", 100, "qcow2", False),
        (DIR, "100/base-100-disk-0.raw/105/vm-105-disk-0.qcow2", "images", 105, "qcow2", False),
        (DIR, "iso/debian.iso", "iso", None, "raw", False),
        (DIR, "rootdir/100", "rootdir", 100, None, False),
        (DIR, "backup/vzdump-qemu-100-2024_01_01-00_00_00.vma.zst", "backup", 100, None, False),
        (THIN, "vm-106-disk-0", "images", 106, "raw", False),
        (THIN, "base-107-disk-0", "images", 107, "raw", True),
    ],
)
def test_parse_volname(
    storage: StorageDef, volname: str, vtype: str, owner: int | None, fmt: str | None, is_base: bool
) -> None:
    info = parse_volname(storage, volname)
    assert (info.vtype, info.owner, info.format, info.is_base) == (vtype, owner, fmt, is_base)


def test_unparsable_volnames() -> None:
    with pytest.raises(PverepError, match="unable to parse zfs volume name 'disk0'"):
        parse_volname(ZFS, "disk0")
    with pytest.raises(PverepError, match="unable to parse directory volume name"):
        parse_volname(DIR, "somewhere/else/x")


def test_zfs_dataset_uses_last_path_part() -> None:
    assert zfs_dataset(ZFS, "base-102-disk-0/vm-104-disk-0") == "rpool/data/vm-104-disk-0"
    with pytest.raises(PverepError):
        zfs_dataset(DIR, "100/vm-100-disk-0.raw")


# --- the parser's warnings and edges ------------------------------------------------------------


def test_warnings_line_numbers_and_skipped_sections() -> None:
    text = (
        "dir: bad_id_\n"  # 1: invalid storage ID, the whole section is skipped
        "\tpath /a\n"  # 2
        "\tcontent images\n"  # 3
        "\n"  # 4
        "zfspool: z1\r\n"  # 5 (CRLF)
        "\tpool tank\r\n"  # 6
        "  # a comment inside\n"  # 7
        "\tpool other\n"  # 8: duplicate
        "no indent\n"  # 9
        "\tsparse\n"  # 10: bare key
        "\n"  # 11
        "garbage\n"  # 12
    )
    warnings: list[str] = []
    cfg = parse_storage_cfg(text, warnings.append, filename="/etc/pve/storage.cfg")
    assert warnings == [
        "file /etc/pve/storage.cfg line 1 (skip section 'bad_id_'): invalid storage ID",
        "file /etc/pve/storage.cfg line 8 - duplicate attribute 'pool'",
        "file /etc/pve/storage.cfg line 9 - ignore config line: no indent",
        "file /etc/pve/storage.cfg line 12 - ignore config line: garbage",
    ]
    assert set(cfg.storages) == {"z1", "local"}
    assert dict(cfg.get("z1").properties) == {"pool": "tank", "sparse": "1"}
    # the default file name, and no callback: no output, no error
    warnings.clear()
    parse_storage_cfg("garbage\n", warnings.append)
    assert warnings == ["file storage.cfg line 1 - ignore config line: garbage"]
    parse_storage_cfg("garbage\n")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1", True),
        ("yes", True),
        ("on", True),
        ("0", False),
        ("no", False),
        ("off", False),
        ("false", False),
    ],
)
def test_boolean_properties(value: str, expected: bool) -> None:
    cfg = parse_storage_cfg(f"dir: d1\n\tpath /d\n\tshared {value}\n\tdisable {value}\n")
    assert (cfg.get("d1").shared, cfg.get("d1").disabled) == (expected, expected)


@pytest.mark.parametrize(
    ("section", "kept"),
    [
        ("dir: local\n\tpath /var/lib/vz\n\tcontent iso\n", True),
        ("dir: local\n\tcontent iso\n", True),  # no path: the default path
        ("dir: local\n\tpath /srv\n\tcontent iso\n", False),
        ("zfspool: local\n\tpool tank\n\tcontent iso\n", False),
    ],
)
def test_local_is_replaced_unless_it_is_the_default_dir(section: str, kept: bool) -> None:
    local = parse_storage_cfg(section).get("local")
    if kept:
        assert local.content == frozenset({"iso"})
    else:
        assert (local.storeid, local.type, dict(local.properties)) == (
            "local",
            "dir",
            {"path": "/var/lib/vz", "content": "backup,images,iso,rootdir,snippets,vztmpl"},
        )


def test_read_storage_cfg(tmp_path: Path) -> None:
    path = tmp_path / "storage.cfg"
    warnings: list[str] = []
    assert set(read_storage_cfg(str(path), warnings.append).storages) == {"local"}  # no file
    assert warnings == []
    path.write_text("zfspool: z1\n\tpool tank\nbogus\n", encoding="utf-8")
    cfg = read_storage_cfg(str(path), warnings.append)
    assert cfg.get("z1").pool == "tank"
    assert warnings == [f"file {path} line 3 - ignore config line: bogus"]
    path.unlink()
    path.mkdir()
    with pytest.raises(ConfigError) as err:
        read_storage_cfg(str(path))
    assert str(err.value) == f"unable to read {path}: Is a directory"


def test_is_enabled_asks_about_the_given_node() -> None:
    cfg = parse_storage_cfg(CFG)
    assert cfg.is_enabled("local-zfs", "pve1")
    assert not cfg.is_enabled("local-zfs", "pve3")
    assert not cfg.is_enabled("off-zfs", "pve1")


RBD = StorageDef("ceph", "rbd", {"pool": "vms"})
ZFS_ISCSI = StorageDef("san", "zfs", {})
V = VolumeInfo


@pytest.mark.parametrize(
    ("storage", "volname", "info"),
    [
        (ZFS, "vm-100-disk-0", V("images", "vm-100-disk-0", 100, None, None, False, "raw")),
        (
            ZFS,
            "subvol-101-disk-1",
            V("images", "subvol-101-disk-1", 101, None, None, False, "subvol"),
        ),
        (ZFS, "basevol-103-d", V("images", "basevol-103-d", 103, None, None, True, "subvol")),
        (
            ZFS,
            "base-102-disk-0/vm-104-disk-0",
            V("images", "vm-104-disk-0", 104, "base-102-disk-0", 102, False, "raw"),
        ),
        (
            DIR,
            "100/vm-100-disk-0.qcow2",
            V("images", "vm-100-disk-0.qcow2", 100, None, None, False, "qcow2"),
        ),
        (
            DIR,
            "100/base-100-disk-0.raw",
            V("images", "base-100-disk-0.raw", 100, None, None, True, "raw"),
        ),
        (
            DIR,
            "101/vm-101-disk-0.vmdk",
            V("images", "vm-101-disk-0.vmdk", 101, None, None, False, "vmdk"),
        ),
        (
            DIR,
            "100/base-100-disk-0.raw/105/vm-105-disk-0.qcow2",
            V("images", "vm-105-disk-0.qcow2", 105, "base-100-disk-0.raw", 100, False, "qcow2"),
        ),
        (DIR, "iso/debian.ISO", V("iso", "debian.ISO", None, format="raw")),
        (DIR, "iso/boot.img", V("iso", "boot.img", None, format="raw")),
        (DIR, "vztmpl/debian-12.tar.zst", V("vztmpl", "debian-12.tar.zst", None, format="raw")),
        (DIR, "vztmpl/alpine.tgz", V("vztmpl", "alpine.tgz", None, format="raw")),
        (DIR, "rootdir/100", V("rootdir", "100", 100)),
        (
            DIR,
            "backup/vzdump-lxc-101-2024.tar.zst",
            V("backup", "vzdump-lxc-101-2024.tar.zst", 101),
        ),
        (DIR, "backup/manual.tar", V("backup", "manual.tar", None)),
        (DIR, "snippets/hook.pl", V("snippets", "hook.pl", None, format="raw")),
        (DIR, "import/disk.ova", V("import", "disk.ova", None, format="raw")),
        (THIN, "vm-106-disk-0", V("images", "vm-106-disk-0", 106, None, None, False, "raw")),
        (
            StorageDef("vg", "lvm", {}),
            "vm-110-disk-1",
            V("images", "vm-110-disk-1", 110, None, None, False, "raw"),
        ),
        (
            RBD,
            "base-107-disk-0/vm-108-disk-0",
            V("images", "vm-108-disk-0", 108, "base-107-disk-0", 107, False, "raw"),
        ),
        (
            ZFS_ISCSI,
            "base-109-disk-0",
            V("images", "base-109-disk-0", 109, None, None, True, "raw"),
        ),
        (StorageDef("lun", "iscsi", {}), "0.0.1.scsi-x", V("images", "0.0.1.scsi-x", None)),
        (StorageDef("bk", "pbs", {}), "backup/vm/100/x", V("unknown", "backup/vm/100/x", None)),
    ],
)
def test_volume_info_in_full(storage: StorageDef, volname: str, info: VolumeInfo) -> None:
    assert parse_volname(storage, volname) == info


@pytest.mark.parametrize(
    ("storage", "volname", "error"),
    [
        (DIR, "100/vm-100-disk-0.txt", "unable to parse volume filename 'vm-100-disk-0.txt'"),
        (DIR, "100/x.raw/105/y.txt", "unable to parse volume filename 'y.txt'"),
        (DIR, "100/x.txt/105/y.raw", "unable to parse volume filename 'x.txt'"),
        (DIR, "iso/debian.tar", "unable to parse directory volume name 'iso/debian.tar'"),
        (DIR, "rootdir/abc", "unable to parse directory volume name 'rootdir/abc'"),
        (THIN, "disk0", "unable to parse lvmthin volume name 'disk0'"),
        (RBD, "vm-x-disk", "unable to parse rbd volume name 'vm-x-disk'"),
    ],
)
def test_volume_name_errors(storage: StorageDef, volname: str, error: str) -> None:
    with pytest.raises(PverepError) as err:
        parse_volname(storage, volname)
    assert str(err.value) == error


def test_zfs_dataset_needs_a_pool() -> None:
    with pytest.raises(PverepError) as err:
        zfs_dataset(StorageDef("z2", "zfspool", {}), "vm-100-disk-0")
    assert str(err.value) == "storage 'z2' is not a zfspool storage with a pool"


def test_a_bad_header_line_does_not_end_the_file() -> None:
    warnings: list[str] = []
    cfg = parse_storage_cfg("garbage\nzfspool: z1\n\tpool tank\n", warnings.append)
    assert cfg.get("z1").pool == "tank"
    assert warnings == ["file storage.cfg line 1 - ignore config line: garbage"]
