"""engine/serve.py: each request's arguments reach engine/remote.py exactly as the verbs' argv
would hand them over (every field, its default, and the target's probing), and an import's
data channel, claim and receive get the session's settings.

remote.py's functions are replaced by recorders here (they are tested on their own in
test_remote*.py and, through the session, in test_serve*.py): what is checked is the mapping.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from pverep.engine import remote, serve
from pverep.errors import PverepError
from pverep.storage.streamform import ImportMode

VOLID = "local-zfs:vm-100-disk-0"


class Stop(PverepError):
    pass


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.targets: list[tuple[bool, object]] = []

    def make_target(self, probe: bool, log: Any) -> Any:
        self.targets.append((probe, log))
        return f"target-{len(self.targets)}"

    def record(self, name: str, result: Any = None, stop: bool = False) -> Any:
        def call(*args: Any, **kw: Any) -> Any:
            self.calls.append((name, args, kw))
            if stop:
                raise Stop(name)
            return result

        return call


def log(line: str) -> None:
    pass


@pytest.fixture
def rec(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    r = Recorder()
    monkeypatch.setattr(remote, "prepare_local_job", r.record("prepare", {"v": {}}))
    monkeypatch.setattr(remote, "prepare_info", r.record("info", {"tokens": 1}))
    monkeypatch.setattr(remote, "format_prepare_result", r.record("format", "ANSWER"))
    monkeypatch.setattr(remote, "finalize_local_job", r.record("finalize"))
    return r


def test_prepare_hands_every_field_over(rec: Recorder) -> None:
    args = {"jobid": "100-0", "volids": [VOLID], "last_sync": 1700000000, "scan": ["tank"],
            "parent_snapname": "before", "force": True, "pverep_info": True}  # fmt: skip
    assert serve.run_prepare(rec.make_target, args, log) == "ANSWER"
    assert rec.targets == [(True, log)]  # the source asked for pverep's info: probe zfs
    (name, a, kw), (info, ia, _), (fmt, fa, _) = rec.calls
    assert (name, a) == ("prepare", ("target-1", "100-0", [VOLID]))
    assert kw == {"scan": ["tank"], "last_sync": 1700000000, "parent_snapname": "before",
                  "force": True, "partial": {}}  # fmt: skip
    assert (info, ia) == ("info", ("target-1", {}))
    assert (fmt, fa) == ("format", ({"v": {}}, {"tokens": 1}))


def test_prepare_defaults_are_pvesrs(rec: Recorder) -> None:
    args = {"jobid": "100-0", "volids": [VOLID], "last_sync": 0}
    assert serve.run_prepare(rec.make_target, args, log) == "ANSWER"
    assert rec.targets == [(False, log)]
    (_, _, kw), (fmt, fa, _) = rec.calls
    assert kw == {"scan": [], "last_sync": 0, "parent_snapname": None, "force": False,
                  "partial": None}  # fmt: skip
    assert (fmt, fa) == ("format", ({"v": {}}, None))  # no info asked, none computed


def test_prepare_with_info_false_is_as_without(rec: Recorder) -> None:
    args = {"jobid": "100-0", "volids": [VOLID], "last_sync": 0, "pverep_info": False,
            "force": False}  # fmt: skip
    serve.run_prepare(rec.make_target, args, log)
    assert rec.targets == [(False, log)] and rec.calls[0][2]["partial"] is None


def test_finalize_hands_the_job_over_without_probing(rec: Recorder) -> None:
    args = {"jobid": "100-0", "volids": [VOLID], "last_sync": 1700000000}
    assert serve.run_finalize(rec.make_target, args, log) == ""
    assert rec.targets == [(False, log)]
    assert rec.calls == [("finalize", ("target-1", "100-0", [VOLID]), {"last_sync": 1700000000})]


def ctx(accept_timeout: float | None = None) -> serve.ImportContext:
    return serve.ImportContext(lambda doc: None, threading.Event(), 42.0, accept_timeout)


def test_import_hands_every_field_to_the_validation(
    rec: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(remote, "validate_import", rec.record("validate", stop=True))
    args = {"volid": VOLID, "format": "zfs", "snapshot": "s2", "base": "s1",
            "allow_rename": True, "delete_snapshot": "s0", "resumable": True, "raw": True,
            "resume": True, "discard_partial": True, "prune": ["p1", "p2"]}  # fmt: skip
    with pytest.raises(Stop):
        serve.run_import(rec.make_target, args, log, ctx())
    assert rec.targets == [(True, log)]
    [(name, a, kw)] = rec.calls
    assert (name, a) == ("validate", ("target-1", VOLID, "zfs"))
    assert kw == {
        "snapshot": "s2", "base": "s1", "allow_rename": True, "delete_snapshot": "s0",
        "mode": ImportMode(resumable=True, raw=True, resuming=True, discard_partial=True,
                           prune=("p1", "p2")),
    }  # fmt: skip


def test_import_defaults(rec: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(remote, "validate_import", rec.record("validate", stop=True))
    with pytest.raises(Stop):
        serve.run_import(rec.make_target, {"volid": VOLID}, log, ctx())
    [(_, a, kw)] = rec.calls
    assert a == ("target-1", VOLID, "")
    assert kw == {"snapshot": None, "base": None, "allow_rename": False,
                  "delete_snapshot": None, "mode": ImportMode()}  # fmt: skip


def test_import_without_a_volid_is_refused_before_anything() -> None:
    made: list[bool] = []
    with pytest.raises(PverepError):
        serve.run_import(lambda probe, log: made.append(probe), {}, log, ctx())  # type: ignore[arg-type,return-value]
    assert made == []


class FakeChannel:
    made: ClassVar[list[dict[str, Any]]] = []

    def __init__(self, closing: threading.Event, **kw: Any) -> None:
        FakeChannel.made.append({"closing": closing, **kw})
        self.port, self.key = 4711, bytes(range(32))
        self.conn = FakeConn()

    def __enter__(self) -> FakeChannel:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def accept(self, log: Any) -> FakeConn:
        return self.conn


class FakeConn:
    closed = False

    def fileno(self) -> int:
        return 99

    def __enter__(self) -> FakeConn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.closed = True


@pytest.mark.parametrize("accept_timeout", [None, 3.5])
def test_import_channel_claim_and_receive_get_the_sessions_settings(
    rec: Recorder, monkeypatch: pytest.MonkeyPatch, accept_timeout: float | None
) -> None:
    FakeChannel.made = []
    monkeypatch.setattr(remote, "validate_import", rec.record("validate", "PLAN"))
    monkeypatch.setattr(serve, "DataChannel", FakeChannel)
    watched: list[tuple[Any, ...]] = []

    def watch(plan: Any, conn: Any, done: threading.Event) -> None:
        watched.append((plan, conn, done.wait(10)))

    monkeypatch.setattr(serve, "_end_channel_with_receiver", watch)

    @contextlib.contextmanager
    def claimed(target: Any, plan: Any, **kw: Any) -> Iterator[str]:
        rec.calls.append(("claim", (target, plan), kw))
        yield "CLAIMED"

    monkeypatch.setattr(remote, "claimed_import", claimed)
    monkeypatch.setattr(remote, "run_import", rec.record("receive", VOLID))
    readies: list[dict[str, object]] = []
    c = serve.ImportContext(readies.append, threading.Event(), 42.0, accept_timeout)
    got = serve.run_import(rec.make_target, {"volid": VOLID, "format": "zfs"}, log, c)
    assert got == f"successfully imported '{VOLID}'"
    expected = {"closing": c.closing} | ({} if accept_timeout is None else
                                         {"accept_timeout": accept_timeout})  # fmt: skip
    assert FakeChannel.made == [expected]
    assert readies == [{"port": 4711, "key": bytes(range(32)).hex()}]
    claim, receive = rec.calls[1:]
    assert claim == ("claim", ("target-1", "PLAN"), {"hosted": True})
    assert receive == ("receive", ("CLAIMED", 99), {"on_stderr": log, "stall_timeout": 42.0})
    [(plan, conn, done)] = watched
    assert plan == "CLAIMED" and isinstance(conn, FakeConn) and done is True
