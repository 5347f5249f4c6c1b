"""Observability verbs (issue 15): metrics, exporter, history, health, report."""

from __future__ import annotations

import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import click

from pverep.cli import App, cli
from pverep.cli.output import emit, output_format_option
from pverep.cluster.base import ClusterError
from pverep.errors import PverepError, ValidationError
from pverep.observe import collect, health, report, settings, textfile
from pverep.observe.exporter import DEFAULT_LISTEN, serve
from pverep.observe.jobview import JobView, view_of
from pverep.validate import check_vmid

pass_app = click.make_pass_decorator(App)
_RELATIVE = re.compile(r"(\d+)([smhd])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now: float) -> float:
    """An epoch, an age (``90m``, ``24h``, ``7d``) or an ISO date/time (UTC unless it says)."""
    text = text.strip()
    if text.isdigit():
        return float(text)
    if m := _RELATIVE.fullmatch(text):
        return now - int(m[1]) * _UNIT[m[2]]
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValidationError(
            f"invalid time '{text}' (epoch, age like '24h', or ISO like '2026-12-01 10:00')"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


@cli.command("metrics")
@click.option(
    "--textfile",
    "directory",
    type=click.Path(file_okay=False),
    default=None,
    help="Write pverep.prom into this node_exporter textfile-collector directory "
    "(atomically) instead of printing.",
)
@pass_app
def metrics_cmd(app: App, directory: str | None) -> None:
    """Print this node's replication metrics (Prometheus text format)."""
    text = collect.metrics_text(app.paths, int(app.clock()))
    if directory is None:
        click.echo(text, nl=False)
    else:
        click.echo(str(textfile.write(Path(directory), text)))


@cli.command("exporter")
@click.option(
    "--listen",
    default=DEFAULT_LISTEN,
    show_default=True,
    metavar="ADDR:PORT",
    help="Address to serve /metrics on (localhost unless you open it up).",
)
@pass_app
def exporter_cmd(app: App, listen: str) -> None:
    """Serve this node's replication metrics over HTTP for Prometheus."""
    serve(listen, lambda: collect.metrics_text(app.paths, int(time.time())))


@cli.command("history")
@click.option("--guest", metavar="VMID", default=None, help="Only runs of this guest.")
@click.option(
    "--since",
    metavar="TIME",
    default=None,
    help="Only runs ending after TIME: epoch, age (24h, 7d) or ISO date/time (UTC).",
)
@output_format_option
@pass_app
def history_cmd(app: App, guest: str | None, since: str | None, output_format: str) -> None:
    """List recorded replication runs (oldest first)."""
    vmid = check_vmid(guest) if guest is not None else None
    start = parse_since(since, app.clock()) if since is not None else None
    records = settings.history(app.paths).query(vmid, start)
    if output_format != "text":
        emit([r.to_json() for r in records], output_format)
        return
    row = "{:<20} {:<10} {:<8} {:<19} {:>9} {:>12} {:<11} {}"
    click.echo(row.format("JobID", "Target", "Result", "Start", "Duration", "Bytes", "Mode", ""))
    for r in records:
        stamp = datetime.fromtimestamp(r.start, UTC).strftime("%Y-%m-%d %H:%M:%S")
        modes = sorted({str(v.get("mode")) for v in r.volumes}) or ["-"]
        click.echo(
            row.format(
                r.jobid,
                r.target,
                r.result,
                stamp,
                f"{r.end - r.start:.2f}",
                r.bytes,
                ",".join(modes),
                r.error or "",
            ).rstrip()
        )


def _cluster_health(
    app: App, now: int
) -> tuple[dict[str, list[JobView]], dict[str, str], dict[int, str], set[int]]:
    cluster = app.cluster()
    vmlist = cluster.vmlist()
    members = cluster.members()
    nodes = sorted(members) or [cluster.local_node()]
    by_node: dict[str, list[JobView]] = {}
    unreachable: dict[str, str] = {}
    for node in nodes:
        member = members.get(node)
        if member is not None and not member.online:
            unreachable[node] = f"node '{node}' is offline"
            continue
        try:
            statuses = cluster.replication_status(node)
        except ClusterError as err:
            unreachable[node] = f"node '{node}': {err}"
            continue
        by_node[node] = [view_of(s, node, now, s.state.pid is not None) for s in statuses]
    guests = {job.guest for job in cluster.jobs()}
    return by_node, unreachable, {v: loc.node for v, loc in vmlist.items()}, guests


@cli.command("health")
@click.option(
    "--warn",
    default="2x",
    show_default=True,
    help="WARNING when a job's RPO passes this: a multiple of its schedule interval (2x) "
    "or an age (90m, 6h).",
)
@click.option(
    "--crit",
    default="4x",
    show_default=True,
    help="CRITICAL when a job's RPO passes this (same forms as --warn).",
)
@click.option(
    "--output-format",
    type=click.Choice(("text", "json", "json-pretty")),
    default="text",
    show_default=True,
    help="Nagios-style text or JSON.",
)
@pass_app
def health_cmd(app: App, warn: str, crit: str, output_format: str) -> None:
    """Replication health of every guest in the cluster (use --api HOST from anywhere).

    Exit status as Nagios plugins: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
    """
    warn_at, crit_at = health.Threshold.parse(warn), health.Threshold.parse(crit)
    now = int(app.clock())
    try:
        by_node, unreachable, where, guests = _cluster_health(app, now)
    except PverepError as err:
        click.echo(f"REPLICATION UNKNOWN - {err}")
        sys.exit(health.UNKNOWN)
    verdicts = health.evaluate(by_node, unreachable, where, guests, now, warn_at, crit_at)
    code = health.worst(g.code for g in verdicts)
    if output_format == "text":
        click.echo(health.format_text(verdicts), nl=False)
    else:
        emit(
            {"status": health.NAMES[code], "guests": [g.to_json() for g in verdicts]},
            output_format,
        )
    sys.exit(code)


@cli.command("report")
@click.option(
    "--html",
    "out",
    required=True,
    type=click.Path(dir_okay=False, writable=True),
    help="Write the self-contained HTML page here.",
)
@click.option("--since", metavar="TIME", default=None, help="Only runs after TIME (as history).")
@pass_app
def report_cmd(app: App, out: str, since: str | None) -> None:
    """An HTML page with each guest's RPO over time and its failures, from the run history."""
    from pverep.atomic import atomic_write

    now = app.clock()
    start = parse_since(since, now) if since is not None else None
    records = settings.history(app.paths).query(None, start)
    atomic_write(Path(out), report.render(records, now).encode("utf-8"))
    click.echo(f"wrote {out} ({len(records)} runs)")
