"""The files backend of :class:`~pverep.cluster.base.Cluster`: /etc/pve as pvesr reads it.

Node name from ``/etc/hostname`` (or ``$PVEREP_NODE``), members from pmxcfs ``.members``, the
vmlist from where the guest configs live (as pmxcfs computes ``.vmlist``; a moved config is
seen at once), guest configs, storage.cfg and replication.cfg parsed from their files.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path

from pverep.cluster.base import (
    VM_TYPES,
    ClusterError,
    Guest,
    GuestConfig,
    Job,
    JobStatus,
    Member,
    NotFoundError,
    Storage,
    VmType,
)
from pverep.cluster.sections import parse_guest_config, parse_section_config
from pverep.paths import Paths

NODE_ENV = "PVEREP_NODE"
_CONF_DIRS: dict[VmType, str] = {"qemu": "qemu-server", "lxc": "lxc"}


class FilesCluster:
    """Cluster view from the /etc/pve tree under ``paths.root``, for node ``node``."""

    def __init__(self, paths: Paths, node: str | None = None) -> None:
        self.paths = paths
        self._node = node

    # --- discovery ---
    def local_node(self) -> str:
        if self._node is None:
            self._node = _detect_node(self.paths)
        return self._node

    def members(self) -> list[Member]:
        path = self.paths.members
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            # No cluster: PVE reports just the local node, online.
            return [Member(name=self.local_node(), online=True)]
        except (OSError, ValueError) as err:
            raise ClusterError(f"cannot read cluster members from '{path}': {err}") from None
        nodelist = data.get("nodelist") if isinstance(data, dict) else None
        if not isinstance(nodelist, dict):
            raise ClusterError(f"malformed cluster members file '{path}': no nodelist")
        out = []
        for name, info in nodelist.items():
            info = info if isinstance(info, dict) else {}
            nodeid = info.get("id")
            out.append(
                Member(
                    name=str(name),
                    online=bool(info.get("online")),
                    ip=str(info["ip"]) if info.get("ip") else None,
                    nodeid=int(nodeid) if isinstance(nodeid, int) else None,
                )
            )
        return sorted(out, key=lambda m: m.name)

    def vmlist(self) -> dict[int, Guest]:
        nodes_dir = self.paths.etc_pve / "nodes"
        found: dict[int, Guest] = {}
        try:
            node_names = sorted(p.name for p in nodes_dir.iterdir() if p.is_dir())
        except FileNotFoundError:
            return {}
        for node in node_names:
            for vmtype in VM_TYPES:
                conf_dir = nodes_dir / node / _CONF_DIRS[vmtype]
                try:
                    entries = list(os.scandir(conf_dir))
                except (FileNotFoundError, NotADirectoryError):
                    continue
                for entry in entries:
                    stem, dot, ext = entry.name.partition(".")
                    if ext != "conf" or not dot or not stem.isdigit():
                        continue
                    vmid = int(stem)
                    if vmid < 100 or str(vmid) != stem:
                        continue
                    # pmxcfs refuses duplicates; keep the first and let the newer one lose.
                    found.setdefault(vmid, Guest(vmid=vmid, node=node, vmtype=vmtype))
        return dict(sorted(found.items()))

    def guest(self, vmid: int) -> Guest:
        guest = self.vmlist().get(vmid)
        if guest is None:
            raise NotFoundError(f"Configuration file for guest '{vmid}' does not exist")
        return guest

    def guest_config_text(self, guest: Guest) -> str:
        path = self.paths.guest_config(guest.node, guest.vmtype, guest.vmid)
        try:
            return path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise NotFoundError(f"Configuration file '{path}' does not exist") from None
        except OSError as err:
            raise ClusterError(f"cannot read '{path}': {err.strerror}") from None

    def guest_config(self, vmid: int) -> GuestConfig:
        guest = self.guest(vmid)
        current, pending, snapshots = parse_guest_config(self.guest_config_text(guest))
        delete = frozenset(k for k in pending.pop("delete", "").split(",") if k)
        return GuestConfig(
            guest=guest,
            current=current,
            pending=pending,
            pending_delete=delete,
            snapshots=snapshots,
        )

    def storages(self) -> dict[str, Storage]:
        text = _read_optional(self.paths.storage_cfg)
        out: dict[str, Storage] = {}
        for stype, storeid, props in parse_section_config(text):
            out[storeid] = Storage(storeid=storeid, type=stype, options=props)
        return out

    # --- replication jobs ---
    def jobs(self) -> list[Job]:
        raise ClusterError("replication jobs through the files backend are not wired yet")

    def job(self, jobid: str) -> tuple[Job, str]:
        raise ClusterError("replication jobs through the files backend are not wired yet")

    def create_job(self, job: Job) -> None:
        raise ClusterError("replication jobs through the files backend are not wired yet")

    def update_job(
        self,
        jobid: str,
        changes: Mapping[str, str | float | bool],
        delete: Sequence[str] = (),
        digest: str | None = None,
    ) -> None:
        raise ClusterError("replication jobs through the files backend are not wired yet")

    def delete_job(self, jobid: str, *, keep: bool = False, force: bool = False) -> None:
        raise ClusterError("replication jobs through the files backend are not wired yet")

    def replication_status(self, node: str, guest: int | None = None) -> list[JobStatus]:
        raise ClusterError("replication status through the files backend is not wired yet")

    def schedule_now(self, node: str, jobid: str) -> None:
        raise ClusterError("replication status through the files backend is not wired yet")


def _read_optional(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ""
    except OSError as err:
        raise ClusterError(f"cannot read '{path}': {err.strerror}") from None


def _detect_node(paths: Paths) -> str:
    """pvesr's nodename: the short hostname (``$PVEREP_NODE`` overrides, for tests)."""
    env = os.environ.get(NODE_ENV)
    if env:
        return env
    try:
        name = (paths.root / "etc/hostname").read_text(encoding="utf-8").strip()
    except OSError:
        name = ""
    return (name or socket.gethostname()).split(".", 1)[0]
