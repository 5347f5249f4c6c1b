"""The data path of one volume (spec §5.6 storage_migrate): ``zfs send`` → pump → import.

Python owns the processes, Rust owns the bytes: the sender runs locally, the importer on the
target (through the run's multiplexed ssh connection, or listening on TCP in insecure mode), and
``_core.pump`` copies between them with the job's rate limit, counts bytes for the progress
lines and aborts a stream that stops moving instead of hanging the node's replication forever.
Without a rate limit in insecure mode the sender writes into the socket directly.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import IO

from pverep._core import Budget, PumpError, PumpStats, StallError, pump
from pverep.engine import messages
from pverep.engine.progress import ProgressThinner, parse_estimate, summary_line
from pverep.errors import PverepError
from pverep.transport import streamend, tcp
from pverep.transport.base import PIPE, Process, Shell, display_argv, spawn_argv
from pverep.transport.serveclient import Answer, Pending, ServeSession, SessionError

LogFunc = Callable[[str], None]

#: The importer's last word (§5.7); its absence means the import did not complete.
IMPORTED_RE = re.compile(r"successfully imported '([^']*)'$")
#: Default stall timeout: no byte moved for this long aborts the transfer.
DEFAULT_STALL_TIMEOUT = 600.0
#: How long the insecure importer may take to announce its address.
TCP_ANNOUNCE_TIMEOUT = 60.0
#: How long the importer may take to finish after the stream has ended.
TARGET_EXIT_TIMEOUT = 30.0
#: A serve session's import: how long until it is ready (validated, listening), how long the
#: data channel may take to confirm the key, how long the final answer may take after the end
#: of the stream (a dead session fails it at once).
SESSION_READY_TIMEOUT = 60.0
SESSION_ACK_TIMEOUT = 30.0
SESSION_ANSWER_TIMEOUT = 120.0


class TransferError(PverepError):
    """The volume transfer failed; str() says which side and why."""


class ChannelUnavailable(TransferError):
    """A serve session's data channel could not be forwarded; nothing was received: the
    caller imports per verb instead."""


@dataclass(frozen=True)
class TransferSpec:
    volid: str
    send_argv: list[str]  # runs on this node
    import_argv: list[str]  # runs on the target; its file argument is '-' or 'tcp://…'


def _reader(stream: IO[bytes], sink: Callable[[str], None]) -> threading.Thread:
    def drain() -> None:
        with stream:
            for raw in iter(stream.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if line.strip():
                    sink(line)

    thread = threading.Thread(target=drain, daemon=True)
    thread.start()
    return thread


class _Watch:
    """Collects what the transfer's output tells us: the imported volid and the size estimate."""

    def __init__(self, log: LogFunc, prefix: str = "", offset: int = 0) -> None:
        self.log = log
        self.prefix = prefix
        self.imported: str | None = None
        self.thinner = ProgressThinner()
        #: Bytes the target had before this stream (a resumed transfer counts from there).
        self.offset = offset

    def send_line(self, line: str) -> None:
        estimate = parse_estimate(line)
        if estimate is not None:
            self.thinner.estimate = estimate + self.offset
        self.log(line)

    def target_line(self, line: str) -> None:
        m = IMPORTED_RE.search(line)
        if m:
            self.imported = m.group(1)
        self.log(f"{self.prefix}{line}")

    def progress(self, stats: PumpStats) -> None:
        line = self.thinner.line(stats.bytes + self.offset, stats.elapsed, stats.rate)
        if line is not None:
            self.log(line)

    def summary(self, stats: PumpStats) -> None:
        """dd's closing line: total bytes, exact seconds, average rate (always shown)."""
        self.log(summary_line(stats.bytes, stats.elapsed))


def _finish(procs: Sequence[Process], timeout: float = 30.0) -> list[int]:
    codes = []
    for proc in procs:
        try:
            codes.append(proc.wait(timeout))
        except PverepError:  # CommandTimeout: it was killed
            codes.append(-9)
    return codes


def _finish_target(recv: Process, abort: Callable[[], None]) -> int:
    """The importer's exit code once the stream has ended (e.g. the sender gave up on a hung
    target). One that does not end in time is cut off with the connection first: killing only
    a multiplexed ssh client would wait forever on the pipes its master holds."""
    deadline = time.monotonic() + TARGET_EXIT_TIMEOUT
    while recv.returncode is None and time.monotonic() < deadline:
        time.sleep(0.1)  # pragma: no mutate (the poll's period)
    if recv.returncode is None:
        abort()
    return _finish([recv])[0]


