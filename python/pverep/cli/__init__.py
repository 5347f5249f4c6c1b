"""The ``pverep`` command line: a click group with pvesr-compatible verbs.

Each module in this package registers one group of verbs on ``main``; ``ctx.obj`` is an App.
Errors derived from PverepError become one line on stderr and exit status 255 (as pvesr's
CLIHandler does); tracebacks are reserved for bugs.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import click

from pverep.errors import PverepError
from pverep.paths import Paths

#: Exit status for handled errors, like PVE's CLIHandler.
ERROR_EXIT = 255


@dataclass
class App:
    """Shared state handed to every command through ``ctx.obj``."""

    paths: Paths = field(default_factory=Paths.from_env)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--root",
    type=click.Path(file_okay=False),
    default=None,
    envvar="PVEREP_ROOT",
    help="Treat this directory as / for every pvesr path (tests, labs). Default: /.",
)
@click.pass_context
def cli(ctx: click.Context, root: str | None) -> None:
    """pverep: storage replication for Proxmox VE (pvesr-compatible)."""
    ctx.obj = App(paths=Paths.from_env(root))


def _register() -> None:
    # Verb modules import ``cli`` and decorate onto it; importing them registers the verbs.
    from pverep.cli import lab, remote  # noqa: F401


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the CLI, mapping PverepError to one line + exit 255."""
    _register()
    try:
        cli.main(args=argv, prog_name="pverep", standalone_mode=False)
    except PverepError as err:
        click.echo(f"{err}", err=True)
        sys.exit(ERROR_EXIT)
    except click.exceptions.Abort:
        click.echo("Aborted!", err=True)
        sys.exit(130)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    except click.exceptions.Exit as err:
        sys.exit(err.exit_code)
