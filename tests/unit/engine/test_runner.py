"""engine/runner.py ``Runner.run_replication`` (spec §3.4): the guest lock, the state records
around the run, the job log and the run history's observer. On the engine's in-memory fakes."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pverep.engine.joblog import LogFunc
from pverep.engine.replicate import JobLike
from pverep.engine.runner import GUEST_LOCK_TIMEOUT, Runner
from pverep.errors import PverepError

from .fakes import FakeJob, FakeState, FakeStore, World

DISK = "local-zfs:vm-900-disk-0"


@dataclass
class Store(FakeStore):
    """FakeStore that also records each call."""

    calls: list[tuple[object, ...]] = field(default_factory=list)

    def record_job_start(
        self, job: FakeJob, state: FakeState, start_time: int, iteration: int
    ) -> None:
        self.calls.append(("start", job.id, start_time, iteration))
        super().record_job_start(job, state, start_time, iteration)

    def record_sync_end(self, job: FakeJob, state: FakeState, start_time: int) -> None:
        self.calls.append(("sync_end", job.id, start_time))
        super().record_sync_end(job, state, start_time)

    def record_job_end(
        self, job: FakeJob, state: FakeState, start_time: int, duration: float, error: str | None
    ) -> None:
        self.calls.append(("end", job.id, start_time, duration, error))
        super().record_job_end(job, state, start_time, duration, error)


@dataclass
class Observer:
    job: JobLike
    seen: list[str] = field(default_factory=list)
    finished: list[str | None] = field(default_factory=list)

    def tap(self, log: LogFunc) -> LogFunc:
        def tapped(line: str) -> None:
            self.seen.append(line)
            log(line)

        return tapped

    def finish(self, error: str | None) -> None:
        self.finished.append(error)


def make(tmp: Path, *, observe: bool = True) -> tuple[Runner, Store, list[object], list[Observer]]:
    world = World(tmp, disks=[DISK])
    world.volumes.register(DISK)
    store = Store()
    locks: list[object] = []
    observers: list[Observer] = []

    @contextlib.contextmanager
    def guest_lock(vmid: int, timeout: float) -> Iterator[None]:
        locks.append(("lock", vmid, timeout))
        yield
        locks.append(("unlock", vmid))

    def observer(job: JobLike) -> Observer:
        observers.append(Observer(job))
        return observers[-1]

    ticks = iter([10.0, 13.5, 20.0, 21.25])
    runner = Runner(
        make_env=world.env,
        store=store,  # type: ignore[arg-type]
        guest_lock=guest_lock,
        log_dir=tmp,
        clock=lambda: 0.0,
        timer=lambda: next(ticks),
        observe=observer if observe else None,
    )
    return runner, store, locks, observers


def test_a_run_records_start_sync_and_end_under_the_guest_lock(tmp_path: Path) -> None:
    runner, store, locks, observers = make(tmp_path)
    job = FakeJob("900-0", 900, "node2")
    lines: list[str] = []
    assert runner.run_replication(job, 1700, 1800, lines.append) == [DISK]
    assert locks == [("lock", 900, GUEST_LOCK_TIMEOUT), ("unlock", 900)]
    assert GUEST_LOCK_TIMEOUT == 2.0
    assert store.calls == [
        ("start", "900-0", 1800, 1700),
        ("sync_end", "900-0", 1800),
        ("end", "900-0", 1800, 3.5, None),
    ]
    [obs] = observers
    assert obs.job is job and obs.finished == [None]
    assert obs.seen[0] == "start replication job" and obs.seen[-1] == "end replication job"
    assert (tmp_path / "900-0").read_text().count("\n") == len(obs.seen)


def test_a_failed_run_records_its_error_and_raises_it(tmp_path: Path) -> None:
    runner, store, _locks, observers = make(tmp_path)
    job = FakeJob("900-0", 900, "node2")
    runner.run_replication(job, 1700, 1800)
    with pytest.raises(PverepError) as err:
        runner.run_replication(job, 1700, 1800)  # start_time not after last_sync
    text = str(err.value)
    assert store.calls[-2:] == [("start", "900-0", 1800, 1700), ("end", "900-0", 1800, 1.25, text)]
    assert observers[-1].finished == [text]
    assert observers[-1].seen[-1] == f"end replication job with error: {text}"


def test_a_run_without_history(tmp_path: Path) -> None:
    runner, store, _locks, observers = make(tmp_path, observe=False)
    assert runner.run_replication(FakeJob("900-0", 900, "node2"), 1700, 1800) == [DISK]
    assert observers == [] and store.calls[-1][-1] is None
