"""The replication transport from ``/etc/pve/datacenter.cfg`` (spec §1.6).

``replication: [type=]<secure|insecure>[,network=<CIDR>]`` wins if present at all (pve-guest-common
6.0.1); otherwise ``migration:`` with the same syntax; default secure without network.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from pverep.errors import ConfigError


@dataclass(frozen=True)
class TransportSetting:
    insecure: bool = False
    network: str | None = None


def _parse_value(key: str, value: str) -> TransportSetting:
    insecure = False
    network: str | None = None
    for part in (p.strip() for p in value.split(",") if p.strip()):
        name, sep, val = part.partition("=")
        if not sep:
            name, val = "type", part
        if name == "type" and val in ("secure", "insecure"):
            insecure = val == "insecure"
        elif name == "network":
            if val:
                try:
                    ipaddress.ip_network(val, strict=False)
                except ValueError:
                    raise ConfigError(
                        f"datacenter.cfg: invalid network '{val}' in '{key}'"
                    ) from None
            network = val or None
        else:
            raise ConfigError(f"datacenter.cfg: invalid value '{part}' in '{key}'")
    return TransportSetting(insecure, network)


def parse_transport(text: str) -> TransportSetting:
    found: dict[str, str] = {}
    for line in text.splitlines():
        # (blank and comment lines have no "replication:" or "migration:" key)
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("replication", "migration"):
            found[key.strip()] = value.strip()
    if "replication" in found:
        return _parse_value("replication", found["replication"])
    if "migration" in found:
        return _parse_value("migration", found["migration"])
    return TransportSetting()


def read_transport(path: Path) -> TransportSetting:
    try:
        return parse_transport(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return TransportSetting()
