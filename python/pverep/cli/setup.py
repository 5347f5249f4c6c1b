"""Setting pverep up on a node: ``install-hookscript`` puts the guest hookscript on a snippets
storage and prints the ``qm set`` / ``pct set`` line that attaches it."""

from __future__ import annotations

import click

from pverep import hookscript
from pverep.cli import App, cli


@cli.command("install-hookscript")
@click.option(
    "--storage",
    default=hookscript.DEFAULT_STORAGE,
    show_default=True,
    help="Storage with the 'snippets' content type to put the hookscript on.",
)
@click.option(
    "--name",
    default=hookscript.DEFAULT_NAME,
    show_default=True,
    help="File name of the snippet (the volume is <storage>:snippets/<name>).",
)
@click.option(
    "--uninstall",
    is_flag=True,
    help="Remove the hookscript again (refused while a guest still uses it).",
)
@click.pass_obj
def install_hookscript_cmd(app: App, storage: str, name: str, uninstall: bool) -> None:
    """Install pverep's guest hookscript on a snippets storage of this node."""
    cluster = app.cluster()
    snippet = hookscript.locate(app.paths, cluster.storages(), storage, name, cluster.local_node())
    if uninstall:
        removed = hookscript.uninstall(snippet, hookscript.users(cluster, snippet.volid))
        state = "removed" if removed else "not installed"
        click.echo(f"hookscript '{snippet.volid}' {state} ({snippet.path})")
        return
    changed = hookscript.install(snippet, hookscript.shipped_script())
    state = "installed" if changed else "already installed"
    click.echo(f"hookscript '{snippet.volid}' {state} ({snippet.path})")
    if not snippet.shared:
        click.echo(
            f"storage '{storage}' is not shared: run this on every node the guests may start on"
        )
    click.echo("attach it to a guest (as root@pam) with one of:")
    click.echo(f"  {hookscript.set_command('<vmid>', 'qemu', snippet.volid)}")
    click.echo(f"  {hookscript.set_command('<vmid>', 'lxc', snippet.volid)}")
