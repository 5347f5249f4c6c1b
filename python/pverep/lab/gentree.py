"""Generate a Proxmox-like /etc/pve tree: members, storages, guests (with snapshots, pending
changes, CD-ROMs, unreplicated disks), replication jobs. For tests, benches and the lab.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from pverep.paths import Paths

STORAGE_CFG = """\
dir: local
\tpath /var/lib/vz
\tcontent iso,vztmpl,backup,snippets

zfspool: local-zfs
\tpool rpool/data
\tcontent images,rootdir
\tsparse 1

nfs: shared-nfs
\texport /export
\tpath /mnt/pve/shared-nfs
\tserver 10.213.7.1
\tcontent images
\tshared 1
"""


def write_members(
    paths: Paths, local: str, nodes: Sequence[str], offline: Sequence[str] = ()
) -> None:
    """pmxcfs ``.members`` as ``local`` sees it."""
    nodelist = {
        n: {"id": i + 1, "online": 0 if n in offline else 1, "ip": f"10.213.7.{11 + i}"}
        for i, n in enumerate(nodes)
    }
    data = {
        "nodename": local,
        "version": 7,
        "cluster": {"name": "pverep-lab", "version": len(nodes), "nodes": len(nodes), "quorate": 1},
        "nodelist": nodelist,
    }
    atomic_write(paths.members, json.dumps(data, indent=1))


def qemu_config(vmid: int, variant: int) -> str:
    """A VM config; ``variant`` picks extra features so a set of guests covers the cases."""
    lines = [
        f"#guest {vmid}%3A generated",
        "boot: order=scsi0",
        "cores: 2",
        "memory: 2048",
        f"name: vm{vmid}",
        f"scsi0: local-zfs:vm-{vmid}-disk-0,size=8G",
        "ide2: local:iso/debian.iso,media=cdrom",
        "smbios1: uuid=6a0d7e1c-0000-4000-8000-000000000000",
    ]
    if variant % 2:
        lines.append(f"scsi1: local-zfs:vm-{vmid}-disk-1,replicate=0,size=4G")
    if variant % 3 == 0:
        lines.append(f"unused0: local-zfs:vm-{vmid}-disk-2")
    text = "\n".join(sorted(lines[1:], key=lambda x: x.split(":")[0]))
    text = lines[0] + "\n" + text + "\n"
    if variant % 4 == 1:
        text += f"\n[PENDING]\ndelete: cores\nscsi2: local-zfs:vm-{vmid}-disk-3,size=1G\n"
    if variant % 5 == 2:
        text = text.replace("boot:", "parent: before-upgrade\nboot:", 1)
        text += (
            "\n[before-upgrade]\ncores: 1\nmemory: 1024\n"
            f"scsi0: local-zfs:vm-{vmid}-disk-0,size=8G\n"
            f"scsi3: local-zfs:vm-{vmid}-disk-9,size=2G\nsnaptime: 1700000000\n"
        )
    return text


def lxc_config(vmid: int, variant: int) -> str:
    lines = [
        "arch: amd64",
        "cores: 1",
        f"hostname: ct{vmid}",
        "memory: 512",
        f"rootfs: local-zfs:subvol-{vmid}-disk-0,size=8G",
        "ostype: debian",
    ]
    if variant % 2:
        lines.append(f"mp0: local-zfs:subvol-{vmid}-disk-1,mp=/data,size=2G")
    if variant % 3 == 0:
        lines.append("mp1: /srv/host,mp=/host,replicate=0")
    return "\n".join(sorted(lines)) + "\n"


def write_guest(paths: Paths, node: str, vmtype: str, vmid: int, text: str) -> Path:
    path = paths.guest_config(node, vmtype, vmid)
    atomic_write(path, text)
    return path


def move_guest(paths: Paths, vmid: int, vmtype: str, old: str, new: str) -> None:
    """What HA recovery does: a plain rename of the config into another node's directory."""
    dst = paths.guest_config(new, vmtype, vmid)
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.rename(paths.guest_config(old, vmtype, vmid), dst)


def generate(
    paths: Paths,
    nodes: Sequence[str] = ("pve1", "pve2", "pve3"),
    guests: int = 12,
    local: str | None = None,
    offline: Sequence[str] = (),
    jobs: bool = True,
) -> dict[int, tuple[str, str]]:
    """A whole tree; returns ``{vmid: (node, vmtype)}``. Every 4th guest is a container."""
    local = local or nodes[0]
    write_members(paths, local, nodes, offline)
    atomic_write(paths.storage_cfg, STORAGE_CFG)
    for node in nodes:
        for sub in ("qemu-server", "lxc"):
            (paths.node_dir(node) / sub).mkdir(parents=True, exist_ok=True)
    placed: dict[int, tuple[str, str]] = {}
    job_lines: list[str] = []
    for i in range(guests):
        vmid = 100 + i
        node = nodes[i % len(nodes)]
        vmtype = "lxc" if i % 4 == 3 else "qemu"
        text = lxc_config(vmid, i) if vmtype == "lxc" else qemu_config(vmid, i)
        write_guest(paths, node, vmtype, vmid, text)
        placed[vmid] = (node, vmtype)
        if jobs and len(nodes) > 1 and i % 2 == 0:
            target = nodes[(i + 1) % len(nodes)]
            job_lines.append(
                f"local: {vmid}-0\n\ttarget {target}\n\tschedule */5\n\tsource {node}\n"
            )
            if i % 6 == 0 and len(nodes) > 2:
                other = nodes[(i + 2) % len(nodes)]
                job_lines.append(
                    f"local: {vmid}-1\n\tcomment nightly%3A db\n\tdisable\n\ttarget {other}\n"
                    f"\trate 12.5\n\tsource {node}\n"
                )
    if jobs:
        atomic_write(paths.replication_cfg, "\n".join(job_lines) + ("\n" if job_lines else ""))
    return placed


def atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
