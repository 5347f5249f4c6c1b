"""The remote protocol's argv (spec §5.2, §5.3, §5.6, §5.7), for a pverep peer or a stock
Proxmox peer.

A stock peer gets exactly what pvesr/pvesm send (``pvesr prepare-local-job …``,
``pvesm import …``). A pverep peer gets the same verbs and options behind the pverep executable
(configurable: an absolute path, or ``python -m pverep`` in a lab). Every value is validated
here, before it can reach an ssh command line.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pverep.errors import ValidationError
from pverep.storage.streamform import ImportMode
from pverep.validate import (
    check_job_id_param,
    check_parent_snapname,
    check_storage_id,
    check_transfer_snapshot_name,
    parse_volume_id,
)

PeerKind = Literal["pverep", "pve"]


def _volids(volids: Sequence[str]) -> list[str]:
    for volid in volids:
        parse_volume_id(volid)
    return list(volids)


def _filename(filename: str) -> str:
    """``-`` (stdin/stdout) or ``tcp://<ip-or-cidr>``: the only stream ends pvesr uses."""
    if filename == "-":
        return filename
    if filename.startswith("tcp://"):
        ipaddress.ip_network(filename[len("tcp://") :], strict=False)
        return filename
    raise ValidationError(f"unsupported stream endpoint '{filename}'")


@dataclass(frozen=True)
class PeerCommands:
    """Builds the argv to run on the target (the ssh layer quotes it)."""

    kind: PeerKind = "pverep"
    #: argv of the pverep executable on a pverep peer.
    pverep: tuple[str, ...] = ("pverep",)

    def _replication_tool(self) -> list[str]:
        return ["pvesr"] if self.kind == "pve" else list(self.pverep)

    def _storage_tool(self) -> list[str]:
        return ["pvesm"] if self.kind == "pve" else list(self.pverep)

    def _cluster_tool(self) -> list[str]:
        return ["pvecm"] if self.kind == "pve" else list(self.pverep)

    def migration_ip(self, cidr: str) -> list[str]:
        """``mtunnel -migration_network <cidr> -get_migration_ip``: the target's own address in
        the replication/migration network (``pvecm`` on a stock peer)."""
        ipaddress.ip_network(cidr, strict=False)
        return [*self._cluster_tool(), "mtunnel", "-migration_network", cidr, "-get_migration_ip"]

    def prepare_local_job(
        self,
        jobid: str,
        volids: Sequence[str],
        *,
        last_sync: int,
        scan: Sequence[str] = (),
        parent_snapname: str | None = None,
        force: bool = False,
        pverep_info: bool = False,
    ) -> list[str]:
        """``prepare-local-job <jobid> [--scan a,b] [<volid>…] --last_sync N
        [--parent_snapname S] [--force]`` — ``--force`` last (optional-value boolean);
        pverep peers only: ``--pverep-info 1`` (stream features and resume tokens)."""
        argv = [*self._replication_tool(), "prepare-local-job", check_job_id_param(jobid)]
        if scan:
            argv += ["--scan", ",".join(check_storage_id(s) for s in scan)]
        argv += _volids(volids)
        if last_sync < 0:
            raise ValidationError("last_sync must be >= 0")
        argv += ["--last_sync", str(int(last_sync))]
        if parent_snapname is not None:
            argv += ["--parent_snapname", check_parent_snapname(parent_snapname)]
        if force:
            argv.append("--force")
        if pverep_info:
            self._pverep_only("--pverep-info")
            argv += ["--pverep-info", "1"]
        return argv

    def _pverep_only(self, option: str) -> None:
        if self.kind != "pverep":
            raise ValidationError(f"'{option}' is for pverep peers only")

    def finalize_local_job(self, jobid: str, volids: Sequence[str], last_sync: int) -> list[str]:
        """``finalize-local-job <jobid> <volid>… --last_sync <start_time>``."""
        return [
            *self._replication_tool(),
            "finalize-local-job",
            check_job_id_param(jobid),
            *_volids(volids),
            "--last_sync",
            str(int(last_sync)),
        ]

    def export(
        self, volid: str, snapshot: str, base: str | None = None, filename: str = "-"
    ) -> list[str]:
        """``export <volid> zfs - -with-snapshots 1 -snapshot <sync> [-base <base>]``."""
        argv = [*self._storage_tool(), "export", *_volids([volid]), "zfs", _filename(filename)]
        argv += ["-with-snapshots", "1", "-snapshot", check_transfer_snapshot_name(snapshot)]
        if base is not None:
            argv += ["-base", check_transfer_snapshot_name(base)]
        return argv

    def import_(
        self,
        volid: str,
        snapshot: str,
        base: str | None = None,
        filename: str = "-",
        mode: ImportMode | None = None,
    ) -> list[str]:
        """``import <volid> zfs <-|tcp://…> -with-snapshots 1 -snapshot <sync>
        -allow-rename 0 [-base <base>]``, then pverep's own options for a pverep peer
        (``-resumable 1``, ``-raw 1``, ``-resume 1``, ``-discard-partial 1``, ``-prune a,b``)."""
        argv = [*self._storage_tool(), "import", *_volids([volid]), "zfs", _filename(filename)]
        argv += ["-with-snapshots", "1", "-snapshot", check_transfer_snapshot_name(snapshot)]
        argv += ["-allow-rename", "0"]
        if base is not None:
            argv += ["-base", check_transfer_snapshot_name(base)]
        if mode is None or mode == ImportMode():
            return argv
        self._pverep_only("-resumable")
        for option, on in (
            ("-resumable", mode.resumable),
            ("-raw", mode.raw),
            ("-resume", mode.resuming),
            ("-discard-partial", mode.discard_partial),
        ):
            if on:
                argv += [option, "1"]
        if mode.prune:
            argv += ["-prune", ",".join(check_transfer_snapshot_name(n) for n in mode.prune)]
        return argv
