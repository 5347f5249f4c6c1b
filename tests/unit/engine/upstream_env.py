"""pve-manager's ``ReplicationTestEnv`` rebuilt on pverep's own scheduling and state code.

Real: ``schedule.job_status`` (next_sync, back-off, removal), ``engine.scheduler`` (run_jobs),
``engine.runner`` with the job log, the state file through ``config/state.py`` (wiring's
StateRecorder) under a temporary root. Faked, as upstream fakes them: storage and target
(tests/unit/engine/fakes.py), the guest config, replication.cfg kept in memory.

``track_jobs(ctime)`` is one tick of upstream's loop: it runs the due jobs and then prints what
changed in job_status, with the same texts (spec §8.1). Upstream's job ids
(``job_900_to_node2``) are not valid pvesr ids, so the jobs run as ``900-1``/``900-2`` (same
sort order) and only the printed lines name them as upstream does.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from datetime import UTC
from pathlib import Path

from pverep.cluster import GuestLocation
from pverep.cluster.base import Member
from pverep.config.jobs import Job, ReplicationConfig
from pverep.config.state import JobState, StateStore, states_to_keep
from pverep.engine.ports import GuestView
from pverep.engine.replicate import ReplicateEnv
from pverep.engine.runner import Runner
from pverep.engine.scheduler import JobStatus, Scheduler
from pverep.engine.wiring import StateRecorder
from pverep.paths import Paths
from pverep.schedule import JobStatus as ScheduleStatus
from pverep.schedule import job_status

from .fakes import World

LOCAL = "node1"
MEMBERS = {n: Member(n, True) for n in ("node1", "node2", "node3")}
#: upstream's job names ↔ the valid ids they run under here (same string order)
UPSTREAM_IDS = {"900-1": "job_900_to_node1", "900-2": "job_900_to_node2"}
_ID_RE = re.compile(r"(?<![\d-])(900-[12])(?!\d)")
_STAMP_RE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ")
_STATE_KEYS = ("last_node", "last_try", "last_sync", "fail_count", "error")


def upstream_names(line: str) -> str:
    return _ID_RE.sub(lambda m: UPSTREAM_IDS[m.group(1)], line)


class UpstreamEnv:
    """VM 900 on node1, jobs by target node, and the tick loop of the upstream tests."""

    def __init__(self, tmp: Path, jobs: dict[str, Job], disks: list[str]) -> None:
        self.paths = Paths.from_env(str(tmp))
        self.world = World(tmp / "log", disks=disks)
        self.cfg = ReplicationConfig(jobs=jobs)
        self.states = StateStore(self.paths)
        self.vmlist = {900: GuestLocation(900, LOCAL, "qemu")}
        self.out: list[str] = []
        #: set to make every replicate fail as upstream test 4's mock does
        self.fail_with: str | None = None
        self._status: dict[str, ScheduleStatus] | None = None
        self._ctime = 0

    # --- the pieces the scheduler is built from ---
    def _guest(self, vmid: int, cleanup: bool) -> GuestView:
        if self.fail_with is not None:
            from pverep.errors import PverepError

            raise PverepError(self.fail_with)
        return self.world.guest(vmid, cleanup)

    def _env(self, record_sync_end: Callable[[int], None]) -> ReplicateEnv:
        env = self.world.env(record_sync_end)
        env.load_guest = self._guest
        env.delete_job = self._delete_job
        return env

    def _delete_job(self, jobid: str) -> None:
        self.cfg.jobs.pop(jobid, None)  # upstream tests 5/6 mock delete_job the same way

    def job_status(self) -> dict[str, ScheduleStatus]:
        found, _ = job_status(self.cfg, self.states.read(), self.vmlist, MEMBERS, LOCAL, zone=UTC)
        return {s.id: s for s in found}

    def scheduler(self) -> Scheduler:
        runner = Runner(
            make_env=self._env,
            store=StateRecorder(self.states, LOCAL),
            guest_lock=lambda vmid, timeout: contextlib.nullcontext(),
            log_dir=self.world.tmp,
        )

        def purge() -> None:
            keep = states_to_keep(
                [(j.guest, j.tid) for j in self.cfg.jobs.values()],
                {vmid: loc.node for vmid, loc in self.vmlist.items()},
                LOCAL,
            )
            self.states.purge_old_states(keep)

        return Scheduler(
            runner=runner,
            job_status=lambda: [
                JobStatus(s.job, s.state.last_iteration, s.next_sync)
                for s in self.job_status().values()
            ],
            purge_old_states=purge,
            run_lock=lambda timeout: contextlib.nullcontext(),
            read_jobs=lambda: self.cfg.jobs,
            vmlist=lambda: self.vmlist,
            local_node=LOCAL,
            fail_count=lambda job: 0,
            warn=lambda msg: None,
        )

    # --- upstream's track_jobs ---
    def _log(self, msg: str) -> None:
        self.out.append(upstream_names(msg))

    def _job_line(self, line: str) -> None:
        # upstream mocks the job log's clock to the tick: "<ctime> <jobid>: <msg>"
        self._log(f"{self._ctime} {_STAMP_RE.sub('', line)}")

    def track_jobs(self, ctime: int) -> None:
        self._ctime = ctime
        if self._status is None:
            self._status = self.job_status()
            for jobid in sorted(self._status):
                self._log(f"{ctime} {jobid}: new job next_sync => {self._status[jobid].next_sync}")
        self.scheduler().run_jobs(ctime, self._job_line, True)
        new = self.job_status()
        for jobid in sorted(self._status):
            if jobid not in new:
                self._log(f"{ctime} {jobid}: vanished job")
        for jobid in sorted(new):
            old = self._status.get(jobid)
            if old is None:
                self._log(f"{ctime} {jobid}: new job next_sync => {new[jobid].next_sync}")
                continue
            self._changes(ctime, jobid, old, new[jobid])
        self._status = new

    def _changes(self, ctime: int, jobid: str, old: ScheduleStatus, new: ScheduleStatus) -> None:
        for key, before, after in (
            ("target", old.job.target, new.job.target),
            ("guest", old.job.guest, new.job.guest),
            ("vmtype", old.vmtype, new.vmtype),
            ("next_sync", old.next_sync, new.next_sync),
        ):
            if before != after:  # one line per key, as upstream
                self._log(f"{ctime} {jobid}: changed config {key} => {after}")
        changes = [
            f"{key} => {_text(new.state, key)}"
            for key in _STATE_KEYS
            if _text(old.state, key) != _text(new.state, key)
        ]
        if changes:
            self._log(f"{ctime} {jobid}: changed state {', '.join(changes)}")
        if set(old.state.storeid_list) != set(new.state.storeid_list):
            ids = ",".join(new.state.storeid_list)
            self._log(f"{ctime} {jobid}: changed storeid list {ids}")

    def text(self) -> str:
        return "".join(f"{line}\n" for line in self.out)


def _text(state: JobState, key: str) -> str:
    """A state value as upstream prints it: undefined is empty, the error chomped."""
    value = getattr(state, key)
    return "" if value is None else str(value).rstrip("\n")
