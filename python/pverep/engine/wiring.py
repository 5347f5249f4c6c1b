"""Builds the engine from the real parts: cluster files, config and state stores, zfs, ssh.

The only module that knows every concrete class; the engine itself sees ports (engine/ports.py)
and the scheduler's callables, so the unit tests can run it on in-memory fakes.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from pverep.cluster import GuestLocation
from pverep.cluster.files import FilesCluster
from pverep.config.datacenter import read_transport
from pverep.config.jobs import ConfigStore, Job, ReplicationConfig
from pverep.config.state import (
    JobState,
    StateStore,
    read_job_state,
    record_job_end,
    record_job_start,
    record_sync_end,
    states_to_keep,
)
from pverep.config.storage import StorageConfig, read_storage_cfg
from pverep.engine import notify
from pverep.engine.ports import GuestView, TransportConfig
from pverep.engine.replicate import JobLike, ReplicateEnv, StateLike
from pverep.engine.runner import Runner
from pverep.engine.scheduler import JobStatus, Scheduler
from pverep.engine.target import ShellTarget
from pverep.engine.transfer import DEFAULT_STALL_TIMEOUT
from pverep.errors import ConfigError, PverepError
from pverep.freeze.guest import FreezeSettings, GuestFreezer
from pverep.guests import get_replicatable_volumes, parse_guest_config
from pverep.locking import flock
from pverep.paths import Paths
from pverep.schedule import job_status
from pverep.storage.streamform import StreamForm
from pverep.storage.volumes import Volumes
from pverep.storage.zfs import ZfsFlags, ZfsRunner, send_argv
from pverep.storage.zfscaps import local_caps
from pverep.transport.local import LocalShell
from pverep.transport.peer import PeerCommands
from pverep.transport.ssh import SshShell, SshTarget
from pverep.validate import parse_volume_id

#: Seconds without any byte moving before a transfer is aborted (default 600).
STALL_TIMEOUT_ENV = "PVEREP_STALL_TIMEOUT"
#: Set to 1 to talk to a stock Proxmox VE peer (``pvesr``/``pvesm``) instead of pverep.
PVE_PEER_ENV = "PVEREP_PEER_PVE"
#: Set to 0 for pvesr's one-ssh-connection-per-call pattern (for comparisons).
SSH_MULTIPLEX_ENV = "PVEREP_SSH_MULTIPLEX"


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _stdout(msg: str) -> None:
    print(msg, flush=True)


def stall_timeout() -> float | None:
    text = os.environ.get(STALL_TIMEOUT_ENV)
    if not text:
        return DEFAULT_STALL_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{STALL_TIMEOUT_ENV}: not a number: '{text}'") from None
    return value if value > 0 else None


class MutableState:
    """A job's raw state entry (found's record_* functions work on the dict) seen as attributes."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self.raw = raw

    @property
    def last_sync(self) -> int:
        return JobState.from_raw(self.raw).last_sync

    @last_sync.setter
    def last_sync(self, value: int) -> None:
        self.raw["last_sync"] = value

    @property
    def storeid_list(self) -> list[str]:
        return list(JobState.from_raw(self.raw).storeid_list)

    @storeid_list.setter
    def storeid_list(self, value: list[str]) -> None:
        self.raw["storeid_list"] = list(value)


@dataclass
class StateRecorder:
    """runner.StateStore over config/state.py."""

    states: StateStore
    nodename: str

    def read_job_state(self, job: JobLike) -> MutableState:
        return MutableState(read_job_state(self.states.read(), job.guest, _tid(job)))

    def record_job_start(
        self, job: JobLike, state: StateLike, start_time: int, iteration: int
    ) -> None:
        record_job_start(
            self.states, job.guest, _tid(job), _raw(state), start_time=start_time,
            iteration=iteration, nodename=self.nodename,
        )  # fmt: skip

    def record_sync_end(self, job: JobLike, state: StateLike, start_time: int) -> None:
        record_sync_end(self.states, job.guest, _tid(job), _raw(state), start_time=start_time)

    def record_job_end(
        self, job: JobLike, state: StateLike, start_time: int, duration: float,
        error: str | None,
    ) -> None:  # fmt: skip
        record_job_end(
            self.states, job.guest, _tid(job), _raw(state), start_time=start_time,
            duration=duration, error=error, removal=job.remove_job is not None,
        )  # fmt: skip


