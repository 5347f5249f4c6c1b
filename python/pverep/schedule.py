"""Which jobs this node handles, when each is due, and in which order (spec §3.1, §3.2).

Pure functions of (config, state, cluster view, clock): ``job_status`` may change the config
(the ``source`` fix-up and the target switch for stolen guests) and says so; the caller writes
it back under the config lock.

It sees the cluster only through the two small protocols below (``cluster.base``'s
GuestLocation and Member fit them), so it does not import ``pverep.cluster``, whose backends
import this module.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import tzinfo
from typing import Protocol

from pverep.calendar import CalendarEvent, compute_next_event
from pverep.config.jobs import JOB_TYPE, Job, ReplicationConfig
from pverep.config.state import JobState, StateObj, read_job_state
from pverep.errors import ConfigError, ValidationError
from pverep.guests import GuestType


class Member(Protocol):
    """A cluster member as far as the schedule cares: is it online."""

    @property
    def online(self) -> bool: ...


class GuestLocation(Protocol):
    """A vmlist entry as far as the schedule cares: the guest's node and type."""

    @property
    def node(self) -> str: ...
    @property
    def type(self) -> GuestType: ...


#: next_sync values with a special meaning.
NEVER = 0  # not scheduled (status shows "-")
ALWAYS = 1  # due on every run (removal jobs)


def retry_delay(fail_count: int) -> int:
    """Seconds after ``last_try`` before a failing job is retried: 5, 10, 15, then 30 min."""
    return 60 * (5 * fail_count if fail_count <= 3 else 30)


def next_sync(
    job: Job, state: JobState, members: Mapping[str, Member], zone: tzinfo | None = None
) -> int:
    """When the job is due next: an epoch, ``ALWAYS`` (removal) or ``NEVER``."""
    if job.remove_job:
        if state.fail_count > 0:
            # pverep deviation (issue 5): pvesr retries a failing removal every minute forever.
            # Wait while the target is offline; once it is back, retry with the back-off table
            # (reconcile makes it due at once after an outage, see reconcile.planner).
            member = members.get(job.target)
            if member is not None and not member.online:
                return NEVER
            return state.last_try + retry_delay(state.fail_count)
        return ALWAYS
    if state.fail_count > 0:
        member = members.get(job.target)
        if member is not None and member.online:
            return state.last_try + retry_delay(state.fail_count)
        return NEVER  # the target is gone: no retries until it is back (spec §9.4 #17)
    try:
        event = CalendarEvent.parse(job.effective_schedule)
    except ValidationError:
        return NEVER  # config parsing already warned about it; such a job never runs
    return compute_next_event(event, state.last_try, zone) or NEVER


@dataclass(frozen=True)
class JobStatus:
    """A job this node handles, with its state and schedule (what pvesr's job_status returns)."""

    job: Job
    state: JobState
    vmtype: GuestType
    next_sync: int

    @property
    def id(self) -> str:
        return self.job.id

    @property
    def guest(self) -> int:
        return self.job.guest


def switch_replication_job_target(
    cfg: ReplicationConfig, vmid: int, old_target: str, new_target: str
) -> None:
    """After the guest moved to ``old_target``: jobs that pointed there now point to
    ``new_target`` (its previous home), and every job of the guest gets ``source = old_target``.
    """
    for job in cfg.jobs.values():
        if job.guest != vmid or job.type != JOB_TYPE:
            continue
        if job.target == old_target:
            job.target = new_target
        job.source = old_target


def job_status(
    cfg: ReplicationConfig,
    stateobj: StateObj,
    vmlist: Mapping[int, GuestLocation],
    members: Mapping[str, Member],
    local_node: str,
    *,
    get_disabled: bool = False,
    zone: tzinfo | None = None,
) -> tuple[list[JobStatus], bool]:
    """The jobs ``local_node`` handles, in job-id string order, and whether ``cfg`` changed."""
    changed = False
    result: list[JobStatus] = []
    for jobid in cfg.sorted_ids():
        job = cfg.jobs[jobid]
        if job.type != JOB_TYPE:
            raise ConfigError("internal error - not implemented")
        where = vmlist.get(job.guest)
        if where is None or where.node != local_node:
            continue  # only the node that owns the guest handles its jobs
        if not job.source:
            job.source = local_node
            changed = True
        if job.source != local_node:
            # the guest was stolen (HA recovery, manual move): re-point its jobs
            switch_replication_job_target(cfg, job.guest, local_node, job.source)
            changed = True
        if not job.remove_job:
            if job.target == local_node:
                continue  # never sync to the local node
            if job.disable and not get_disabled:
                continue
        state = JobState.from_raw(read_job_state(stateobj, job.guest, job.tid))
        result.append(JobStatus(job, state, where.type, next_sync(job, state, members, zone)))
    return result, changed


def run_order(statuses: Iterable[JobStatus]) -> list[JobStatus]:
    """pvesr's pick order: last_iteration, next_sync, guest, job id."""
    return sorted(statuses, key=lambda s: (s.state.last_iteration, s.next_sync, s.guest, s.id))


def next_job(statuses: Iterable[JobStatus], iteration: int, start_time: int) -> JobStatus | None:
    """The job run_jobs runs next: not yet started in this iteration, scheduled and due."""
    for status in run_order(statuses):
        if (
            status.state.last_iteration < iteration
            and status.next_sync != NEVER
            and start_time >= status.next_sync
        ):
            return status
    return None
