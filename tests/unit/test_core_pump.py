"""pverep._core pump through the binding: pipes, sockets, /dev/null, errors, cancel, stall."""

import errno
import hashlib
import os
import signal
import socket
import threading
from collections.abc import Iterator

import pytest

import pverep._core as core
from pverep.errors import (
    CancelledError,
    InvalidArgumentError,
    PumpError,
    PverepError,
    StallError,
)

PAYLOAD = os.urandom(3 << 20)


def feed(fd: int, data: bytes) -> threading.Thread:
    """Write data to fd from a thread, then close it."""

    def run() -> None:
        with os.fdopen(fd, "wb") as f:
            f.write(data)

    t = threading.Thread(target=run)
    t.start()
    return t


def drain(fd: int, out: list[bytes]) -> threading.Thread:
    def run() -> None:
        with os.fdopen(fd, "rb") as f:
            out.append(f.read())

    t = threading.Thread(target=run)
    t.start()
    return t


class Fds:
    """Two pipes; every end is closed exactly once (a number closed twice could belong to
    someone else by then)."""

    def __init__(self) -> None:
        self.src_r, self.src_w = os.pipe()
        self.dst_r, self.dst_w = os.pipe()
        self.open = {self.src_r, self.src_w, self.dst_r, self.dst_w}

    def take(self, fd: int) -> int:
        """Hand fd over to someone who closes it."""
        self.open.discard(fd)
        return fd

    def close(self, fd: int) -> None:
        if fd in self.open:
            self.open.discard(fd)
            os.close(fd)


@pytest.fixture
def fds() -> Iterator[Fds]:
    f = Fds()
    yield f
    for fd in list(f.open):
        f.close(fd)


def test_pipe_to_pipe(fds: Fds) -> None:
    out: list[bytes] = []
    producer, consumer = feed(fds.take(fds.src_w), PAYLOAD), drain(fds.take(fds.dst_r), out)
    stats = core.pump(fds.src_r, fds.dst_w)
    # the pump leaves its fds open (the caller owns them) and blocking again
    assert os.get_blocking(fds.src_r) and os.get_blocking(fds.dst_w)
    fds.close(fds.dst_w)
    producer.join()
    consumer.join()
    assert stats.bytes == len(PAYLOAD)
    assert hashlib.sha256(out[0]).digest() == hashlib.sha256(PAYLOAD).digest()


def test_socket_to_socket_rate_limited_with_progress() -> None:
    a, b = socket.socketpair()
    c, d = socket.socketpair()
    data = PAYLOAD[:400_000]
    seen: list[core.PumpStats] = []

    def produce() -> None:
        a.sendall(data)
        a.shutdown(socket.SHUT_WR)

    received = bytearray()

    def consume() -> None:
        while chunk := d.recv(1 << 16):
            received.extend(chunk)

    threads = [threading.Thread(target=produce), threading.Thread(target=consume)]
    for t in threads:
        t.start()
    stats = core.pump(
        b.fileno(), c.fileno(), rate=4e6, progress=seen.append, progress_interval=0.02
    )
    c.shutdown(socket.SHUT_WR)
    for t in threads:
        t.join()
    for s in (a, b, c, d):
        s.close()
    assert bytes(received) == data
    assert stats.bytes == len(data)
    assert seen, "the progress callback ran"
    assert all(x.bytes <= len(data) for x in seen)
    assert [x.bytes for x in seen] == sorted(x.bytes for x in seen)
    # The limit held. Both bounds only get safer when the machine is slow: a loaded machine
    # moves fewer bytes per second, never more. (5 ms: the bucket's clock starts just before
    # the pump's own; 64 KiB: the default burst at 4 MB/s.)
    rate, burst = 4e6, 64 << 10
    for sample in [*seen, stats]:
        assert sample.bytes <= rate * (sample.elapsed + 0.005) + burst, sample
    assert stats.elapsed >= (len(data) - burst) / rate
    assert stats.rate <= rate + burst / stats.elapsed


def test_file_to_dev_null(tmp_path) -> None:
    path = tmp_path / "data"
    path.write_bytes(PAYLOAD)
    with open(path, "rb") as src, open(os.devnull, "wb") as dst:
        stats = core.pump(src.fileno(), dst.fileno())
    assert stats.bytes == len(PAYLOAD)


def test_closed_reader_raises_write_side_error(fds: Fds) -> None:
    fds.close(fds.dst_r)
    producer = feed(fds.take(fds.src_w), b"x" * 100_000)
    with pytest.raises(PumpError) as err:
        core.pump(fds.src_r, fds.dst_w)
    producer.join()
    assert err.value.side == "write"
    assert "write side" in str(err.value) and "Broken pipe" in str(err.value)
    assert err.value.errno == errno.EPIPE


