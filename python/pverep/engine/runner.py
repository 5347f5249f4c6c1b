"""run_replication (spec §3.4): one job under the guest migration lock, with job log and state.

The clock is the caller's: ``start_time``/``iteration`` come in as arguments, the log's wall
clock and the duration timer are injected (design rule 3).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from pverep.engine import messages
from pverep.engine.joblog import Clock, JobLog, LogFunc
from pverep.engine.replicate import JobLike, ReplicateEnv, StateLike, replicate

#: pvesr waits this long for the guest migration lock before giving up on a run (§1.4).
GUEST_LOCK_TIMEOUT = 2.0


class StateStore(Protocol):
    """The state-file operations of §1.2 (config/state.py)."""

    def read_job_state(self, job: JobLike) -> StateLike: ...

    def record_job_start(
        self, job: JobLike, state: StateLike, start_time: int, iteration: int
    ) -> None: ...

    def record_sync_end(self, job: JobLike, state: StateLike, start_time: int) -> None: ...

    def record_job_end(
        self,
        job: JobLike,
        state: StateLike,
        start_time: int,
        duration: float,
        error: str | None,
    ) -> None: ...


class RunObserver(Protocol):
    """Watches one run (the run history, pverep.observe): sees its log, hears its end."""

    def tap(self, log: LogFunc) -> LogFunc: ...

    def finish(self, error: str | None) -> None: ...


@dataclass
class Runner:
    """Runs single jobs; one instance per ``pverep run`` (it holds no per-job state)."""

    make_env: Callable[[Callable[[int], None]], ReplicateEnv]  # record_sync_end → env
    store: StateStore
    guest_lock: Callable[[int, float], AbstractContextManager[object]]  # (vmid, timeout)
    log_dir: Path
    clock: Clock = field(default=time.time)  # wall clock for log line stamps
    timer: Callable[[], float] = field(default=time.monotonic)  # for ``duration``
    observe: Callable[[JobLike], RunObserver] | None = None  # the run history's tap

    def run_replication(
        self,
        job: JobLike,
        iteration: int,
        start_time: int,
        logfunc: LogFunc | None = None,
        verbose: bool = False,
    ) -> list[str]:
        """Lock the guest (2 s), run the job, record start/end; re-raise the job's error."""
        with self.guest_lock(job.guest, GUEST_LOCK_TIMEOUT):
            return self._run_locked(job, iteration, start_time, logfunc, verbose)

    def _run_locked(
        self,
        job: JobLike,
        iteration: int,
        start_time: int,
        logfunc: LogFunc | None,
        verbose: bool,
    ) -> list[str]:
        state = self.store.read_job_state(job)
        self.store.record_job_start(job, state, start_time, iteration)
        t0 = self.timer()
        with JobLog(self.log_dir, job.id, clock=self.clock, echo=logfunc, verbose=verbose) as jlog:
            observer = self.observe(job) if self.observe is not None else None
            log = observer.tap(jlog) if observer is not None else jlog
            log(messages.start_job())
            env = self.make_env(lambda t: self.store.record_sync_end(job, state, t))
            try:
                volids = replicate(env, job, state, start_time, log)
            except Exception as err:
                error = str(err) or type(err).__name__
                log(messages.end_job(error))
                self.store.record_job_end(job, state, start_time, self.timer() - t0, error)
                if observer is not None:
                    observer.finish(error)
                raise
            log(messages.end_job(None))
            self.store.record_job_end(job, state, start_time, self.timer() - t0, None)
            if observer is not None:
                observer.finish(None)
            return volids
