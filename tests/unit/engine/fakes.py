"""In-memory stand-ins reproducing pvesr's upstream test environment (spec §8.1).

Named fakes: they replace ZFS, ssh and the state file only in these unit tests; the lab tests
run the same engine against real zfs-fuse and sshd.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pverep.engine.planner import SnapshotInfo
from pverep.engine.ports import GuestView, LogFunc, NeverResumes, TransportConfig
from pverep.engine.replicate import ReplicateEnv
from pverep.engine.runner import Runner
from pverep.errors import PverepError


@dataclass
class FakeVolumes:
    """ReplicationTestEnv's mocked storage: a global counter gives ids and timestamps."""

    registered: dict[str, list[SnapshotInfo]] = field(default_factory=dict)
    counter: int = 0

    def register(self, volid: str) -> None:
        self.registered.setdefault(volid, [])

    def snapshot_info(self, volid: str) -> Sequence[SnapshotInfo]:
        return list(self.registered.get(volid, []))

    def snapshot(self, volid: str, snap: str) -> None:
        if volid not in self.registered:
            raise PverepError(f"no such volid '{volid}'")
        self.counter += 1
        self.registered[volid].append(
            SnapshotInfo(volid, snap, self.counter, self.counter, self.counter)
        )

    def delete_snapshot(self, volid: str, snap: str) -> None:
        snaps = self.registered.get(volid, [])
        if not any(s.name == snap for s in snaps):
            raise PverepError(f"no such snapshot '{snap}' on '{volid}'")
        self.registered[volid] = [s for s in snaps if s.name != snap]


@dataclass
class FakeTarget(NeverResumes):  # upstream's mock target is a stock one
    """Test 5's remote mock: remembers the last sync snapshot per volume, answers ``{snap: 1}``."""

    node: str
    held: dict[str, str] = field(default_factory=dict)  # volid → sync snapshot
    calls: list[tuple[str, ...]] = field(default_factory=list)
    fail_transfer: str | None = None

    def prepare(
        self,
        jobid: str,
        volids: Sequence[str],
        *,
        scan: Sequence[str],
        last_sync: int,
        parent_snapname: str | None,
        force: bool,
        on_stderr: LogFunc,
    ) -> str:
        self.calls.append(("prepare", jobid, ",".join(scan), *volids, str(last_sync), str(force)))
        last = f"__replicate_{jobid}_{last_sync}__"
        self.held = {v: s for v, s in self.held.items() if v in volids}
        answer = {v: {last: 1} for v, s in self.held.items() if s == last}
        import json

        return json.dumps(answer) + "\n"

    def finalize(self, jobid: str, volids: Sequence[str], last_sync: int, on_line: LogFunc) -> None:
        self.calls.append(("finalize", jobid, *volids, str(last_sync)))

    def transfer(
        self,
        volid: str,
        *,
        snapshot: str,
        base: str | None,
        rate_bps: int | None,
        insecure: bool,
        log: LogFunc,
        prune: Sequence[str] = (),
    ) -> None:
        if self.fail_transfer == volid:
            raise PverepError(f"transfer of '{volid}' failed")
        self.held[volid] = snapshot

    def close(self) -> None:
        pass


@dataclass
class FakeJob:
    id: str
    guest: int
    target: str
    rate: str | None = None
    remove_job: str | None = None
    type: str = "local"

    @property
    def rate_mbps(self) -> float | None:
        return float(self.rate) if self.rate is not None else None


@dataclass
class FakeState:
    last_sync: int = 0
    last_try: int = 0
    last_iteration: int = 0
    fail_count: int = 0
    error: str | None = None
    storeid_list: list[str] = field(default_factory=list)


@dataclass
class FakeStore:
    states: dict[str, FakeState] = field(default_factory=dict)

    def read_job_state(self, job: FakeJob) -> FakeState:
        return self.states.setdefault(job.id, FakeState())

    def record_job_start(
        self, job: FakeJob, state: FakeState, start_time: int, iteration: int
    ) -> None:
        state.last_try = start_time
        state.last_iteration = iteration

    def record_sync_end(self, job: FakeJob, state: FakeState, start_time: int) -> None:
        state.last_sync = start_time

    def record_job_end(
        self, job: FakeJob, state: FakeState, start_time: int, duration: float, error: str | None
    ) -> None:
        if error is not None:
            state.fail_count += 1
            state.error = error
        elif job.remove_job:
            self.states.pop(job.id, None)
        else:
            state.last_sync = start_time
            state.fail_count = 0
            state.error = None


@dataclass
class World:
    """One mocked node1 with VM 900, as in the upstream tests."""

    tmp: Path
    volumes: FakeVolumes = field(default_factory=FakeVolumes)
    disks: list[str] = field(default_factory=list)
    targets: dict[str, FakeTarget] = field(default_factory=dict)
    store: FakeStore = field(default_factory=FakeStore)
    deleted_jobs: list[str] = field(default_factory=list)
    local_node: str = "node1"

    def guest(self, vmid: int, cleanup: bool) -> GuestView:
        return GuestView(vmid, "VM", 0, False, tuple(sorted(self.disks)), None, frozenset())

    def target(self, node: str, network: str | None) -> FakeTarget:
        return self.targets.setdefault(node, FakeTarget(node))

    def env(self, record_sync_end: object) -> ReplicateEnv:
        return ReplicateEnv(
            local_node=self.local_node,
            volumes=self.volumes,
            load_guest=self.guest,
            connect=self.target,
            transport=TransportConfig(),
            storage_exists=lambda sid: sid in {"local", "local-zfs"},
            delete_job=self.deleted_jobs.append,
            record_sync_end=record_sync_end,  # type: ignore[arg-type]
        )

    def runner(self) -> Runner:
        return Runner(
            make_env=self.env,
            store=self.store,
            guest_lock=lambda vmid, timeout: contextlib.nullcontext(),
            log_dir=self.tmp,
            clock=lambda: 0.0,
        )


@contextlib.contextmanager
def nolock(*_: object) -> Iterator[None]:
    yield
