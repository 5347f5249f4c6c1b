"""The source's end of ``pverep serve`` (engine/serve.py has the protocol): one session per
target and run, started over the run's ssh master, shared by that run's jobs.

Requests from several jobs may be in flight at once (one reader thread matches answers to
them by id). A session that ends - its ssh master was cut, the target went away, the process
died - fails exactly the requests waiting on it, with one line; the pool (wiring) starts a
new one for the next request. A target whose pverep has no ``serve`` verb (an older pverep)
answers no hello: ``open_session`` returns None and that target gets the per-verb calls.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pverep.errors import PverepError
from pverep.transport.base import PIPE, Process, Shell

#: How long the target may take to start ``pverep serve`` and say hello.
HELLO_TIMEOUT = 60.0
#: How long a finished session may take to exit after its input ended.
CLOSE_TIMEOUT = 10.0
PROTOCOL_VERSION = 1
#: How long a session that ended may take to finish writing its stderr (its last words).
STDERR_SETTLE_TIMEOUT = 2.0


class SessionError(PverepError):
    """The session ended (or never started) before it answered a request."""


@dataclass(frozen=True)
class Answer:
    ok: bool
    stdout: str
    error: str
    log: list[str]


def _parse_answer(doc: Mapping[str, Any]) -> Answer:
    log = doc.get("log")
    lines = [str(x) for x in log] if isinstance(log, list) else []
    error = (str(doc.get("error") or "").splitlines() or ["request failed"])[0]
    return Answer(
        ok=doc.get("ok") is True, stdout=str(doc.get("stdout") or ""), error=error, log=lines
    )


def _read_hello(proc: Process, timeout: float) -> dict[str, Any] | None:
    """The session's first line, or None (no such verb, it exited, it said something else)."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout
    line = bytearray()
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return None
        byte = os.read(fd, 1)  # unbuffered: the reader thread takes over the stream after it
        if not byte:
            return None
        line += byte
    try:
        doc = json.loads(line)
    except ValueError:
        return None
    if not isinstance(doc, dict) or doc.get("serve") != "pverep":
        return None
    return doc