def _raw(state: StateLike) -> dict[str, Any]:
    if not isinstance(state, MutableState):
        raise TypeError("StateRecorder works on the states it read")
    return state.raw


def _tid(job: JobLike) -> str:
    return f"{getattr(job, 'type', 'local')}/{job.target}"


def _running(paths: Paths, vmtype: str, vmid: int) -> int:
    """QEMU: the pid from /var/run/qemu-server/<vmid>.pid if alive; CT: its cgroup exists."""
    if vmtype == "qemu":
        pidfile = paths.qemu_pidfile(vmid)
        try:
            pid = int(pidfile.read_text().split()[0])
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError, IndexError):
            return 0
    return 1 if paths.ct_cgroup(vmid).is_dir() else 0


@dataclass
class Node:
    """Everything about this node the engine needs, read fresh per run."""

    paths: Paths
    cluster: FilesCluster
    local_node: str

    def storage(self) -> StorageConfig:
        return read_storage_cfg(str(self.paths.storage_cfg), warn=_stderr)

    def load_guest(self, vmid: int, cleanup: bool) -> GuestView:
        where = self.cluster.vmlist().get(vmid)
        vmtype = where.type if where is not None else "qemu"
        path = self.paths.guest_config(self.local_node, vmtype, vmid)
        if where is None or where.node != self.local_node or not path.exists():
            raise PverepError(f"Configuration file '{path}' does not exist")
        conf = parse_guest_config(path.read_text(encoding="utf-8"), vmtype)
        volids = get_replicatable_volumes(self.storage(), vmid, conf, cleanup=cleanup)
        running = _running(self.paths, vmtype, vmid)
        kind = "VM" if vmtype == "qemu" else "CT"
        return GuestView(
            vmid=vmid,
            kind=kind,
            running=running,
            freezefs=self.freezer.needed(kind, vmid, running, conf.current.get("agent")),
            volids=tuple(volids),
            parent=conf.parent,
            snapshots=frozenset(conf.snapshots),
        )

    @cached_property
    def freezer(self) -> GuestFreezer:
        """Read once per pverep process: a thaw never depends on reading pverep.conf again."""
        settings = FreezeSettings.read(self.paths.pverep_conf)
        return GuestFreezer(self.paths, settings, info=_stdout, warn=_stderr)

    def connect(self, node: str, network: str | None) -> ShellTarget:
        member = self.cluster.members().get(node)
        if member is None or not member.ip:
            raise PverepError(f"no IP address for node '{node}'")
        ssh = SshShell(
            SshTarget.for_node(self.paths, node, member.ip),
            multiplex=os.environ.get(SSH_MULTIPLEX_ENV, "1") != "0",
        )
        local = LocalShell(self.local_node)
        caps = local_caps(local, self.paths.zfs_caps_cache)
        storage = self.storage()
        volumes = Volumes(storage, ZfsRunner(local), flags=ZfsFlags.from_caps(caps))

        def dataset(volid: str) -> str:
            storeid, volname = parse_volume_id(volid)
            return volumes.pool(storeid).dataset(volname)

        def send(volid: str, snapshot: str, base: str | None, form: StreamForm) -> list[str]:
            return send_argv(dataset(volid), snapshot, base, form=form)

        def snapshots(volid: str) -> list[str]:
            return [info.name for info in volumes.snapshot_info(volid)]

        def encrypted(volid: str) -> bool:
            storeid, volname = parse_volume_id(volid)
            return volumes.pool(storeid).is_encrypted(volname)

        peer = PeerCommands(kind="pve") if os.environ.get(PVE_PEER_ENV) == "1" else PeerCommands()
        return ShellTarget(
            node=node,
            remote=ssh,
            local=local,
            send_argv=send,
            commands=peer,
            stall_timeout=stall_timeout(),
            tcp_address=network or member.ip,
            close_remote=ssh.close,
            local_caps=caps,
            local_snapshots=snapshots,
            encrypted=encrypted,
            dataset=dataset,
        )