def _pipeline_error(send: Process, codes: list[int], remote_argv: list[str]) -> str:
    shown = f"{display_argv(send.argv)} | {display_argv(remote_argv)}"
    failing = next((c for c in reversed(codes) if c != 0), 0)  # pipefail: rightmost failure
    return f"command '{shown}' failed: exit code {failing}"


def transfer_volume(
    local: Shell,
    remote: Shell,
    spec: TransferSpec,
    *,
    rate_bps: int | None,
    stall_timeout: float | None,
    log: LogFunc,
    insecure: bool = False,
    on_stall: Callable[[], None] | None = None,
    budget: Budget | None = None,
    progress_offset: int = 0,
) -> str:
    """Send one volume; returns the volid the target reports. Raises TransferError.

    ``on_stall`` drops the connection to the target when the stream stalls: a multiplexed
    ssh client's pipes are held by its master, so only ending the master frees them.
    ``budget`` is the node's bandwidth budget, shared with the transfers running at once.
    ``progress_offset``: bytes already on the target (a resumed stream); progress lines count
    from there, the closing summary line counts what this stream moved.
    """
    limits = _limits(spec, rate_bps, budget, stall_timeout, log)
    abort = on_stall or _importer_only
    if insecure:
        watch = _Watch(log, prefix=f"[{remote.node}] ", offset=progress_offset)
        return _insecure(local, remote, spec, limits, watch, abort)
    watch = _Watch(log, offset=progress_offset)
    return _secure(local, remote, spec, limits, watch, abort)


def _limits(
    spec: TransferSpec,
    rate_bps: int | None,
    budget: Budget | None,
    stall_timeout: float | None,
    log: LogFunc,
) -> _Limits:
    if rate_bps is not None:
        log(messages.bandwidth_limit(rate_bps, spec.volid))
    if budget is not None:
        log(messages.node_budget(budget.rate))
    return _Limits(rate_bps, budget, stall_timeout)


@dataclass(frozen=True)
class _Limits:
    """What the pump enforces: the job's rate, the node's budget, the stall watchdog."""

    rate_bps: int | None
    budget: Budget | None
    stall_timeout: float | None

    @property
    def unlimited(self) -> bool:
        return self.rate_bps is None and self.budget is None


def _relay(
    send: Process,
    sink: int,
    recv: Process,
    abort: Callable[[], None],
    limits: _Limits,
    watch: _Watch,
    *,
    secure: bool = False,
) -> PumpError | None:
    """Pump the sender's output into ``sink`` (the importer's stdin or the TCP socket) with
    the rate limit and the stall watchdog; returns the pump's error, if any.

    On the secure path an importer that stopped reading (EPIPE) may simply be done: the
    sender's pipe then stays open so ``_after_importer_closed`` can check that its output
    ends right there (it closes the pipe)."""
    assert send.stdout is not None
    keep_sender = False
    try:
        stats = pump(
            send.stdout.fileno(),
            sink,
            rate=float(limits.rate_bps) if limits.rate_bps else None,
            stall_timeout=limits.stall_timeout,
            budget=limits.budget,
            progress=watch.progress,
        )
        watch.summary(stats)
        return None
    except PumpError as err:
        if isinstance(err, StallError):  # nothing moves: do not wait for the target
            # The sender is not killed: closing its pipe lets it fail with EPIPE, which ends
            # the send cleanly (a zfs send killed mid-stream can leave its snapshot busy).
            send.stdout.close()
            abort()
            recv.kill()
        else:
            keep_sender = secure and streamend.receiver_closed(err)
        return err
    finally:
        if not keep_sender:
            send.stdout.close()


def _secure(
    local: Shell,
    remote: Shell,
    spec: TransferSpec,
    limits: _Limits,
    watch: _Watch,
    abort: Callable[[], None],
) -> str:
    # stdout is a pipe by default (the importer's lines here, the stream from the sender)
    recv = remote.spawn(spec.import_argv, stdin=PIPE, on_stderr=watch.target_line)
    assert recv.stdout is not None
    assert recv.stdin is not None
    out_thread = _reader(recv.stdout, watch.target_line)
    send = local.spawn(spec.send_argv, on_stderr=watch.send_line)
    assert send.stdout is not None
    pump_error: PumpError | str | None  # set by the relay; an exception there propagates
    unread: int | None = None  # bytes the importer left in its pipe when it stopped reading
    try:
        pump_error = _relay(send, recv.stdin.fileno(), recv, abort, limits, watch, secure=True)
        if isinstance(pump_error, PumpError) and streamend.receiver_closed(pump_error):
            unread = streamend.unread_in_pipe(recv.stdin.fileno())
    finally:
        recv.stdin.close()
        if unread is None:
            send.stdout.close()
    if unread is not None:
        pump_error = _after_importer_closed(send, recv, unread, limits.stall_timeout)
    codes = _finish([send, recv])
    out_thread.join(5)  # pragma: no mutate (it ends with the importer's stdout, just waited for)
    return _outcome(spec, watch, send, codes, pump_error)


