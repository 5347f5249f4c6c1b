"""engine/serve.py's session loop and request parsing at their edges: blank and bad lines in
between, the session's timeouts handed to imports, the request size limit, request id 0,
defaults of absent fields, and the watcher that ends a hosted import's channel when its
receiver was stopped."""

from __future__ import annotations

import io
import json
import socket
import threading
from types import SimpleNamespace
from typing import Any

import pytest

from pverep.engine import remote, serve
from pverep.errors import ValidationError
from pverep.transport import procs


def run_session(lines: list[bytes], monkeypatch: pytest.MonkeyPatch, **kw: Any) -> list[Any]:
    seen: list[Any] = []

    def fake_import(make_target: Any, args: Any, log: Any, ctx: serve.ImportContext) -> str:
        seen.append(ctx)
        log("importing")
        return "IMPORTED"

    monkeypatch.setattr(serve, "run_import", fake_import)
    out = io.BytesIO()
    serve.serve(lambda probe, log: None, io.BytesIO(b"".join(lines)), out, **kw)  # type: ignore[arg-type,return-value]
    answers = [json.loads(line) for line in out.getvalue().splitlines()]
    return [answers, seen]


def test_blank_and_bad_lines_do_not_end_the_session(monkeypatch: pytest.MonkeyPatch) -> None:
    req = json.dumps({"id": 3, "op": "import", "args": {}}).encode() + b"\n"
    answers, seen = run_session([b"\n", b"  \n", b"{bad\n", req], monkeypatch,
                                stall_timeout=12.0, accept_timeout=2.5)  # fmt: skip
    assert answers[0] == serve.hello()
    assert answers[1] == {"id": None, "ok": False, "error": "request is not a JSON object",
                          "log": []}  # fmt: skip
    assert answers[2] == {"id": 3, "ok": True, "stdout": "IMPORTED", "log": ["importing"]}
    [ctx] = seen
    assert (ctx.stall_timeout, ctx.accept_timeout) == (12.0, 2.5) and ctx.closing.is_set()


def test_the_sessions_default_timeouts(monkeypatch: pytest.MonkeyPatch) -> None:
    req = json.dumps({"id": 0, "op": "import", "args": {}}).encode() + b"\n"
    _answers, [ctx] = run_session([req], monkeypatch)
    assert ctx.stall_timeout == remote.DEFAULT_IMPORT_STALL_TIMEOUT
    assert ctx.accept_timeout is None


def test_an_import_needs_a_session() -> None:
    got = serve.answer(lambda probe, log: None, serve.Request(5, "import", {}))  # type: ignore[arg-type,return-value]
    assert got == {"id": 5, "ok": False, "error": "import is not served here", "log": []}


def test_an_unexpected_error_keeps_the_lines_logged_before_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(make_target: Any, args: Any, log: Any) -> str:
        log("before")
        raise KeyError("x")

    monkeypatch.setitem(serve._HANDLERS, "prepare", broken)
    got = serve.answer(lambda probe, log: None, serve.Request(1, "prepare", {}))  # type: ignore[arg-type,return-value]
    assert got == {"id": 1, "ok": False, "error": "internal error: KeyError: 'x'",
                   "log": ["before"]}  # fmt: skip


def test_the_request_size_limit() -> None:
    head = b'{"id":0,"op":"finalize"}'
    exact = head + b" " * (serve.MAX_REQUEST_BYTES - len(head))
    assert len(exact) == serve.MAX_REQUEST_BYTES
    assert serve.parse_request(exact) == serve.Request(0, "finalize", {})
    with pytest.raises(ValidationError) as err:
        serve.parse_request(exact + b" ")
    assert str(err.value) == "request too long"


def test_request_ids_start_at_zero() -> None:
    assert serve.parse_request(b'{"id": 0, "op": "prepare", "args": {"a": 1}}').id == 0
    with pytest.raises(ValidationError) as err:
        serve.parse_request(b'{"id": -1, "op": "prepare"}')
    assert str(err.value) == "request id: a non-negative integer expected"


def test_absent_fields_take_pvesrs_defaults() -> None:
    with pytest.raises(ValidationError) as err:
        serve._check_common({})  # an absent job id is checked as an empty one
    assert str(err.value) == "invalid format - invalid replication job id ''"
    assert serve._check_common({"jobid": "100-0"}) == ("100-0", [], 0)
    with pytest.raises(ValidationError) as err:
        serve._check_common({"jobid": "100-0", "last_sync": -1})
    assert str(err.value) == "last_sync must be >= 0"
    assert serve._flag({}, "raw") is False
    assert serve._flag({"raw": True}, "raw") is True and serve._flag({"raw": False}, "raw") is False
    with pytest.raises(ValidationError) as err:
        serve._flag({"raw": 1}, "raw")
    assert str(err.value) == "raw: type check failed - got 1"


# --- the hosted import's channel watcher ------------------------------------------------------


def test_the_channel_ends_when_the_receiver_was_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    running = {"yes": True}
    monkeypatch.setattr(serve, "RECEIVER_POLL", 0.01)
    monkeypatch.setattr(procs, "is_running", lambda p: (p == "RECV") and running["yes"])
    record = SimpleNamespace(receiver="RECV")
    plan = SimpleNamespace(claim=SimpleNamespace(record=record))
    a, b = socket.socketpair()
    done = threading.Event()
    watcher = threading.Thread(target=serve._end_channel_with_receiver, args=(plan, a, done))
    watcher.start()
    try:
        b.sendall(b"x")
        assert a.recv(1) == b"x"  # still open while the receiver runs
        running["yes"] = False
        watcher.join(10)
        assert not watcher.is_alive()
        assert a.recv(1) == b""  # shut down: the receive sees the end
    finally:
        done.set()
        a.close()
        b.close()


def test_the_watcher_stops_with_the_import_and_leaves_an_unclaimed_channel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(serve, "RECEIVER_POLL", 0.01)
    asked: list[object] = []
    monkeypatch.setattr(procs, "is_running", lambda p: asked.append(p) or False)
    a, b = socket.socketpair()
    done = threading.Event()
    for plan in (
        SimpleNamespace(claim=None),
        SimpleNamespace(claim=SimpleNamespace(record=SimpleNamespace(receiver=None))),
    ):
        watcher = threading.Thread(target=serve._end_channel_with_receiver,
                                   args=(plan, a, done))  # fmt: skip
        watcher.start()
        threading.Event().wait(0.1)
        assert watcher.is_alive()  # nothing to watch yet: the channel stays
        done.set()
        watcher.join(10)
        assert not watcher.is_alive()
        done.clear()
    b.sendall(b"y")
    assert a.recv(1) == b"y" and asked == []
    a.close()
    b.close()


def test_a_channel_already_closed_by_the_peer_is_no_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(serve, "RECEIVER_POLL", 0.01)
    monkeypatch.setattr(procs, "is_running", lambda p: False)
    plan = SimpleNamespace(claim=SimpleNamespace(record=SimpleNamespace(receiver="RECV")))
    sock = socket.socket()  # never connected: shutdown fails with ENOTCONN
    serve._end_channel_with_receiver(plan, sock, threading.Event())  # type: ignore[arg-type]
    sock.close()
