"""Relocated guests on the command line: ``reconcile`` (incl. ``--watch``), ``hook`` (what the
hookscript runs), ``cleanup``; and the target-side helpers ``replica-info``, ``replica-clean``,
``cleanup-local`` that other nodes call over ssh.
"""

from __future__ import annotations

import signal
import sys
import threading
import time

import click

from pverep.cli import App, cli
from pverep.cli.output import output_format_option, to_json
from pverep.cli.remote import _target
from pverep.errors import PverepError, ValidationError
from pverep.reconcile import service
from pverep.reconcile.gather import PVEREP, Node
from pverep.reconcile.target import CleanRequest, replica_clean, replica_info_json
from pverep.validate import check_node_name, check_vmid

#: The hook's default time bound (seconds); HA counts a slow pre-start against the guest.
HOOK_TIMEOUT = 20.0
#: Phases the hook acts on; every other phase is accepted and ignored (PVE may add phases).
HOOK_PHASES = ("pre-start", "post-start")


def _err(msg: str) -> None:
    click.echo(msg, err=True)


def _print_result(result: service.Result, fmt: str, dry_run: bool) -> None:
    if fmt != "text":
        doc = result.to_dict()
        doc["dry_run"] = dry_run
        click.echo(to_json(doc, pretty=fmt == "json-pretty"), nl=False)
        return
    plan = result.plan
    for f in plan.findings:
        click.echo(f"found [{f.level}] {f.text}")
    for d in plan.deferred:
        click.echo(d.describe())
    if plan.empty:
        click.echo(f"{plan.node}: nothing to do" + (" here" if plan.deferred else ""))
        return
    head = "plan (dry run, nothing changed)" if dry_run else "plan"
    click.echo(f"{head} on {plan.node}:")
    for n, step in enumerate(plan.steps, 1):
        click.echo(f"  {n}. {step.describe()}")
    if result.outcome is not None:
        for step in result.outcome.done:
            click.echo(f"done: {step.describe()}")
        for step, why in result.outcome.skipped:
            click.echo(f"skipped: {step.describe()}: {why}")
        for step, why in result.outcome.failed:
            click.echo(f"FAILED: {step.describe()}: {why}")


def _node(app: App, node_opt: str | None, deadline: float | None = None) -> Node:
    node = service.make_node(app.paths, deadline)
    if node_opt is not None and check_node_name(node_opt) != node.local_node:
        # the repairs need that node's job state and disks: only it can do them safely
        raise PverepError(
            f"reconcile of node '{node_opt}' runs on that node: job state and disks are "
            f"node-local (this is '{node.local_node}'; run 'pverep reconcile' on {node_opt}, "
            f"or 'pverep --api … reconcile --node {node_opt}' for its config-level repairs)"
        )
    return node


def _cluster_wide(
    app: App, node_opt: str | None, vmid: int | None, dry_run: bool, watch: bool, fmt: str
) -> None:
    """``pverep --api … reconcile``: every node's relocated guests, config-level repairs."""
    if watch:
        raise ValidationError(
            "--watch runs on a node (it polls that node's /etc/pve/ha/manager_status); "
            "not through the API backend"
        )
    node = check_node_name(node_opt) if node_opt is not None else None
    result = service.reconcile_cluster(
        app.cluster(), only_node=node, only_vmid=vmid, dry_run=dry_run
    )
    _print_result(result, fmt, dry_run)
    if result.outcome is not None and not result.outcome.ok:
        sys.exit(1)


@cli.command("reconcile")
@click.option(
    "--node", "node_opt", default=None,
    help="The node to reconcile: this one (default); with --api any node, or all if not given.",
)  # fmt: skip
@click.option("--guest", default=None, help="Only this guest (VMID).")
@click.option("--dry-run", is_flag=True, help="Print the plan, change nothing.")
@click.option("--watch", is_flag=True, help="Keep running: react to HA recovery within seconds.")
@click.option("--interval", default=2.0, show_default=True, help="--watch poll interval (s).")
@click.option("--watch-duration", default=None, type=float, hidden=True)
@click.option("--timeout", default=None, type=float, help="Bound for the whole pass (s).")
@output_format_option
@click.pass_obj
def reconcile_cmd(
    app: App,
    node_opt: str | None,
    guest: str | None,
    dry_run: bool,
    watch: bool,
    interval: float,
    watch_duration: float | None,
    timeout: float | None,
    output_format: str,
) -> None:
    """Repair replication jobs of guests relocated by HA or by hand.

    On a node: that node's guests, everything (config, state, targets). Through the API
    backend (--api …): every node's guests (or --node's), config-level repairs only; the rest
    is reported as deferred to the guest's node.
    """
    vmid = check_vmid(guest) if guest is not None else None
    if app.api.backend != "files":
        _cluster_wide(app, node_opt, vmid, dry_run, watch, output_format)
        return
    if watch:
        if dry_run:
            raise ValidationError("--watch and --dry-run are mutually exclusive")

        def one(v: int | None) -> None:
            try:
                node = _node(app, node_opt, time.monotonic() + timeout if timeout else None)
                result = service.reconcile(node, only_vmid=v, log=_err)
                if result.outcome is not None:
                    _print_result(result, output_format, False)
            except PverepError as err:
                _err(f"reconcile failed: {err}")

        stop = threading.Event()

        def on_term(signum: int, _frame: object) -> None:
            # systemd stops the service with SIGTERM: finish the pass under way, then exit 0
            _err(f"stopping on signal {signum}")
            stop.set()

        previous = signal.signal(signal.SIGTERM, on_term)
        try:
            service.watch(
                app.paths, interval=interval, duration=watch_duration, log=_err, run=one,
                sleep=stop.wait, stopped=stop.is_set,
            )  # fmt: skip
        finally:
            signal.signal(signal.SIGTERM, previous)
        _err("watcher stopped")
        return
    node = _node(app, node_opt, time.monotonic() + timeout if timeout else None)
    result = service.reconcile(node, only_vmid=vmid, dry_run=dry_run)
    _print_result(result, output_format, dry_run)
    if result.outcome is not None and not result.outcome.ok:
        sys.exit(1)


