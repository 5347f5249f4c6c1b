"""Prometheus text exposition (format 0.0.4) of the jobs a node handles. Pure.

Names follow Prometheus' conventions: base units (seconds, bytes) in the name, timestamps as
``_timestamp_seconds``. pvesr's ``fail_count`` goes back to 0 after a success, so it is the
gauge ``pverep_job_consecutive_failures`` (no ``_total``, and promtool rejects a gauge named
``_count``). The job's id is the ``jobid`` label (``job`` belongs to Prometheus).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pverep.observe.jobview import STATES, JobView

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class NodeCycle:
    """The node's last scheduler pass (``pverep run`` without ``--id``)."""

    node: str
    end: float | None  # epoch, None = never recorded
    duration: float | None
    jobs_running: int


@dataclass(frozen=True)
class LastRun:
    bytes: int
    full: bool


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs: Mapping[str, str]) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in pairs.items()) + "}"


def _num(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return repr(float(value))


class _Family:
    def __init__(self, name: str, kind: str, help_text: str) -> None:
        self.name, self.kind, self.help_text = name, kind, help_text
        self.samples: list[str] = []

    def add(self, labels: Mapping[str, str], value: float) -> None:
        self.samples.append(f"{self.name}{_labels(labels)} {_num(value)}")

    def render(self) -> list[str]:
        if not self.samples:
            return []
        head = [f"# HELP {self.name} {self.help_text}", f"# TYPE {self.name} {self.kind}"]
        return [*head, *self.samples]


def render(
    jobs: Sequence[JobView],
    cycle: NodeCycle,
    last_runs: Mapping[str, LastRun],
    now: int,
) -> str:
    fam = {
        name: _Family(f"pverep_{name}", "gauge", text)
        for name, text in (
            ("job_last_sync_timestamp_seconds", "Start of the job's last successful sync."),
            ("job_rpo_seconds", "Seconds since the last successful sync (the recovery point)."),
            ("job_schedule_interval_seconds", "Nominal period of the job's schedule."),
            ("job_next_sync_timestamp_seconds", "When the job is due next (0: not scheduled)."),
            ("job_last_try_timestamp_seconds", "Start of the job's last attempt."),
            ("job_consecutive_failures", "Consecutive failures (0 after a success)."),
            ("job_last_duration_seconds", "Duration of the job's last run."),
            ("job_last_run_bytes", "Bytes sent by the job's last run."),
            ("job_last_run_full", "1 if the job's last run sent a volume in full."),
            ("job_state", "1 for the job's current state, 0 for the others."),
            ("node_last_cycle_timestamp_seconds", "End of the node's last scheduler pass."),
            ("node_last_cycle_duration_seconds", "Duration of the node's last scheduler pass."),
            ("node_jobs_running", "Replication jobs running on the node now."),
            ("node_jobs", "Replication jobs the node handles."),
        )
    }
    for job in jobs:
        base = {"jobid": job.jobid, "guest": str(job.guest), "target": job.target}
        fam["job_last_sync_timestamp_seconds"].add(base, job.last_sync)
        rpo = job.rpo(now)
        fam["job_rpo_seconds"].add(base, math.inf if rpo is None else rpo)
        if job.interval is not None:
            fam["job_schedule_interval_seconds"].add(base, job.interval)
        fam["job_next_sync_timestamp_seconds"].add(base, job.next_sync)
        fam["job_last_try_timestamp_seconds"].add(base, job.last_try)
        fam["job_consecutive_failures"].add(base, job.fail_count)
        if job.duration is not None:
            fam["job_last_duration_seconds"].add(base, job.duration)
        last = last_runs.get(job.jobid)
        if last is not None:
            fam["job_last_run_bytes"].add(base, last.bytes)
            fam["job_last_run_full"].add(base, int(last.full))
        for state in STATES:
            fam["job_state"].add({**base, "state": state}, int(job.state == state))
    node = {"node": cycle.node}
    if cycle.end is not None:
        fam["node_last_cycle_timestamp_seconds"].add(node, cycle.end)
    if cycle.duration is not None:
        fam["node_last_cycle_duration_seconds"].add(node, cycle.duration)
    fam["node_jobs_running"].add(node, cycle.jobs_running)
    fam["node_jobs"].add(node, len(jobs))
    return "".join(line + "\n" for f in fam.values() for line in f.render())
