"""``pverep lab``: the embedded multi-node sandbox cluster (see pverep.lab)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from pverep.cli import cli
from pverep.lab import guests
from pverep.lab.config import DIR_ENV
from pverep.lab.control import Lab

F = TypeVar("F", bound=Callable[..., Any])


def _dir_option(func: F) -> F:
    """``--dir`` on the group and on every command (the command's wins)."""
    return click.option(
        "--dir",
        "lab_dir",
        type=click.Path(file_okay=False),
        default=None,
        help=f"Lab directory (default: ${DIR_ENV} or /var/tmp/pverep-lab).",
    )(func)


def _lab(ctx: click.Context, lab_dir: str | None) -> Lab:
    return Lab(lab_dir or ctx.find_root().meta.get("pverep.lab_dir"))


@cli.group()
@_dir_option
@click.pass_context
def lab(ctx: click.Context, lab_dir: str | None) -> None:
    """Manage the lab: a Proxmox-like cluster in namespaces on this machine."""
    ctx.find_root().meta["pverep.lab_dir"] = lab_dir


@lab.command()
@click.argument("count", type=click.IntRange(1, 50), default=3)
@click.option(
    "--zfs",
    "engine",
    type=click.Choice(["fuse", "openzfs"]),
    default="fuse",
    show_default=True,
    help="fuse: namespaces with zfs-fuse (fast). openzfs: every node a QEMU/TCG guest with "
    "real OpenZFS 2.3 (zvols, resume tokens; the first run builds the guest image).",
)
@_dir_option
@click.pass_context
def up(ctx: click.Context, count: int, engine: str, lab_dir: str | None) -> None:
    """Create a fresh lab of COUNT nodes (default 3), replacing any earlier one."""
    the_lab = _lab(ctx, lab_dir)
    seconds = the_lab.up(count, engine)
    cfg = the_lab.config
    click.echo(
        f"lab up: {count} {engine} node(s) in {seconds:.2f}s "
        f"(dir {cfg.dir}, net {cfg.subnet}.0/24 on {cfg.bridge})",
        err=True,
    )


@lab.command()
@_dir_option
@click.pass_context
def down(ctx: click.Context, lab_dir: str | None) -> None:
    """Tear the lab down completely (idempotent; also cleans up after crashes)."""
    seconds = _lab(ctx, lab_dir).down()
    click.echo(f"lab down in {seconds:.2f}s", err=True)


@lab.command()
@_dir_option
@click.pass_context
def status(ctx: click.Context, lab_dir: str | None) -> None:
    """Show the nodes: state, init PID, IP, fault flags. Exit 1 if the lab is not fully up."""
    the_lab = _lab(ctx, lab_dir)
    rows = the_lab.status()
    for row in rows:
        state = f"up   pid {row.pid}" if row.running else "DOWN"
        flags = " ".join(row.flags)
        click.echo(f"{row.node:<6} {state:<16} ip {row.ip:<15} {flags}".rstrip())
    if not all(row.running for row in rows):
        sys.exit(1)


@lab.command(
    "exec",
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
)
@_dir_option
@click.argument("node")
@click.argument("command", nargs=-1, type=click.UNPROCESSED, required=True)
@click.pass_context
def exec_(ctx: click.Context, lab_dir: str | None, node: str, command: tuple[str, ...]) -> None:
    """Run COMMAND on NODE: stdin, stdout, stderr and exit status pass through.

    Use ``--`` before the command: ``pverep lab exec pve1 -- zfs list``.
    """
    argv = list(command[1:] if command and command[0] == "--" else command)
    result = _lab(ctx, lab_dir).exec(node, argv, capture=False, cwd=os.getcwd())
    code = result.returncode
    sys.exit(128 - code if code < 0 else code)


def _node_command(name: str, doc: str, action: Callable[[Lab, str], None]) -> None:
    @lab.command(name, help=doc)
    @_dir_option
    @click.argument("node")
    @click.pass_context
    def command(ctx: click.Context, lab_dir: str | None, node: str) -> None:
        action(_lab(ctx, lab_dir), node)


_node_command("cut", "Cut NODE's link (its /etc/pve goes read-only without quorum).", Lab.cut)
_node_command("heal", "Restore NODE's link (and quorum).", Lab.heal)
_node_command("freeze", "Freeze every process of NODE (a hung node).", Lab.freeze)
_node_command("thaw", "Thaw a frozen NODE.", Lab.thaw)


@lab.command()
@_dir_option
@click.argument("node")
@click.argument("rate")
@click.pass_context
def shape(ctx: click.Context, lab_dir: str | None, node: str, rate: str) -> None:
    """Limit NODE's link to RATE in both directions (tc tbf, e.g. 8mbit), or 'off'."""
    _lab(ctx, lab_dir).shape(node, None if rate == "off" else rate)


@lab.command("ip")
@_dir_option
@click.argument("node")
@click.pass_context
def ip_(ctx: click.Context, lab_dir: str | None, node: str) -> None:
    """Print NODE's IP address."""
    click.echo(_lab(ctx, lab_dir).node_ip(node))


@lab.group()
def guest() -> None:
    """Guests for tests and the demo (configs in /etc/pve, disks as datasets)."""


@guest.command("create")
@_dir_option
@click.argument("vmid", type=int)
@click.option("--node", required=True, help="Node the guest lives on.")
@click.option("--type", "vmtype", type=click.Choice(["lxc", "qemu"]), default="lxc")
@click.option("--disk", "sizes", multiple=True, help="Disk size (e.g. 1G); repeat for more.")
@click.pass_context
def guest_create(
    ctx: click.Context,
    lab_dir: str | None,
    vmid: int,
    node: str,
    vmtype: str,
    sizes: tuple[str, ...],
) -> None:
    """Write a guest config on NODE and create its disks there."""
    made = guests.create(_lab(ctx, lab_dir), vmid, node, vmtype, list(sizes))
    for volname in made.volumes:
        click.echo(f"{guests.STORAGE}:{volname}")


@guest.command("write")
@_dir_option
@click.argument("vmid", type=int)
@click.option("--bytes", "nbytes", type=int, default=guests.DEFAULT_WRITE_BYTES, show_default=True)
@click.pass_context
def guest_write(ctx: click.Context, lab_dir: str | None, vmid: int, nbytes: int) -> None:
    """Change data on every disk of the guest, on the node it lives on."""
    guests.write(_lab(ctx, lab_dir), vmid, nbytes)


@guest.command("move")
@_dir_option
@click.argument("vmid", type=int)
@click.option("--to", "to_node", required=True, help="Node to move the config to.")
@click.pass_context
def guest_move(ctx: click.Context, lab_dir: str | None, vmid: int, to_node: str) -> None:
    """Move the guest's config to another node (a rename, like HA's steal_service)."""
    guests.move(_lab(ctx, lab_dir), vmid, to_node)


@guest.command("checksum")
@_dir_option
@click.argument("vmid", type=int)
@click.option("--node", default=None, help="Node to read the disks on (default: the guest's).")
@click.pass_context
def guest_checksum(ctx: click.Context, lab_dir: str | None, vmid: int, node: str | None) -> None:
    """Print a content digest of each disk of the guest on NODE; exit 1 if one is missing."""
    sums = guests.checksum(_lab(ctx, lab_dir), vmid, node)
    for volid, digest in sums.items():
        click.echo(f"{volid} {digest or 'missing'}")
    if any(d is None for d in sums.values()):
        sys.exit(1)
