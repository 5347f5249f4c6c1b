"""The files backend of the Cluster interface: what pmxcfs provides under /etc/pve, read the way
pvesr reads it.

* local node: the short host name, like PVE's nodename (no override: it decides which guests
  live here, and a wrong value would switch off the target's "never touch a guest living on
  this node" check; the lab's nodes have their own UTS namespace and host name);
* vmlist: ``/etc/pve/.vmlist`` (pmxcfs' JSON); without it (a plain directory standing in for
  pmxcfs) the guest configs ``nodes/<node>/{qemu-server,lxc}/<vmid>.conf`` are scanned;
* members: ``/etc/pve/.members`` (``nodelist``); a node that is not in a cluster has none;
* guest configs (current, ``[PENDING]``, snapshot sections), storage.cfg, replication.cfg
  (``config.jobs``) and this node's job state (``config.state``, ``schedule.job_status``).

Replication status and schedule-now exist only for the local node: the state file is node-local.
"""

from __future__ import annotations

import json
import re
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from pverep import admin, validate
from pverep.cluster.base import (
    ClusterError,
    GuestConfig,
    GuestLocation,
    GuestType,
    Member,
    NotFoundError,
    normalise_pending_delete,
)
from pverep.config.jobs import ConfigStore, Job
from pverep.config.state import StateStore, job_process_running
from pverep.config.storage import StorageConfig, parse_storage_cfg
from pverep.errors import ConfigError, ValidationError
from pverep.guests import parse_guest_config
from pverep.paths import Paths
from pverep.schedule import JobStatus

_CONF_NAME = re.compile(r"([1-9]\d*)\.conf")
_GUEST_DIRS: dict[str, GuestType] = {"qemu-server": "qemu", "lxc": "lxc"}


def local_nodename() -> str:
    """The host name up to the first dot (PVE's nodename)."""
    name = socket.gethostname().split(".", 1)[0]
    try:
        return validate.check_node_name(name)
    except ValidationError:
        raise ConfigError(f"local node name '{name}' is not a valid node name") from None


