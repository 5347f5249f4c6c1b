"""Per-node ssh identity and configuration, laid out the way a PVE cluster has it.

Every node gets its own ed25519 host key and root key. As on PVE, ``/root/.ssh/authorized_keys``
links to the cluster-wide ``/etc/pve/priv/authorized_keys`` and ``/etc/ssh/ssh_known_hosts`` to
``/etc/pve/priv/known_hosts``; PVE >= 8.1's per-node ``/etc/pve/nodes/N/ssh_known_hosts`` is
written too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from pverep.lab.clusterfs import NODE_RUN
from pverep.lab.config import DOMAIN, LabConfig

#: PATH for every ssh session on a node: the lab's ``pverep`` first, then root's usual PATH.
NODE_PATH = f"{NODE_RUN}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _keygen(path: Path, comment: str) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
    )


def sshd_config(cfg: LabConfig, node: str) -> str:
    # sshd takes the first value it reads, and sshd_config includes sshd_config.d/ at its top.
    return f"""# pverep lab node {node}
# every address of the node (its netns): a replication network may add one (docs/lab.md)
ListenAddress 0.0.0.0
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
UseDNS no
X11Forwarding no
PidFile /run/sshd.pid
MaxStartups 100:30:200
MaxSessions 100
SetEnv PATH={NODE_PATH}
"""


# Fail at once instead of prompting (real PVE tools pass BatchMode themselves).
SSH_CLIENT_CONFIG = """# pverep lab client defaults
Host *
    BatchMode yes
    GSSAPIAuthentication no
    HashKnownHosts no
"""


def prepare_node(cfg: LabConfig, node: str) -> None:
    nd = cfg.node_dir(node)
    etc_ssh = nd / "etc-ssh"
    shutil.copytree("/etc/ssh", etc_ssh, symlinks=True)
    for key in etc_ssh.glob("ssh_host_*"):
        key.unlink()
    _keygen(etc_ssh / "ssh_host_ed25519_key", f"root@{node}")
    os.symlink("/etc/pve/priv/known_hosts", etc_ssh / "ssh_known_hosts")
    for sub in ("sshd_config.d", "ssh_config.d"):
        (etc_ssh / sub).mkdir(exist_ok=True)
    (etc_ssh / "sshd_config.d" / "00-pverep-lab.conf").write_text(sshd_config(cfg, node))
    (etc_ssh / "ssh_config.d" / "00-pverep-lab.conf").write_text(SSH_CLIENT_CONFIG)
    root_ssh = nd / "root-ssh"
    root_ssh.mkdir(mode=0o700)
    _keygen(root_ssh / "id_ed25519", f"root@{node}")
    os.symlink("/etc/pve/priv/authorized_keys", root_ssh / "authorized_keys")
    (root_ssh / "known_hosts").touch()


def write_cluster_keys(cfg: LabConfig) -> None:
    """authorized_keys and known_hosts for the whole cluster, after every node has its keys."""
    authorized, known = [], []
    for node in cfg.nodes:
        nd = cfg.node_dir(node)
        authorized.append((nd / "root-ssh" / "id_ed25519.pub").read_text().strip())
        kind, key = (nd / "etc-ssh" / "ssh_host_ed25519_key.pub").read_text().split()[:2]
        known.append(f"{node},{node}.{DOMAIN},{cfg.node_ip(node)} {kind} {key}")
        (cfg.etc_pve / "nodes" / node / "ssh_known_hosts").write_text(f"{node} {kind} {key}\n")
    priv = cfg.etc_pve / "priv"
    (priv / "authorized_keys").write_text("\n".join(authorized) + "\n")
    (priv / "authorized_keys").chmod(0o600)
    (priv / "known_hosts").write_text("\n".join(known) + "\n")
