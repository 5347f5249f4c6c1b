"""``transport.streamend``: deciding whether anything was lost when a relay's receiver closed
its pipe first (real pipes and sockets)."""

from __future__ import annotations

import errno
import os
import socket
import threading
import time

import pytest

import pverep._core as core
from pverep.transport import streamend
from pverep.transport.streamend import Rest


def test_splice_into_a_closed_pipe_fails_even_at_end_of_input() -> None:
    """Why the module exists: the pump's input is at EOF, yet it reports EPIPE, because the
    kernel checks the destination pipe's readers first. The error carries side and errno."""
    src_r, src_w = os.pipe()
    dst_r, dst_w = os.pipe()
    os.close(src_w)  # input: at its end, nothing left
    os.close(dst_r)  # receiver: gone
    try:
        with pytest.raises(core.PumpError) as err:
            core.Pump(src_r, dst_w).run()
    finally:
        os.close(src_r)
        os.close(dst_w)
    assert (err.value.side, err.value.errno) == ("write", errno.EPIPE)
    assert streamend.receiver_closed(err.value)


def test_read_side_errors_are_not_a_closed_receiver() -> None:
    e = core.PumpError("pump read side failed: Connection reset by peer (os error 104)")
    e.side, e.errno = "read", errno.ECONNRESET
    assert not streamend.receiver_closed(e)
    e.side, e.errno = "write", errno.ENOSPC
    assert not streamend.receiver_closed(e)


def test_unread_in_pipe_counts_from_the_write_end_after_the_reader_left() -> None:
    r, w = os.pipe()
    try:
        assert streamend.unread_in_pipe(w) == 0
        os.write(w, b"x" * 1234)
        os.read(r, 234)
        os.close(r)
        assert streamend.unread_in_pipe(w) == 1000
    finally:
        os.close(w)


def test_rest_of_input() -> None:
    a, b = socket.socketpair()
    with a, b:
        assert streamend.rest_of_input(a.fileno(), 0.05) is Rest.STALLED
        b.sendall(b"more")
        assert streamend.rest_of_input(a.fileno(), 5) is Rest.MORE
        b.shutdown(socket.SHUT_WR)  # the sender's FIN after the rest of its data
        assert a.recv(10) == b"ore"
        assert streamend.rest_of_input(a.fileno(), 5) is Rest.EMPTY
    r, w = os.pipe()
    os.set_blocking(r, False)  # a non-blocking fd waits, it does not spin or raise
    try:
        assert streamend.rest_of_input(r, 0.05) is Rest.STALLED
        os.close(w)
        assert streamend.rest_of_input(r, None) is Rest.EMPTY
    finally:
        os.close(r)


def test_loss_after_receiver_closed() -> None:
    a, b = socket.socketpair()
    with a, b:
        assert streamend.loss_after_receiver_closed(7, a.fileno(), 5) == (
            "the receiver stopped reading with 7 bytes of the stream unread"
        )
        b.sendall(b"x")
        assert streamend.loss_after_receiver_closed(0, a.fileno(), 5) == (
            "the receiver stopped reading before the end of the stream (more data followed)"
        )
        assert streamend.loss_after_receiver_closed(0, a.fileno(), 0.05) == (
            "the receiver stopped reading but the stream did not end within 0.05 s"
        )
        b.close()
        assert streamend.loss_after_receiver_closed(0, a.fileno(), 5) is None


def test_rest_of_input_waits_for_data_that_comes_later() -> None:
    """The timeout counts from the call: a byte or the end arriving within it is seen."""
    for send, rest in [(lambda b: b.sendall(b"x"), Rest.MORE), (lambda b: b.close(), Rest.EMPTY)]:
        a, b = socket.socketpair()
        with a, b:
            timer = threading.Timer(0.3, send, (b,))
            timer.start()
            try:
                assert streamend.rest_of_input(a.fileno(), 30) is rest
            finally:
                timer.join()


def test_rest_of_input_with_no_time_left_looks_once() -> None:
    a, b = socket.socketpair()
    with a, b:
        assert streamend.rest_of_input(a.fileno(), 0) is Rest.STALLED
        b.sendall(b"x")
        assert streamend.rest_of_input(a.fileno(), 0) is Rest.MORE


def test_a_stall_is_reported_when_its_timeout_ends() -> None:
    """Exact lower bound (never before the timeout); the upper one is far above it."""
    a, b = socket.socketpair()
    with a, b:
        start = time.monotonic()
        assert streamend.rest_of_input(a.fileno(), 0.05) is Rest.STALLED
        assert 0.05 <= time.monotonic() - start < 0.9


def _readiness_without_data(monkeypatch: pytest.MonkeyPatch, times: int | None) -> list[int]:
    """``os.read`` fails with EAGAIN ``times`` times (None: always), as on a non-blocking fd
    whose data another reader took between poll and read."""
    calls = [0]
    real_read = os.read

    def read(fd: int, n: int) -> bytes:
        calls[0] += 1
        if times is None or calls[0] <= times:
            raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
        return real_read(fd, n)

    monkeypatch.setattr(os, "read", read)
    return calls


def test_readiness_without_data_waits_again(monkeypatch: pytest.MonkeyPatch) -> None:
    r, w = os.pipe()
    try:
        os.write(w, b"x")
        calls = _readiness_without_data(monkeypatch, 3)
        assert streamend.rest_of_input(r, 30) is Rest.MORE
        assert calls[0] == 4
    finally:
        os.close(r)
        os.close(w)


def test_readiness_without_data_until_the_timeout_is_a_stall(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    r, w = os.pipe()
    try:
        os.write(w, b"x")
        _readiness_without_data(monkeypatch, None)
        assert streamend.rest_of_input(r, 0.05) is Rest.STALLED
    finally:
        os.close(r)
        os.close(w)