class FilesCluster:
    """Cluster view read from /etc/pve under ``paths.root``."""

    def __init__(
        self,
        paths: Paths,
        nodename: str | None = None,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self.paths = paths
        self._nodename = nodename
        self._warn = warn or (lambda msg: print(msg, file=sys.stderr))
        #: create_job's "No replicatable volumes found" check (None skips it), see admin.
        self.list_volumes: admin.VolumeLister | None = None

    def _require_etc_pve(self) -> None:
        if not self.paths.etc_pve.is_dir():
            raise ConfigError(
                f"pve cluster filesystem not online - '{self.paths.etc_pve}' does not exist"
            )

    def local_node(self) -> str:
        return self._nodename or local_nodename()

    def vmlist(self) -> dict[int, GuestLocation]:
        self._require_etc_pve()
        data = _read_json(self.paths.vmlist)
        if data is None:
            return self._scan_guest_configs()
        ids = data.get("ids") if isinstance(data, dict) else None
        if not isinstance(ids, dict):
            raise ConfigError(f"unable to parse '{self.paths.vmlist}' - no 'ids' object")
        result: dict[int, GuestLocation] = {}
        for key, entry in ids.items():
            try:
                vmid = validate.check_vmid(key)
                node = validate.check_node_name(str(entry["node"]))
                kind = entry["type"]
                if kind not in ("qemu", "lxc"):
                    raise ValueError(kind)
            except (ValidationError, KeyError, TypeError, ValueError):
                self._warn(f"ignoring malformed vmlist entry '{key}' in '{self.paths.vmlist}'")
                continue
            version = entry.get("version")
            result[vmid] = GuestLocation(
                vmid, node, kind, version if isinstance(version, int) else None
            )
        return result

    def _scan_guest_configs(self) -> dict[int, GuestLocation]:
        result: dict[int, GuestLocation] = {}
        nodes_dir = self.paths.etc_pve / "nodes"
        if not nodes_dir.is_dir():
            return result
        for node_dir in sorted(nodes_dir.iterdir()):
            if not validate.is_valid_node_name(node_dir.name):
                continue
            for sub, kind in _GUEST_DIRS.items():
                conf_dir = node_dir / sub
                if not conf_dir.is_dir():
                    continue
                for conf in sorted(conf_dir.iterdir()):
                    m = _CONF_NAME.fullmatch(conf.name)
                    if not m or not conf.is_file():
                        continue
                    vmid = int(m.group(1))
                    if vmid in result:
                        other = result[vmid]
                        self._warn(
                            f"guest {vmid} has configs on node '{other.node}' and "
                            f"'{node_dir.name}' - using '{other.node}'"
                        )
                        continue
                    result[vmid] = GuestLocation(vmid, node_dir.name, kind)
        return result

    def members(self) -> dict[str, Member]:
        self._require_etc_pve()
        data = _read_json(self.paths.members)
        if not isinstance(data, dict):
            return {}
        nodelist = data.get("nodelist")
        if not isinstance(nodelist, dict):
            return {}
        result: dict[str, Member] = {}
        for name, info in nodelist.items():
            if not isinstance(info, dict) or not validate.is_valid_node_name(str(name)):
                continue
            ip = info.get("ip")
            ident = info.get("id")
            result[str(name)] = Member(
                name=str(name),
                online=bool(_truthy(info.get("online"))),
                ip=str(ip) if ip else None,
                id=ident if isinstance(ident, int) else None,
            )
        return result

    # --- guests and storages ---
    def guest(self, vmid: int) -> GuestLocation:
        where = self.vmlist().get(vmid)
        if where is None:
            raise NotFoundError(f"Configuration file for guest '{vmid}' does not exist")
        return where

    def guest_config_text(self, where: GuestLocation) -> str:
        path = self.paths.guest_config(where.node, where.type, where.vmid)
        try:
            return path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise NotFoundError(f"Configuration file '{path}' does not exist") from None
        except OSError as err:
            raise ClusterError(f"unable to read '{path}' - {err.strerror}") from None

    def guest_config(self, vmid: int, where: GuestLocation | None = None) -> GuestConfig:
        where = where or self.guest(vmid)
        parsed = parse_guest_config(self.guest_config_text(where), where.type)
        normalise_pending_delete(parsed)
        return GuestConfig(guest=where, config=parsed)

    def storages(self) -> StorageConfig:
        path = self.paths.storage_cfg
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            text = ""
        except OSError as err:
            raise ClusterError(f"unable to read '{path}' - {err.strerror}") from None
        return parse_storage_cfg(text, self._warn, str(path))

    def ha_status(self) -> list[dict[str, Any]]:
        """``GET /cluster/ha/status/current`` built from ``/etc/pve/ha/manager_status`` (the
        entries reconcile reads: quorum, master, one ``service`` entry per HA resource)."""
        try:
            status = json.loads(self.paths.ha_manager_status.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            status = {}
        if not isinstance(status, dict):
            status = {}
        node = self.local_node()
        out: list[dict[str, Any]] = [
            {"id": "quorum", "type": "quorum", "node": node, "status": "OK", "quorate": 1}
        ]
        if status.get("master_node"):
            out.append(
                {
                    "id": "master",
                    "type": "master",
                    "node": status["master_node"],
                    "status": f"{status['master_node']} (active)",
                    "timestamp": status.get("timestamp", 0),
                }
            )
        services = status.get("service_status")
        for sid, svc in sorted((services if isinstance(services, dict) else {}).items()):
            if not isinstance(svc, dict):
                continue
            out.append(
                {
                    "id": f"service:{sid}",
                    "type": "service",
                    "sid": sid,
                    "node": svc.get("node"),
                    "crm_state": svc.get("state"),
                    "state": svc.get("state"),
                    "status": f"{sid} ({svc.get('node')}, {svc.get('state')})",
                }
            )
        return out

    # --- replication jobs: pverep.admin does what PVE's config/status API does ---
    def config_store(self) -> ConfigStore:
        return ConfigStore(self.paths, self._warn)

    def jobs(self) -> list[Job]:
        return admin.list_jobs(self.config_store())

    def job(self, jobid: str) -> tuple[Job, str]:
        cfg = self.config_store().read()
        job = cfg.find(jobid)
        if job is None:
            raise NotFoundError(f"no such replication job '{jobid}'")
        return job, cfg.digest

    def create_job(self, job: Job) -> None:
        jobid = admin.check_jobid_param(job.id)
        options = admin.check_params(
            {
                "target": job.target,
                "schedule": job.schedule,
                "rate": job.rate,
                "comment": job.comment,
                "remove_job": job.remove_job,
                "source": job.source,
            }
        )
        options.pop("target")
        if job.disable:
            options["disable"] = True
        admin.create_job(
            self.config_store(), self, jobid, job.target, options, list_volumes=self.list_volumes
        )

    def update_job(
        self,
        jobid: str,
        changes: Mapping[str, str | float | bool],
        delete: Sequence[str] = (),
        digest: str | None = None,
    ) -> None:
        texts = {k: v for k, v in changes.items() if not isinstance(v, bool)}
        typed = admin.check_params({k: _text(v) for k, v in texts.items()})
        typed.update({k: v for k, v in changes.items() if isinstance(v, bool)})
        admin.update_job(self.config_store(), admin.check_jobid_param(jobid), typed, delete, digest)

    def delete_job(self, jobid: str, *, keep: bool = False, force: bool = False) -> None:
        admin.delete_job(
            self.config_store(), admin.check_jobid_param(jobid), keep=keep, force=force
        )

    # --- this node's job state (node-local: only for the local node) ---
    def _own(self, node: str) -> None:
        if node != self.local_node():
            raise ClusterError(
                f"replication state of node '{node}' is only available on that node "
                "(or through the API)"
            )

    def replication_status(self, node: str, guest: int | None = None) -> list[JobStatus]:
        """``GET /nodes/{node}/replication``; ``state.pid`` is kept only while it runs."""
        self._own(node)
        statuses = admin.load_job_status(
            self.config_store(), StateStore(self.paths), self, get_disabled=True
        )
        out = []
        for st in statuses:
            if guest is not None and st.guest != guest:
                continue
            if st.state.pid is not None and not job_process_running(st.state):
                st = replace(st, state=replace(st.state, pid=None, ptime=None))
            out.append(st)
        return out

    def schedule_now(self, node: str, jobid: str) -> None:
        self._own(node)
        admin.schedule_now(self.config_store(), StateStore(self.paths), jobid)


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip() not in ("", "0")
    return bool(value)


def _read_json(path: Path) -> Any:
    """Parsed JSON of ``path``, or None if the file does not exist."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return None
    except OSError as err:
        raise ConfigError(f"unable to read '{path}' - {err.strerror}") from None
    try:
        return json.loads(text)
    except ValueError as err:
        raise ConfigError(f"unable to parse '{path}' - {err}") from None


def _text(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
