"""The parallel dispatcher's pool: its threads are named, as many run as ``max_workers`` says
(also beyond the pool's default size), never more are picked, and a finished job frees its slot
at once, while the others still run. Jobs here block on events instead of sleeping, so each
test's outcome does not depend on timing."""

from __future__ import annotations

import os
import threading

from pverep.engine.dispatch import Dispatcher
from pverep.engine.replicate import JobLike
from pverep.engine.scheduler import JobStatus

from .fakes import FakeJob

WAIT = 10.0  # seconds a blocked job waits before it gives up (a broken dispatcher)


def jobs(n: int) -> list[FakeJob]:
    return [FakeJob(f"{100 + i}-0", 100 + i, "node2") for i in range(n)]


def run_pass(
    todo: list[FakeJob], workers: int, run: object, errors: list[str], seen_running: list[int]
) -> Dispatcher:
    done: set[str] = set()
    box: list[Dispatcher] = []

    def entries() -> list[JobStatus]:
        return [JobStatus(j, 100 if j.id in done else 0, 50) for j in todo]

    def start_time() -> int:
        seen_running.append(len(box[0].running))
        return 100

    def tracked(job: JobLike, start: int) -> object:
        try:
            return run(job, start)  # type: ignore[operator]
        finally:
            done.add(job.id)

    box.append(
        Dispatcher(
            workers,
            entries=entries,
            run=tracked,
            on_error=lambda job, err: errors.append(f"{job.id}: {err!r}"),
            start_time=start_time,
        )
    )
    box[0].pass_(100)
    return box[0]


def test_the_workers_are_named_pverep_job() -> None:
    names: list[str] = []
    errors: list[str] = []
    run_pass(jobs(3), 2, lambda job, start: names.append(threading.current_thread().name),
             errors, [])  # fmt: skip
    assert errors == [] and len(names) == 3
    assert all(name.startswith("pverep-job_") for name in names), names


def test_more_workers_than_the_pools_default_all_run_at_once() -> None:
    many = (os.cpu_count() or 1) + 5  # ThreadPoolExecutor's default is min(32, cpus + 4)
    barrier = threading.Barrier(many, timeout=WAIT)
    errors: list[str] = []
    run_pass(jobs(many), many, lambda job, start: barrier.wait(), errors, [])
    assert errors == []


def test_no_job_is_picked_while_every_worker_is_busy() -> None:
    release = threading.Event()
    started = threading.Semaphore(0)
    seen_running: list[int] = []
    errors: list[str] = []

    def run(job: JobLike, start: int) -> None:
        started.release()
        release.wait(WAIT)

    def let_go() -> None:
        for _ in range(2):
            assert started.acquire(timeout=WAIT)
        release.set()

    helper = threading.Thread(target=let_go)
    helper.start()
    run_pass(jobs(4), 2, run, errors, seen_running)
    helper.join()
    assert errors == []
    assert max(seen_running) == 1  # a pick only with a free worker


def test_a_finished_job_frees_its_worker_while_the_others_run() -> None:
    last_started = threading.Event()
    errors: list[str] = []

    def run(job: JobLike, start: int) -> None:
        if job.id == "100-0":  # long: runs until the third job has started
            if not last_started.wait(WAIT):
                raise TimeoutError("the third job never started")
        elif job.id == "102-0":
            last_started.set()

    run_pass(jobs(3), 2, run, errors, [])
    assert errors == []
