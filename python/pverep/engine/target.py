"""A replication target reached through a Shell (spec §5.2, §5.3, §5.6): the Target port.

One SshShell per target and run: prepare, every import and finalize share one multiplexed ssh
connection, where pvesr opens a new one per call. The remote argv is pvesr's; the program name
comes from transport.peer.PeerCommands (pverep, or pvesr/pvesm for a stock PVE peer).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pverep._core import Budget
from pverep.engine.ports import LogFunc
from pverep.engine.transfer import TransferSpec, transfer_volume
from pverep.transport.base import CommandError, Shell
from pverep.transport.peer import PeerCommands


@dataclass
class ShellTarget:
    """The Target port over a remote Shell, with the local shell and send argv for transfers."""

    node: str
    remote: Shell
    local: Shell
    send_argv: Callable[[str, str, str | None], list[str]]  # (volid, snapshot, base) → argv
    commands: PeerCommands
    stall_timeout: float | None
    tcp_address: str | None = None  # insecure mode: the target's IP or the replication network
    close_remote: Callable[[], None] | None = None  # drops the connection (a stall)
    release: Callable[[], None] | None = None  # at the job's end; default: close_remote
    budget: Callable[[], Budget | None] = lambda: None  # the node's budget at this moment

    def prepare(
        self,
        jobid: str,
        volids: Sequence[str],
        *,
        scan: Sequence[str],
        last_sync: int,
        parent_snapname: str | None,
        force: bool,
        on_stderr: LogFunc,
    ) -> str:
        argv = self.commands.prepare_local_job(
            jobid,
            volids,
            last_sync=last_sync,
            scan=scan,
            parent_snapname=parent_snapname,
            force=force,
        )
        result = self.remote.run(argv)
        for line in result.stderr.decode("utf-8", "replace").splitlines():
            if line.strip():
                on_stderr(line)
        if result.returncode != 0:
            raise CommandError(result.argv, result.returncode, result.stderr_tail())
        return result.stdout_text

    def finalize(self, jobid: str, volids: Sequence[str], last_sync: int, on_line: LogFunc) -> None:
        result = self.remote.run(self.commands.finalize_local_job(jobid, volids, last_sync))
        for stream in (result.stdout, result.stderr):
            for line in stream.decode("utf-8", "replace").splitlines():
                if line.strip():
                    on_line(line)
        result.check()

    def transfer(
        self,
        volid: str,
        *,
        snapshot: str,
        base: str | None,
        rate_bps: int | None,
        insecure: bool,
        log: LogFunc,
    ) -> None:
        file = f"tcp://{self.tcp_address}" if insecure and self.tcp_address else "-"
        spec = TransferSpec(
            volid,
            self.send_argv(volid, snapshot, base),
            self.commands.import_(volid, snapshot, base, file),
        )
        transfer_volume(
            self.local,
            self.remote,
            spec,
            rate_bps=rate_bps,
            stall_timeout=self.stall_timeout,
            log=log,
            insecure=insecure and self.tcp_address is not None,
            on_stall=self.close_remote,
            budget=self.budget(),
        )

    def close(self) -> None:
        done = self.release if self.release is not None else self.close_remote
        if done is not None:
            done()
