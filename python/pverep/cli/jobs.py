"""pvesr's configuration and status verbs: list, read, status, create-local-job, update, delete,
enable, disable, schedule-now, set-state.

Options take pvesr's spellings (``--rate 10`` and ``-rate 10``; booleans as a bare flag or with
``0|1|yes|no|on|off|true|false``). Validation and errors come from pverep.admin.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from pverep import admin, validate
from pverep.cli import App, cli
from pverep.cli.output import emit, format_job_list, format_status, output_format_option
from pverep.cli.output import status_to_api as _status_to_api
from pverep.config.jobs import Job, parse_boolean
from pverep.errors import ParameterError, ValidationError
from pverep.reconcile.journal import repair_notes

F = TypeVar("F", bound=Callable[..., Any])

pass_app = click.make_pass_decorator(App)


def _opt(name: str, **kwargs: Any) -> Callable[[F], F]:
    """An option spelled ``--name`` and ``-name`` (PVE's CLI accepts both)."""
    return click.option(f"--{name}", f"-{name}", name.replace("-", "_"), **kwargs)


def _bool_opt(name: str, help_text: str) -> Callable[[F], F]:
    return _opt(name, is_flag=False, flag_value="1", default=None, metavar="[BOOL]", help=help_text)


def _bool(param: str, text: str | None, default: bool = False) -> bool:
    if text is None:
        return default
    try:
        return parse_boolean(text)
    except ValidationError as err:
        raise ParameterError(param, str(err)) from None


def _job_options(func: F) -> F:
    for decorator in reversed(
        [
            _opt("schedule", metavar="CALENDAR", help="Storage replication schedule (*/15)."),
            _opt("rate", metavar="MBPS", help="Rate limit in mbps (megabytes per second), >= 1."),
            _opt("comment", help="Description."),
            _bool_opt("disable", "Flag to disable/deactivate the entry."),
            _opt("remove_job", metavar="local|full", help="Mark the job for removal."),
            _opt("source", metavar="NODE", help="For internal use, to detect stolen guests."),
        ]
    ):
        func = decorator(func)
    return func


def _job_settings(disable: str | None, **raw: str | None) -> dict[str, Any]:
    """The job settings given on the command line, checked in the given order (the first bad
    one is reported), plus ``disable`` as a boolean when given."""
    settings = admin.check_params(raw)
    if disable is not None:
        settings["disable"] = _bool("disable", disable)
    return settings


@cli.command("list")
@output_format_option
@pass_app
def list_(app: App, output_format: str) -> None:
    """List replication jobs."""
    jobs = app.cluster().jobs()
    if output_format == "text":
        click.echo(format_job_list(jobs), nl=False)
    else:
        emit([job.to_api() for job in jobs], output_format)


@cli.command("read")
@click.argument("id")
@output_format_option
@pass_app
def read(app: App, id: str, output_format: str) -> None:
    """Read replication job configuration."""
    job, digest = app.cluster().job(id)
    data = {**job.to_api(), "digest": digest}
    emit(data, "json-pretty" if output_format == "text" else output_format)


@cli.command("status")
@_opt("guest", metavar="VMID", help="Only list replication jobs for this guest.")
@output_format_option
@pass_app
def status(app: App, guest: str | None, output_format: str) -> None:
    """List status of all replication jobs on this node."""
    vmid = None
    if guest is not None:
        try:
            vmid = validate.check_vmid(guest)
        except ValidationError as err:
            raise ParameterError("guest", str(err)) from None
    cluster = app.cluster()
    statuses = cluster.replication_status(cluster.local_node(), vmid)
    # repairs after a relocation (pverep reconcile): said in the status, not only in logs
    repaired = repair_notes(app.paths, [s.id for s in statuses])
    if output_format == "text":
        click.echo(format_status(statuses, app.clock()), nl=False)
        for jobid, note in repaired.items():
            click.echo(f"{jobid}: {note}")
    else:
        # replication_status keeps a pid only while its process runs
        rows = [_status_to_api(s, s.state.pid is not None) for s in statuses]
        for row in rows:
            if row["id"] in repaired:
                row["reconcile"] = repaired[row["id"]]
        emit(rows, output_format)


@cli.command("create-local-job")
@click.argument("id")
@click.argument("target")
@_job_options
@pass_app
def create_local_job(
    app: App,
    id: str,
    target: str,
    schedule: str | None,
    rate: str | None,
    comment: str | None,
    disable: str | None,
    remove_job: str | None,
    source: str | None,
) -> None:
    """Create a new replication job."""
    jobid = admin.check_jobid_param(id)
    options = _job_settings(
        disable,
        target=target,
        schedule=schedule,
        rate=rate,
        comment=comment,
        remove_job=remove_job,
        source=source,
    )
    job = Job(id=jobid, target=target, **{k: v for k, v in options.items() if k != "target"})
    app.cluster().create_job(job)


@cli.command("update")
@click.argument("id")
@_job_options
@_opt("target", hidden=True)
@_opt("delete", multiple=True, metavar="KEYS", help="Settings to delete (comma separated).")
@_opt("digest", metavar="SHA1", help="Refuse the change if the config digest differs.")
@pass_app
def update(
    app: App,
    id: str,
    schedule: str | None,
    rate: str | None,
    comment: str | None,
    disable: str | None,
    remove_job: str | None,
    source: str | None,
    target: str | None,
    delete: tuple[str, ...],
    digest: str | None,
) -> None:
    """Update replication job configuration."""
    jobid = admin.check_jobid_param(id)
    changes = _job_settings(
        disable,
        schedule=schedule,
        rate=rate,
        comment=comment,
        remove_job=remove_job,
        source=source,
        target=target,
    )
    if digest is not None and len(digest) > 40:
        raise ParameterError("digest", "value may only be 40 characters long")
    keys = [k for text in delete for k in admin.split_list(text)]
    app.cluster().update_job(jobid, changes, keys, digest)


@cli.command("delete")
@click.argument("id")
@_bool_opt("keep", "Keep replicated data at target (do not remove).")
@_bool_opt("force", "Remove the job from the config now, without any cleanup.")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print every snapshot and volume the removal would delete on each side; change nothing.",
)
@pass_app
def delete(app: App, id: str, keep: str | None, force: str | None, dry_run: bool) -> None:
    """Mark replication job for removal."""
    jobid = admin.check_jobid_param(id)
    keep_b, force_b = _bool("keep", keep), _bool("force", force)
    if keep_b and force_b:
        raise ParameterError("keep", "conflicts with parameter 'force'")
    if dry_run:
        from pverep.cli.run import dry_run_plan

        if force_b:
            click.echo(f"would remove job '{jobid}' from replication.cfg (no cleanup)")
            return
        dry_run_plan(app, jobid, "local" if keep_b else "full")
        return
    left: list[str] = []
    if force_b:
        # say exactly what --force leaves behind (listed before the job and its target go)
        from pverep.reconcile.service import leftovers

        left = leftovers(app.paths, jobid)
    app.cluster().delete_job(jobid, keep=keep_b, force=force_b)
    for line in left:
        click.echo(line, err=True)
    if not force_b:
        click.echo(
            "Replication job removal is a background task and will take some time.", err=True
        )


def _set_disable(app: App, id: str, value: bool) -> None:
    app.cluster().update_job(admin.check_jobid_param(id), {"disable": value})


@cli.command("enable")
@click.argument("id")
@pass_app
def enable(app: App, id: str) -> None:
    """Enable a replication job."""
    _set_disable(app, id, False)


@cli.command("disable")
@click.argument("id")
@pass_app
def disable(app: App, id: str) -> None:
    """Disable a replication job."""
    _set_disable(app, id, True)


@cli.command("schedule-now")
@click.argument("id")
@pass_app
def schedule_now(app: App, id: str) -> None:
    """Schedule replication job to start as soon as possible."""
    cluster = app.cluster()
    cluster.schedule_now(cluster.local_node(), admin.check_jobid_param(id))


@cli.command("set-state")
@click.argument("vmid")
@click.argument("state")
@pass_app
def set_state(app: App, vmid: str, state: str) -> None:
    """Set the job replication state on migration (internal use)."""
    admin.set_state(app.state_store(), vmid, state)