class _Slot:
    """One request's mailbox."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.answers: list[Answer] = []
        self.ready_event = threading.Event()
        self.ready: dict[str, Any] | None = None


class Pending:
    """A request in flight."""

    def __init__(self, session: ServeSession, rid: int, slot: _Slot) -> None:
        self.session = session
        self.rid = rid
        self._slot = slot

    @property
    def done(self) -> bool:
        return self._slot.done.is_set()

    def wait_ready(self, timeout: float) -> dict[str, Any] | None:
        """An import's ``ready`` message; None if its final answer (an error) came first, the
        session ended, or nothing came in ``timeout`` s."""
        self._slot.ready_event.wait(timeout)
        return self._slot.ready

    def answer(self, timeout: float | None = None) -> Answer:
        """The final answer; SessionError if the session ends (or ``timeout`` passes) first."""
        if not self._slot.done.wait(timeout):
            self.session.forget(self.rid)
            waited = f"{timeout:g}" if timeout is not None else "?"
            raise SessionError(f"session on '{self.session.node}': no answer in {waited} s")
        if not self._slot.answers:
            raise SessionError(f"session on '{self.session.node}': {self.session._why()}")
        return self._slot.answers[0]


class ServeSession:
    """One running ``pverep serve`` on a target."""

    def __init__(self, proc: Process, node: str, ops: Sequence[str]) -> None:
        self.proc = proc
        self.node = node
        self.ops = frozenset(ops)
        self._next_id = 0
        self._pending: dict[int, _Slot] = {}
        #: False once an import's data channel could not be forwarded (per-verb imports then)
        self.channel_works: bool | None = None
        self._lock = threading.Lock()
        self._dead: str | None = None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def alive(self) -> bool:
        with self._lock:
            return self._dead is None

    def _read(self) -> None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        buf = b""
        try:
            while True:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    self._deliver(line)
        except OSError:
            pass
        # its stderr may lag behind the end of stdout: wait briefly for the last words
        self.proc.settle_stderr(STDERR_SETTLE_TIMEOUT)
        self._end("the session ended")

    def _deliver(self, line: bytes) -> None:
        try:
            doc = json.loads(line)
        except ValueError:
            return  # not protocol: nothing waits for it
        if not isinstance(doc, dict):
            return
        rid = doc.get("id")
        with self._lock:
            if not isinstance(rid, int):
                return
            if doc.get("ready") is True:  # an import's first message; its answer follows
                slot = self._pending.get(rid)
                if slot is not None:
                    slot.ready = doc
                    slot.ready_event.set()
                return
            slot = self._pending.pop(rid, None)
        if slot is not None:
            slot.answers.append(_parse_answer(doc))
            slot.done.set()
            slot.ready_event.set()

    def _end(self, why: str) -> None:
        tail = "; ".join(self.proc.stderr_tail[-2:])
        with self._lock:
            if self._dead is None:
                self._dead = f"{why}{' - ' + tail if tail else ''}"
            pending, self._pending = self._pending, {}
        for slot in pending.values():
            slot.done.set()  # no answer: the caller raises SessionError
            slot.ready_event.set()

    def start(self, op: str, args: Mapping[str, Any]) -> Pending:
        """Send one request; its answer (and an import's ``ready``) come to the Pending."""
        if op not in self.ops:
            raise SessionError(f"session on '{self.node}' does not serve '{op}'")
        slot = _Slot()
        with self._lock:
            if self._dead is not None:
                raise SessionError(f"session on '{self.node}': {self._dead}")
            rid = self._next_id
            self._next_id += 1
            self._pending[rid] = slot
            data = json.dumps({"id": rid, "op": op, "args": dict(args)}).encode() + b"\n"
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(data)
                self.proc.stdin.flush()
            except (OSError, ValueError):
                self._pending.pop(rid, None)
                self._dead = "the session ended"
                raise SessionError(f"session on '{self.node}': {self._dead}") from None
        return Pending(self, rid, slot)

    def _why(self) -> str:
        with self._lock:
            return self._dead or "the session ended"

    def forget(self, rid: int) -> None:
        """Stop waiting for ``rid`` (its answer, should it come, is dropped)."""
        with self._lock:
            self._pending.pop(rid, None)

    def call(self, op: str, args: Mapping[str, Any]) -> Answer:
        """Send one request and wait for its answer. Raises SessionError if the session ends
        first (the request may or may not have run on the target: the verbs are idempotent
        cleanups, and the job fails, as with a cut per-verb ssh call)."""
        return self.start(op, args).answer()

    def close(self) -> None:
        """End the input (the target finishes its running requests and exits), then reap."""
        with self._lock:
            stdin = self.proc.stdin
            if stdin is not None and not stdin.closed:
                with contextlib.suppress(OSError):
                    stdin.close()
        with contextlib.suppress(PverepError):  # killed after the timeout
            self.proc.wait(CLOSE_TIMEOUT)
        self._reader.join(CLOSE_TIMEOUT)
        self._end("the session was closed")
        self.proc.close()


def open_session(remote: Shell, pverep_argv: Sequence[str]) -> ServeSession | None:
    """Start ``pverep serve`` on ``remote``; None if it does not answer as one (an older
    pverep without the verb): the caller then uses the per-verb calls."""
    proc = remote.spawn([*pverep_argv, "serve"], stdin=PIPE, stdout=PIPE)
    hello = _read_hello(proc, HELLO_TIMEOUT)
    if hello is None or hello.get("version") != PROTOCOL_VERSION:
        proc.kill()
        return None
    ops = hello.get("ops")
    return ServeSession(proc, remote.node, [str(o) for o in ops] if isinstance(ops, list) else [])
