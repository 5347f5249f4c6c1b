"""Builds the engine from the real parts: cluster files, config and state stores, zfs, ssh.

The only module that knows every concrete class; the engine itself sees ports (engine/ports.py)
and the scheduler's callables, so the unit tests can run it on in-memory fakes.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from pverep.bandwidth import BandwidthPlan
from pverep.cluster import GuestLocation
from pverep.cluster.files import FilesCluster
from pverep.config.datacenter import read_transport
from pverep.config.jobs import ConfigStore, Job, ReplicationConfig
from pverep.config.runconf import check_max_workers, read_run_settings
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
from pverep.engine import notify, pvenotify
from pverep.engine.nodebudget import NodeBudget
from pverep.engine.peerkind import PeerSetting, decide_peer_kind, read_peer_settings
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
from pverep.observe import hooks as observe_hooks
from pverep.paths import Paths
from pverep.schedule import job_status
from pverep.storage.streamform import StreamForm
from pverep.storage.volumes import Volumes
from pverep.storage.zfs import ZfsFlags, ZfsRunner, send_argv
from pverep.storage.zfscaps import local_caps
from pverep.transport.base import CommandError, Shell
from pverep.transport.local import LocalShell
from pverep.transport.peer import PeerCommands, PeerKind
from pverep.transport.serveclient import ServeSession, open_session
from pverep.transport.ssh import SshShell, SshTarget, parse_mtunnel_output
from pverep.validate import parse_volume_id

#: Seconds without any byte moving before a transfer is aborted (default 600).
STALL_TIMEOUT_ENV = "PVEREP_STALL_TIMEOUT"
#: Set to 0 for pvesr's one-ssh-connection-per-call pattern (for comparisons).
SSH_MULTIPLEX_ENV = "PVEREP_SSH_MULTIPLEX"
#: Set to 0 for per-verb prepare/finalize calls to pverep targets too (for comparisons).
SERVE_SESSION_ENV = "PVEREP_SERVE_SESSION"
#: "0": imports stay per-verb ``pverep import`` commands even with a serve session.
SERVE_IMPORT_ENV = "PVEREP_SERVE_IMPORT"


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


#: Jobs that share one ssh master at a time: each holds one or two sessions on it, and sshd
#: allows 10 per connection by default (MaxSessions).
MAX_JOBS_PER_MASTER = 4


class SshSessions:
    """The run's ssh masters: jobs to one target share a master (prepare, imports and finalize
    of all of them ride one connection), at most MAX_JOBS_PER_MASTER at a time, also when they
    run at once. ``close()`` at the end of the run ends them all.

    Also the run's ``pverep serve`` sessions (transport/serveclient.py), one per pverep target
    and address: every job's prepare and finalize go to it. One that died is started anew for
    the next job; a target that answers no hello (an older pverep) gets the per-verb calls for
    the rest of the run."""

    def __init__(self) -> None:
        self._shells: dict[tuple[str, str], list[SshShell]] = {}
        self._users: dict[int, int] = {}  # id(shell) -> jobs using it now
        self._lock = threading.Lock()
        self._serve: dict[tuple[str, str], ServeSession | None] = {}
        self._serve_locks: dict[tuple[str, str], threading.Lock] = {}  # one start per target

    def serve_session(self, shell: SshShell, pverep_argv: Sequence[str]) -> ServeSession | None:
        """The run's serve session on ``shell``'s target (started on first use over
        ``shell``), or None: no multiplexing (pvesr's pattern), PVEREP_SERVE_SESSION=0, or
        no ``serve`` there."""
        if not shell.multiplex or os.environ.get(SERVE_SESSION_ENV) == "0":
            return None
        key = (shell.target.node, shell.target.ip)
        with self._lock:
            start_lock = self._serve_locks.setdefault(key, threading.Lock())
        with start_lock:  # the target's other jobs wait for its one start
            if key in self._serve:
                known = self._serve[key]
                if known is None or known.alive:
                    return known
                known.close()
            session = open_session(shell, pverep_argv)
            with self._lock:
                self._serve[key] = session
            return session

    def take(self, paths: Paths, node: str, ip: str) -> SshShell:
        with self._lock:
            shells = self._shells.setdefault((node, ip), [])
            shell = next((s for s in shells if self._users[id(s)] < MAX_JOBS_PER_MASTER), None)
            if shell is None:
                shell = SshShell(
                    SshTarget.for_node(paths, node, ip),
                    multiplex=os.environ.get(SSH_MULTIPLEX_ENV) != "0",
                )
                shells.append(shell)
                self._users[id(shell)] = 0
            self._users[id(shell)] += 1
            return shell

    def release(self, shell: SshShell) -> None:
        """The job is done with ``shell``; its master stays up for the run's next jobs."""
        with self._lock:
            if id(shell) in self._users:
                self._users[id(shell)] -= 1

    def close(self) -> None:
        with self._lock:
            serving = [s for s in self._serve.values() if s is not None]
            self._serve = {}
        for session in serving:  # before the masters they ride on
            session.close()
        with self._lock:
            shells = [s for group in self._shells.values() for s in group]
            self._shells, self._users = {}, {}
        for shell in shells:
            shell.close()


@dataclass
class Node:
    """Everything about this node the engine needs, read fresh per run."""

    paths: Paths
    cluster: FilesCluster
    local_node: str
    budget: NodeBudget = field(default_factory=lambda: NodeBudget(BandwidthPlan(None)))
    sessions: SshSessions | None = None  # None: one ssh master per job (closed with the job)
    #: Per-target answers (engine.peerkind, the replication network address), asked once per
    #: run (this Node lives for one run); jobs of the run may ask from several threads.
    peer_kinds: dict[str, PeerKind] = field(default_factory=dict)
    migration_ips: dict[tuple[str, str], str] = field(default_factory=dict)
    _peer_settings: dict[str, PeerSetting] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _asking: dict[str, threading.Lock] = field(default_factory=dict)  # node → its probe

    def peer_kind(self, node: str, remote: Shell) -> PeerKind:
        """pverep or stock Proxmox VE on ``node``: pverep.conf [peers], else asked once."""
        with self._lock:
            if self._peer_settings is None:
                self._peer_settings = read_peer_settings(self.paths.pverep_conf)
            settings = self._peer_settings
            asking = self._asking.setdefault(node, threading.Lock())
        with asking:  # jobs starting at once to one target: one probe, the others wait for it
            with self._lock:
                known = self.peer_kinds.get(node)
            if known is None:
                known = decide_peer_kind(node, remote, settings)
                with self._lock:
                    self.peer_kinds[node] = known
        return known

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

    def _shell(self, node: str, ip: str) -> SshShell:
        """The run's shared ssh master to ``ip`` (with sessions), else one for this job."""
        if self.sessions is not None:
            return self.sessions.take(self.paths, node, ip)
        multiplex = os.environ.get(SSH_MULTIPLEX_ENV) != "0"
        return SshShell(SshTarget.for_node(self.paths, node, ip), multiplex=multiplex)

    def _let_go(self, ssh: SshShell) -> None:
        """This job is done with ``ssh``: a shared master stays up for the run's other jobs."""
        if self.sessions is not None:
            self.sessions.release(ssh)
        else:
            ssh.close()

    def _migration_ip(self, ssh: SshShell, peer: PeerCommands, node: str, cidr: str) -> str:
        """``node``'s address in ``cidr``, asked once per run and target."""
        with self._lock:
            known = self.migration_ips.get((node, cidr))
        if known is None:
            known = migration_ip(ssh, peer, node, cidr)
            with self._lock:
                self.migration_ips[(node, cidr)] = known
        return known

    def connect(self, node: str, network: str | None) -> ShellTarget:
        member = self.cluster.members().get(node)
        if member is None or not member.ip:
            raise PverepError(f"no IP address for node '{node}'")
        sessions = self.sessions
        ssh = self._shell(node, member.ip)
        try:
            peer = PeerCommands(kind=self.peer_kind(node, ssh))
            if network:
                # pvesr: ask the target (over its cluster IP) for its address in that network,
                # then run everything else over ssh to that address
                ip = self._migration_ip(ssh, peer, node, network)
                self._let_go(ssh)
                ssh = self._shell(node, ip)
        except BaseException:
            self._let_go(ssh)
            raise
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

        return ShellTarget(
            node=node,
            remote=ssh,
            local=local,
            send_argv=send,
            commands=peer,
            stall_timeout=stall_timeout(),
            tcp_address=network or member.ip,
            close_remote=ssh.close,
            release=None if sessions is None else (lambda: sessions.release(ssh)),
            session=(lambda: None)
            if sessions is None or peer.kind != "pverep"
            else (lambda: sessions.serve_session(ssh, peer.pverep)),
            forward=None
            if sessions is None or os.environ.get(SERVE_IMPORT_ENV) == "0"
            else ssh.forward_argv,
            budget=self.budget.current,
            local_caps=caps,
            local_snapshots=snapshots,
            encrypted=encrypted,
            dataset=dataset,
        )


def migration_ip(remote: Shell, peer: PeerCommands, node: str, cidr: str) -> str:
    """The target's address in ``cidr``, as its ``mtunnel -get_migration_ip`` answers (§5.1)."""
    result = remote.run(peer.migration_ip(cidr))
    if result.returncode != 0:
        raise CommandError(result.argv, result.returncode, result.stderr_tail())
    return parse_mtunnel_output(result.stdout_text, node, cidr)


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
        observe=observe_hooks.history_observer(paths, node.local_node),
    )


