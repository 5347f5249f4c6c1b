"""Target-side verbs called by the source over ssh: ``prepare-local-job``,
``finalize-local-job`` (pvesr's) and ``import``/``export`` (pvesm's), with their option
spellings (``--opt``/``-opt``, optional-value booleans) so a pvesr-shaped argv works as is.

stdout carries only the protocol (the JSON line, the tunnel address, ``successfully imported``
or the stream itself); every log line goes to stderr.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import socket
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import click

import pverep
from pverep.cli import App, cli
from pverep.config.storage import read_storage_cfg
from pverep.engine import remote, serve
from pverep.engine.importclaim import ImportRegistry
from pverep.engine.peerkind import PEER_INFO_VERB
from pverep.errors import ConfigError, ValidationError
from pverep.storage.streamform import ImportMode
from pverep.storage.volumes import Volumes
from pverep.storage.zfs import ZfsFlags, ZfsRunner
from pverep.storage.zfscaps import local_caps
from pverep.transport import LocalShell, tcp

#: Seconds without input before an import aborts its receive (default 600; 0 = never).
IMPORT_STALL_TIMEOUT_ENV = "PVEREP_IMPORT_STALL_TIMEOUT"

_TRUE = {"1", "yes", "on", "true"}
_FALSE = {"0", "no", "off", "false"}


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _bool(name: str, value: str) -> bool:
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ValidationError(f"{name}: type check ('boolean') failed - got '{value}'")


def _uint(name: str, value: str) -> int:
    if not re.fullmatch(r"\+?\d+", value.strip()):
        raise ValidationError(f"{name}: type check ('integer') failed - got '{value}'")
    return int(value)


def _guest_node_lookup(app: App, node: str) -> Callable[[int], str | None]:
    """vmid → node from the cluster's vmlist; a config file under this node also counts as
    local (belt and braces: the vmlist is pmxcfs' derived view of exactly those files)."""
    vmlist = app.cluster().vmlist()

    def lookup(vmid: int) -> str | None:
        for vmtype in ("qemu", "lxc"):
            if app.paths.guest_config(node, vmtype, vmid).exists():
                return node
        entry = vmlist.get(vmid)
        return entry.node if entry is not None else None

    return lookup


def _target(
    app: App, *, probe: bool = True, log: Callable[[str], None] = _stderr
) -> remote.TargetNode:
    """This node as a target. ``probe``: ask the local zfs what it supports (storage/zfscaps;
    finalize needs no stream features and skips the two calls). ``log``: where its log
    lines go (stderr for a verb, the answer for a ``serve`` request)."""
    node = app.cluster().local_node()
    storage = read_storage_cfg(str(app.paths.storage_cfg), warn=log)
    shell = LocalShell(node)
    flags = ZfsFlags.from_caps(local_caps(shell, app.paths.zfs_caps_cache)) if probe else ZfsFlags()
    volumes = Volumes(storage, ZfsRunner(shell), flags=flags)
    return remote.TargetNode(
        node=node,
        storage=storage,
        volumes=volumes,
        guest_node=_guest_node_lookup(app, node),
        log=log,
        imports=ImportRegistry(app.paths.import_registry_dir, log),
    )


def _import_stall_timeout() -> float | None:
    text = os.environ.get(IMPORT_STALL_TIMEOUT_ENV)
    if not text:
        return remote.DEFAULT_IMPORT_STALL_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{IMPORT_STALL_TIMEOUT_ENV}: not a number: '{text}'") from None
    return value if value > 0 else None


def _split_list(values: Sequence[str]) -> list[str]:
    return [item for value in values for item in re.split(r"[,;\s]+", value) if item]


# --- prepare / finalize ---------------------------------------------------------------------


@cli.command("prepare-local-job")
@click.argument("jobid")
@click.argument("volids", nargs=-1)
@click.option("--scan", "-scan", "scan", multiple=True, help="Storage ids to scan.")
@click.option("--last_sync", "-last_sync", "last_sync", default="0", help="Last sync time.")
@click.option("--parent_snapname", "-parent_snapname", "parent_snapname", default=None)
@click.option("--force", "-force", "force", is_flag=False, flag_value="1", default="0")
@click.option(
    "--pverep-info", "-pverep-info", "pverep_info", is_flag=False, flag_value="1",
    default="0",
    help="pverep only: add this node's zfs stream features and kept partial receives "
    "(resume tokens) to the answer, under the key 'pverep'.",
)  # fmt: skip
@click.pass_obj
def prepare_local_job(
    app: App,
    jobid: str,
    volids: tuple[str, ...],
    scan: tuple[str, ...],
    last_sync: str,
    parent_snapname: str | None,
    force: str,
    pverep_info: str,
) -> None:
    """Prepare for replication job (called by the source; prints one JSON line)."""
    with_info = _bool("pverep-info", pverep_info)
    target = _target(app, probe=with_info)
    partial: dict[str, str] | None = {} if with_info else None
    result = remote.prepare_local_job(
        target,
        jobid,
        list(volids),
        scan=_split_list(scan),
        last_sync=_uint("last_sync", last_sync),
        parent_snapname=parent_snapname,
        force=_bool("force", force),
        partial=partial,
    )
    info = None if partial is None else remote.prepare_info(target, partial)
    click.echo(remote.format_prepare_result(result, info))


@cli.command("finalize-local-job")
@click.argument("jobid")
@click.argument("volids", nargs=-1)
@click.option("--last_sync", "-last_sync", "last_sync", default="0")
@click.pass_obj
def finalize_local_job(app: App, jobid: str, volids: tuple[str, ...], last_sync: str) -> None:
    """Finalize a replication job (called by the source; logs on stderr)."""
    remote.finalize_local_job(
        _target(app, probe=False), jobid, list(volids), last_sync=_uint("last_sync", last_sync)
    )


# --- import / export ------------------------------------------------------------------------


@contextmanager
def _import_source(filename: str) -> Iterator[int]:
    """The fd ``zfs recv`` reads: stdin, a TCP client (insecure mode), a unix client, a file."""
    if filename == "-":
        yield sys.stdin.fileno()
        return
    if filename.startswith("tcp://"):
        listener = tcp.listen(tcp.resolve_listen_address(filename[len("tcp://") :]))
        sys.stdout.write(tcp.announcement(listener))
        sys.stdout.flush()
        with tcp.accept_one(listener) as client:
            yield client.fileno()
        return
    if filename.startswith("unix://"):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
            server.bind(filename[len("unix://") :])
            server.listen(1)
            sys.stdout.write("ready\n")
            sys.stdout.flush()
            client, _ = server.accept()
            with client:
                yield client.fileno()
        return
    with open(filename, "rb") as fh:
        yield fh.fileno()


@contextmanager
def _export_sink(filename: str) -> Iterator[int]:
    if filename == "-":
        sys.stdout.flush()
        yield sys.stdout.fileno()
        return
    with open(filename, "wb") as fh:
        yield fh.fileno()


_F = TypeVar("_F", bound=Callable[..., Any])


def _stream_arguments(command: _F) -> _F:
    """The arguments ``pvesm import`` and ``pvesm export`` share, in pvesm's spelling."""
    decorators = [
        click.argument("volume"),
        click.argument("fmt", metavar="FORMAT"),
        click.argument("filename"),
        click.option(
            "--base", "-base", "base", default=None,
            help="Snapshot the stream is incremental from (must exist on both sides).",
        ),
        click.option(
            "--snapshot", "-snapshot", "snapshot", default=None,
            help="Snapshot to send up to / expected in the stream.",
        ),
        click.option(
            "--with-snapshots", "-with-snapshots", "with_snapshots", is_flag=False,
            flag_value="1", default="0",
            help="Include intermediate snapshots (0/1; zfs streams always do).",
        ),
    ]  # fmt: skip
    for decorator in reversed(decorators):
        command = decorator(command)
    return command


def _pverep_import_options(command: _F) -> _F:
    """Import options only a pverep source sends (a stock pvesm has none of them)."""
    decorators = [
        click.option(
            "--resumable", "-resumable", "resumable", is_flag=False, flag_value="1",
            default="0",
            help="pverep only: receive with 'zfs recv -s'; a broken transfer keeps its "
            "partial state for resuming.",
        ),
        click.option(
            "--raw", "-raw", "raw", is_flag=False, flag_value="1", default="0",
            help="pverep only: the stream is a raw send (zfs send -w) of an encrypted disk.",
        ),
        click.option(
            "--resume", "-resume", "resume", is_flag=False, flag_value="1", default="0",
            help="pverep only: the stream continues this volume's partial receive "
            "(zfs send -t).",
        ),
        click.option(
            "--discard-partial", "-discard-partial", "discard_partial", is_flag=False,
            flag_value="1", default="0",
            help="pverep only: discard a partial receive first (zfs recv -A).",
        ),
        click.option(
            "--prune", "-prune", "prune", multiple=True,
            help="pverep only: snapshots gone on the source, destroyed here before "
            "receiving (comma-separated; never the base).",
        ),
    ]  # fmt: skip
    for decorator in reversed(decorators):
        command = decorator(command)
    return command


def _import_mode(
    resumable: str, raw: str, resume: str, discard_partial: str, prune: Sequence[str]
) -> ImportMode:
    return ImportMode(
        resumable=_bool("resumable", resumable),
        raw=_bool("raw", raw),
        resuming=_bool("resume", resume),
        discard_partial=_bool("discard-partial", discard_partial),
        prune=tuple(_split_list(prune)),
    )


@cli.command("import")
@_stream_arguments
@click.option("--delete-snapshot", "-delete-snapshot", "delete_snapshot", default=None)
@click.option(
    "--allow-rename", "-allow-rename", "allow_rename", is_flag=False, flag_value="1",
    default="0",
)  # fmt: skip
@_pverep_import_options
@click.pass_obj
def import_(
    app: App,
    volume: str,
    fmt: str,
    filename: str,
    base: str | None,
    snapshot: str | None,
    with_snapshots: str,
    delete_snapshot: str | None,
    allow_rename: str,
    resumable: str,
    raw: str,
    resume: str,
    discard_partial: str,
    prune: tuple[str, ...],
) -> None:
    """Import a volume stream (pvesm import): '-' stdin, tcp://<ip|cidr>, unix://<path>, file."""
    _bool("with-snapshots", with_snapshots)  # accepted for pvesm compatibility; zfs ignores it
    stall_timeout = _import_stall_timeout()
    target = _target(app)
    plan = remote.validate_import(
        target,
        volume,
        fmt,
        snapshot=snapshot,
        base=base,
        allow_rename=_bool("allow-rename", allow_rename),
        delete_snapshot=delete_snapshot,
        mode=_import_mode(resumable, raw, resume, discard_partial, prune),
    )
    with remote.claimed_import(target, plan) as claimed, _import_source(filename) as fd:
        volid = remote.run_import(claimed, fd, on_stderr=_stderr, stall_timeout=stall_timeout)
    click.echo(f"successfully imported '{volid}'")


@cli.command("export")
@_stream_arguments
@click.option("--snapshot-list", "-snapshot-list", "snapshot_list", default=None, hidden=True)
@click.pass_obj
def export(
    app: App,
    volume: str,
    fmt: str,
    filename: str,
    base: str | None,
    snapshot: str | None,
    with_snapshots: str,
    snapshot_list: str | None,
) -> None:
    """Export a volume stream (pvesm export) to '-' (stdout) or a file."""
    target = _target(app)
    with _export_sink(filename) as fd:
        remote.export_volume(
            target,
            volume,
            fmt,
            fd,
            snapshot=snapshot,
            base=base,
            with_snapshots=_bool("with-snapshots", with_snapshots),
            on_stderr=_stderr,
        )


@cli.command(PEER_INFO_VERB)
def peer_info_cmd() -> None:
    """Print one JSON line saying this node runs pverep (the source's stock-or-pverep probe)."""
    click.echo(json.dumps({"program": "pverep", "version": pverep.__version__}))


@cli.command("mtunnel")
@click.option(
    "--migration_network", "-migration_network", "network", default=None, metavar="CIDR",
    help="The replication/migration network to look this node's address up in.",
)  # fmt: skip
@click.option(
    "--get_migration_ip", "-get_migration_ip", "get_ip", is_flag=False, flag_value="1",
    default="0", metavar="[BOOL]", help="Print this node's address in that network and exit.",
)  # fmt: skip
def mtunnel_cmd(network: str | None, get_ip: str) -> None:
    """pvecm mtunnel's address lookup: print ``ip: '<address>'`` (``no ip`` without a network).

    A source asks this over the cluster IP before it replicates over a replication network.
    Only the lookup is offered; pverep opens no migration tunnel.
    """
    if not _bool("get_migration_ip", get_ip):
        raise ValidationError("mtunnel: only -get_migration_ip is supported (no tunnel)")
    if not network:
        click.echo("no ip")
        return
    try:
        ipaddress.ip_network(network, strict=False)
    except ValueError:
        raise ValidationError(f"migration_network: invalid CIDR '{network}'") from None
    click.echo(f"ip: '{tcp.pick_ip_in_network(network, tcp.local_addresses())}'")


@cli.command(serve.SERVE_VERB, hidden=True)
@click.pass_obj
def serve_cmd(app: App) -> None:
    """Serve prepare/import/finalize requests as line-delimited JSON on stdin/stdout (pverep
    sources only; engine/serve.py has the protocol)."""
    # the protocol owns fd 1: stray output of this process or its children goes to stderr
    protocol = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())

    def make_target(probe: bool, log: Callable[[str], None]) -> remote.TargetNode:
        return _target(app, probe=probe, log=log)

    stall_timeout = _import_stall_timeout()
    app.cluster()  # filled once here, before request threads share it
    with protocol:
        serve.serve(make_target, sys.stdin.buffer, protocol, stall_timeout=stall_timeout)
