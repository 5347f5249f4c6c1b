"""pvesr's run_jobs / run_single_job (spec §3.2, §3.3): which job runs when, under which lock.

``run_jobs`` fixes ``iteration`` for the whole pass and re-evaluates ``start_time`` after every
job; a job is due when it has not run in this iteration, is scheduled (next_sync != 0) and
start_time >= next_sync. A job whose guest lock times out keeps its old last_iteration and is
therefore picked again (pvesr retries every ~2 s until the lock frees; nothing runs twice).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Protocol

from pverep.cluster import GuestLocation
from pverep.engine.dispatch import Dispatcher, is_due
from pverep.engine.joblog import LogFunc
from pverep.engine.replicate import JobLike
from pverep.errors import PverepError

#: pvesr waits this long for /var/lock/pvesr.lck (§1.4).
RUN_LOCK_TIMEOUT = 60.0


@dataclass(frozen=True)
class JobStatus:
    """One entry of job_status() (§3.1): the job, its state's last_iteration, its next_sync."""

    job: JobLike
    last_iteration: int
    next_sync: int


class JobRunner(Protocol):
    def run_replication(
        self,
        job: JobLike,
        iteration: int,
        start_time: int,
        logfunc: LogFunc | None = None,
        verbose: bool = False,  # pragma: no mutate (a Protocol: the runner's own default counts)
    ) -> list[str]: ...


def should_notify(fail_count: int) -> bool:
    """§3.5: always for 1..3 failures, then at 48·2^k (about 1, 2, 4… days at 30-min retries)."""
    if fail_count <= 0:
        return False  # lock timeouts leave fail_count at 0: never mail those (#4111)
    if fail_count <= 3:
        return True
    if fail_count % 48:
        return False
    ratio = fail_count // 48
    return ratio & (ratio - 1) == 0


def _warn(msg: str) -> None:
    print(msg, file=sys.stderr)


@dataclass
class Scheduler:
    runner: JobRunner
    job_status: Callable[[], Sequence[JobStatus]]  # fresh each call (may rewrite the config)
    purge_old_states: Callable[[], None]
    run_lock: Callable[[float], AbstractContextManager[object]]
    read_jobs: Callable[[], Mapping[str, JobLike]]
    vmlist: Callable[[], Mapping[int, GuestLocation]]
    local_node: str
    fail_count: Callable[[JobLike], int]  # re-read from the state after a failure
    notify: Callable[[JobLike, str, int], None] | None = None  # (job, error, fail_count)
    clock: Callable[[], float] = field(default=time.time)
    #: after every run: the metrics textfile; the pass's duration (None for ``--id``)
    after_run: Callable[[float | None], None] | None = None
    warn: Callable[[str], None] = field(default=_warn)
    max_workers: int = 1  # 1 = pvesr's serial loop; more = engine/dispatch.py
    end_of_run: Callable[[], None] = field(default=lambda: None)  # e.g. end the ssh masters

    def next_job(self, iteration: int, start_time: int) -> JobLike | None:
        entries = sorted(
            self.job_status(),
            key=lambda e: (e.last_iteration, e.next_sync, int(e.job.guest), e.job.id),
        )
        for entry in entries:
            if is_due(entry, iteration, start_time):
                return entry.job
        return None

    def run_jobs(
        self,
        now: int | None = None,
        logfunc: LogFunc | None = None,
        verbose: bool = False,
        mail: bool = False,
    ) -> None:
        with self.run_lock(RUN_LOCK_TIMEOUT):
            began = self.clock()
            try:
                self._run_pass(now, logfunc, verbose, mail)
            finally:
                self.end_of_run()
            if self.after_run is not None:
                self.after_run(self.clock() - began)

    def _run_pass(
        self, now: int | None, logfunc: LogFunc | None, verbose: bool, mail: bool
    ) -> None:
        iteration = now if now is not None else int(self.clock())
        start_time = iteration
        self.purge_old_states()
        if self.max_workers > 1:
            Dispatcher(
                self.max_workers,
                entries=self.job_status,
                run=lambda job, start: self.runner.run_replication(
                    job, iteration, start, _tagged(logfunc, job.id), verbose
                ),
                on_error=lambda job, err: self._handle_job_err(job, err, mail),
                start_time=lambda: now if now is not None else int(self.clock()),
            ).pass_(iteration)
            return
        while (job := self.next_job(iteration, start_time)) is not None:
            try:
                self.runner.run_replication(job, iteration, start_time, logfunc, verbose)
            except Exception as err:
                self._handle_job_err(job, err, mail)
            start_time = now if now is not None else int(self.clock())

    def _handle_job_err(self, job: JobLike, err: Exception, mail: bool) -> None:
        text = str(err).rstrip("\n")
        self.warn(f"{job.id}: got unexpected replication job error - {text}")
        if not mail or self.notify is None:
            return
        fail_count = self.fail_count(job)
        if should_notify(fail_count):
            try:
                self.notify(job, text, fail_count)
            except PverepError as nerr:
                self.warn(f"{job.id}: sending failure notification failed - {nerr}")

    def run_single_job(
        self,
        jobid: str,
        now: int | None = None,
        logfunc: LogFunc | None = None,
        verbose: bool = False,
    ) -> list[str]:
        with self.run_lock(RUN_LOCK_TIMEOUT):
            start = now if now is not None else int(self.clock())
            job = self.read_jobs().get(jobid)
            if job is None:
                raise PverepError(f"no such job '{jobid}'")
            if getattr(job, "type", "local") != "local":
                raise PverepError("internal error - not implemented")
            if getattr(job, "disable", False):
                raise PverepError(f"job '{jobid}' is disabled")
            vmid = int(job.guest)
            where = self.vmlist().get(vmid)
            if where is None:
                raise PverepError(f"no such guest '{vmid}'")
            if where.node != self.local_node:
                raise PverepError(f"guest '{vmid}' is not on local node")
            if job.target == self.local_node:
                raise PverepError("unable to sync to local node")
            try:
                return self.runner.run_replication(job, start, start, logfunc, verbose)
            finally:
                self.end_of_run()
                if self.after_run is not None:
                    self.after_run(None)


def _tagged(logfunc: LogFunc | None, jobid: str) -> LogFunc | None:
    """Lines of jobs running at once would interleave anonymously: prefix each with its job id
    (``100-0: start replication job``). The serial loop prints pvesr's bare lines."""
    if logfunc is None:
        return None
    return lambda msg: logfunc(f"{jobid}: {msg}")
