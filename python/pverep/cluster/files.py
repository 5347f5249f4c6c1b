"""The cluster view from the files pmxcfs provides under /etc/pve (what pvesr reads).

* local node: ``$PVEREP_NODENAME`` (tests, the lab) or the short host name, like PVE's nodename;
* vmlist: ``/etc/pve/.vmlist`` (pmxcfs' JSON); without it (a plain directory standing in for
  pmxcfs) the guest configs ``nodes/<node>/{qemu-server,lxc}/<vmid>.conf`` are scanned;
* members: ``/etc/pve/.members`` (``nodelist``); a node that is not in a cluster has none.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pverep import validate
from pverep.cluster import GuestLocation, GuestType, Member
from pverep.errors import ConfigError, ValidationError
from pverep.paths import Paths

NODENAME_ENV = "PVEREP_NODENAME"

_CONF_NAME = re.compile(r"([1-9]\d*)\.conf")
_GUEST_DIRS: dict[str, GuestType] = {"qemu-server": "qemu", "lxc": "lxc"}


def local_nodename() -> str:
    """``$PVEREP_NODENAME`` or the host name up to the first dot."""
    name = os.environ.get(NODENAME_ENV) or socket.gethostname().split(".", 1)[0]
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
