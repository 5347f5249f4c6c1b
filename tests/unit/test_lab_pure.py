"""Pure parts of the lab: naming, quorum model, zfs shim argument handling, guest configs."""

from __future__ import annotations

import os
import sys
import sysconfig
from pathlib import Path

import pytest

import pverep
from pverep.lab import guests, runpaths
from pverep.lab.clusterfs import quorate_nodes
from pverep.lab.config import (
    NODE_PRIVATE_DIRS,
    NODE_SHARED_DIRS,
    LabConfig,
    LabError,
    default_dir,
    node_index,
)
from pverep.lab.nodeinit import NODE_BINDS
from pverep.lab.zfs_compat import canon, dataset_type, openzfs_unmount_error, strip_flags


def make_cfg(tmp_path: Path, nodes: int = 3) -> LabConfig:
    return LabConfig(tmp_path, tuple(f"pve{i}" for i in range(1, nodes + 1)), 42)


def test_names_derive_from_the_allocated_index(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path)
    assert (cfg.bridge, cfg.veth("pve3"), cfg.node_ip("pve3")) == (
        "pvelab42",
        "pvl42-pve3",
        "10.213.42.13",
    )
    assert len(make_cfg(tmp_path).veth("pve50").replace("42", "249")) <= 15
    with pytest.raises(LabError):
        cfg.node_ip("pve4")
    with pytest.raises(LabError):
        node_index("pve0")


def test_lab_dir_must_not_be_under_tmp_or_at_the_top(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PVEREP_LAB_DIR", "/var/tmp/elsewhere")
    assert default_dir() == Path("/var/tmp/elsewhere")
    assert default_dir("/srv/lab/x") == Path("/srv/lab/x")
    for bad in ("/tmp/lab", "/var", "/", "/run/lab", "/var/lib/vz/lab", "/root/.ssh/lab"):
        with pytest.raises(LabError, match=r"must not be under|too close"):
            default_dir(bad)
    if os.path.realpath("/var/lock") == "/run/lock":  # Debian: a symlink into the private /run
        with pytest.raises(LabError, match="under /run"):
            default_dir("/var/lock/lab")


def test_the_private_dirs_list_is_what_a_node_mounts_over() -> None:
    dirs = {target for target in NODE_BINDS.values() if target != "/etc/hostname"}
    assert dirs | {"/run", "/etc/pve"} == {*NODE_PRIVATE_DIRS, *NODE_SHARED_DIRS}


def test_paths_under_private_dirs_are_carried_outermost_only(tmp_path: Path) -> None:
    assert runpaths.hidden_paths(["/root/.pyenv/versions/3.11", "/usr", "/var/tmp/co"]) == []
    # a clone under /tmp: the checkout covers its .venv; /root/.ssh is private, /root is not
    assert runpaths.hidden_paths(["/tmp/ci/.venv", "/usr", "/tmp/ci", "/root/.ssh/py"]) == [
        "/root/.ssh/py",
        "/tmp/ci",
    ]
    # a symlink is carried where it is written and, if hidden too, where it points
    link = tmp_path / "venv"
    link.symlink_to("/srv/elsewhere")
    assert str(tmp_path).startswith("/tmp/")  # pytest's default basetemp
    assert runpaths.hidden_paths([str(link)]) == [str(link)]
    other = tmp_path / "other"
    other.symlink_to("/var/log/pve/py")
    assert runpaths.hidden_paths([str(other)]) == sorted([str(other), "/var/log/pve/py"])
    if os.path.realpath("/var/lock") == "/run/lock":
        assert runpaths.hidden_paths(["/var/lock/py"]) == ["/run/lock/py"]


def test_paths_the_nodes_cannot_get_back_are_refused_in_one_line() -> None:
    for bad in ("/etc/pve/py", "/rpool/data/co", "/tmp", "/var/log/pve"):
        with pytest.raises(LabError, match="hidden by") as err:
            runpaths.hidden_paths(["/usr", bad])
        assert "\n" not in str(err.value)


def test_the_running_checkout_and_venv_are_needed() -> None:
    repo = Path(__file__).resolve().parents[2]
    needed = runpaths.needed_paths()
    assert os.path.abspath(sys.prefix) in needed and os.path.abspath(sys.base_prefix) in needed
    assert sysconfig.get_path("purelib") in needed  # and so would be what its .pth files add
    if Path(pverep.__file__).resolve().parent == repo / "python" / "pverep":  # editable
        assert any(repo.samefile(p) for p in needed)


def test_quorum_follows_the_partition_model(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path)
    assert quorate_nodes(cfg) == {"pve1": True, "pve2": True, "pve3": True}
    cfg.cut_file.write_text("pve3\n")
    assert quorate_nodes(cfg) == {"pve1": True, "pve2": True, "pve3": False}
    cfg.cut_file.write_text("pve2\npve3\n")
    assert not any(quorate_nodes(cfg).values())
    two = make_cfg(tmp_path, 2)
    two.cut_file.write_text("pve2\n")
    assert not any(quorate_nodes(two).values())  # as on real PVE: 1 of 2 is no majority


def test_send_flags_zfs_fuse_lacks_are_dropped_and_values_kept() -> None:
    assert strip_flags(["-cLe", "-i", "@a", "p/d@b"], "cLew", "iIt") == ["-i", "@a", "p/d@b"]
    assert strip_flags(["-Rpcw", "-I@a", "p/d@b"], "cLew", "iIt") == ["-Rp", "-I@a", "p/d@b"]
    assert strip_flags(["-wi", "p/d@c", "p/d@e"], "cLew", "iIt") == ["-i", "p/d@c", "p/d@e"]
    assert strip_flags(["-sF", "--", "-odd"], "s", "ox") == ["-F", "--", "-odd"]
    assert canon("avail,refer,guid") == ["available", "referenced", "guid"]
    assert [dataset_type(n) for n in ("p/d", "p/d@s", "p/d#b")] == [
        "filesystem",
        "snapshot",
        "bookmark",
    ]


def test_guest_configs_look_like_pve_ones() -> None:
    ct = guests.lxc_config(101, [("subvol-101-disk-0", "8G"), ("subvol-101-disk-1", "1G")])
    keys = [line.split(":")[0] for line in ct.splitlines()]
    assert keys == sorted(keys)
    assert "rootfs: local-zfs:subvol-101-disk-0,size=8G\n" in ct
    assert "mp0: local-zfs:subvol-101-disk-1,mp=/mnt/data1,backup=1,size=1G\n" in ct
    vm = guests.qemu_config(102, [("vm-102-disk-0", "32G")])
    assert "scsi0: local-zfs:vm-102-disk-0,iothread=1,size=32G\n" in vm
    assert (
        guests.qemu_config(102, []).split("smbios1")[1]
        == guests.qemu_config(102, []).split("smbios1")[1]
    )


def test_busy_unmount_is_reported_in_openzfs_words() -> None:
    fuse = (
        "umount: /rpool/data/subvol-1-disk-0: target is busy.\n"
        "cannot unmount '/rpool/data/subvol-1-disk-0': umount failed: umount child process failed\n"
    )
    assert openzfs_unmount_error(fuse) == (
        "cannot unmount '/rpool/data/subvol-1-disk-0': pool or dataset is busy\n"
    )
    other = "cannot destroy 'rpool/x': filesystem has children\n"
    assert openzfs_unmount_error(other) == other
