"""The parallel dispatcher: jobs at once, never two of one guest, most overdue first."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from pverep.engine.dispatch import Dispatcher, overdue_order, pick
from pverep.engine.replicate import JobLike
from pverep.engine.scheduler import JobStatus

from .fakes import FakeJob


@dataclass
class SlowRunner:
    """Runs each job for ``seconds``; records overlap per guest and overall."""

    seconds: float = 0.05
    lock: threading.Lock = field(default_factory=threading.Lock)
    active: dict[int, int] = field(default_factory=dict)
    done: dict[str, int] = field(default_factory=dict)  # job id -> iteration it ran in
    starts: list[str] = field(default_factory=list)
    peak: int = 0
    same_guest_overlap: int = 0
    fail: set[str] = field(default_factory=set)

    def run(self, job: JobLike, start: int) -> object:
        with self.lock:
            self.starts.append(job.id)
            self.active[job.guest] = self.active.get(job.guest, 0) + 1
            if self.active[job.guest] > 1:
                self.same_guest_overlap += 1
            self.peak = max(self.peak, sum(self.active.values()))
        time.sleep(self.seconds)
        with self.lock:
            self.active[job.guest] -= 1
            self.done[job.id] = 100
        if job.id in self.fail:
            raise RuntimeError(f"{job.id} failed")
        return None


def entries(jobs: list[FakeJob], runner: SlowRunner, next_sync: dict[str, int]) -> list[JobStatus]:
    return [JobStatus(j, runner.done.get(j.id, 0), next_sync.get(j.id, 50)) for j in jobs]


def dispatch(jobs: list[FakeJob], runner: SlowRunner, workers: int, errors: list[str],
             next_sync: dict[str, int] | None = None) -> None:  # fmt: skip
    Dispatcher(
        workers,
        entries=lambda: entries(jobs, runner, next_sync or {}),
        run=runner.run,
        on_error=lambda job, err: errors.append(f"{job.id}: {err}"),
        start_time=lambda: 100,
    ).pass_(100)


def test_runs_jobs_at_once_but_never_two_of_one_guest() -> None:
    jobs = [FakeJob(f"{g}-{n}", g, f"node{n + 1}") for g in (100, 101, 102) for n in (1, 2)]
    runner = SlowRunner()
    errors: list[str] = []
    dispatch(jobs, runner, 4, errors)
    assert sorted(runner.starts) == sorted(j.id for j in jobs)  # each exactly once
    assert runner.same_guest_overlap == 0
    assert runner.peak == 3  # one per guest: the fourth worker finds nothing it may start
    assert errors == []


def test_a_failing_job_does_not_stop_the_others() -> None:
    jobs = [FakeJob(f"{g}-1", g, "node2") for g in range(100, 106)]
    runner = SlowRunner(fail={"102-1"})
    errors: list[str] = []
    dispatch(jobs, runner, 3, errors)
    assert errors == ["102-1: 102-1 failed"]
    assert len(runner.done) == 6


def test_most_overdue_first_pvesr_order_breaks_ties() -> None:
    jobs = [FakeJob("103-1", 103, "n2"), FakeJob("101-1", 101, "n2"), FakeJob("102-1", 102, "n2")]
    runner = SlowRunner(seconds=0.0)
    dispatch(jobs, runner, 1, [], next_sync={"103-1": 10, "101-1": 90, "102-1": 90})
    assert runner.starts == ["103-1", "101-1", "102-1"]


def test_pick_skips_busy_guests_and_undue_jobs() -> None:
    a, b, c = FakeJob("100-1", 100, "n2"), FakeJob("100-2", 100, "n3"), FakeJob("200-1", 200, "n2")
    statuses = [JobStatus(a, 0, 10), JobStatus(b, 0, 20), JobStatus(c, 0, 500)]
    assert pick(statuses, 100, 100, set()) is a
    assert pick(statuses, 100, 100, {100}) is None  # 200-1 is not due before 500
    assert pick(statuses, 100, 600, {100}) is c
    assert pick([JobStatus(a, 100, 10)], 100, 100, set()) is None  # ran in this iteration
    assert pick([JobStatus(a, 0, 0)], 100, 100, set()) is None  # not scheduled
    assert sorted(statuses, key=overdue_order)[0] is statuses[0]
    # pvesr would take the job that has not run for more iterations first; we the overdue one
    overdue, waiting = JobStatus(c, 90, 10), JobStatus(a, 0, 60)
    assert pick([waiting, overdue], 100, 100, set()) is c
