"""Output of the CLI: pvesr's printf tables byte for byte, and machine-readable forms.

``--output-format``: ``text`` (pvesr's layout, the default), ``json`` (one compact line) and
``json-pretty`` (Perl JSON::XS's pretty, canonical layout, as ``pvesr read`` prints it).
YAML is not offered: JSON already serves scripts and is a subset of what YAML parsers read, and
it is not worth a dependency (PyYAML) for a cosmetic variant.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Sequence
from typing import Any

import click

from pverep.calendar import DEFAULT_SCHEDULE
from pverep.config.jobs import Job, number_text
from pverep.schedule import JobStatus

FORMATS = ("text", "json", "json-pretty")

output_format_option = click.option(
    "--output-format",
    type=click.Choice(FORMATS),
    default="text",
    show_default=True,
    help="Output format: pvesr's table (text) or JSON.",
)


def perl_number(value: float | int) -> str:
    """A number as Perl prints it (%.15g for non-integers)."""
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.15g}"
    return str(value)


def to_json(data: Any, pretty: bool = False) -> str:
    """Canonical (key-sorted) UTF-8 JSON; ``pretty`` is JSON::XS's 3-space layout + newline."""
    if not pretty:
        return json.dumps(data, ensure_ascii=False, sort_keys=True, separators=(",", ":")) + "\n"
    return _pretty(data, 0) + "\n"


def _pretty(value: Any, level: int) -> str:
    pad, inner = "   " * level, "   " * (level + 1)
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = [
            f"{inner}{json.dumps(str(k), ensure_ascii=False)} : {_pretty(value[k], level + 1)}"
            for k in sorted(value)
        ]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(value, list | tuple):
        if not value:
            return "[]"
        items = [f"{inner}{_pretty(v, level + 1)}" for v in value]
        return "[\n" + ",\n".join(items) + f"\n{pad}]"
    if isinstance(value, float) and not isinstance(value, bool):
        return perl_number(value)
    return json.dumps(value, ensure_ascii=False)


def emit(data: Any, fmt: str) -> None:
    click.echo(to_json(data, pretty=fmt == "json-pretty"), nl=False)


# --- pvesr list ------------------------------------------------------------------------------

_LIST_ROW = "{:<20} {:<20} {:>10} {:>5} {:>8}\n"


def format_job_list(jobs: Iterable[Job]) -> str:
    """``pvesr list``: sorted by guest, ties in the given (job id) order."""
    out = [_LIST_ROW.format("JobID", "Target", "Schedule", "Rate", "Enabled")]
    for job in sorted(jobs, key=lambda j: j.guest):
        out.append(
            _LIST_ROW.format(
                job.id,
                job.tid,
                job.schedule or DEFAULT_SCHEDULE,
                number_text(job.rate) if job.rate is not None else "-",
                "no" if job.disable else "yes",
            )
        )
    return "".join(out)


# --- pvesr status ----------------------------------------------------------------------------

_STATUS_ROW = "{:<10} {:<10} {:<20} {:>20} {:>20} {:>10} {:>10} {}\n"


def _localtime(epoch: int) -> str:
    return time.strftime("%Y-%m-%d_%H:%M:%S", time.localtime(epoch))


def status_to_api(status: JobStatus, running: bool) -> dict[str, Any]:
    """One entry of ``GET /nodes/<node>/replication``."""
    out = status.job.to_api()
    out["vmtype"] = status.vmtype
    out["next_sync"] = status.next_sync
    state = status.state
    out["last_sync"] = state.last_sync
    out["last_try"] = state.last_try
    out["fail_count"] = state.fail_count
    if state.error is not None:
        out["error"] = state.error
    if state.duration is not None:
        out["duration"] = state.duration
    if running and state.pid is not None:
        out["pid"] = state.pid
    return out


def format_status(statuses: Sequence[JobStatus], now: float) -> str:
    """``pvesr status``: sorted by guest; times in local time."""
    out = [
        _STATUS_ROW.format(
            "JobID", "Enabled", "Target", "LastSync", "NextSync", "Duration", "FailCount", "State"
        )
    ]
    for status in sorted(statuses, key=lambda s: s.guest):
        state = status.state
        last = _localtime(state.last_sync) if state.last_sync else "-"
        if not status.next_sync:
            nxt = "-"
        elif status.next_sync > now:
            nxt = _localtime(status.next_sync)
        else:
            nxt = "pending"
        if state.pid is not None:  # Cluster.replication_status keeps pid only while it runs
            health = "SYNCING"
        else:
            health = state.error if state.error is not None else "OK"
        out.append(
            _STATUS_ROW.format(
                status.id,
                "No" if status.job.disable else "Yes",
                status.job.tid,
                last,
                nxt,
                perl_number(state.duration) if state.duration is not None else "-",
                state.fail_count,
                health,
            )
        )
    return "".join(out)
