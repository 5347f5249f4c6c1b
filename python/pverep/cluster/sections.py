"""Tolerant readers for the two PVE text formats the cluster backends need.

* section config (storage.cfg): ``type: id`` headers, indented ``key value`` lines;
* guest configs (qemu-server/lxc ``<vmid>.conf``): ``key: value`` lines, ``[PENDING]`` and
  ``[snapname]`` sections, ``#`` lines forming the URI-encoded ``description``.

Pure functions of the text, so both backends (and the fake API) agree by construction on what
a file says.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

_HEADER_RE = re.compile(r"^(\S+):\s*(\S+)\s*$")
_PROP_RE = re.compile(r"^\s+(\S+)(?:\s+(.*\S))?\s*$")
_CONF_LINE_RE = re.compile(r"^([a-z][a-z_\-]*\d*):\s*(.*\S)?\s*$")
_SECTION_RE = re.compile(r"^\[([^\]]+)\]\s*$")

PENDING = "PENDING"


def parse_section_config(text: str) -> list[tuple[str, str, dict[str, str]]]:
    """``[(type, id, {key: value})]`` in file order; a bare key means ``1``."""
    out: list[tuple[str, str, dict[str, str]]] = []
    current: dict[str, str] | None = None
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            if not line.strip():
                current = None
            continue
        if not line[0].isspace():
            m = _HEADER_RE.match(line)
            if m:
                current = {}
                out.append((m[1].lower(), m[2], current))
            else:
                current = None
            continue
        if current is None:
            continue
        m = _PROP_RE.match(line)
        if m and m[1] not in current:
            current[m[1]] = m[2] if m[2] is not None else "1"
    return out


def parse_guest_config(
    text: str,
) -> tuple[dict[str, str], dict[str, str], dict[str, dict[str, str]]]:
    """``(current, pending, snapshots)`` of a qemu/lxc config file."""
    current: dict[str, str] = {}
    pending: dict[str, str] = {}
    snapshots: dict[str, dict[str, str]] = {}
    section = current
    descr: dict[int, list[str]] = {}
    for line in text.splitlines():
        m = _SECTION_RE.match(line)
        if m:
            name = m[1]
            if name == PENDING:
                section = pending
            elif name.startswith("special:"):
                section = {}  # e.g. [special:cloudinit]: not a snapshot, not replicated
            else:
                section = snapshots.setdefault(name, {})
            continue
        if line.startswith("#"):
            descr.setdefault(id(section), []).append(unquote(line[1:]))
            continue
        m = _CONF_LINE_RE.match(line)
        if m and m[2] is not None:
            section[m[1]] = m[2]
    for sect in (current, pending, *snapshots.values()):
        lines = descr.get(id(sect))
        if lines and "description" not in sect:
            sect["description"] = "\n".join(lines)
    return current, pending, snapshots
