"""The guest hookscript on a snippets storage (``pverep install-hookscript``).

PVE runs a guest's hookscript from a volume ``<storeid>:snippets/<name>``, i.e. the file
``<storage path>/snippets/<name>`` on the node where the guest starts. The script itself is the
one the package ships (``/usr/share/pverep/pverep-hookscript``; in a checkout ``hooks/``). A
file that is not pverep's hookscript is never overwritten or removed, and the script is not
removed while a guest still names it (PVE refuses to start a guest whose hookscript is missing).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pverep.atomic import atomic_write
from pverep.cluster.base import Cluster
from pverep.config.storage import FILE_TYPES, StorageConfig
from pverep.errors import PverepError
from pverep.paths import SHIPPED_HOOKSCRIPT, Paths
from pverep.validate import check_snippet_name, check_storage_id

DEFAULT_STORAGE = "local"
DEFAULT_NAME = "pverep-hookscript"
#: Every version of pverep's hookscript says this in its first lines.
_MARKER = b"pverep guest hookscript"
#: A checkout's copy, for running pverep from the source tree.
_CHECKOUT_SCRIPT = Path(__file__).resolve().parents[2] / "hooks" / DEFAULT_NAME


@dataclass(frozen=True)
class Snippet:
    storeid: str
    name: str
    #: The file on this node.
    path: Path
    shared: bool

    @property
    def volid(self) -> str:
        return f"{self.storeid}:snippets/{self.name}"


def locate(paths: Paths, storages: StorageConfig, storeid: str, name: str, node: str) -> Snippet:
    """Where snippet ``name`` of storage ``storeid`` lives on ``node``; the storage must be
    enabled there, file-based, and allow the ``snippets`` content type."""
    check_storage_id(storeid)
    check_snippet_name(name)
    scfg = storages.check_enabled(storeid, node)
    if scfg.type not in FILE_TYPES or not scfg.path:
        raise PverepError(f"storage '{storeid}' (type {scfg.type}) cannot hold snippets")
    if "snippets" not in scfg.content:
        content = ",".join(sorted(scfg.content | {"snippets"}))
        raise PverepError(
            f"storage '{storeid}' does not allow snippets - enable them with "
            f"'pvesm set {storeid} --content {content}'"
        )
    path = paths.root / scfg.path.lstrip("/") / "snippets" / name
    return Snippet(storeid, name, path, scfg.shared)


def shipped_script() -> bytes:
    """The hookscript to install: the package's, else the checkout's."""
    for candidate in (SHIPPED_HOOKSCRIPT, _CHECKOUT_SCRIPT):
        try:
            return candidate.read_bytes()
        except FileNotFoundError:
            continue
        except OSError as err:
            raise PverepError(f"cannot read '{candidate}': {err.strerror}") from None
    raise PverepError(f"pverep's hookscript is missing: '{SHIPPED_HOOKSCRIPT}'")


def _is_ours(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            head = fh.read(512)
    except OSError as err:
        raise PverepError(f"cannot read '{path}': {err.strerror}") from None
    return _MARKER in head


def install(snippet: Snippet, script: bytes) -> bool:
    """Write the hookscript (0755); False when it was already there, unchanged."""
    if snippet.path.exists():
        if not _is_ours(snippet.path):
            raise PverepError(f"'{snippet.path}' exists and is not pverep's hookscript")
        if snippet.path.read_bytes() == script:
            return False
    try:
        snippet.path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        atomic_write(snippet.path, script, 0o755)
    except OSError as err:
        raise PverepError(f"cannot write '{snippet.path}': {err.strerror}") from None
    return True


def users(cluster: Cluster, volid: str) -> list[tuple[int, str]]:
    """(vmid, vmtype) of every guest in the cluster whose hookscript is ``volid``."""
    found: list[tuple[int, str]] = []
    for vmid, where in sorted(cluster.vmlist().items()):
        if cluster.guest_config(vmid, where).config.current.get("hookscript") == volid:
            found.append((vmid, where.type))
    return found


def set_command(vmid: int | str, vmtype: str, volid: str | None) -> str:
    """The ``qm set`` / ``pct set`` line that attaches (or, with None, detaches) a hookscript."""
    tool = "pct" if vmtype == "lxc" else "qm"
    what = f"--hookscript {volid}" if volid else "--delete hookscript"
    return f"{tool} set {vmid} {what}"


def uninstall(snippet: Snippet, in_use: list[tuple[int, str]]) -> bool:
    """Remove the hookscript; False when it was not there. Refused while guests use it."""
    if not snippet.path.exists():
        return False
    if not _is_ours(snippet.path):
        raise PverepError(f"'{snippet.path}' is not pverep's hookscript - not removing it")
    if in_use:
        first = "; ".join(set_command(vmid, kind, None) for vmid, kind in in_use)
        raise PverepError(
            f"guests still use '{snippet.volid}' and would not start without it - "
            f"detach it first: {first}"
        )
    try:
        snippet.path.unlink()
    except OSError as err:
        raise PverepError(f"cannot remove '{snippet.path}': {err.strerror}") from None
    return True
