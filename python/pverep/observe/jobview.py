"""One replication job as an observer sees it: schedule interval, RPO lag, a state word.

Pure: the clock and the time zone are arguments (design rule 3).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import tzinfo

from pverep.calendar import CalendarEvent, compute_next_event
from pverep.errors import ValidationError
from pverep.schedule import JobStatus

#: The job states an observer distinguishes (exported as one 0/1 series each).
STATES = ("ok", "syncing", "failing", "disabled", "removing", "never")


def schedule_interval(schedule: str, now: int, zone: tzinfo | None = None) -> int | None:
    """Seconds between the schedule's next two events after ``now`` (its nominal period).

    Irregular schedules (``mon..fri 8:00``) give the gap in effect right now, which is what an
    RPO alert should compare against. None for a schedule that does not parse or never fires.
    """
    try:
        event = CalendarEvent.parse(schedule)
    except ValidationError:
        return None
    first = compute_next_event(event, now, zone)
    if first is None:
        return None
    second = compute_next_event(event, first, zone)
    return None if second is None else second - first


@dataclass(frozen=True)
class JobView:
    """What metrics, health and the report show of one job."""

    jobid: str
    guest: int
    source: str
    target: str
    schedule: str
    interval: int | None  # seconds, see schedule_interval
    last_sync: int  # epoch, 0 = never
    last_try: int
    next_sync: int  # epoch, 0 = not scheduled, 1 = every run (removal)
    fail_count: int
    error: str | None
    duration: float | None
    running: bool
    disabled: bool
    removing: bool

    def rpo(self, now: int) -> int | None:
        """Seconds since the last successful sync (None: never synced)."""
        return max(0, now - self.last_sync) if self.last_sync else None

    @property
    def state(self) -> str:
        if self.removing:
            return "removing"
        if self.disabled:
            return "disabled"
        if self.running:
            return "syncing"
        if self.fail_count > 0:
            return "failing"
        if not self.last_sync:
            return "never"
        return "ok"


def view_of(
    status: JobStatus, node: str, now: int, running: bool, zone: tzinfo | None = None
) -> JobView:
    """The observer's view of one ``job_status`` entry handled by ``node``."""
    job, state = status.job, status.state
    schedule = job.effective_schedule
    return JobView(
        jobid=job.id,
        guest=job.guest,
        source=job.source or node,
        target=job.target,
        schedule=schedule,
        interval=schedule_interval(schedule, now, zone),
        last_sync=state.last_sync,
        last_try=state.last_try,
        next_sync=status.next_sync,
        fail_count=state.fail_count,
        error=state.error,
        duration=state.duration,
        running=running,
        disabled=bool(job.disable),
        removing=job.remove_job is not None,
    )
