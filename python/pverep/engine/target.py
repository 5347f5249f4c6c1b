"""A replication target reached through a Shell (spec §5.2, §5.3, §5.6): the Target port.

One SshShell per target and run: prepare, every import and finalize share one multiplexed ssh
connection, where pvesr opens a new one per call. The remote argv is pvesr's; the program name
comes from transport.peer.PeerCommands (pverep, or pvesr/pvesm for a stock PVE peer).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pverep._core import Budget
from pverep.engine import messages
from pverep.engine.planner import parse_prepare_info
from pverep.engine.ports import LogFunc
from pverep.engine.resume import ResumeCheckError, ResumePoint, parse_resume_check
from pverep.engine.transfer import (
    ChannelUnavailable,
    TransferSpec,
    transfer_volume,
    transfer_volume_session,
)
from pverep.errors import ValidationError
from pverep.storage.streamform import ImportMode, StreamForm, choose_stream_form
from pverep.storage.zfs import resume_send_argv
from pverep.storage.zfscaps import ZfsCaps
from pverep.transport.base import CommandError, Shell
from pverep.transport.peer import PeerCommands
from pverep.transport.serveclient import ServeSession
from pverep.validate import check_resume_token

#: (volid, snapshot, base, stream form) → the local zfs send argv.
SendArgv = Callable[[str, str, str | None, StreamForm], list[str]]


@dataclass
class ShellTarget:
    """The Target port over a remote Shell, with the local shell and send argv for transfers."""

    node: str
    remote: Shell
    local: Shell
    send_argv: SendArgv
    commands: PeerCommands
    stall_timeout: float | None
    tcp_address: str | None = None  # insecure mode: the target's IP or the replication network
    close_remote: Callable[[], None] | None = None  # drops the connection (a stall)
    release: Callable[[], None] | None = None  # at the job's end; default: close_remote
    budget: Callable[[], Budget | None] = lambda: None  # the node's budget at this moment
    #: What this node's zfs can do (storage/zfscaps.py); the target's comes in its answer.
    local_caps: ZfsCaps = field(default_factory=ZfsCaps)
    #: volid → its snapshot names, oldest first (a resumable first sync sends them too).
    local_snapshots: Callable[[str], list[str]] = lambda volid: []
    #: volid → whether the volume is encrypted (it then goes raw, see choose_stream_form).
    encrypted: Callable[[str], bool] = lambda volid: False
    #: volid → its dataset on this node (to check a resume token's owner).
    dataset: Callable[[str], str] = lambda volid: volid
    #: The run's ``pverep serve`` session on the target (transport/serveclient.py), or None:
    #: prepare and finalize then run as their own remote commands (pvesr's way).
    session: Callable[[], ServeSession | None] = lambda: None
    #: port → the argv of a byte channel to that port on the target's loopback (``ssh -W``
    #: over the job's master), or None: imports then run as their own remote commands.
    forward: Callable[[int], list[str] | None] | None = None
    remote_caps: ZfsCaps | None = None
    partial: dict[str, str] = field(default_factory=dict)  # volid → the target's token
    resume_points: dict[str, ResumePoint] = field(default_factory=dict)
    discard: set[str] = field(default_factory=set)  # partial receives to discard
    _forms: dict[str, StreamForm] = field(default_factory=dict)

    @property
    def peer_is_pverep(self) -> bool:
        return self.commands.kind == "pverep"

    @property
    def resume_capable(self) -> bool:
        """Worth asking the target for resume tokens: a pverep peer and a ``zfs send -t``."""
        return self.peer_is_pverep and self.local_caps.send_resume and self.local_caps.send_dry_run

    def form(self, volid: str) -> StreamForm:
        """The stream form of ``volid`` for this run (the one decision: choose_stream_form)."""
        form = self._forms.get(volid)
        if form is None:
            form = self._forms[volid] = choose_stream_form(
                peer_is_pverep=self.peer_is_pverep,
                local=self.local_caps,
                remote=self.remote_caps,
                encrypted=self.encrypted(volid),
            )
        return form

    def keeps_partial(self, volid: str) -> bool:
        """A broken transfer of ``volid`` leaves a partial receive the next run continues."""
        return self.form(volid).resumable

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
            pverep_info=self.resume_capable and not force,
        )
        with_info = argv[-2:] == ["--pverep-info", "1"]
        session = self.session() if self.peer_is_pverep else None
        if session is not None:
            args = {
                "jobid": jobid, "volids": list(volids), "scan": list(scan),
                "last_sync": int(last_sync), "parent_snapname": parent_snapname,
                "force": force, "pverep_info": with_info,
            }  # fmt: skip
            stdout = self._ask(session, "prepare", args, argv, on_stderr)
        else:
            result = self.remote.run(argv)
            for line in result.stderr.decode("utf-8", "replace").splitlines():
                if line.strip():
                    on_stderr(line)
            if result.returncode != 0:
                raise CommandError(result.argv, result.returncode, result.stderr_tail())
            stdout = result.stdout_text
        if with_info:
            self._read_info(stdout)
        return stdout

    def _ask(
        self,
        session: ServeSession,
        op: str,
        args: dict[str, object],
        argv: list[str],
        on_line: LogFunc,
    ) -> str:
        """One request to the serve session, its log lines and error as the verb ``argv``
        would have printed them, a failure as that verb's exit (255, pverep's error exit)."""
        answer = session.call(op, args)
        for line in answer.log:
            on_line(line)
        if not answer.ok:
            on_line(answer.error)
            raise CommandError(self.remote.command(argv), 255, [*answer.log, answer.error])
        return answer.stdout

    def _read_info(self, stdout: str) -> None:
        info = parse_prepare_info(stdout)
        self.remote_caps = ZfsCaps.from_json(info.get("zfs"))
        partial = info.get("partial")
        self.partial = {}
        for volid, token in partial.items() if isinstance(partial, dict) else ():
            try:
                self.partial[str(volid)] = check_resume_token(str(token))
            except ValidationError:
                self.discard.add(str(volid))

    def check_resumes(self, volids: Sequence[str], log: LogFunc) -> dict[str, str]:
        """Which kept partial receives this node can continue: volid → the snapshot to keep
        for it. The others are discarded on the target with the volume's next import."""
        keep: dict[str, str] = {}
        for volid in volids:
            token = self.partial.get(volid)
            if token is None:
                continue
            try:
                if not self.form(volid).resumable:
                    raise ResumeCheckError("the stream form is not resumable")
                point = self._check_token(volid, token)
            except ResumeCheckError as err:
                log(messages.resume_discarded(volid, str(err)))
                self.discard.add(volid)
                continue
            self.resume_points[volid] = point
            keep[volid] = point.snapshot
        return keep

    def _check_token(self, volid: str, token: str) -> ResumePoint:
        result = self.local.run(resume_send_argv(token, dry_run=True))
        if result.returncode != 0:
            tail = result.stderr_tail()
            raise ResumeCheckError(tail[-1] if tail else f"exit code {result.returncode}")
        text = (result.stdout + result.stderr).decode("utf-8", "replace")
        return parse_resume_check(token, self.dataset(volid), text)

    def resume(
        self, volid: str, *, rate_bps: int | None, insecure: bool, log: LogFunc
    ) -> str | None:
        """Continue ``volid``'s partial receive, if it has a usable one; returns the snapshot
        it completed on the target (the base of this run's transfer), else None."""
        point = self.resume_points.pop(volid, None)
        if point is None:
            return None
        log(messages.resuming(volid, point.snapshot, point.done, point.estimate))
        mode = ImportMode(resumable=True, raw=self.form(volid).raw, resuming=True)
        self._send(
            volid, resume_send_argv(point.token), point.snapshot, None, mode,
            rate_bps=rate_bps, insecure=insecure, log=log, offset=point.done,
        )  # fmt: skip
        return point.snapshot

    def finalize(self, jobid: str, volids: Sequence[str], last_sync: int, on_line: LogFunc) -> None:
        argv = self.commands.finalize_local_job(jobid, volids, last_sync)
        session = self.session() if self.peer_is_pverep else None
        if session is not None:
            args = {"jobid": jobid, "volids": list(volids), "last_sync": int(last_sync)}
            self._ask(session, "finalize", args, argv, on_line)
            return
        result = self.remote.run(argv)
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
        prune: Sequence[str] = (),
    ) -> None:
        form = self.form(volid)
        mode = ImportMode(
            resumable=form.resumable,
            raw=form.raw,
            discard_partial=volid in self.discard,
            # -R -I with recv -F removes what the source no longer has; a plain stream does not
            prune=tuple(prune) if base is not None and not form.replication else (),
        )
        if not form.replication:
            log(messages.stream_form(volid, form.name))
        if base is None and not form.replication:
            # -R would carry the older snapshots too: send the oldest first, then -I from it
            older = self._older_snapshots(volid, snapshot)
            if older:
                send = self.send_argv(volid, older[0], None, form)
                self._send(volid, send, older[0], None, mode, rate_bps=rate_bps,
                           insecure=insecure, log=log)  # fmt: skip
                base, mode = older[0], ImportMode(resumable=form.resumable, raw=form.raw)
        send = self.send_argv(volid, snapshot, base, form)
        self._send(volid, send, snapshot, base, mode, rate_bps=rate_bps, insecure=insecure,
                   log=log)  # fmt: skip
        self.discard.discard(volid)

    def _older_snapshots(self, volid: str, snapshot: str) -> list[str]:
        names = self.local_snapshots(volid)
        return names[: names.index(snapshot)] if snapshot in names else []

    def _send(
        self,
        volid: str,
        send_argv: list[str],
        snapshot: str,
        base: str | None,
        mode: ImportMode,
        *,
        rate_bps: int | None,
        insecure: bool,
        log: LogFunc,
        offset: int = 0,
    ) -> None:
        file = f"tcp://{self.tcp_address}" if insecure and self.tcp_address else "-"
        spec = TransferSpec(
            volid, send_argv, self.commands.import_(volid, snapshot, base, file, mode)
        )
        session = self._import_session(insecure)
        if session is not None and self.forward is not None:
            args = _import_args(volid, snapshot, base, mode)
            try:
                transfer_volume_session(
                    self.local, session, self.forward, spec, args, rate_bps=rate_bps,
                    stall_timeout=self.stall_timeout, log=log, budget=self.budget(),
                    progress_offset=offset,
                )  # fmt: skip
                return
            except ChannelUnavailable as err:
                if session.channel_works is None:  # never worked: per verb for the run
                    session.channel_works = False
                log(messages.session_channel_unavailable(self.node, str(err)))
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
            progress_offset=offset,
        )

    def _import_session(self, insecure: bool) -> ServeSession | None:
        """The serve session to import through: secure mode, a pverep peer whose session
        serves imports and whose data channel was not found broken in this run."""
        if insecure or not self.peer_is_pverep or self.forward is None:
            return None
        session = self.session()
        if session is None or "import" not in session.ops or session.channel_works is False:
            return None
        return session

    def close(self) -> None:
        done = self.release if self.release is not None else self.close_remote
        if done is not None:
            done()


def _import_args(
    volid: str, snapshot: str, base: str | None, mode: ImportMode
) -> dict[str, object]:
    """A serve ``import`` request's arguments: exactly what ``PeerCommands.import_`` puts
    in the verb's argv (``-allow-rename 0``, the pverep-only options)."""
    return {
        "volid": volid, "format": "zfs", "snapshot": snapshot, "base": base,
        "allow_rename": False, "resumable": mode.resumable, "raw": mode.raw,
        "resume": mode.resuming, "discard_partial": mode.discard_partial,
        "prune": list(mode.prune),
    }  # fmt: skip
