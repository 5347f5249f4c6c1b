"""The shared /etc/pve (a plain directory standing in for pmxcfs) and the lab's /etc/hosts.

pmxcfs serves some entries differently on each node: ``local``, ``qemu-server``, ``lxc`` and
``.members``. Here they are absolute symlinks into ``/run/pvelab/``, which is a private tmpfs
in every node, where the node init points them at that node's own directory or file.
``.vmlist`` is computed live by pmxcfs; here :func:`write_vmlist` writes a snapshot of it.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from pverep.lab.config import CLUSTER_NAME, DOMAIN, POOL, LabConfig, node_index, write_atomic

#: Where the node init creates the per-node targets of the magic links.
NODE_RUN = "/run/pvelab"
MAGIC_LINKS = {
    "local": f"{NODE_RUN}/local",
    "qemu-server": f"{NODE_RUN}/qemu-server",
    "lxc": f"{NODE_RUN}/lxc",
    ".members": f"{NODE_RUN}/members",
}

STORAGE_CFG = f"""dir: local
\tpath /var/lib/vz
\tcontent iso,vztmpl,backup

zfspool: local-zfs
\tpool {POOL}/data
\tsparse
\tcontent images,rootdir

zfspool: local-zfs2
\tpool {POOL}/data2
\tsparse
\tcontent images,rootdir

"""

DATACENTER_CFG = "keyboard: en-us\n"


def write_hosts(cfg: LabConfig) -> None:
    lines = ["127.0.0.1 localhost", "::1 localhost ip6-localhost ip6-loopback"]
    lines += [f"{cfg.node_ip(n)} {n}.{DOMAIN} {n}" for n in cfg.nodes]
    write_atomic(cfg.dir / "hosts", "\n".join(lines) + "\n")


def write_etc_pve(cfg: LabConfig) -> None:
    root = cfg.etc_pve
    (root / "priv" / "lock").mkdir(parents=True, exist_ok=True)
    (root / "priv").chmod(0o700)
    (root / "storage.cfg").write_text(STORAGE_CFG)
    (root / "datacenter.cfg").write_text(DATACENTER_CFG)
    (root / "replication.cfg").write_text("")
    (root / "corosync.conf").write_text(_corosync_conf(cfg))
    for name, target in MAGIC_LINKS.items():
        os.symlink(target, root / name)
    for node in cfg.nodes:
        for sub in ("qemu-server", "lxc", "priv"):
            (root / "nodes" / node / sub).mkdir(parents=True, exist_ok=True)
    write_vmlist(cfg)


def _corosync_conf(cfg: LabConfig) -> str:
    out = [
        "totem {",
        f"  cluster_name: {CLUSTER_NAME}",
        "  config_version: 1",
        "  version: 2",
        "}",
        "",
        "nodelist {",
    ]
    for node in cfg.nodes:
        out += [
            "  node {",
            f"    name: {node}",
            f"    nodeid: {node_index(node)}",
            "    quorum_votes: 1",
            f"    ring0_addr: {cfg.node_ip(node)}",
            "  }",
        ]
    out += ["}", "", "quorum {", "  provider: corosync_votequorum", "}", ""]
    return "\n".join(out)


def quorate_nodes(cfg: LabConfig) -> dict[str, bool]:
    """Partition model of ``cut``: every cut node is alone, all others are together."""
    cut = cfg.cut_nodes()
    total = len(cfg.nodes)
    together = total - len(cut)
    return {n: (1 if n in cut else together) * 2 > total for n in cfg.nodes}


def write_members(cfg: LabConfig) -> None:
    """Each node's ``.members`` in pmxcfs' JSON format; online/quorate follow cut/heal."""
    cut = cfg.cut_nodes()
    quorate = quorate_nodes(cfg)
    for me in cfg.nodes:
        nodelist = {}
        for node in cfg.nodes:
            online = node == me if me in cut else node not in cut
            nodelist[node] = {
                "id": node_index(node),
                "online": int(online),
                "ip": cfg.node_ip(node),
            }
        members = {
            "nodename": me,
            "version": int(time.time()),
            "cluster": {
                "name": CLUSTER_NAME,
                "version": 1,
                "nodes": len(cfg.nodes),
                "quorate": int(quorate[me]),
            },
            "nodelist": nodelist,
        }
        write_atomic(cfg.node_dir(me) / "members", json.dumps(members, indent=1) + "\n")


def guest_configs(etc_pve: Path) -> dict[int, tuple[str, str, Path]]:
    """vmid -> (node, 'qemu'|'lxc', config path) for every guest config in /etc/pve/nodes."""
    found: dict[int, tuple[str, str, Path]] = {}
    for sub, vmtype in (("qemu-server", "qemu"), ("lxc", "lxc")):
        for conf in sorted(etc_pve.glob(f"nodes/*/{sub}/*.conf")):
            if conf.stem.isdigit():
                found[int(conf.stem)] = (conf.parent.parent.name, vmtype, conf)
    return found


def write_vmlist(cfg: LabConfig) -> None:
    ids = {
        str(vmid): {"node": node, "type": vmtype, "version": 1}
        for vmid, (node, vmtype, _) in sorted(guest_configs(cfg.etc_pve).items())
    }
    text = json.dumps({"version": int(time.time()), "ids": ids}, indent=1) + "\n"
    write_atomic(cfg.etc_pve / ".vmlist", text, mode=0o640)
