"""The HA manager's view (``/etc/pve/ha/manager_status``) and the transitions worth reacting to.

pmxcfs raises no inotify events for changes made on other nodes, so the watcher polls this file;
everything here is pure (text in, data out).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

#: HA service states during which the guest's config may still move: reconcile waits.
TRANSIENT = frozenset({"fence", "recovery", "migrate", "relocate"})

_SID = re.compile(r"^(vm|ct):([1-9][0-9]{2,8})$")


@dataclass(frozen=True)
class HaService:
    vmid: int
    sid: str
    state: str
    node: str

    @property
    def transient(self) -> bool:
        return self.state in TRANSIENT


def parse_manager_status(text: str) -> dict[int, HaService]:
    """vmid → service entry; an unreadable or empty file means "no HA information"."""
    try:
        data = json.loads(text) if text.strip() else {}
    except ValueError:
        return {}
    services = data.get("service_status") if isinstance(data, dict) else None
    if not isinstance(services, dict):
        return {}
    out: dict[int, HaService] = {}
    for sid, entry in services.items():
        m = _SID.match(str(sid))
        if not m or not isinstance(entry, dict):
            continue
        vmid = int(m.group(2))
        out[vmid] = HaService(
            vmid, str(sid), str(entry.get("state", "")), str(entry.get("node", ""))
        )
    return out


def parse_ha_status(items: Iterable[Mapping[str, object]]) -> dict[int, HaService]:
    """vmid → service entry from ``GET /cluster/ha/status/current`` (the API's view of the same
    file: ``service`` entries with ``sid``, ``node`` and the verbose ``state``)."""
    out: dict[int, HaService] = {}
    for item in items:
        if item.get("type") != "service":
            continue
        m = _SID.match(str(item.get("sid", "")))
        if not m:
            continue
        vmid = int(m.group(2))
        state = item.get("state", item.get("crm_state", ""))
        out[vmid] = HaService(vmid, m.group(0), str(state or ""), str(item.get("node") or ""))
    return out


def recovered_here(
    before: Mapping[int, HaService], after: Mapping[int, HaService], node: str
) -> list[int]:
    """Guests that just became ``started`` on ``node`` after a recovery or a move: the moments a
    relocated guest's jobs need repair (recovery → started, or started on another node)."""
    out = []
    for vmid, now in sorted(after.items()):
        if now.node != node or now.state != "started":
            continue
        prev = before.get(vmid)
        if prev is None or prev.state != "started" or prev.node != now.node:
            out.append(vmid)
    return out