def _after_importer_closed(
    send: Process, recv: Process, unread: int, stall_timeout: float | None
) -> str | None:
    """The importer stopped reading (EPIPE) before the pump saw the end of ``zfs send``'s
    output. An importer whose ``zfs recv`` reads the stream itself (pvesm import) exits right
    after the END record, and splice reports EPIPE before it looks for the end of its input,
    so this alone is no failure. It is none when the importer succeeded, took every byte
    (nothing unread in its pipe) and ``zfs send`` had nothing more (its output ends right
    there); otherwise what was lost. An importer that failed: None, its exit code is what the
    caller reports."""
    assert send.stdout is not None
    try:
        if _finish([recv])[0] != 0:
            return None
        return streamend.loss_after_receiver_closed(unread, send.stdout.fileno(), stall_timeout)
    finally:
        send.stdout.close()  # a zfs send with more to write ends with EPIPE


def _outcome(
    spec: TransferSpec,
    watch: _Watch,
    send: Process,
    codes: list[int],
    pump_error: PumpError | str | None,
) -> str:
    if isinstance(pump_error, StallError):
        raise TransferError(f"transfer of '{spec.volid}' stalled - {pump_error}")
    if any(codes):
        raise TransferError(_pipeline_error(send, codes, spec.import_argv))
    if pump_error is not None:
        raise TransferError(f"transfer of '{spec.volid}' failed - {pump_error}")
    if watch.imported is None:
        raise TransferError("unable to get ID of the migrated volume")
    return watch.imported


def _read_line(stream: IO[bytes], timeout: float) -> str:
    """One line of the importer's announcement, read from the fd byte by byte.

    A buffered readline() takes both lines at once, and a select() on the fd would then wait
    for a second line that already sits in the buffer, until the importer gives up.
    """
    fd = stream.fileno()
    deadline = time.monotonic() + timeout
    line = bytearray()
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            break
        byte = os.read(fd, 1)
        if not byte:
            break
        line += byte
    return line.decode("utf-8", "replace").strip()


def _set_send_timeout(sock: socket.socket, seconds: float) -> None:
    whole = int(seconds)
    timeval = struct.pack("ll", whole, int((seconds - whole) * 1_000_000))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)


def _insecure(
    local: Shell,
    remote: Shell,
    spec: TransferSpec,
    limits: _Limits,
    watch: _Watch,
    abort: Callable[[], None],
) -> str:
    # stdin /dev/null, stdout a pipe (the defaults): the importer's announcement, then its lines
    recv = remote.spawn(spec.import_argv, on_stderr=watch.target_line)
    assert recv.stdout is not None
    try:
        ip = tcp.parse_tunnel_ip(_read_line(recv.stdout, TCP_ANNOUNCE_TIMEOUT))
        port = tcp.parse_tunnel_port(_read_line(recv.stdout, TCP_ANNOUNCE_TIMEOUT))
        sock = tcp.connect(ip, port, timeout=TCP_ANNOUNCE_TIMEOUT)
        tcp.fail_dead_peer(sock)  # a vanished target fails fast; the stall timeout stays
    except PverepError as err:
        recv.kill()
        raise TransferError(f"failed to run insecure migration: {err}") from None
    out_thread = _reader(recv.stdout, watch.target_line)
    pump_error: PumpError | None = None
    with sock:
        sock.shutdown(socket.SHUT_RD)  # we only write
        if limits.unlimited:
            # zfs send writes into the socket itself: any relay caps the speed (transport/tcp.py).
            # The stall watchdog is then the socket's send timeout: a write that cannot move a
            # byte for that long fails, and zfs send ends with it.
            if limits.stall_timeout is not None:
                _set_send_timeout(sock, limits.stall_timeout)
            send = local.spawn(spec.send_argv, stdout=sock.fileno(), on_stderr=watch.send_line)
            send_code = send.wait()  # as long as the stream takes; a stall ends it (above)
        else:
            send = local.spawn(spec.send_argv, on_stderr=watch.send_line)  # stdout: a pipe
            # Unlike the secure path, a pipe-to-socket splice sees the end of zfs send's
            # output before a closed peer: EPIPE here always means bytes were not delivered.
            pump_error = _relay(send, sock.fileno(), recv, abort, limits, watch)
            send_code = _finish([send])[0]
        # half-close: the importer must see EOF but still get every buffered byte
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)
    recv_code = _finish_target(recv, abort)
    out_thread.join(5)  # pragma: no mutate (it ends with the importer's stdout, just waited for)
    return _outcome(spec, watch, send, [send_code, recv_code], pump_error)


