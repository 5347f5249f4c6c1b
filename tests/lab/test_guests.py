"""Guest helpers: configs in /etc/pve, disks as datasets, write/move/checksum."""

from __future__ import annotations

import json

import pytest

from pverep.errors import PverepError
from pverep.lab import guests
from pverep.lab.control import Lab


def vmlist(lab: Lab) -> dict[str, dict[str, object]]:
    ids = json.loads((lab.config.etc_pve / ".vmlist").read_text())["ids"]
    assert isinstance(ids, dict)
    return ids


def test_create_container_and_vm(lab: Lab, vmid: int) -> None:
    ct = guests.create(lab, vmid, "pve2", "lxc", ["64M", "32M"])
    assert ct.volumes == (f"subvol-{vmid}-disk-0", f"subvol-{vmid}-disk-1")
    conf = lab.exec("pve2", ["cat", f"/etc/pve/lxc/{vmid}.conf"], check=True).stdout
    assert f"rootfs: local-zfs:subvol-{vmid}-disk-0,size=64M\n" in conf
    assert f"mp0: local-zfs:subvol-{vmid}-disk-1,mp=/mnt/data1,backup=1,size=32M\n" in conf
    quota = lab.exec(
        "pve2",
        ["zfs", "get", "-Hp", "-o", "value", "refquota", guests.dataset(ct.volumes[1])],
        check=True,
    ).stdout
    assert int(quota) == 32 * 1024 * 1024
    assert vmlist(lab)[str(vmid)] == {"node": "pve2", "type": "lxc", "version": 1}
    assert lab.exec("pve1", ["zfs", "list", guests.dataset(ct.volumes[0])]).returncode == 1


def test_create_vm_uses_filesystems_for_disks(lab: Lab) -> None:
    vmid = 9990
    try:
        vm = guests.create(lab, vmid, "pve1", "qemu", ["32M"])
        assert vm.volumes == (f"vm-{vmid}-disk-0",)
        conf = (lab.config.etc_pve / "nodes/pve1/qemu-server" / f"{vmid}.conf").read_text()
        assert f"scsi0: local-zfs:vm-{vmid}-disk-0,iothread=1,size=32M\n" in conf
        kind = lab.exec(
            "pve1", ["zfs", "get", "-H", "-o", "value", "type", guests.dataset(vm.volumes[0])]
        )
        assert kind.stdout.strip() == "filesystem"
        assert vmlist(lab)[str(vmid)]["type"] == "qemu"
        with pytest.raises(PverepError, match="exists already"):
            guests.create(lab, vmid, "pve2", "lxc", ["32M"])
    finally:
        (lab.config.etc_pve / "nodes/pve1/qemu-server" / f"{vmid}.conf").unlink(missing_ok=True)
        lab.exec("pve1", ["zfs", "destroy", "-r", guests.dataset(f"vm-{vmid}-disk-0")])
        lab.refresh_vmlist()


def test_write_changes_checksum_and_move_follows_the_config(lab: Lab, vmid: int) -> None:
    guest = guests.create(lab, vmid, "pve1", "lxc", ["64M"])
    first = guests.checksum(lab, vmid)
    guests.write(lab, vmid, 10_000)
    second = guests.checksum(lab, vmid)
    assert second != first
    assert guests.checksum(lab, vmid, "pve3") == {f"local-zfs:{guest.volumes[0]}": None}

    dataset = guests.dataset(guest.volumes[0])
    lab.exec("pve1", ["zfs", "snapshot", f"{dataset}@s"], check=True)
    lab.exec(
        "pve1",
        ["bash", "-o", "pipefail", "-c", f"zfs send {dataset}@s | ssh pve3 zfs recv {dataset}"],
        check=True,
    )

    moved = guests.move(lab, vmid, "pve3")
    assert moved.node == "pve3"
    assert not (lab.config.etc_pve / "nodes/pve1/lxc" / f"{vmid}.conf").exists()
    assert lab.exec("pve3", ["test", "-f", f"/etc/pve/lxc/{vmid}.conf"]).returncode == 0
    assert vmlist(lab)[str(vmid)]["node"] == "pve3"

    assert guests.checksum(lab, vmid) == second  # now read on pve3
    guests.write(lab, vmid, 10_000)  # writes on pve3, where the guest lives now
    assert guests.checksum(lab, vmid) != second
    assert guests.checksum(lab, vmid, "pve1") == second