def build_env(paths: Paths, node: Node, record_sync_end_fn: Callable[[int], None]) -> ReplicateEnv:
    storage = node.storage()
    dc = read_transport(paths.datacenter_cfg)
    flags = ZfsFlags.from_caps(local_caps(LocalShell(node.local_node), paths.zfs_caps_cache))
    store = ConfigStore(paths)

    def delete_job(jobid: str) -> None:
        def change(cfg: ReplicationConfig) -> None:
            cfg.jobs.pop(jobid, None)

        store.modify(change)

    return ReplicateEnv(
        local_node=node.local_node,
        volumes=Volumes(storage, ZfsRunner(LocalShell(node.local_node)), flags=flags),
        load_guest=node.load_guest,
        connect=node.connect,
        transport=TransportConfig(dc.insecure, dc.network),
        storage_exists=lambda sid: sid in storage.storages,
        delete_job=delete_job,
        record_sync_end=record_sync_end_fn,
        freeze=lambda guest: node.freezer.freeze(guest.kind, guest.vmid),
        thaw=lambda guest: node.freezer.thaw(guest.kind, guest.vmid),
    )


@contextmanager
def _flock(path: Any, timeout: float) -> Iterator[None]:
    with flock(path, timeout):
        yield


def build_runner(paths: Paths, node: Node, states: StateStore) -> Runner:
    return Runner(
        make_env=lambda rse: build_env(paths, node, rse),
        store=StateRecorder(states, node.local_node),
        guest_lock=lambda vmid, timeout: _flock(paths.migrate_lock(vmid), timeout),
        log_dir=paths.job_log_dir,
    )


def build_scheduler(paths: Paths) -> Scheduler:
    cluster = FilesCluster(paths)
    local = cluster.local_node()
    node = Node(paths, cluster, local)
    store = ConfigStore(paths)
    states = StateStore(paths)

    def statuses() -> list[JobStatus]:
        def code() -> list[JobStatus]:
            cfg = store.read()
            found, changed = job_status(
                cfg, states.read(), cluster.vmlist(), cluster.members(), local
            )
            if changed:
                store.write(cfg)
            return [JobStatus(s.job, s.state.last_iteration, s.next_sync) for s in found]

        return store.locked(code)

    def purge() -> None:
        cfg = store.read()
        vmlist = cluster.vmlist()
        keep = states_to_keep(
            [(j.guest, j.tid) for j in cfg.jobs.values()],
            {vmid: loc.node for vmid, loc in vmlist.items()},
            local,
        )
        states.purge_old_states(keep)

    def fail_count(job: JobLike) -> int:
        return JobState.from_raw(read_job_state(states.read(), job.guest, _tid(job))).fail_count

    send_mail = notify.mailer(LocalShell(local))

    def notify_failure(job: JobLike, error: str, count: int) -> None:
        state = JobState.from_raw(read_job_state(states.read(), job.guest, _tid(job)))
        schedule = getattr(job, "schedule", None) or "*/15"
        send_mail(
            notify.Failure(job.id, job.target, schedule, state.last_sync, count, error, local)
        )

    def read_jobs() -> Mapping[str, Job]:
        return store.read().jobs

    def vmlist() -> Mapping[int, GuestLocation]:
        return cluster.vmlist()

    return Scheduler(
        runner=build_runner(paths, node, states),
        job_status=statuses,
        purge_old_states=purge,
        run_lock=lambda timeout: _lock(paths.run_lock, timeout),
        read_jobs=read_jobs,
        vmlist=vmlist,
        local_node=local,
        fail_count=fail_count,
        notify=notify_failure,
    )


def _lock(path: Any, timeout: float) -> AbstractContextManager[None]:
    return _flock(path, timeout)
