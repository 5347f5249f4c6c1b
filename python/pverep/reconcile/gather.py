"""Builds the ClusterView reconcile plans on: /etc/pve (files backend), this node's state file,
the guests' local snapshots (read only) and, over ssh, what the targets hold (read only).

Remote calls carry a deadline: the hookscript must finish within its bound even when a target
is unreachable, and an offline member is not even tried.

A target running stock Proxmox VE (engine.peerkind: the ``[peers]`` override, else the
``pverep peer-info`` probe, asked once per pass) has no ``pverep replica-info``: what it holds
is read with the very ``zfs list`` argv PVE's ZFS storage plugin runs (storage/zfs.py), read
only; whether the guest lives there comes from the cluster's vmlist, the file that node's own
answer would come from.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from pverep._core import SnapshotInfo
from pverep.cluster.files import FilesCluster
from pverep.config.jobs import ConfigStore, Job
from pverep.config.state import JobState, StateStore
from pverep.config.storage import StorageConfig, read_storage_cfg
from pverep.engine.peerkind import PeerSetting, decide_peer_kind, read_peer_settings
from pverep.engine.remote import TargetNode
from pverep.errors import PverepError
from pverep.guests import get_replicatable_volumes, parse_guest_config
from pverep.paths import Paths
from pverep.reconcile.ha import HaService, parse_manager_status
from pverep.reconcile.model import ClusterView, GuestFacts, ReplicaSet
from pverep.reconcile.planner import effective_jobs
from pverep.reconcile.target import list_replicas, parse_replica_info, zfs_storages
from pverep.storage.clones import spelled_keys
from pverep.storage.volumes import Volumes
from pverep.storage.zfs import ZfsRunner
from pverep.transport.base import CommandResult, Shell
from pverep.transport.local import LocalShell
from pverep.transport.peer import PeerKind
from pverep.transport.ssh import SshShell, SshTarget

#: argv of pverep on the other nodes (same as the engine's PeerCommands default)
PVEREP = ("pverep",)


def _stderr_sink(msg: str) -> None:
    import sys

    print(msg, file=sys.stderr, flush=True)


@dataclass
class Node:
    """This node's access to the cluster, with a deadline for everything remote."""

    paths: Paths
    cluster: FilesCluster
    local_node: str
    deadline: float | None = None  # time.monotonic() value; None = no bound
    remote_timeout: float = 60.0
    warn: Callable[[str], None] = field(default=_stderr_sink)
    #: pverep or stock per other node, decided once per pass (``peer_kind``)
    peer_kinds: dict[str, PeerKind] = field(default_factory=dict)
    _peer_errors: dict[str, str] = field(default_factory=dict)  # asked once, also when it fails
    _peer_settings: dict[str, PeerSetting] | None = None

    def storage(self) -> StorageConfig:
        return read_storage_cfg(str(self.paths.storage_cfg), warn=self.warn)

    def volumes(self) -> Volumes:
        return Volumes(self.storage(), ZfsRunner(LocalShell(self.local_node)))

    def timeout(self) -> float:
        if self.deadline is None:
            return self.remote_timeout
        return max(0.5, min(self.remote_timeout, self.deadline - time.monotonic()))

    def expired(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def shell(self, node: str) -> Shell:
        if node == self.local_node:
            return LocalShell(node)
        member = self.cluster.members().get(node)
        if member is None or not member.ip:
            raise PverepError(f"no IP address for node '{node}'")
        return SshShell(SshTarget.for_node(self.paths, node, member.ip), multiplex=False)

    def peer_kind(self, node: str) -> PeerKind:
        """``"pverep"`` or ``"pve"`` (stock Proxmox VE) for ``node``; this node runs pverep."""
        if node == self.local_node:
            return "pverep"
        known = self.peer_kinds.get(node)
        if known is not None:
            return known
        if node in self._peer_errors:
            raise PverepError(self._peer_errors[node])
        if self._peer_settings is None:
            self._peer_settings = read_peer_settings(self.paths.pverep_conf)
        if self.expired():
            raise PverepError("time bound reached")
        try:
            known = decide_peer_kind(
                node, self.shell(node), self._peer_settings, timeout=self.timeout()
            )
        except OSError as err:
            self._peer_errors[node] = f"{node}: cannot run ssh: {err.strerror}"
            raise PverepError(self._peer_errors[node]) from None
        except PverepError as err:
            self._peer_errors[node] = str(err)
            raise
        self.peer_kinds[node] = known
        return known

    def run_remote(self, node: str, argv: Sequence[str]) -> CommandResult:
        """``argv`` on ``node`` within the deadline; raises on failure."""
        if self.expired():
            raise PverepError("time bound reached")
        shell = self.shell(node)
        try:
            result = shell.run(argv, timeout=self.timeout())
        except OSError as err:
            raise PverepError(f"{node}: cannot run {argv[0]}: {err.strerror}") from None
        if result.returncode != 0:
            tail = result.stderr_tail()
            raise PverepError(
                f"{node}: {' '.join(argv[:2])} failed: "
                + (tail[-1] if tail else f"exit code {result.returncode}")
            )
        return result

    def run_pverep(self, node: str, argv: Sequence[str]) -> CommandResult:
        """``pverep <argv>`` on ``node`` (a pverep node) within the deadline."""
        return self.run_remote(node, [*PVEREP, *argv])

    def remote_volumes(self, node: str) -> Volumes:
        """``node``'s volumes through zfs over ssh (reads only: what stock has, too)."""
        return Volumes(self.storage(), ZfsRunner(self.shell(node), timeout=self.timeout()))


def zfs_storages_by_node(
    storage: StorageConfig, nodes: Sequence[str]
) -> dict[str, tuple[str, ...]]:
    return {
        node: tuple(
            sorted(
                sid
                for sid, scfg in storage.storages.items()
                if scfg.replicatable and not scfg.disabled and scfg.available_on(node)
            )
        )
        for node in nodes
    }


def read_ha(paths: Paths) -> dict[int, HaService]:
    try:
        return parse_manager_status(paths.ha_manager_status.read_text(encoding="utf-8"))
    except OSError:
        return {}


def _guest_facts(node: Node, storage: StorageConfig, vmid: int, vmtype: str) -> GuestFacts:
    path = node.paths.guest_config(node.local_node, vmtype, vmid)
    try:
        conf = parse_guest_config(path.read_text(encoding="utf-8"), vmtype)  # type: ignore[arg-type]
        volids = tuple(get_replicatable_volumes(storage, vmid, conf))
        cleanup = tuple(get_replicatable_volumes(storage, vmid, conf, cleanup=True, noerr=True))
        volumes = node.volumes()
        local = {v: volumes.snapshot_info(v) for v in volids}
    except (OSError, PverepError) as err:
        return GuestFacts(vmid, node.local_node, (), (), error=str(err))
    return GuestFacts(
        vmid=vmid,
        node=node.local_node,
        volids=volids,
        cleanup_volids=cleanup,
        parent=conf.parent,
        config_snapshots=frozenset(conf.snapshots),
        local_snapshots=local,
    )


def _needs_replicas(eff: Job, orig: Job, state: JobState | None, node: str) -> bool:
    if eff.remove_job is not None or eff.disable or eff.target == node:
        return False
    relocated = bool(orig.source) and orig.source != node
    return relocated or state is None or state.last_sync == 0


def query_replicas(node: Node, target: str, vmid: int, scan: Sequence[str]) -> ReplicaSet:
    member = node.cluster.members().get(target)
    if member is None or not member.online:
        return ReplicaSet(target, vmid, None, error="offline")
    try:
        if node.peer_kind(target) == "pve":
            local, volumes = _stock_replicas(node, target, vmid, scan)
        else:
            argv = ["replica-info", str(vmid)]
            if scan:
                argv += ["--scan", ",".join(scan)]
            result = node.run_pverep(target, argv)
            local, volumes = parse_replica_info(result.stdout_text)
    except PverepError as err:
        return ReplicaSet(target, vmid, None, error=str(err))
    return ReplicaSet(target, vmid, volumes, guest_local=local)


def _stock_replicas(
    node: Node, target: str, vmid: int, scan: Sequence[str]
) -> tuple[bool, dict[str, list[SnapshotInfo]]]:
    """What ``replica-info`` answers, read from a stock node with zfs list only."""

    def guest_node(v: int) -> str | None:
        where = node.cluster.vmlist().get(v)
        return where.node if where is not None else None

    if guest_node(vmid) == target:
        return True, {}  # a pverep node answers so, too: nothing of a guest living there
    side = TargetNode(
        node=target,
        storage=node.storage(),
        volumes=node.remote_volumes(target),
        guest_node=guest_node,
        log=lambda _line: None,
    )
    return False, list_replicas(side, vmid, scan or zfs_storages(side))


def _spelled_as_guest(replicas: ReplicaSet, facts: GuestFacts) -> ReplicaSet:
    """Replicas of linked clones under the clone volids the guest config uses (a target lists
    them as plain volumes; storage/clones.py), so the planner compares like with like."""
    if replicas.volumes is None:
        return replicas
    wanted = (*facts.volids, *facts.cleanup_volids)
    return replace(replicas, volumes=spelled_keys(replicas.volumes, wanted))


def gather_view(node: Node, only_vmid: int | None = None) -> ClusterView:
    jobs = ConfigStore(node.paths, node.warn).read()
    job_list = [jobs.jobs[i] for i in jobs.sorted_ids()]
    vmlist = node.cluster.vmlist()
    members = node.cluster.members()
    raw_states = StateStore(node.paths).read()
    states = {
        (int(vmid), tid): JobState.from_raw(entry)
        for vmid, entries in raw_states.items()
        if vmid.isdigit()
        for tid, entry in entries.items()
    }
    storage = node.storage()
    zfs = zfs_storages_by_node(storage, sorted(set(members) | {node.local_node}))
    guests: dict[int, GuestFacts] = {}
    replicas: dict[tuple[str, int], ReplicaSet] = {}
    for vmid in sorted({j.guest for j in job_list}):
        if only_vmid is not None and vmid != only_vmid:
            continue
        where = vmlist.get(vmid)
        if where is None or where.node != node.local_node:
            continue
        guests[vmid] = _guest_facts(node, storage, vmid, where.type)
        for orig, eff in effective_jobs(job_list, vmid, node.local_node):
            state = states.get((vmid, eff.tid))
            if not _needs_replicas(eff, orig, state, node.local_node):
                continue
            key = (eff.target, vmid)
            if key not in replicas:
                found = query_replicas(node, eff.target, vmid, zfs.get(eff.target, ()))
                replicas[key] = _spelled_as_guest(found, guests[vmid])
    return ClusterView(
        local_node=node.local_node,
        vmlist=vmlist,
        members=members,
        jobs=job_list,
        states=states,
        guests=guests,
        replicas=replicas,
        zfs_storages=zfs,
        ha=read_ha(node.paths),
        only_vmid=only_vmid,
    )
