"""The cluster as pvesr sees it: the local node's name, where each guest lives (the vmlist) and
which nodes are members and online. ``files.FilesCluster`` reads it from /etc/pve; an
API-backed implementation can provide the same ``Cluster`` protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

GuestType = Literal["qemu", "lxc"]


@dataclass(frozen=True)
class GuestLocation:
    """One vmlist entry: guest ``vmid`` is a ``type`` guest whose config lives on ``node``."""

    vmid: int
    node: str
    type: GuestType
    version: int | None = None


@dataclass(frozen=True)
class Member:
    """One cluster member as in ``.members``' nodelist."""

    name: str
    online: bool
    ip: str | None = None
    id: int | None = None


class Cluster(Protocol):
    def local_node(self) -> str: ...

    def vmlist(self) -> dict[int, GuestLocation]: ...

    def members(self) -> dict[str, Member]: ...
