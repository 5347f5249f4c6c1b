"""Cluster-wide replication health with Nagios-style verdicts. Pure.

A threshold is either a multiple of the job's schedule interval (``3x``) or an absolute age
(``3600``, ``90m``, ``6h``, ``2d``). A job is CRITICAL when its RPO passes ``crit``, WARNING
when it passes ``warn`` or it is failing (a failing job whose RPO is still fine is a warning,
not yet an emergency); UNKNOWN when its node did not answer or its schedule has no interval
for a multiple. The exit status follows Nagios: 2 if anything is critical, else 3 if anything
is unknown, else 1 for a warning, else 0.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from pverep.errors import ValidationError
from pverep.observe.jobview import JobView

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
NAMES = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_THRESHOLD = re.compile(r"(?:(?P<factor>\d+(?:\.\d+)?)x|(?P<n>\d+)(?P<unit>[smhd]?))")


@dataclass(frozen=True)
class Threshold:
    factor: float | None = None  # multiple of the schedule interval
    seconds: int | None = None

    @classmethod
    def parse(cls, text: str) -> Threshold:
        m = _THRESHOLD.fullmatch(text.strip())
        if m is None:
            raise ValidationError(
                f"invalid threshold '{text}' (a multiple like '3x' or an age like '90m')"
            )
        if m["factor"] is not None:
            return cls(factor=float(m["factor"]))
        return cls(seconds=int(m["n"]) * _UNIT[m["unit"]])

    def limit(self, interval: int | None) -> int | None:
        if self.seconds is not None:
            return self.seconds
        if interval is None or self.factor is None:
            return None
        return int(self.factor * interval)


def worst(codes: Iterable[int]) -> int:
    """Nagios precedence: CRITICAL > UNKNOWN > WARNING > OK."""
    rank = {OK: 0, WARNING: 1, UNKNOWN: 2, CRITICAL: 3}
    return max(codes, key=lambda c: rank[c], default=OK)


@dataclass(frozen=True)
class JobHealth:
    job: JobView
    code: int
    rpo: int | None
    reason: str

    def to_json(self) -> dict[str, object]:
        return {
            "jobid": self.job.jobid,
            "target": self.job.target,
            "schedule": self.job.schedule,
            "interval": self.job.interval,
            "rpo": self.rpo,
            "last_sync": self.job.last_sync,
            "fail_count": self.job.fail_count,
            "state": self.job.state,
            "error": self.job.error,
            "status": NAMES[self.code],
            "reason": self.reason,
        }


@dataclass(frozen=True)
class GuestHealth:
    guest: int
    node: str
    jobs: tuple[JobHealth, ...]
    reason: str = ""  # set when the node could not be asked

    @property
    def code(self) -> int:
        return UNKNOWN if self.reason else worst(j.code for j in self.jobs)

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "guest": self.guest,
            "node": self.node,
            "status": NAMES[self.code],
            "jobs": [j.to_json() for j in self.jobs],
        }
        if self.reason:
            out["reason"] = self.reason
        return out


def judge(job: JobView, now: int, warn: Threshold, crit: Threshold) -> JobHealth:
    rpo = job.rpo(now)
    if job.removing or job.disabled:
        return JobHealth(job, OK, rpo, job.state)
    crit_at, warn_at = crit.limit(job.interval), warn.limit(job.interval)
    if crit_at is None or warn_at is None:
        return JobHealth(job, UNKNOWN, rpo, f"schedule '{job.schedule}' has no interval")
    if rpo is None:
        if job.fail_count:
            return JobHealth(job, CRITICAL, rpo, f"never synced, {job.fail_count} failures")
        return JobHealth(job, WARNING, rpo, "not synced yet")
    if rpo > crit_at:
        return JobHealth(job, CRITICAL, rpo, f"RPO {rpo}s > {crit_at}s")
    if rpo > warn_at:
        return JobHealth(job, WARNING, rpo, f"RPO {rpo}s > {warn_at}s")
    if job.fail_count:
        return JobHealth(job, WARNING, rpo, f"{job.fail_count} failures")
    return JobHealth(job, OK, rpo, f"RPO {rpo}s")


def evaluate(
    jobs_by_node: Mapping[str, Sequence[JobView]],
    unreachable: Mapping[str, str],
    guest_nodes: Mapping[int, str],
    guests_with_jobs: Iterable[int],
    now: int,
    warn: Threshold,
    crit: Threshold,
) -> list[GuestHealth]:
    """Per guest with jobs: the verdict of each job, reported by the node it lives on.

    ``unreachable`` maps nodes that did not answer to the reason; their guests are UNKNOWN.
    """
    out: list[GuestHealth] = []
    reported = {j.guest for jobs in jobs_by_node.values() for j in jobs}
    for node, jobs in jobs_by_node.items():
        by_guest: dict[int, list[JobHealth]] = {}
        for job in jobs:
            by_guest.setdefault(job.guest, []).append(judge(job, now, warn, crit))
        out += [GuestHealth(g, node, tuple(h)) for g, h in by_guest.items()]
    for guest in sorted(set(guests_with_jobs) - reported):
        node = guest_nodes.get(guest, "")
        reason = unreachable.get(node) or (
            "guest not found in the cluster" if not node else f"node '{node}' reported no jobs"
        )
        out.append(GuestHealth(guest, node, (), reason))
    return sorted(out, key=lambda g: g.guest)


def format_text(guests: Sequence[GuestHealth]) -> str:
    code = worst(g.code for g in guests)
    bad = [g for g in guests if g.code != OK]
    lines = [f"REPLICATION {NAMES[code]} - {len(guests)} guests, {len(bad)} not OK"]
    for g in guests:
        lines.append(f"{NAMES[g.code]:<8} guest {g.guest} on {g.node or '?'}{_why(g)}")
        for j in g.jobs:
            err = f" - {j.job.error}" if j.job.error and j.code != OK else ""
            lines.append(
                f"  {NAMES[j.code]:<8} {j.job.jobid} -> {j.job.target} [{j.job.state}] "
                f"{j.reason}{err}"
            )
    return "\n".join(lines) + "\n"


def _why(g: GuestHealth) -> str:
    return f": {g.reason}" if g.reason else ""
