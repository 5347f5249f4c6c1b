"""``pverep run [--id <jobid>] [--verbose] [--mail]`` — pvesr run (spec §3.2, §3.3, §6.2);
every option also in its single-dash form (``-id``, ``-verbose``, ``-mail``), as pvesr takes it.

Without ``--id`` it is the scheduler pass (what the timer runs every minute); with ``--id`` it
runs that job now, ignoring its schedule. PVE booleans accept a bare flag or ``0|1|yes|no…``.
"""

from __future__ import annotations

import click

from pverep.bandwidth import BandwidthPlan
from pverep.cli import App, cli
from pverep.config.runconf import DEFAULT_MAX_WORKERS
from pverep.errors import ValidationError

_TRUE = {"1", "yes", "on", "true"}
_FALSE = {"0", "no", "off", "false"}


def pve_bool(value: str | bool | None) -> bool:
    if value is None or isinstance(value, bool):
        return bool(value)
    text = value.lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValidationError(f"invalid boolean value '{value}'")


@cli.command("run")
# pvesr's CLI takes every option as --opt and -opt (PVE's CLIHandler)
@click.option(
    "--id", "-id", "jobid", default=None, help="Run only this job (ignores its schedule)."
)
@click.option(
    "--verbose",
    "-verbose",
    is_flag=False,
    flag_value="1",
    default="0",
    help="Print the job log lines.",
)
@click.option(
    "--mail",
    "-mail",
    is_flag=False,
    flag_value="1",
    default="0",
    help="Send failure notifications.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print per job and volume what would be sent (full or incremental, from which base, "
    "estimated bytes) and deleted on each side; change nothing anywhere.",
)
@click.option(
    "--max-workers",
    type=click.IntRange(1, None),
    default=None,
    help="Jobs to run at once (default: max_workers in pverep.conf [run], else "
    f"{DEFAULT_MAX_WORKERS}); 1 = pvesr's strictly serial order. Never two of one guest.",
)
@click.option(
    "--bandwidth",
    default=None,
    metavar="RATE",
    help="The node's bandwidth budget for this run, shared by all its transfers (e.g. 20MB, "
    "1GiB; a bare number is MB/s); overrides bandwidth and bandwidth_schedule in [run].",
)
@click.pass_obj
def run_cmd(
    app: App,
    jobid: str | None,
    verbose: str,
    mail: str,
    max_workers: int | None,
    bandwidth: str | None,
    dry_run: bool,
) -> None:
    """Run replication jobs that are due (or the one given with --id)."""
    from pverep.engine.wiring import build_scheduler

    if dry_run:
        dry_run_plan(app, jobid, None)
        return
    want_mail = pve_bool(mail)
    if jobid and want_mail:
        raise ValidationError("Mail and id are mutually exclusive!")
    logfunc = (lambda msg: click.echo(msg)) if pve_bool(verbose) else None
    budget = BandwidthPlan.parse(bandwidth, None) if bandwidth is not None else None
    scheduler = build_scheduler(app.paths, max_workers, budget)
    if jobid:
        scheduler.run_single_job(jobid, None, logfunc)
    else:
        scheduler.run_jobs(None, logfunc, False, want_mail)


def dry_run_plan(app: App, jobid: str | None, remove: str | None) -> None:
    """The plan on stdout; exit 1 if a job could not be planned (its reason is printed)."""
    from pverep.engine.wiring import dry_run

    if dry_run(app.paths, click.echo, jobid=jobid, remove=remove, now=int(app.clock())):
        raise SystemExit(1)
