"""Guests for tests and the demo: realistic configs in /etc/pve and their disks as datasets.

Containers get ``subvol-<vmid>-disk-<n>`` as on PVE. VM disks ``vm-<vmid>-disk-<n>`` are
sparse zvols (``zfs create -s -V``, as PVE's zfspool plugin with ``sparse``) on the OpenZFS
engine; zfs-fuse has no zvols, so there they are filesystems with a refquota of the disk size.
"""

from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass
from pathlib import Path

from pverep.lab.clusterfs import guest_configs
from pverep.lab.config import POOL, LabError, write_atomic
from pverep.lab.control import Lab

STORAGE = "local-zfs"
DATA = f"{POOL}/data"
_SIZE_RE = re.compile(r"^[1-9][0-9]*[KMGT]?$")
_DISK_KEY_RE = re.compile(r"^(rootfs|mp\d+|scsi\d+|virtio\d+|sata\d+|ide\d+|efidisk0|tpmstate0)$")
DEFAULT_WRITE_BYTES = 1 << 20
#: The snapshot a template's disk is cloned from (PVE's ZFSPoolPlugin).
BASE_SNAPSHOT = "__base__"


@dataclass(frozen=True)
class Guest:
    vmid: int
    node: str
    vmtype: str  # "qemu" | "lxc"
    config: Path
    volumes: tuple[str, ...]  # volume names on local-zfs, e.g. subvol-100-disk-0


def check_vmid(vmid: int) -> int:
    if not 100 <= vmid <= 999_999_999:
        raise LabError(f"bad VMID {vmid} (100..999999999)")
    return vmid


def find(lab: Lab, vmid: int) -> Guest:
    cfg = lab.config
    found = guest_configs(cfg.etc_pve).get(check_vmid(vmid))
    if found is None:
        raise LabError(f"guest {vmid} does not exist")
    node, vmtype, conf = found
    volumes = []
    for line in conf.read_text().splitlines():
        if line.startswith("["):  # snapshot sections follow the current config
            break
        key, _, value = line.partition(": ")
        if _DISK_KEY_RE.match(key) and value.startswith(f"{STORAGE}:"):
            volumes.append(value.split(",", 1)[0].split(":", 1)[1])
    # config keys are sorted (mp0 before rootfs); disks are listed by their number
    volumes.sort(key=lambda v: int(v.rsplit("-", 1)[1]) if v.rsplit("-", 1)[1].isdigit() else 0)
    return Guest(vmid, node, vmtype, conf, tuple(volumes))


def _hwaddr(vmid: int, index: int) -> str:
    tail = f"{vmid:06x}"[-6:]
    return f"BC:24:{index:02X}:{tail[0:2]}:{tail[2:4]}:{tail[4:6]}".upper()


def lxc_config(vmid: int, volumes: list[tuple[str, str]]) -> str:
    lines = {
        "arch": "amd64",
        "cores": "1",
        "features": "nesting=1",
        "hostname": f"ct{vmid}",
        "memory": "512",
        "net0": f"name=eth0,bridge=vmbr0,firewall=1,hwaddr={_hwaddr(vmid, 0x11)},ip=dhcp,type=veth",
        "ostype": "debian",
        "swap": "512",
        "unprivileged": "1",
    }
    for n, (volname, size) in enumerate(volumes):
        if n == 0:
            lines["rootfs"] = f"{STORAGE}:{volname},size={size}"
        else:
            lines[f"mp{n - 1}"] = f"{STORAGE}:{volname},mp=/mnt/data{n},backup=1,size={size}"
    return "".join(f"{k}: {lines[k]}\n" for k in sorted(lines))


def qemu_config(vmid: int, volumes: list[tuple[str, str]]) -> str:
    rng = random.Random(vmid)  # stable uuids per VMID  # noqa: S311 - not security related
    uuid = "-".join(
        "".join(rng.choice("0123456789abcdef") for _ in range(n)) for n in (8, 4, 4, 4, 12)
    )
    lines = {
        "boot": "order=scsi0",
        "cores": "1",
        "cpu": "x86-64-v2-AES",
        "memory": "1024",
        "meta": f"creation-qemu=8.1.5,ctime={int(time.time())}",
        "name": f"vm{vmid}",
        "net0": f"virtio={_hwaddr(vmid, 0x12)},bridge=vmbr0,firewall=1",
        "numa": "0",
        "ostype": "l26",
        "scsihw": "virtio-scsi-single",
        "smbios1": f"uuid={uuid}",
        "sockets": "1",
        "vmgenid": uuid[::-1],
    }
    for n, (volname, size) in enumerate(volumes):
        lines[f"scsi{n}"] = f"{STORAGE}:{volname},iothread=1,size={size}"
    return "".join(f"{k}: {lines[k]}\n" for k in sorted(lines))