@cli.command("hook")
@click.argument("vmid")
@click.argument("phase")
@click.option("--timeout", default=HOOK_TIMEOUT, envvar="PVEREP_HOOK_TIMEOUT", show_default=True)
@click.option(
    "--require-replica", is_flag=True, envvar="PVEREP_HOOK_REQUIRE_REPLICA",
    help="pre-start: refuse to start if a disk has no copy on this node.",
)  # fmt: skip
@click.option(
    "--max-replica-age", type=int, default=None, envvar="PVEREP_HOOK_MAX_REPLICA_AGE",
    help="pre-start: refuse to start a relocated guest whose replica is older (s).",
)  # fmt: skip
@click.pass_obj
def hook_cmd(
    app: App,
    vmid: str,
    phase: str,
    timeout: float,
    require_replica: bool,
    max_replica_age: int | None,
) -> None:
    """Guest hookscript entry: reconcile the guest on pre-start/post-start, within a bound."""
    guest = check_vmid(vmid)
    if phase not in HOOK_PHASES:
        return  # unknown or uninteresting phase: accepted, nothing to do
    start = time.monotonic()
    deadline = start + timeout
    policy = service.StartPolicy(require_replica, max_replica_age)
    result: service.Result | None = None
    try:
        node = service.make_node(app.paths, deadline)
        result = service.reconcile(node, only_vmid=guest, log=lambda m: click.echo(f"pverep: {m}"))
        for f in result.plan.findings:
            click.echo(f"pverep: [{f.level}] {f.text}")
        if result.plan.empty:
            click.echo(f"pverep: guest {guest}: replication jobs need no repair")
    except PverepError as err:
        click.echo(f"pverep: reconcile of guest {guest} failed (start not blocked): {err}")
    if phase == "pre-start" and (require_replica or max_replica_age is not None):
        try:
            refusal = service.hook_check(service.make_node(app.paths), guest, result, policy)
        except PverepError as err:
            refusal = f"refusing to start guest {guest}: replica check failed: {err}"
        if refusal:
            click.echo(f"pverep: {refusal}", err=True)
            sys.exit(1)
    click.echo(f"pverep: {phase} hook for guest {guest} took {time.monotonic() - start:.1f}s")


@cli.command("cleanup")
@click.option("--target", "target_node", required=True, help="Node to clean up.")
@click.option("--dry-run", is_flag=True, help="Print what would be removed, change nothing.")
@output_format_option
@click.pass_obj
def cleanup_cmd(app: App, target_node: str, dry_run: bool, output_format: str) -> None:
    """Remove orphaned __replicate_ snapshots and replica volumes of deleted jobs on a node."""
    node = service.make_node(app.paths)
    target_node = check_node_name(target_node)
    if target_node == node.local_node:
        result = service.cleanup_local(node, _target(app), dry_run, _err)
        _print_result(result, output_format, dry_run)
        if result.outcome is not None and not result.outcome.ok:
            sys.exit(1)
        return
    if node.peer_kind(target_node) == "pve":
        # cleanup decides on that node's own view; stock Proxmox VE has no such verb
        raise PverepError(
            f"node '{target_node}' runs stock Proxmox VE: 'pverep cleanup' runs on pverep "
            "nodes only (on a stock node the jobs' own runs and 'pvesr delete' clean up)"
        )
    argv = ["cleanup", "--target", target_node, "--output-format", output_format]
    if dry_run:
        argv.append("--dry-run")
    res = node.shell(target_node).run([*PVEREP, *argv], timeout=600)
    sys.stdout.write(res.stdout_text)
    sys.stderr.write(res.stderr.decode("utf-8", "replace"))
    if res.returncode != 0:
        sys.exit(res.returncode)


@cli.command("replica-info", hidden=True)
@click.argument("vmid")
@click.option("--scan", default="", help="Storage ids (comma separated); default: all zfspool.")
@click.pass_obj
def replica_info_cmd(app: App, vmid: str, scan: str) -> None:
    """Target side: every image of the guest here, with snapshots (one JSON line, read only)."""
    storages = [s for s in scan.replace(";", ",").split(",") if s]
    click.echo(replica_info_json(_target(app), check_vmid(vmid), storages))


@cli.command("replica-clean", hidden=True)
@click.argument("vmid")
@click.option("--job", "jobid", required=True)
@click.option("--delete-snapshot", "delete", multiple=True, help="<volid>@<snapshot>")
@click.option("--destroy", multiple=True, help="<volid>")
@click.pass_obj
def replica_clean_cmd(
    app: App, vmid: str, jobid: str, delete: tuple[str, ...], destroy: tuple[str, ...]
) -> None:
    """Target side: delete exactly these replication snapshots / replica volumes of one job."""
    pairs = []
    for item in delete:
        volid, sep, snap = item.rpartition("@")
        if not sep or not volid:
            raise ValidationError(f"--delete-snapshot: expected <volid>@<snapshot>, got '{item}'")
        pairs.append((volid, snap))
    done = replica_clean(
        _target(app), check_vmid(vmid), CleanRequest(jobid, tuple(pairs), tuple(destroy))
    )
    for line in done:
        click.echo(line)
