"""Guest discovery over the Cluster interface: each guest with its node, type, replicatable
volumes (PVE's rules, ``guests.get_replicatable_volumes``) and replication jobs.

Works the same through the files backend and the API backend; ``pverep guests``, the benches
and the backend agreement tests use it.
"""

from __future__ import annotations

from dataclasses import dataclass

from pverep.cluster.base import Cluster, GuestLocation
from pverep.errors import PverepError


@dataclass(frozen=True)
class GuestInfo:
    """One guest as discovered: ``volumes`` is empty and ``error`` set when PVE would refuse to
    replicate it (e.g. ``unable to replicate local file/device '/dev/sdb'``)."""

    location: GuestLocation
    volumes: tuple[str, ...] = ()
    jobs: tuple[str, ...] = ()
    error: str | None = None

    @property
    def vmid(self) -> int:
        return self.location.vmid

    def to_api(self) -> dict[str, object]:
        out: dict[str, object] = {
            "vmid": self.vmid,
            "type": self.location.type,
            "node": self.location.node,
            "volumes": list(self.volumes),
            "jobs": list(self.jobs),
        }
        if self.error is not None:
            out["error"] = self.error
        return out


def discover_guests(cluster: Cluster, node: str | None = None) -> list[GuestInfo]:
    """Every guest (or those on ``node``), sorted by vmid."""
    storages = cluster.storages()
    jobs: dict[int, list[str]] = {}
    for job in cluster.jobs():
        jobs.setdefault(job.guest, []).append(job.id)
    out = []
    for vmid, where in sorted(cluster.vmlist().items()):
        if node is not None and where.node != node:
            continue
        config = cluster.guest_config(vmid, where)
        try:
            volumes, error = tuple(config.replicatable_volumes(storages)), None
        except PverepError as err:
            volumes, error = (), str(err).splitlines()[0]
        out.append(GuestInfo(where, volumes, tuple(jobs.get(vmid, ())), error))
    return out