def create(lab: Lab, vmid: int, node: str, vmtype: str, sizes: list[str]) -> Guest:
    cfg = lab.config
    cfg.check_node(node)
    check_vmid(vmid)
    if vmtype not in ("lxc", "qemu"):
        raise LabError(f"bad guest type {vmtype!r} (lxc or qemu)")
    for size in sizes:
        if not _SIZE_RE.match(size):
            raise LabError(f"bad disk size {size!r} (e.g. 64M, 1G)")
    if vmid in guest_configs(cfg.etc_pve):
        raise LabError(f"guest {vmid} exists already")
    prefix = "subvol" if vmtype == "lxc" else "vm"
    volumes = [(f"{prefix}-{vmid}-disk-{n}", size) for n, size in enumerate(sizes or ["1G"])]
    zvols = vmtype == "qemu" and cfg.engine == "openzfs"
    for volname, size in volumes:
        if zvols:
            lab.exec(node, ["zfs", "create", "-s", "-V", size, f"{DATA}/{volname}"], check=True)
        else:
            lab.exec(
                node, ["zfs", "create", "-o", f"refquota={size}", f"{DATA}/{volname}"], check=True
            )
    if zvols:  # /dev/zvol/... links appear through udev
        lab.exec(node, ["udevadm", "settle", "--timeout=60"], check=True)
    text = lxc_config(vmid, volumes) if vmtype == "lxc" else qemu_config(vmid, volumes)
    sub = "lxc" if vmtype == "lxc" else "qemu-server"
    write_atomic(cfg.etc_pve / "nodes" / node / sub / f"{vmid}.conf", text, mode=0o640)
    lab.refresh_vmlist()
    return find(lab, vmid)


def _zvol_device(lab: Lab, node: str, volname: str) -> tuple[str, int] | None:
    """(/dev/zvol path, size in bytes) when the volume is a zvol on ``node``, else None."""
    dataset = f"{DATA}/{volname}"
    got = lab.exec(node, ["zfs", "get", "-Hp", "-o", "value", "type,volsize", dataset])
    values = got.stdout.split()
    if got.returncode != 0 or len(values) != 2 or values[0] != "volume":
        return None
    device = f"/dev/zvol/{dataset}"
    lab.exec(node, ["udevadm", "settle", "--timeout=60"])
    return device, int(values[1])


def _mountpoint(lab: Lab, node: str, volname: str, fresh: bool = False) -> str | None:
    """Mounted path of the dataset on ``node`` (mounting it if needed); None if missing.

    ``fresh`` remounts first: after ``zfs recv``/``rollback`` into a mounted filesystem the
    kernel may still serve file data it cached over FUSE (zfs-fuse changes the files behind
    its back; OpenZFS, in the kernel, does not have this problem).
    """
    name = dataset(volname)
    got = lab.exec(node, ["zfs", "get", "-H", "-o", "value", "mountpoint,mounted", name])
    if got.returncode != 0:
        return None
    mountpoint, mounted = got.stdout.split()
    if mounted == "yes" and fresh:
        lab.exec(node, ["zfs", "umount", name], check=True)
        mounted = "no"
    if mounted != "yes":
        lab.exec(node, ["zfs", "mount", name], check=True)
    return str(mountpoint)


def write(lab: Lab, vmid: int, nbytes: int = DEFAULT_WRITE_BYTES) -> Guest:
    """Overwrite-and-extend ``nbytes`` of random data in a file on every disk of the guest,
    on the node the guest currently lives on."""
    if nbytes < 1:
        raise LabError("--bytes must be at least 1")
    guest = find(lab, vmid)
    rng = random.Random()  # noqa: S311 - test data, not secrets
    for volname in guest.volumes:
        zvol = _zvol_device(lab, guest.node, volname)
        if zvol is not None:
            device, volsize = zvol
            offset = rng.randint(0, max(0, volsize - nbytes))
            lab.exec(
                guest.node,
                ["dd", f"of={device}", "bs=64K", "iflag=fullblock", "oflag=seek_bytes",
                 f"seek={offset}", "conv=notrunc,fsync", "status=none"],
                input=rng.randbytes(min(nbytes, volsize)), check=True,
            )  # fmt: skip
            continue
        path = _mountpoint(lab, guest.node, volname)
        if path is None:
            raise LabError(f"disk {volname} of guest {vmid} is missing on {guest.node}")
        blob = f"{path}/blob.bin"
        size = lab.exec(guest.node, ["stat", "-c", "%s", blob])
        offset = rng.randint(0, int(size.stdout)) if size.returncode == 0 else 0
        data = rng.randbytes(nbytes)
        lab.exec(
            guest.node,
            ["dd", f"of={blob}", "bs=64K", "iflag=fullblock", "oflag=seek_bytes",
             f"seek={offset}", "conv=notrunc,fsync", "status=none"],
            input=data, check=True,
        )  # fmt: skip
    return guest


