"""The OpenZFS 2.x idioms a PVE node uses work on the lab's zfs-fuse (through the shim)."""

from __future__ import annotations

from pverep.lab import guests
from pverep.lab.control import Lab


def zfs(lab: Lab, *args: str, node: str = "pve1", env: dict[str, str] | None = None) -> str:
    return str(lab.exec(node, ["zfs", *args], check=True, env=env).stdout)


def test_list_parsable_gives_exact_values_in_creation_order(lab: Lab, vmid: int) -> None:
    ds = guests.dataset(guests.create(lab, vmid, "pve1", "lxc", ["32M"]).volumes[0])
    for snap in ("zz", "aa", "mm"):
        zfs(lab, "snapshot", f"{ds}@{snap}")
    rows = [
        ln.split("\t")
        for ln in zfs(
            lab, "list", "-Hp", "-t", "snapshot", "-o", "name,guid,createtxg,creation", ds
        ).splitlines()
    ]
    assert [r[0].split("@")[1] for r in rows] == ["zz", "aa", "mm"]
    for name, guid, txg, creation in rows:
        assert guid == zfs(lab, "get", "-Hp", "-o", "value", "guid", name).strip()
        assert guid.isdigit() and txg.isdigit() and creation.isdigit()
    # without -p, guid is still exact (OpenZFS), unlike raw zfs-fuse's "14.1E"
    assert zfs(lab, "list", "-H", "-o", "guid", f"{ds}@aa").strip() == rows[1][1]
    raw = zfs(lab, "list", "-H", "-o", "guid", f"{ds}@aa", env={"PVELAB_ZFS_COMPAT": "0"})
    assert raw.strip() != rows[1][1]
    used = zfs(lab, "list", "-Hp", "-o", "used,compressratio", ds).split()
    assert used[0].isdigit() and not used[1].endswith("x")


def test_destroy_of_a_mounted_filesystem_succeeds_at_once(lab: Lab) -> None:
    zfs(lab, "create", "rpool/data/compat-destroy")
    zfs(lab, "destroy", "rpool/data/compat-destroy")
    assert lab.exec("pve1", ["zfs", "list", "rpool/data/compat-destroy"]).returncode == 1


def test_stand_ins_for_missing_features(lab: Lab, vmid: int) -> None:
    ds = guests.dataset(guests.create(lab, vmid, "pve1", "lxc", ["32M"]).volumes[0])
    zfs(lab, "snapshot", f"{ds}@a")
    assert zfs(lab, "get", "-H", "-o", "value", "receive_resume_token", ds).strip() == "-"
    assert zfs(lab, "list", "-H", "-t", "bookmark", ds) == ""
    snaps = zfs(lab, "get", "-H", "-p", "-t", "snapshot", "-o", "name,value", "-r", "guid", ds)
    assert [ln.split("\t")[0] for ln in snaps.splitlines()] == [f"{ds}@a"]
    script = 'zfs send -c -L -e "$1" | ssh pve2 zfs recv -s -F "$2"'
    lab.exec("pve1", ["bash", "-o", "pipefail", "-c", script, "sh", f"{ds}@a", ds], check=True)
    assert (
        zfs(lab, "list", "-H", "-o", "name", "-t", "snapshot", ds, node="pve2").strip() == f"{ds}@a"
    )
    zvol = lab.exec("pve1", ["zfs", "create", "-V", "16M", "rpool/data/vm-1-disk-9"])
    assert zvol.returncode == 1 and "zvols are not supported" in zvol.stderr
