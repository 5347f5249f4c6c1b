"""``pverep guests [--node NODE]``: guests with their replicatable volumes and jobs."""

from __future__ import annotations

import click

from pverep.cli import App, cli
from pverep.cli.output import emit, output_format_option
from pverep.discovery import GuestInfo, discover_guests

pass_app = click.make_pass_decorator(App)

_ROW = "{:<10} {:<5} {:<20} {:<24} {}\n"


def format_guests(guests: list[GuestInfo]) -> str:
    out = [_ROW.format("VMID", "Type", "Node", "Jobs", "Volumes")]
    for g in guests:
        volumes = f"! {g.error}" if g.error is not None else (",".join(g.volumes) or "-")
        out.append(
            _ROW.format(g.vmid, g.location.type, g.location.node, ",".join(g.jobs) or "-", volumes)
        )
    return "".join(out)


@cli.command("guests")
@click.option("--node", metavar="NODE", default=None, help="Only guests on this node.")
@output_format_option
@pass_app
def guests(app: App, node: str | None, output_format: str) -> None:
    """List guests with their replicatable volumes and replication jobs."""
    found = discover_guests(app.cluster(), node)
    if output_format == "text":
        click.echo(format_guests(found), nl=False)
    else:
        emit([g.to_api() for g in found], output_format)
