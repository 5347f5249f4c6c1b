"""``Scheduler.run_single_job`` (``pverep run --id``, pvesr's run_single_job, spec §3.3),
``run_jobs`` (one pass) and the failure handling of a pass: what is checked before a job runs,
with which times and arguments, under which lock, and what always happens after it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from pverep.cluster import GuestLocation
from pverep.engine import scheduler as scheduler_mod
from pverep.engine.replicate import JobLike
from pverep.engine.scheduler import RUN_LOCK_TIMEOUT, JobStatus, Scheduler
from pverep.errors import PverepError

from .fakes import FakeJob


@dataclass
class Events:
    """Everything the scheduler does, in order."""

    seen: list[tuple[object, ...]] = field(default_factory=list)
    fail_with: Exception | None = None
    held: bool = False

    def run_replication(
        self,
        job: JobLike,
        iteration: int,
        start_time: int,
        logfunc: object = None,
        verbose: bool = False,
    ) -> list[str]:
        self.seen.append(("run", job.id, iteration, start_time, logfunc, verbose, self.held))
        if self.fail_with is not None:
            raise self.fail_with
        return [f"local-zfs:vm-{job.guest}-disk-0"]

    @contextlib.contextmanager
    def run_lock(self, timeout: float) -> Iterator[None]:
        self.seen.append(("lock", timeout))
        self.held = True
        try:
            yield
        finally:
            self.held = False
            self.seen.append(("unlock",))


@dataclass
class DisabledJob(FakeJob):
    disable: bool = True


@dataclass
class RemoteJob(FakeJob):
    type: str = "remote"


def make(events: Events, *jobs: FakeJob, clock: float = 5000.9) -> Scheduler:
    return Scheduler(
        runner=events,
        job_status=lambda: [],
        purge_old_states=lambda: events.seen.append(("purge",)),
        run_lock=events.run_lock,
        read_jobs=lambda: {j.id: j for j in jobs},
        vmlist=lambda: {
            100: GuestLocation(100, "node1", "qemu"),
            200: GuestLocation(200, "node2", "lxc"),
        },
        local_node="node1",
        fail_count=lambda job: 1,
        clock=lambda: clock,
        after_run=lambda took: events.seen.append(("after_run", took)),
        warn=lambda msg: events.seen.append(("warn", msg)),
        end_of_run=lambda: events.seen.append(("end_of_run",)),
    )


def log(line: str) -> None:
    pass


def test_the_job_runs_at_now_under_the_run_lock_and_then_the_run_ends() -> None:
    events = Events()
    sched = make(events, FakeJob("100-0", 100, "node2"))
    assert sched.run_single_job("100-0", 4000, log, True) == ["local-zfs:vm-100-disk-0"]
    assert events.seen == [
        ("lock", RUN_LOCK_TIMEOUT),
        ("run", "100-0", 4000, 4000, log, True, True),
        ("end_of_run",),
        ("after_run", None),  # no pass duration for --id
        ("unlock",),
    ]
    assert RUN_LOCK_TIMEOUT == 60.0


def test_without_now_the_clock_in_whole_seconds() -> None:
    events = Events()
    sched = make(events, FakeJob("100-0", 100, "node2"), clock=5000.9)
    sched.run_single_job("100-0")
    assert events.seen[1] == ("run", "100-0", 5000, 5000, None, False, True)


def test_a_failing_job_still_ends_the_run_and_its_error_reaches_the_caller() -> None:
    events = Events(fail_with=PverepError("boom"))
    sched = make(events, FakeJob("100-0", 100, "node2"))
    with pytest.raises(PverepError) as err:
        sched.run_single_job("100-0", 4000)
    assert str(err.value) == "boom"
    assert events.seen[2:] == [("end_of_run",), ("after_run", None), ("unlock",)]


def _refusals() -> list[tuple[str, list[FakeJob], str]]:
    return [
        ("100-9", [FakeJob("100-0", 100, "node2")], "no such job '100-9'"),
        ("100-0", [RemoteJob("100-0", 100, "node2")], "internal error - not implemented"),
        ("100-0", [DisabledJob("100-0", 100, "node2")], "job '100-0' is disabled"),
        ("300-0", [FakeJob("300-0", 300, "node2")], "no such guest '300'"),
        ("200-0", [FakeJob("200-0", 200, "node3")], "guest '200' is not on local node"),
        ("100-0", [FakeJob("100-0", 100, "node1")], "unable to sync to local node"),
    ]


@pytest.mark.parametrize("case", range(6))
def test_refused_before_anything_runs(case: int) -> None:
    jobid, jobs, message = _refusals()[case]
    events = Events()
    with pytest.raises(PverepError) as err:
        make(events, *jobs).run_single_job(jobid, 4000)
    assert str(err.value) == message
    assert events.seen == [("lock", RUN_LOCK_TIMEOUT), ("unlock",)]


def test_an_enabled_local_job_with_those_attributes_runs() -> None:
    events = Events()

    @dataclass
    class Explicit(FakeJob):
        disable: bool = False

    make(events, Explicit("100-0", 100, "node2", type="local")).run_single_job("100-0", 4000)
    assert events.seen[1][:2] == ("run", "100-0")


# --- failures in a pass ----------------------------------------------------------------------


def test_a_failure_is_warned_with_its_text_and_mailed_with_its_count() -> None:
    events = Events()
    mails: list[tuple[str, str, int]] = []
    sched = make(events, FakeJob("100-0", 100, "node2"))
    sched.notify = lambda job, text, count: mails.append((job.id, text, count))
    sched._handle_job_err(FakeJob("100-0", 100, "node2"), PverepError("no space left\n"), True)
    assert events.seen == [("warn", "100-0: got unexpected replication job error - no space left")]
    assert mails == [("100-0", "no space left", 1)]
    sched._handle_job_err(FakeJob("100-0", 100, "node2"), PverepError("x"), False)
    assert len(mails) == 1  # not asked to mail


def test_a_mail_that_fails_is_warned_and_not_raised() -> None:
    events = Events()
    sched = make(events, FakeJob("100-0", 100, "node2"))

    def refuse(job: JobLike, text: str, count: int) -> None:
        raise PverepError("sendmail missing")

    sched.notify = refuse
    sched._handle_job_err(FakeJob("100-0", 100, "node2"), PverepError("boom"), True)
    assert events.seen == [
        ("warn", "100-0: got unexpected replication job error - boom"),
        ("warn", "100-0: sending failure notification failed - sendmail missing"),
    ]


def test_no_mail_beyond_the_notify_schedule() -> None:
    events = Events()
    mails: list[int] = []
    sched = make(events, FakeJob("100-0", 100, "node2"))
    sched.fail_count = lambda job: 4
    sched.notify = lambda job, text, count: mails.append(count)
    sched._handle_job_err(FakeJob("100-0", 100, "node2"), PverepError("boom"), True)
    assert mails == []


def test_the_default_warning_goes_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    scheduler_mod._warn("100-0: something")
    assert capsys.readouterr() == ("", "100-0: something\n")


# --- a pass (run_jobs) -----------------------------------------------------------------------


class Clock:
    def __init__(self, *ticks: float) -> None:
        self.ticks = list(ticks)

    def __call__(self) -> float:
        return self.ticks.pop(0) if len(self.ticks) > 1 else self.ticks[0]


def pass_scheduler(events: Events, workers: int, clock: Clock) -> Scheduler:
    job = FakeJob("100-0", 100, "node2")
    ran: set[str] = set()

    def run(job: JobLike, iteration: int, start: int, logfunc: object = None,
            verbose: bool = False) -> list[str]:  # fmt: skip
        ran.add(job.id)
        if logfunc is not None:
            logfunc("start replication job")  # type: ignore[operator]
        return Events.run_replication(events, job, iteration, start, logfunc, verbose)

    sched = make(events, job)
    sched.runner = type("R", (), {"run_replication": staticmethod(run)})()
    sched.job_status = lambda: [JobStatus(job, 10**10 if job.id in ran else 0, 1)]
    sched.max_workers = workers
    sched.clock = clock
    return sched


@pytest.mark.parametrize("workers", [1, 2])
def test_a_pass_without_now_runs_at_the_clock_and_reports_its_duration(workers: int) -> None:
    events = Events()
    sched = pass_scheduler(events, workers, Clock(7000.0, 7000.6, 7000.9, 7002.5))
    sched.run_jobs()
    runs = [e for e in events.seen if e[0] == "run"]
    assert [r[2:4] for r in runs] == [(7000, 7000)]
    assert runs[0][4] is None and runs[0][5] is False  # no log echo, not verbose by default
    assert events.seen[0] == ("lock", RUN_LOCK_TIMEOUT)
    assert events.seen[1] == ("purge",)
    [after] = [e for e in events.seen if e[0] == "after_run"]
    assert after == ("after_run", 2.5)  # from the pass's first clock reading to its last
    assert events.seen[-1] == ("unlock",)


@pytest.mark.parametrize(("workers", "tagged"), [(1, False), (2, True)])
def test_a_parallel_pass_tags_each_line_with_its_job(workers: int, tagged: bool) -> None:
    events = Events()
    lines: list[str] = []
    sched = pass_scheduler(events, workers, Clock(7000.0))
    sched.run_jobs(8000, lines.append, True)
    [run] = [e for e in events.seen if e[0] == "run"]
    assert run[2:4] == (8000, 8000) and run[5] is True
    assert lines == (["100-0: start replication job"] if tagged else ["start replication job"])


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("mail", [False, True])
def test_a_pass_mails_only_when_asked(workers: int, mail: bool) -> None:
    events = Events(fail_with=PverepError("boom"))
    mails: list[int] = []
    sched = pass_scheduler(events, workers, Clock(7000.0))
    sched.notify = lambda job, text, count: mails.append(count)
    if mail:
        sched.run_jobs(8000, mail=True)
    else:
        sched.run_jobs(8000)  # the default: no mail
    assert mails == ([1] if mail else [])
    assert ("warn", "100-0: got unexpected replication job error - boom") in events.seen
