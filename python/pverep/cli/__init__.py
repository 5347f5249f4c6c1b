"""The ``pverep`` command line: a click group with pvesr-compatible verbs.

Each module in this package registers one group of verbs on ``main``; ``ctx.obj`` is an App.
Errors derived from PverepError become one line on stderr and exit status 255 (as pvesr's
CLIHandler does); tracebacks are reserved for bugs.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import click

import pverep
from pverep.apiconfig import ApiSettings
from pverep.cli.apiopts import api_options, resolve_api_settings
from pverep.cluster import Cluster, GuestLocation, open_cluster
from pverep.cluster.files import FilesCluster
from pverep.config.jobs import ConfigStore
from pverep.config.state import StateStore
from pverep.errors import PverepError
from pverep.paths import Paths

#: Exit status for handled errors, like PVE's CLIHandler.
ERROR_EXIT = 255


@dataclass
class App:
    """Shared state handed to every command through ``ctx.obj``."""

    paths: Paths = field(default_factory=Paths.from_env)
    #: The clock (epoch seconds); tests inject a fixed one.
    clock: Callable[[], float] = time.time
    #: create-local-job's "No replicatable volumes found" check: the guest's volume ids that
    #: would be replicated. None means PVE's rules on the guest's config
    #: (``replicatable_volumes``); tests may inject another lister.
    list_volumes: Callable[[GuestLocation], Sequence[str]] | None = None
    #: Which cluster backend: /etc/pve files (default) or the Proxmox API (--api …).
    api: ApiSettings = field(default_factory=ApiSettings)
    _cluster: tuple[ApiSettings, Paths, Cluster] | None = None

    def config_store(self) -> ConfigStore:
        return ConfigStore(self.paths)

    def state_store(self) -> StateStore:
        return StateStore(self.paths)

    def cluster(self) -> Cluster:
        """The cluster through the chosen backend (kept while backend and root stay the same:
        the API backend then reuses its connection)."""
        if self._cluster is None or self._cluster[:2] != (self.api, self.paths):
            self._cluster = (self.api, self.paths, open_cluster(self.api, self.paths))
        cluster = self._cluster[2]
        if isinstance(cluster, FilesCluster):
            cluster.list_volumes = self.list_volumes or self.replicatable_volumes
        return cluster

    def replicatable_volumes(self, where: GuestLocation) -> Sequence[str]:
        """The guest's volumes PVE would replicate; computed strictly (errors propagate), as
        the API's create does."""
        cluster = self.cluster()
        config = cluster.guest_config(where.vmid, where)
        return config.replicatable_volumes(cluster.storages())


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(
    pverep.__version__, "--version", prog_name="pverep", message="%(prog)s %(version)s"
)
@click.option(
    "--root",
    type=click.Path(file_okay=False),
    default=None,
    envvar="PVEREP_ROOT",
    help="Treat this directory as / for every pvesr path (tests, labs). Default: /.",
)
@api_options
@click.pass_context
def cli(ctx: click.Context, /, root: str | None, **api: str | None) -> None:
    """pverep: storage replication for Proxmox VE (pvesr-compatible)."""
    if isinstance(ctx.obj, App):  # given by the caller (tests): keep it, honour --root
        if root is not None:
            ctx.obj.paths = Paths.from_env(root)
    else:
        ctx.obj = App(paths=Paths.from_env(root))
    ctx.obj.api = resolve_api_settings(ctx.obj.paths, api)


#: The verbs a source runs on this node over ssh (cli/remote.py). Given as the first word,
#: only their module is loaded: every remote call pays this interpreter start, and the other
#: verb modules (observe, reconcile, the lab) cost it ~0.2 s of imports (measured in the lab).
REMOTE_VERBS = frozenset(
    {"prepare-local-job", "finalize-local-job", "import", "export", "peer-info", "mtunnel",
     "serve"}
)  # fmt: skip


def _register(argv: Sequence[str] | None = None) -> None:
    # Verb modules import ``cli`` and decorate onto it; importing them registers the verbs.
    words = list(sys.argv[1:] if argv is None else argv)
    if words and words[0] in REMOTE_VERBS:
        from pverep.cli import remote

        return
    from pverep.cli import guests, jobs, observe, reconcile, remote, run, setup  # noqa: F401

    # The lab (fake API server, fake pvesh) is test infrastructure: the Debian package does
    # not ship it, so on a production node there is no `pverep lab` verb at all.
    if importlib.util.find_spec("pverep.lab") is not None:
        from pverep.cli import lab  # noqa: F401


def main(argv: list[str] | None = None, app: App | None = None) -> None:
    """Console-script entry point: run the CLI, mapping PverepError to one line + exit 255.

    ``app`` replaces the default App (tests inject paths and a clock this way).
    """
    _register(argv)
    try:
        cli.main(args=argv, prog_name="pverep", standalone_mode=False, obj=app)
    except PverepError as err:
        click.echo(f"{err}", err=True)
        sys.exit(ERROR_EXIT)
    except click.exceptions.Abort:
        click.echo("Aborted!", err=True)
        sys.exit(130)
    except click.UsageError as err:
        # one line, like every other error; the usage is one `--help` away
        where = f"{err.ctx.command_path}: " if err.ctx is not None else ""
        click.echo(f"{where}{err.format_message()}", err=True)
        sys.exit(ERROR_EXIT)
    except click.ClickException as err:
        click.echo(err.format_message(), err=True)
        sys.exit(ERROR_EXIT)
    except click.exceptions.Exit as err:
        sys.exit(err.exit_code)
