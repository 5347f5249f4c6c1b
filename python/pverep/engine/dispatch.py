"""Several jobs at once (``max_workers`` > 1): run_jobs' loop with a pool of worker threads.

The node-wide run lock is held by the caller for the whole pass, exactly as in the serial loop,
so a stock pvescheduler never runs a job while we do. The pick rules are the serial ones
(due, scheduled, not run in this iteration) plus: never two jobs of one guest at once (they
would also wait for each other's migration lock), and the most overdue job first, pvesr's
order as the tie-break. A job whose guest lock timed out keeps its last_iteration and is picked
again, as in pvesr.

Workers are threads: the jobs spend their time in child processes and in the pump, which runs
with the GIL released.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Protocol

from pverep.engine.replicate import JobLike


class Entry(Protocol):
    """What the pick needs of a job_status entry."""

    @property
    def job(self) -> JobLike: ...
    @property
    def last_iteration(self) -> int: ...
    @property
    def next_sync(self) -> int: ...


def overdue_order(entry: Entry) -> tuple[int, int, int, str]:
    """Most overdue (earliest next_sync) first; pvesr's order (last_iteration, next_sync, guest,
    job id) breaks ties."""
    return (entry.next_sync, entry.last_iteration, int(entry.job.guest), entry.job.id)


def is_due(entry: Entry, iteration: int, start_time: int) -> bool:
    """run_jobs' test: not yet started in this iteration, scheduled, and due."""
    return (
        entry.last_iteration < iteration and entry.next_sync != 0 and start_time >= entry.next_sync
    )


def pick(
    entries: Iterable[Entry], iteration: int, start_time: int, busy_guests: set[int]
) -> JobLike | None:
    for entry in sorted(entries, key=overdue_order):
        if int(entry.job.guest) not in busy_guests and is_due(entry, iteration, start_time):
            return entry.job
    return None


@dataclass
class Dispatcher:
    """One parallel pass. ``run(job, start_time)`` runs one job (raising its error);
    ``on_error(job, err)`` is called in the dispatching thread."""

    max_workers: int
    entries: Callable[[], Iterable[Entry]]
    run: Callable[[JobLike, int], object]
    on_error: Callable[[JobLike, Exception], None]
    start_time: Callable[[], int]
    running: dict[Future[object], JobLike] = field(default_factory=dict)

    def pass_(self, iteration: int) -> None:
        with ThreadPoolExecutor(self.max_workers, thread_name_prefix="pverep-job") as pool:
            while True:
                if len(self.running) < self.max_workers:
                    busy = {int(job.guest) for job in self.running.values()}
                    start = self.start_time()
                    job = pick(self.entries(), iteration, start, busy)
                    if job is not None:
                        self.running[pool.submit(self.run, job, start)] = job
                        continue
                if not self.running:
                    return
                done, _ = wait(self.running, return_when=FIRST_COMPLETED)
                for future in done:
                    job = self.running.pop(future)
                    err = future.exception()
                    if isinstance(err, Exception):
                        self.on_error(job, err)
                    elif err is not None:
                        raise err