def transfer_volume_session(
    local: Shell,
    session: ServeSession,
    forward: Callable[[int], list[str] | None],
    spec: TransferSpec,
    import_args: dict[str, object],
    *,
    rate_bps: int | None,
    stall_timeout: float | None,
    log: LogFunc,
    budget: Budget | None = None,
    progress_offset: int = 0,
) -> str:
    """Send one volume into an ``import`` request of the run's serve session (engine/serve):
    the stream goes over that request's own data channel, ``forward(port)``'s argv (``ssh -W``
    over the job's master), the key its first bytes. Raises ChannelUnavailable (nothing was
    received: import per verb) when the channel cannot be forwarded, TransferError otherwise.
    A dying channel fails this transfer only; the session and its other requests go on."""
    pending = session.start("import", import_args)
    ready = pending.wait_ready(SESSION_READY_TIMEOUT)
    if ready is None:
        if not pending.done:
            session.forget(pending.rid)
            raise TransferError(f"import of '{spec.volid}': the session did not get ready")
        answer = _session_answer(pending)
        for line in answer.log:
            log(line)
        raise TransferError(_session_failure(spec, answer.error))
    port, key = _ready_fields(ready)  # both, or (0, b"")
    argv = forward(port) if port else None
    if argv is None:
        session.forget(pending.rid)
        raise ChannelUnavailable("no data channel offered")
    chan = spawn_argv(argv, stdin=PIPE)  # stdout: a pipe (spawn_argv's default), for the ack
    assert chan.stdin is not None
    assert chan.stdout is not None
    try:
        os.write(chan.stdin.fileno(), key)  # unbuffered: nothing left to flush on a kill
        acked = _read_line(chan.stdout, SESSION_ACK_TIMEOUT) == "ok"
    except OSError:
        acked = False
    if not acked:
        session.forget(pending.rid)
        chan.kill()
        tail = "; ".join(chan.stderr_tail[-2:])
        why = f"ssh -W 127.0.0.1:{port} did not connect"
        raise ChannelUnavailable(f"{why} - {tail}" if tail else why)
    session.channel_works = True
    limits = _limits(spec, rate_bps, budget, stall_timeout, log)
    watch = _Watch(log, offset=progress_offset)
    send = local.spawn(spec.send_argv, on_stderr=watch.send_line)  # stdout: a pipe (default)
    pump_error: PumpError | None  # set by the relay; an exception there propagates
    try:
        # a stall closes the channel (below): the target sees the end, its receive fails
        pump_error = _relay(send, chan.stdin.fileno(), chan, _importer_only, limits, watch)
    finally:
        chan.stdin.close()  # the end of the stream for the target
    answer = _session_answer(pending, SESSION_ANSWER_TIMEOUT)
    for line in answer.log:
        watch.target_line(line)
    if answer.ok:
        watch.target_line(answer.stdout)
    else:
        chan.kill()
    send_code, _ = _finish([send, chan])
    chan.close()  # our end of its stdout (the ack's pipe): else one fd leaks per import
    if isinstance(pump_error, StallError):
        raise TransferError(f"transfer of '{spec.volid}' stalled - {pump_error}")
    if not answer.ok:
        raise TransferError(_session_failure(spec, answer.error))
    return _outcome(spec, watch, send, [send_code], pump_error)


def _importer_only() -> None:
    """A stall without more to drop: ``_relay`` kills the importer (a session import's is its
    data channel), the ssh master and a session go on for the run's other requests."""


def _session_answer(pending: Pending, timeout: float | None = 0.0) -> Answer:
    try:
        return pending.answer(timeout)
    except SessionError as err:
        return Answer(ok=False, stdout="", error=str(err), log=[])


def _session_failure(spec: TransferSpec, error: str) -> str:
    return f"command '{display_argv(spec.import_argv)}' (serve session) failed: {error}"


def _ready_fields(ready: dict[str, object]) -> tuple[int, bytes]:
    """The port and key of a ``ready`` message; (0, b"") when they are not well-formed."""
    port, key = ready.get("port"), ready.get("key")
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        return 0, b""
    if not isinstance(key, str) or not re.fullmatch(r"[0-9a-f]{64}", key):
        return 0, b""
    return port, bytes.fromhex(key)
