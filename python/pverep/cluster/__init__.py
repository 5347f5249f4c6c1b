"""The cluster as pverep sees it, behind one interface (``cluster.base.Cluster``): the local
node's name, where each guest lives (the vmlist), which nodes are members and online, guest
configs, storages and replication jobs. ``files.FilesCluster`` reads /etc/pve as pvesr does,
``api.ApiCluster`` asks the Proxmox API; ``open_cluster`` is the one place that picks one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pverep.cluster.base import (
    GUEST_TYPES,
    Cluster,
    ClusterError,
    GuestConfig,
    GuestLocation,
    GuestType,
    Member,
    NodeOfflineError,
    NotFoundError,
)

if TYPE_CHECKING:
    from pverep.apiconfig import ApiSettings
    from pverep.paths import Paths

__all__ = [
    "GUEST_TYPES",
    "Cluster",
    "ClusterError",
    "GuestConfig",
    "GuestLocation",
    "GuestType",
    "Member",
    "NodeOfflineError",
    "NotFoundError",
    "open_cluster",
]


def open_cluster(settings: ApiSettings, paths: Paths) -> Cluster:
    """The files backend on a node, the API backend for anything else."""
    if settings.backend == "files":
        from pverep.cluster.files import FilesCluster

        return FilesCluster(paths)
    # Imported lazily: proxmoxer and requests load only when the API is used.
    from pverep.cluster.api import ApiCluster

    return ApiCluster(settings)
