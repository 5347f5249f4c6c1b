"""run_jobs / run_single_job semantics against upstream tests 2, 3, 4 (spec §8.2).

job_status here is a small fake of §3.1 for the ``*/15`` default schedule (next multiple of
900 s after last_try, back-off 5/10/15/30 min) so that only the scheduler's loop is under test.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pytest

from pverep.cluster import GuestLocation
from pverep.engine.replicate import JobLike
from pverep.engine.scheduler import JobStatus, Scheduler, should_notify
from pverep.errors import LockError, PverepError

from .fakes import FakeJob, FakeState


@dataclass
class FakeRunner:
    """Stands for run_replication: records calls, updates the state as record_job_* would."""

    states: dict[str, FakeState]
    fail_with: str | None = None
    lock_busy_until: int = 0
    calls: list[tuple[str, int, int, int]] = field(default_factory=list)
    attempts: int = 0
    log_line: str | None = None  # printed through the logfunc, as the real runner's lines are

    def run_replication(
        self,
        job: JobLike,
        iteration: int,
        start_time: int,
        logfunc: object = None,
        verbose: bool = False,
    ) -> list[str]:
        self.attempts += 1
        if self.log_line is not None:
            assert callable(logfunc)
            logfunc(self.log_line)
        if self.attempts <= self.lock_busy_until:
            raise LockError(
                f"can't lock file '/var/lock/pve-manager/pve-migrate-{job.guest}' - got timeout"
            )
        state = self.states.setdefault(job.id, FakeState())
        self.calls.append((job.id, job.guest, state.last_sync, start_time))
        state.last_iteration, state.last_try = iteration, start_time
        if self.fail_with:
            state.fail_count += 1
            raise PverepError(self.fail_with)
        state.last_sync, state.fail_count = start_time, 0
        return []


def fake_job_status(
    jobs: Sequence[FakeJob], states: Mapping[str, FakeState], local: str = "node1"
) -> list[JobStatus]:
    out = []
    for job in jobs:
        if job.target == local and not job.remove_job:
            continue
        st = states.get(job.id, FakeState())
        if job.remove_job:
            nxt = 1
        elif st.fail_count:
            nxt = st.last_try + 60 * (5 * st.fail_count if st.fail_count <= 3 else 30)
        else:
            nxt = (st.last_try // 900 + 1) * 900
        out.append(JobStatus(job, st.last_iteration, nxt))
    return out


def make(
    jobs: list[FakeJob],
    runner: FakeRunner,
    warnings: list[str],
    notes: list[tuple[str, int]] | None = None,
    max_workers: int = 1,
) -> Scheduler:
    return Scheduler(
        runner=runner,
        job_status=lambda: fake_job_status(jobs, runner.states),
        purge_old_states=lambda: None,
        run_lock=lambda timeout: contextlib.nullcontext(),
        read_jobs=lambda: {j.id: j for j in jobs},
        vmlist=lambda: {900: GuestLocation(900, "node1", "qemu")},
        local_node="node1",
        fail_count=lambda job: runner.states.get(job.id, FakeState()).fail_count,
        notify=(lambda job, err, n: notes.append((err, n))) if notes is not None else None,
        warn=warnings.append,
        max_workers=max_workers,
    )


#: The upstream vectors hold for the serial loop and for the parallel dispatcher alike.
WORKERS = pytest.mark.parametrize("workers", [1, 4])


@WORKERS
def test_scheduler_runs_due_jobs_only_upstream_test2(workers: int) -> None:
    jobs = [FakeJob("900-1_to_node2", 900, "node2"), FakeJob("900-2_to_node1", 900, "node1")]
    runner = FakeRunner({})
    sched = make(jobs, runner, [], max_workers=workers)
    for i in range(61):
        sched.run_jobs(now=i * 60)
    assert runner.calls == [
        ("900-1_to_node2", 900, 0, 900),
        ("900-1_to_node2", 900, 900, 1800),
        ("900-1_to_node2", 900, 1800, 2700),
        ("900-1_to_node2", 900, 2700, 3600),
    ]


def test_run_single_job_to_local_node_fails_upstream_test3() -> None:
    sched = make([FakeJob("job_900_to_node1", 900, "node1")], FakeRunner({}), [])
    with pytest.raises(PverepError, match=r"^unable to sync to local node$"):
        sched.run_single_job("job_900_to_node1", 1000)


@pytest.mark.parametrize(
    ("jobid", "job", "message"),
    [
        ("nope", None, "no such job 'nope'"),
        ("900-1", FakeJob("900-1", 901, "node2"), "no such guest '901'"),
    ],
)
def test_run_single_job_errors(jobid: str, job: FakeJob | None, message: str) -> None:
    sched = make([job] if job else [], FakeRunner({}), [])
    with pytest.raises(PverepError, match=f"^{message}$"):
        sched.run_single_job(jobid, 1000)


@WORKERS
def test_failure_back_off_upstream_test4(workers: int) -> None:
    jobs = [FakeJob("job_900_to_node2", 900, "node2"), FakeJob("job_900_to_node1", 900, "node1")]
    runner = FakeRunner({}, fail_with="faked replication error")
    warnings: list[str] = []
    notes: list[tuple[str, int]] = []
    sched = make(jobs, runner, warnings, notes, max_workers=workers)
    for i in range(120):
        sched.run_jobs(now=1000 + i * 60, mail=True)
    assert [c[3] for c in runner.calls] == [1000, 1300, 1900, 2800, 4600, 6400]
    assert warnings[0] == (
        "job_900_to_node2: got unexpected replication job error - faked replication error"
    )
    assert notes == [("faked replication error", n) for n in (1, 2, 3)]


@WORKERS
def test_lock_timeout_is_retried_within_one_pass_and_runs_once(workers: int) -> None:
    runner = FakeRunner({}, lock_busy_until=3)
    warnings: list[str] = []
    notes: list[tuple[str, int]] = []
    sched = make([FakeJob("900-1", 900, "node2")], runner, warnings, notes, max_workers=workers)
    sched.run_jobs(now=900, mail=True)
    assert runner.attempts == 4 and len(runner.calls) == 1
    assert len(warnings) == 3 and notes == []  # fail_count stays 0: no mail


@pytest.mark.parametrize(
    ("count", "expected"),
    [
        (0, False),
        (1, True),
        (3, True),
        (4, False),
        (47, False),
        (48, True),
        (96, True),
        (144, False),
        (192, True),
        (384, True),
    ],
)
def test_notification_thinning(count: int, expected: bool) -> None:
    assert should_notify(count) is expected


@pytest.mark.parametrize(("workers", "expected"), [(1, "start replication job"), (4, None)])
def test_verbose_lines_name_their_job_only_when_jobs_run_at_once(
    workers: int, expected: str | None
) -> None:
    jobs = [FakeJob("900-1", 900, "node2"), FakeJob("901-1", 901, "node2")]
    runner = FakeRunner({}, log_line="start replication job")
    sched = make(jobs, runner, [], max_workers=workers)
    lines: list[str] = []
    sched.run_jobs(now=900, logfunc=lines.append)
    if expected is not None:  # the serial loop prints pvesr's bare lines
        assert lines == [expected, expected]
    else:
        assert sorted(lines) == ["900-1: start replication job", "901-1: start replication job"]
