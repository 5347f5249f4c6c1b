"""What the node's ``zfs`` can do, asked from the tool itself (never guessed from a version).

``zfs send`` and ``zfs receive`` without arguments print their usage (exit status 2). The
flag clusters in it (``send [-DLPbcehnpsVvw] …``, ``receive [-vMnsFhu] … [-x <property>]``,
``receive -A <filesystem|volume>``, ``send … -t <receive_resume_token>``) say which stream
features this build has: zfs-fuse 0.7 prints ``send [-RDp] …`` and ``receive [-vnF] …`` (no
resume, no raw, no ``-x``), OpenZFS 2.3 has resume (``send -t``, ``recv -s``/``-A``), raw
sends (``-w``) and ``-x``; Proxmox's zfsutils ≥ 2.4.1-pve2 add ``send -U``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pverep.atomic import atomic_write
from pverep.errors import PverepError
from pverep.transport.base import Shell

#: One bracketed cluster of single-letter flags in a usage line: ``[-RDp]``.
_CLUSTER_RE = re.compile(r"\[-([A-Za-z]+)\]")
#: The helper-call timeout for the two probes (they print and exit at once).
PROBE_TIMEOUT = 10.0


@dataclass(frozen=True)
class ZfsCaps:
    """Stream features of one node's ``zfs``. All False: zfs-fuse / unknown (pvesr's form)."""

    send_resume: bool = False  # zfs send -t <token>
    recv_resumable: bool = False  # zfs recv -s (keep partial state)
    recv_abort: bool = False  # zfs recv -A (discard partial state)
    send_raw: bool = False  # zfs send -w (encrypted blocks as they are on disk)
    send_no_preserve_encryption: bool = False  # zfs send -U (Proxmox's zfsutils)
    recv_exclude: bool = False  # zfs recv -x <property>
    send_dry_run: bool = False  # zfs send -nvP (parsable size estimate)

    @property
    def resume_target(self) -> bool:
        """A receiver that can keep, report and discard partial state."""
        return self.recv_resumable and self.recv_abort

    def to_json(self) -> dict[str, bool]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: Any) -> ZfsCaps:
        """Tolerant: unknown keys are ignored, anything that is not ``true`` counts as no."""
        if not isinstance(doc, dict):
            return cls()
        known = cls.__dataclass_fields__
        return cls(**{k: v is True for k, v in doc.items() if k in known})


def _usage_lines(text: str, verbs: tuple[str, ...]) -> list[str]:
    """Usage lines of ``verbs``, with their continuation lines joined on."""
    lines: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        first = line.split(" ", 1)[0]
        if first in verbs:
            lines.append(line)
        elif lines and line.startswith(("[", "<", "-")):
            lines[-1] += " " + line
    return lines


def _letters(lines: list[str]) -> set[str]:
    return {ch for line in lines for cluster in _CLUSTER_RE.findall(line) for ch in cluster}


def parse_caps(send_usage: str, recv_usage: str) -> ZfsCaps:
    """Capabilities from the usage texts of ``zfs send`` and ``zfs receive``."""
    send = _usage_lines(send_usage, ("send",))
    recv = _usage_lines(recv_usage, ("receive", "recv"))
    send_flags = _letters(send)
    recv_flags = _letters(recv)
    return ZfsCaps(
        send_resume=any(re.search(r"(^|\s)-t\s", line) for line in send),
        recv_resumable="s" in recv_flags,
        recv_abort=any(re.search(r"(^|\s)-A(\s|$)", line) for line in recv),
        send_raw="w" in send_flags,
        send_no_preserve_encryption="U" in send_flags,
        recv_exclude=any("-x" in line for line in recv),
        send_dry_run={"n", "P"} <= send_flags,
    )


def _usage(shell: Shell, verb: str) -> str:
    result = shell.run(["zfs", verb], timeout=PROBE_TIMEOUT)
    return (result.stdout + result.stderr).decode("utf-8", "replace")


def probe_caps(shell: Shell) -> ZfsCaps:
    """Ask the node's ``zfs`` (two calls that only print usage). A tool that cannot be asked
    counts as having nothing: pvesr's stream is always the safe answer."""
    try:
        return parse_caps(_usage(shell, "send"), _usage(shell, "receive"))
    except (PverepError, OSError):
        return ZfsCaps()


_CACHE: dict[str, ZfsCaps] = {}


def binary_identity(name: str = "zfs") -> str | None:
    """Which ``zfs`` this node runs: path, inode, size and mtime of the binary on PATH (None:
    not found). An upgrade changes it, and with it the cached answer."""
    path = shutil.which(name)
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return f"{os.path.realpath(path)}:{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


def local_caps(shell: Shell, cache: Path | None = None) -> ZfsCaps:
    """``probe_caps`` of this node's zfs, once per process and, with ``cache`` (a file under
    /run), once per binary: every import would otherwise pay two zfs calls before its
    stream could start (0.2-0.5 s each on an emulated node). The file holds only what the
    tool said, so concurrent writers write the same bytes (atomically) and need no lock."""
    caps = _CACHE.get(shell.node)
    if caps is not None:
        return caps
    ident = binary_identity() if cache is not None else None
    if cache is not None and ident is not None:
        caps = _read_cache(cache, ident)
    if caps is None:
        caps = probe_caps(shell)
        if cache is not None and ident is not None:
            _write_cache(cache, ident, caps)
    _CACHE[shell.node] = caps
    return caps


def _read_cache(cache: Path, ident: str) -> ZfsCaps | None:
    try:
        doc = json.loads(cache.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("binary") != ident:
        return None
    return ZfsCaps.from_json(doc.get("caps"))


def _write_cache(cache: Path, ident: str, caps: ZfsCaps) -> None:
    data = json.dumps({"binary": ident, "caps": caps.to_json()}, sort_keys=True) + "\n"
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(cache, data.encode())
    except OSError:
        pass  # a cache that cannot be written only costs the next process two calls
