"""Cluster discovery and job control behind one interface (see ``cluster.base``).

``open_cluster`` is the one place that chooses a backend; nothing upstream imports one.
"""

from __future__ import annotations

from pverep.apiconfig import ApiSettings
from pverep.cluster.base import Cluster
from pverep.paths import Paths


def open_cluster(settings: ApiSettings, paths: Paths) -> Cluster:
    """The files backend on a node, the API backend for anything else."""
    if settings.backend == "files":
        from pverep.cluster.files import FilesCluster

        return FilesCluster(paths)
    # Imported lazily: proxmoxer and requests load only when the API is used.
    from pverep.cluster.api import ApiCluster

    return ApiCluster(settings)
