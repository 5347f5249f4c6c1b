"""Every path pvesr uses, relative to one root.

Real nodes use root ``/``. Tests and the lab move the whole tree by setting ``PVEREP_ROOT`` (or
the CLI's ``--root``), so nothing ever touches the host's real ``/etc/pve`` by accident.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ROOT_ENV = "PVEREP_ROOT"

#: The guest hookscript as the Debian package installs it (``pverep install-hookscript`` copies
#: it onto a snippets storage). A file of the installation, not of the node's data: ``--root``
#: does not move it.
SHIPPED_HOOKSCRIPT = Path("/usr/share/pverep/pverep-hookscript")


@dataclass(frozen=True)
class Paths:
    """All of pvesr's well-known files under ``root``."""

    root: Path = Path("/")

    @classmethod
    def from_env(cls, root: str | os.PathLike[str] | None = None) -> Paths:
        """Explicit ``root`` wins, then ``$PVEREP_ROOT``, then ``/``."""
        chosen = root if root is not None else os.environ.get(ROOT_ENV) or "/"
        return cls(Path(chosen))

    def _p(self, absolute: str) -> Path:
        return self.root / absolute.lstrip("/")

    # --- /etc/pve (pmxcfs, cluster-wide) ---
    @property
    def etc_pve(self) -> Path:
        return self._p("/etc/pve")

    @property
    def replication_cfg(self) -> Path:
        return self._p("/etc/pve/replication.cfg")

    @property
    def storage_cfg(self) -> Path:
        return self._p("/etc/pve/storage.cfg")

    @property
    def datacenter_cfg(self) -> Path:
        return self._p("/etc/pve/datacenter.cfg")

    @property
    def members(self) -> Path:
        return self._p("/etc/pve/.members")

    @property
    def vmlist(self) -> Path:
        return self._p("/etc/pve/.vmlist")

    @property
    def cfs_lock_dir(self) -> Path:
        return self._p("/etc/pve/priv/lock")

    @property
    def ha_manager_status(self) -> Path:
        return self._p("/etc/pve/ha/manager_status")

    def node_dir(self, node: str) -> Path:
        return self._p(f"/etc/pve/nodes/{node}")

    def guest_config(self, node: str, vmtype: str, vmid: int) -> Path:
        """``vmtype`` is ``qemu`` or ``lxc`` as in the vmlist."""
        sub = "qemu-server" if vmtype == "qemu" else "lxc"
        return self.node_dir(node) / sub / f"{vmid}.conf"

    def node_known_hosts(self, node: str) -> Path:
        return self.node_dir(node) / "ssh_known_hosts"

    # --- node-local state ---
    @property
    def state_file(self) -> Path:
        return self._p("/var/lib/pve-manager/pve-replication-state.json")

    @property
    def state_lock(self) -> Path:
        return self._p("/var/lib/pve-manager/pve-replication-state.lck")

    @property
    def job_log_dir(self) -> Path:
        return self._p("/var/log/pve/replicate")

    def job_log(self, jobid: str) -> Path:
        return self.job_log_dir / jobid

    @property
    def run_lock(self) -> Path:
        return self._p("/var/lock/pvesr.lck")

    @property
    def migrate_lock_dir(self) -> Path:
        return self._p("/var/lock/pve-manager")

    def migrate_lock(self, vmid: int) -> Path:
        return self.migrate_lock_dir / f"pve-migrate-{vmid}"

    @property
    def import_registry_dir(self) -> Path:
        """pverep's own (not pvesr's): one lock + record per volume being imported on this
        node, so that a newer import can find and supersede a stale one. Under /run: a
        reboot ends every import, and so must forget them."""
        return self._p("/run/pverep/imports")

    # --- running guests ---
    def qemu_pidfile(self, vmid: int) -> Path:
        return self._p(f"/var/run/qemu-server/{vmid}.pid")

    def qga_socket(self, vmid: int) -> Path:
        """The VM's QEMU guest agent channel (a unix socket QEMU serves)."""
        return self._p(f"/var/run/qemu-server/{vmid}.qga")

    def ct_cgroup(self, vmid: int) -> Path:
        """A running container's cgroup v2 directory (what LXC creates on PVE)."""
        return self._p(f"/sys/fs/cgroup/lxc/{vmid}")

    @property
    def zfs_caps_cache(self) -> Path:
        """pverep's own: what this node's zfs binary said it supports (storage/zfscaps.py),
        keyed by the binary. Under /run: asked again after a reboot."""
        return self._p("/run/pverep/zfs-caps.json")

    @property
    def pverep_conf(self) -> Path:
        return self._p("/etc/pverep/pverep.conf")

    # --- pverep's own observability files (issue 15), next to the state file they describe:
    # node-local like it (also in the lab, where only /var/lib/pve-manager is per node) ---
    @property
    def history_file(self) -> Path:
        """The run history (pverep.observe.history), rotated to ``.1``, ``.2`` …"""
        return self._p("/var/lib/pve-manager/pverep-history.jsonl")

    @property
    def cycle_file(self) -> Path:
        """The node's last scheduler pass (end, duration) for the metrics."""
        return self._p("/var/lib/pve-manager/pverep-last-cycle.json")
