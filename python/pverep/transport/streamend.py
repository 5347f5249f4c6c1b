"""When a relay's receiver closes its pipe first: was anything of the stream lost?

A relay (``_core.Pump``) that splices into a pipe gets EPIPE as soon as the pipe's reader is
gone, *even when its own input is already at end of stream*: Linux's ``splice(2)`` checks the
destination pipe's readers before it looks at the source. A receiver that stops reading right
after the stream's last byte — ``zfs recv`` exits after the END record, ssh exits after its
remote command did — therefore races the end of the relay's input (the sender's EOF/FIN may
arrive a moment later), and the relay sees EPIPE although every byte was delivered.

So EPIPE alone says nothing; the facts that do are: how many bytes the receiver left unread in
the pipe (FIONREAD works on the write end too), and whether the input ends right where the
receiver stopped (the next read is EOF, not data). The receiver's own verdict (exit status)
is the caller's to check: only together do they prove the receiver consumed the whole stream.
"""

from __future__ import annotations

import enum
import errno
import fcntl
import os
import select
import struct
import termios
import time

from pverep._core import PumpError


def receiver_closed(err: PumpError) -> bool:
    """The pump failed only because the reader of its destination pipe/socket went away."""
    return err.side == "write" and err.errno == errno.EPIPE


def unread_in_pipe(fd: int) -> int:
    """Bytes written into the pipe ``fd`` (either end) that no reader has taken (yet)."""
    raw = fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0")
    return int(struct.unpack("i", raw)[0])


class Rest(enum.Enum):
    """What followed on an input after the receiver stopped reading."""

    EMPTY = enum.auto()  # end of stream: nothing lost
    MORE = enum.auto()  # data: the receiver stopped early
    STALLED = enum.auto()  # neither within the timeout


def rest_of_input(fd: int, timeout: float | None) -> Rest:
    """Wait (at most ``timeout`` s; None: forever) for the next byte or the end of ``fd``;
    consumes at most one byte (the stream is lost anyway if there is one)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    while True:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not poller.poll(None if left is None else int(left * 1000) + 1):
            return Rest.STALLED
        try:
            data = os.read(fd, 1)
        except BlockingIOError:  # readiness without data (a non-blocking fd): wait again
            if left == 0.0:
                return Rest.STALLED
            continue
        return Rest.MORE if data else Rest.EMPTY


def loss_after_receiver_closed(unread: int, src_fd: int, timeout: float | None) -> str | None:
    """None when the receiver took every byte of the stream: nothing left unread in its pipe
    (``unread``, measured once the reader was gone) and ``src_fd`` ends right there. Otherwise
    what was lost, as a message. The receiver's exit status is the caller's to check (first:
    a failed receiver's own error says more, and nobody needs to wait for the input then)."""
    if unread:
        return f"the receiver stopped reading with {unread} bytes of the stream unread"
    rest = rest_of_input(src_fd, timeout)
    if rest is Rest.EMPTY:
        return None
    if rest is Rest.STALLED:
        return f"the receiver stopped reading but the stream did not end within {timeout:g} s"
    return "the receiver stopped reading before the end of the stream (more data followed)"