def build_scheduler(
    paths: Paths, max_workers: int | None = None, bandwidth: BandwidthPlan | None = None
) -> Scheduler:
    """The scheduler for ``pverep run``; ``max_workers`` and ``bandwidth`` override
    pverep.conf's [run]."""
    settings = read_run_settings(paths.pverep_conf)
    workers = settings.max_workers
    if max_workers is not None:
        workers = check_max_workers(max_workers, "--max-workers")
    cluster = FilesCluster(paths)
    local = cluster.local_node()
    sessions = SshSessions()
    node = Node(paths, cluster, local, NodeBudget(bandwidth or settings.bandwidth), sessions)
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

    send_mail = pvenotify.sender(LocalShell(local), paths)

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
        after_run=observe_hooks.after_run(paths),
        max_workers=workers,
        end_of_run=sessions.close,
    )


def _lock(path: Any, timeout: float) -> AbstractContextManager[None]:
    return _flock(path, timeout)


def dry_run(
    paths: Paths,
    say: Callable[[str], None],
    *,
    jobid: str | None = None,
    remove: str | None = None,
    now: int,
) -> int:
    """Print what ``pverep run`` (``--id jobid``) or the removal of ``jobid`` (``remove`` =
    ``full``/``local``) would do, changing nothing; returns how many jobs failed to plan."""
    import copy
    from dataclasses import replace as dc_replace

    from pverep.engine import dryrun

    cluster = FilesCluster(paths)
    local = cluster.local_node()
    node = Node(paths, cluster, local)
    cfg = ConfigStore(paths).read()
    stateobj = StateStore(paths).read()
    shells: list[SshShell] = []

    def target_volumes(name: str) -> Volumes:
        member = cluster.members().get(name)
        if member is None or not member.ip:
            raise PverepError(f"no IP address for node '{name}'")
        ssh = SshShell(SshTarget.for_node(paths, name, member.ip))
        shells.append(ssh)
        return Volumes(node.storage(), ZfsRunner(ssh))

    def guest_node(vmid: int) -> str | None:
        where = cluster.vmlist().get(vmid)
        return where.node if where is not None else None

    if jobid is not None:
        job = cfg.find(jobid)
        if job is None:
            raise PverepError(f"no such job '{jobid}'")
        jobs = [dc_replace(job, remove_job=remove) if remove else job]
    else:
        found, _changed = job_status(cfg, stateobj, cluster.vmlist(), cluster.members(), local)
        order = sorted(found, key=lambda s: (s.state.last_iteration, s.next_sync, s.guest, s.id))
        jobs = [s.job for s in order if s.next_sync != 0 and now >= s.next_sync]
        if not jobs:
            say("no replication job is due")
    env = dryrun.dry_env(build_env(paths, node, lambda t: None), say, target_volumes, guest_node)
    failed = 0
    try:
        for job in jobs:
            state = MutableState(copy.deepcopy(read_job_state(stateobj, job.guest, job.tid)))
            try:
                dryrun.plan(env, job, state, now, say)
            except PverepError as err:
                failed += 1
                say(f"job {job.id}: would fail - {err}")
    finally:
        for ssh in shells:
            ssh.close()
    return failed