def move(lab: Lab, vmid: int, to_node: str) -> Guest:
    """Move the config to another node the way HA's steal_service does: one rename."""
    guest = find(lab, vmid)
    cfg = lab.config
    cfg.check_node(to_node)
    if guest.node == to_node:
        raise LabError(f"guest {vmid} is on {to_node} already")
    target = cfg.etc_pve / "nodes" / to_node / guest.config.parent.name / guest.config.name
    if target.exists():
        raise LabError(f"{target} exists already")
    guest.config.rename(target)
    lab.refresh_vmlist()
    return find(lab, vmid)


def checksum(lab: Lab, vmid: int, node: str | None = None) -> dict[str, str | None]:
    """volume id -> content digest on ``node`` (default: the guest's node); None if missing."""
    guest = find(lab, vmid)
    where = lab.config.check_node(node) if node else guest.node
    out: dict[str, str | None] = {}
    for volname in guest.volumes:
        zvol = _zvol_device(lab, where, volname)
        if zvol is not None:  # a block device: the digest of its whole content
            got = lab.exec(where, ["sha256sum", zvol[0]], check=True)
            out[f"{STORAGE}:{volname}"] = got.stdout.split()[0]
            continue
        path = _mountpoint(lab, where, volname, fresh=True)
        if path is None:
            out[f"{STORAGE}:{volname}"] = None
            continue
        got = lab.exec(where, [*lab.python_argv, "-m", "pverep.lab.digest", path], check=True)
        out[f"{STORAGE}:{volname}"] = got.stdout.split()[0]
    return out


def dataset(volname: str) -> str:
    """The dataset of a volume name; a linked clone ``<base>/<name>`` lives in ``DATA/<name>``."""
    return f"{DATA}/{volname.rsplit('/', 1)[-1]}"


def create_linked_clone(
    lab: Lab, template: int, vmid: int, node: str, vmtype: str, size: str = "64M"
) -> Guest:
    """A template's disk ``base-<template>-disk-0`` (with data, snapshot ``__base__``) and a
    guest ``vmid`` whose only disk is a ``zfs clone`` of it, named as PVE names linked clones
    (``local-zfs:base-<template>-disk-0/<vm|subvol>-<vmid>-disk-0``). No template config is
    written: only the clone is a guest here. Destroy with ``destroy_template_disk``."""
    cfg = lab.config
    cfg.check_node(node)
    check_vmid(template)
    check_vmid(vmid)
    if vmtype not in ("lxc", "qemu"):
        raise LabError(f"bad guest type {vmtype!r} (lxc or qemu)")
    if vmid in guest_configs(cfg.etc_pve):
        raise LabError(f"guest {vmid} exists already")
    prefix = "subvol" if vmtype == "lxc" else "vm"
    base = f"base-{template}-disk-0"
    lab.exec(node, ["zfs", "create", "-o", f"refquota={size}", dataset(base)], check=True)
    path = _mountpoint(lab, node, base)
    if path is None:
        raise LabError(f"template disk {base} is missing on {node}")
    lab.exec(
        node, ["dd", "if=/dev/urandom", f"of={path}/template.bin", "bs=64K", "count=16",
               "conv=fsync", "status=none"], check=True,
    )  # fmt: skip
    lab.exec(node, ["zfs", "snapshot", f"{dataset(base)}@{BASE_SNAPSHOT}"], check=True)
    clone = f"{prefix}-{vmid}-disk-0"
    lab.exec(
        node, ["zfs", "clone", "-o", f"refquota={size}", f"{dataset(base)}@{BASE_SNAPSHOT}",
               dataset(clone)], check=True,
    )  # fmt: skip
    volumes = [(f"{base}/{clone}", size)]
    text = lxc_config(vmid, volumes) if vmtype == "lxc" else qemu_config(vmid, volumes)
    sub = "lxc" if vmtype == "lxc" else "qemu-server"
    write_atomic(cfg.etc_pve / "nodes" / node / sub / f"{vmid}.conf", text, mode=0o640)
    lab.refresh_vmlist()
    return find(lab, vmid)


def copy_template_disk(lab: Lab, template: int, src: str, dst: str) -> None:
    """Receive ``base-<template>-disk-0@__base__`` on ``dst`` as it is on ``src`` (same guid),
    as replicating the template itself would: a clone's stream needs its origin there."""
    snap = f"{dataset(f'base-{template}-disk-0')}@{BASE_SNAPSHOT}"
    stream = lab.exec(src, ["zfs", "send", "-p", snap], check=True, text=False).stdout
    lab.exec(dst, ["zfs", "recv", "--", snap.partition("@")[0]], input=stream, check=True,
             text=False)  # fmt: skip


def destroy_template_disk(lab: Lab, template: int, node: str) -> None:
    """Destroy ``base-<template>-disk-0`` on ``node`` with every clone of it (``-R``)."""
    name = dataset(f"base-{template}-disk-0")
    if lab.exec(node, ["zfs", "list", "-H", "-o", "name", name]).returncode == 0:
        lab.exec(node, ["zfs", "destroy", "-R", name], check=True)
