"""engine/servechannel.py: the key check of an import's data channel, byte by byte: a key in
pieces, a wrong or short key, a silent client, bytes after the key left for the stream, the
next connection tried after a refused one, and the deadline's text."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from pverep.engine import servechannel
from pverep.engine.servechannel import ACK, KEY_BYTES, DataChannel
from pverep.errors import PverepError


def client(port: int, *parts: bytes, pause: float = 0.05, close: bool = False) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    for part in parts:
        sock.sendall(part)
        time.sleep(pause)
    if close:
        sock.close()
    return sock


def accept_in_thread(channel: DataChannel, log: list[str]) -> tuple[threading.Thread, list[object]]:
    got: list[object] = []

    def run() -> None:
        try:
            got.append(channel.accept(log.append))
        except PverepError as err:
            got.append(err)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, got


def test_a_key_in_pieces_is_accepted_and_the_stream_after_it_kept() -> None:
    with DataChannel(threading.Event(), accept_timeout=10) as channel:
        assert len(channel.key) == KEY_BYTES == 32
        log: list[str] = []
        thread, got = accept_in_thread(channel, log)
        sock = client(channel.port, channel.key[:10], channel.key[10:] + b"STREAM")
        thread.join(10)
        [conn] = got
        assert isinstance(conn, socket.socket)
        with conn, sock:
            assert sock.recv(len(ACK)) == ACK
            assert conn.recv(100) == b"STREAM"  # nothing of the stream went into the key check
            assert conn.gettimeout() is None
        assert log == []


@pytest.mark.parametrize("bad", ["wrong", "short", "silent"])
def test_a_refused_connection_is_closed_and_the_next_one_tried(
    monkeypatch: pytest.MonkeyPatch, bad: str
) -> None:
    monkeypatch.setattr(servechannel, "KEY_TIMEOUT", 0.3)
    with DataChannel(threading.Event(), accept_timeout=10) as channel:
        log: list[str] = []
        thread, got = accept_in_thread(channel, log)
        first = {"wrong": lambda: client(channel.port, bytes(32)),
                 "short": lambda: client(channel.port, channel.key[:20], close=True),
                 "silent": lambda: client(channel.port)}[bad]()  # fmt: skip
        time.sleep(0.5 if bad == "silent" else 0.1)
        good = client(channel.port, channel.key)
        thread.join(10)
        [conn] = got
        assert isinstance(conn, socket.socket)
        conn.close()
        good.close()
        if bad != "short":
            assert first.recv(10) == b""  # closed without the ack
            first.close()
        assert log == ["data channel: refused a connection without this request's key"]


def test_no_connection_in_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(servechannel, "_POLL", 0.05)
    with (
        DataChannel(threading.Event(), accept_timeout=0.3) as channel,
        pytest.raises(PverepError) as err,
    ):
        channel.accept(print)
    assert str(err.value) == "data channel: no connection within 0.3 s"


def test_the_default_accept_timeout() -> None:
    with DataChannel(threading.Event()) as channel:
        assert channel._accept_timeout == servechannel.ACCEPT_TIMEOUT == 60.0
        assert channel._listener.family == socket.AF_INET
        assert channel._listener.type == socket.SOCK_STREAM
