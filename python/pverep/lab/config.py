"""Where a lab lives and what it is called: lab dir, node names, subnet, bridge, cgroup.

Several labs run side by side on one machine (one per developer or checkout), so every name
that lives in the host's global namespaces (bridge, veths, subnet, cgroup) is allocated per lab
at ``up`` and recorded in ``LAB_DIR/lab.json``; every later command reads it from there.
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pverep.errors import PverepError

DIR_ENV = "PVEREP_LAB_DIR"
#: Default lab: outside /tmp because /tmp is private inside the nodes (the vdevs must be visible).
DEFAULT_DIR = Path("/var/tmp/pverep-lab")
#: Labs get 10.213.X.0/24 with X from this range (lab.sh's default 10.213.7 is left alone).
NET_PREFIX = "10.213"
NET_RANGE = range(16, 250)
NODE_PREFIX = "pve"
MAX_NODES = 50
DOMAIN = "lab.local"
CLUSTER_NAME = "labcluster"
POOL = "rpool"
POOL_SIZE = 512 * 1024 * 1024  # sparse file vdev (zfs-fuse needs at least 64M)
ARC_MB = 64  # zfs-fuse max-arc-size per node daemon
CONFIG_FILE = "lab.json"
ENGINES = ("fuse", "openzfs")
_NODE_RE = re.compile(rf"^{NODE_PREFIX}([1-9][0-9]?)$")
#: Host dirs each node covers with a mount of its own (nodeinit): per node (a tmpfs or a dir in
#: the node dir; /var/run and /var/lock are symlinks into /run) ...
NODE_PRIVATE_DIRS = (
    "/run",
    "/tmp",
    "/var/lib/zfs",
    "/etc/zfs",
    "/etc/ssh",
    "/root/.ssh",
    "/var/lib/pve-manager",
    "/var/log/pve",
    "/var/lib/vz",
)
#: ... and per lab: the shared /etc/pve, and the node's own pool at /rpool.
NODE_SHARED_DIRS = ("/etc/pve", f"/{POOL}")


class LabError(PverepError):
    """The lab cannot do what was asked (not running, bad node name, host lacks a tool...)."""


def default_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """``--dir`` wins, then ``$PVEREP_LAB_DIR``, then the one default lab."""
    chosen = Path(explicit or os.environ.get(DIR_ENV) or DEFAULT_DIR)
    return validate_dir(chosen)


def validate_dir(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    if path == Path("/") or path.parent == Path("/"):
        raise LabError(f"lab dir {path} is too close to / (use something like /var/tmp/NAME)")
    covering = covering_dir(str(path), NODE_PRIVATE_DIRS + NODE_SHARED_DIRS)
    if covering is not None:
        # the nodes would not see the pool files, scripts and shared /etc/pve kept there
        raise LabError(f"lab dir {path} must not be under {covering} (the lab nodes mount over it)")
    return path


def covering_dir(path: str, dirs: tuple[str, ...]) -> str | None:
    """The one of ``dirs`` that ``path`` is or lies under, as written or resolved."""
    return lexically_under(os.path.abspath(path), dirs) or lexically_under(
        os.path.realpath(path), dirs
    )


def lexically_under(path: str, dirs: tuple[str, ...]) -> str | None:
    """The one of ``dirs`` that the absolute ``path`` is or lies under, symlinks not followed."""
    for top in dirs:
        if path == top or path.startswith(top + "/"):
            return top
    return None


def node_name(index: int) -> str:
    return f"{NODE_PREFIX}{index}"


def node_index(node: str) -> int:
    match = _NODE_RE.match(node)
    if not match:
        raise LabError(
            f"bad node name {node!r} (expected {NODE_PREFIX}1..{NODE_PREFIX}{MAX_NODES})"
        )
    return int(match.group(1))


@dataclass(frozen=True)
class LabConfig:
    """Everything ``up`` decided about one lab; saved as ``LAB_DIR/lab.json``."""

    dir: Path
    nodes: tuple[str, ...]
    net_index: int
    python: str = field(default_factory=lambda: sys.executable)
    #: "fuse" (namespaces + zfs-fuse) or "openzfs" (QEMU/TCG guests, pverep.lab.openzfs)
    engine: str = "fuse"

    # --- names in the host's global namespaces, all derived from net_index ---
    @property
    def subnet(self) -> str:
        return f"{NET_PREFIX}.{self.net_index}"

    @property
    def bridge(self) -> str:
        return f"pvelab{self.net_index}"

    @property
    def host_ip(self) -> str:
        return f"{self.subnet}.1"

    @property
    def cgroup_name(self) -> str:
        return f"pverep-lab-{self.net_index}"

    def veth(self, node: str) -> str:
        return f"pvl{self.net_index}-{node}"  # at most 12 characters (limit 15)

    def node_ip(self, node: str) -> str:
        self.check_node(node)
        return f"{self.subnet}.{10 + node_index(node)}"

    def check_node(self, node: str) -> str:
        if node not in self.nodes:
            raise LabError(f"no node {node!r} in this lab (nodes: {', '.join(self.nodes)})")
        return node

    # --- paths inside the lab dir ---
    def node_dir(self, node: str) -> Path:
        return self.dir / "nodes" / node

    @property
    def etc_pve(self) -> Path:
        return self.dir / "etc-pve"

    @property
    def bin_dir(self) -> Path:
        """Node-visible helper scripts (``pverep`` wrapper, ``zfs`` compat shim)."""
        return self.dir / "bin"

    @property
    def cut_file(self) -> Path:
        return self.dir / "cut"

    def cut_nodes(self) -> set[str]:
        try:
            return {n for n in self.cut_file.read_text().split() if n in self.nodes}
        except FileNotFoundError:
            return set()

    # --- persistence ---
    def save(self) -> None:
        data = asdict(self)
        data["dir"] = str(self.dir)
        data["nodes"] = list(self.nodes)
        write_atomic(self.dir / CONFIG_FILE, json.dumps(data, indent=1) + "\n")

    @classmethod
    def load(cls, lab_dir: Path) -> LabConfig:
        path = lab_dir / CONFIG_FILE
        try:
            data = json.loads(path.read_text())
            return cls(
                dir=Path(data["dir"]),
                nodes=tuple(str(n) for n in data["nodes"]),
                net_index=int(data["net_index"]),
                python=str(data["python"]),
                engine=str(data.get("engine", "fuse")),
            )
        except FileNotFoundError:
            raise LabError(f"lab {lab_dir} is down (run: pverep lab up)") from None
        except (ValueError, KeyError, TypeError) as err:
            raise LabError(f"{path} is damaged ({err}); run: pverep lab down") from None


def write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    tmp.chmod(mode)
    tmp.replace(path)