def test_stalled_writer_and_reader(fds: Fds) -> None:
    src_r, src_w, dst_w = fds.src_r, fds.src_w, fds.dst_w
    with pytest.raises(StallError) as err:
        core.pump(src_r, dst_w, stall_timeout=0.2)
    assert err.value.side == "read" and "read side" in str(err.value)
    # now the consumer never reads: the write side stalls once its pipe is full
    os.set_blocking(src_w, False)
    stop = threading.Event()

    def flood() -> None:
        chunk = b"y" * 65536
        while not stop.is_set():
            try:
                os.write(src_w, chunk)
            except BlockingIOError:
                stop.wait(0.01)

    t = threading.Thread(target=flood)
    t.start()
    try:
        with pytest.raises(StallError) as err:
            core.Pump(src_r, dst_w, stall_timeout=0.2, pipe_size=0).run()
    finally:
        stop.set()
        t.join()
    assert err.value.side == "write"
    assert isinstance(err.value, PumpError) and isinstance(err.value, PverepError)


def test_cancel_from_another_thread(fds: Fds) -> None:
    src_r, dst_w = fds.src_r, fds.dst_w
    p = core.Pump(src_r, dst_w)
    timer = threading.Timer(0.1, p.cancel)
    timer.start()
    with pytest.raises(CancelledError):
        p.run()
    timer.join()
    assert p.stats().bytes == 0
    with pytest.raises(InvalidArgumentError, match="only run once"):
        p.run()


def test_ctrl_c_cancels(fds: Fds) -> None:
    src_r, dst_w = fds.src_r, fds.dst_w
    # Python's own Ctrl-C handler, also when started in the background (where the shell left
    # SIGINT ignored and the pump would wait for input forever).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(CancelledError) as err:
            core.pump(src_r, dst_w)
    finally:
        timer.join()
        signal.signal(signal.SIGINT, previous)
    assert isinstance(err.value.__cause__, KeyboardInterrupt)


def test_progress_callback_exception_propagates(fds: Fds) -> None:
    src_r, dst_w = fds.src_r, fds.dst_w

    def boom(_: core.PumpStats) -> None:
        raise RuntimeError("stop it")

    with pytest.raises(RuntimeError, match="stop it"):
        core.pump(src_r, dst_w, progress=boom, progress_interval=0.01)


def test_stats_while_running(fds: Fds) -> None:
    p = core.Pump(fds.src_r, fds.dst_w, rate=2e6)
    out: list[bytes] = []
    producer = feed(fds.take(fds.src_w), PAYLOAD[:300_000])
    consumer = drain(fds.take(fds.dst_r), out)
    observed: list[int] = []
    runner = threading.Thread(target=p.run)
    runner.start()
    while runner.is_alive():
        observed.append(p.stats().bytes)
        runner.join(0.02)
    fds.close(fds.dst_w)
    producer.join()
    consumer.join()
    assert p.stats().bytes == 300_000 and out[0] == PAYLOAD[:300_000]
    assert any(0 < b < 300_000 for b in observed), "counters move while running"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rate": -1.0}, "rate must be a positive number"),
        ({"rate": 0.0}, "rate must be a positive number"),
        ({"rate": float("nan")}, "rate must be a positive number"),
        ({"burst": 0, "rate": 1e6}, "burst must be at least 1"),
        ({"stall_timeout": -2.0}, "stall_timeout must be a positive"),
        ({"pipe_size": -1}, "pipe_size must be >= 0"),
    ],
)
def test_bad_arguments(fds: Fds, kwargs: dict[str, float], message: str) -> None:
    src_r, dst_w = fds.src_r, fds.dst_w
    with pytest.raises(InvalidArgumentError, match=message):
        core.pump(src_r, dst_w, **kwargs)  # type: ignore[arg-type]


def test_bad_fds(fds: Fds) -> None:
    src_r, src_w, dst_w = fds.src_r, fds.src_w, fds.dst_w
    closed_r, closed_w = os.pipe()
    os.close(closed_r)
    os.close(closed_w)
    with pytest.raises(InvalidArgumentError, match="not an open file descriptor"):
        core.pump(closed_r, dst_w)
    with pytest.raises(InvalidArgumentError, match="not open for reading"):
        core.pump(src_w, dst_w)
    with pytest.raises(InvalidArgumentError, match="must be a non-negative"):
        core.pump(src_r, -1)
    with pytest.raises(TypeError):
        core.pump("3", dst_w)  # type: ignore[arg-type]
