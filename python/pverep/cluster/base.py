"""The one interface to the cluster: what pverep needs to know about nodes, guests and jobs.

Two backends implement :class:`Cluster`: ``cluster.files`` reads /etc/pve as pvesr does on a
node, ``cluster.api`` asks the Proxmox REST API (proxmoxer) from anywhere. Everything upstream
(engine, CLI, hooks) holds a ``Cluster`` and never imports a backend; ``cluster.open_cluster``
picks one. Values are plain frozen dataclasses so both backends can be compared field by field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from pverep.errors import PverepError
from pverep.guests import GUEST_TYPES as GUEST_TYPES  # re-exported: the cluster types live here
from pverep.guests import GuestType as GuestType

if TYPE_CHECKING:
    # These live with the config/schedule/guest code that also uses them.
    from pverep.config.jobs import Job
    from pverep.config.storage import StorageConfig
    from pverep.guests import GuestConfig as ParsedConfig
    from pverep.schedule import JobStatus


class ClusterError(PverepError):
    """The cluster could not answer (unknown guest, node offline, backend failure)."""


class NotFoundError(ClusterError):
    """The guest, job, storage or node asked for does not exist."""


class NodeOfflineError(ClusterError):
    """The node that must answer is not reachable (PVE's 595/596)."""


@dataclass(frozen=True)
class GuestLocation:
    """One vmlist entry: guest ``vmid`` is a ``type`` guest whose config lives on ``node``.

    ``version`` (pmxcfs' config version) is informational: the API does not report it, so it
    takes no part in comparisons.
    """

    vmid: int
    node: str
    type: GuestType
    version: int | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Member:
    """One cluster member as in ``.members``' nodelist / ``GET /cluster/status``."""

    name: str
    online: bool
    ip: str | None = None
    id: int | None = None


@dataclass(frozen=True)
class GuestConfig:
    """Where a guest lives and its config as pvesr parses it (``guests.parse_guest_config``:
    current, pending and snapshot sections; descriptions and cloud-init sections left out).

    Pending deletions (``pending["delete"]``) are listed sorted, so a config read from the file
    and one rebuilt from the API compare equal.
    """

    guest: GuestLocation
    config: ParsedConfig

    def replicatable_volumes(self, storages: StorageConfig, *, noerr: bool = False) -> list[str]:
        """The volumes pvesr would replicate (``guests.get_replicatable_volumes``)."""
        from pverep.guests import get_replicatable_volumes

        return get_replicatable_volumes(storages, self.guest.vmid, self.config, noerr=noerr)


def normalise_pending_delete(config: ParsedConfig) -> None:
    """Sort the keys of ``pending["delete"]`` (their order has no meaning)."""
    raw = config.pending.get("delete")
    if raw is not None:
        config.pending["delete"] = ",".join(sorted(k for k in re.split(r"[,;\s]+", raw) if k))


def status_view(status: JobStatus) -> dict[str, object]:
    """The fields of a JobStatus that ``GET /nodes/{node}/replication`` reports (for comparing
    backends: the API does not expose last_iteration, last_node, storeid_list or ptime)."""
    view: dict[str, object] = dict(status.job.to_api())
    view.update(
        vmtype=status.vmtype,
        next_sync=status.next_sync,
        last_sync=status.state.last_sync,
        last_try=status.state.last_try,
        fail_count=status.state.fail_count,
        error=status.state.error,
        duration=status.state.duration,
        pid=status.state.pid,
    )
    return view


#: Keys ``update_job`` accepts (the API's updateSchema without ``id``/``digest``/``delete``).
UPDATABLE_KEYS = ("schedule", "rate", "comment", "disable", "remove_job", "source")


@runtime_checkable
class Cluster(Protocol):
    """Discovery and job control, identical through /etc/pve files and through the API."""

    def local_node(self) -> str:
        """The node this backend speaks for (files: this host; API: the answering node)."""
        ...

    def vmlist(self) -> dict[int, GuestLocation]:
        """Every guest of the cluster by vmid, with its current node and type."""
        ...

    def members(self) -> dict[str, Member]:
        """All cluster nodes by name, with online flag and IP (none outside a cluster)."""
        ...

    def guest_config(self, vmid: int, where: GuestLocation | None = None) -> GuestConfig:
        """The config of a guest, read from the node it currently lives on (``where``, if
        the caller already has the vmlist entry)."""
        ...

    def storages(self) -> StorageConfig:
        """storage.cfg (with PVE's implicit ``local``)."""
        ...

    def ha_status(self) -> list[dict[str, Any]]:
        """``GET /cluster/ha/status/current``: quorum, master, lrm and ``service`` entries
        (``sid``, ``node``, ``state``); files: built from ``/etc/pve/ha/manager_status``."""
        ...

    def jobs(self) -> list[Job]:
        """All replication jobs, sorted by id string (as ``GET /cluster/replication``)."""
        ...

    def job(self, jobid: str) -> tuple[Job, str]:
        """One job and the config digest (for optimistic locking)."""
        ...

    def create_job(self, job: Job) -> None:
        """Create a job; same checks and messages as ``POST /cluster/replication``."""
        ...

    def update_job(
        self,
        jobid: str,
        changes: Mapping[str, str | float | bool],
        delete: Sequence[str] = (),
        digest: str | None = None,
    ) -> None:
        """Change or delete optional keys of a job (``PUT /cluster/replication/{id}``)."""
        ...

    def delete_job(self, jobid: str, *, keep: bool = False, force: bool = False) -> None:
        """Mark a job for removal, or drop it at once with ``force``."""
        ...

    def replication_status(self, node: str, guest: int | None = None) -> list[JobStatus]:
        """``job_status`` as seen by ``node`` (jobs whose guest lives there, disabled too)."""
        ...

    def schedule_now(self, node: str, jobid: str) -> None:
        """Make a job due at the next run on ``node``."""
        ...
