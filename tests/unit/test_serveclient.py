"""transport/serveclient.py: starting a ``pverep serve`` session, its hello, requests and
answers matched by id, an import's ``ready``, a session that dies or is closed.

The far end is a FAKE ``pverep serve``: a small Python process (run through LocalShell, as
ssh would run the real one) that speaks the line protocol; engine/serve.py's real server is
tested in tests/unit/engine/test_serve*.py and the lab.
"""

from __future__ import annotations

import json
import sys

import pytest

from pverep.transport import serveclient
from pverep.transport.local import LocalShell
from pverep.transport.serveclient import SessionError, _parse_answer, open_session

#: FAKE serve: ``argv[1]`` picks the behaviour; ``argv[2]`` is "serve" (open_session adds it).
SERVE = r"""
import json, sys, time
mode = sys.argv[1]
assert sys.argv[2] == "serve"
hello = {"serve": "pverep", "version": 1, "ops": ["prepare-local-job", "import"]}
if mode == "usage":
    print("usage: pverep COMMAND", flush=True); sys.exit(2)
if mode == "version2":
    hello["version"] = 2
if mode == "ops-not-a-list":
    hello["ops"] = "prepare-local-job"
if mode == "stranger":
    hello = {"serve": "other", "version": 1}
if mode == "list":
    hello = [1]
if mode == "garbage":
    print("{not json", flush=True); time.sleep(5); sys.exit(0)
if mode == "silent":
    time.sleep(30); sys.exit(0)
if mode == "no-newline":
    sys.stdout.write(json.dumps(hello)); sys.stdout.flush(); sys.exit(0)
print(json.dumps(hello), flush=True)
for line in sys.stdin:
    req = json.loads(line)
    if mode == "dies":
        print("serve: out of memory", file=sys.stderr, flush=True); sys.exit(1)
    if mode == "dies-talking":
        for word in ("first", "second", "third"):
            print(f"serve: {word}", file=sys.stderr, flush=True)
        sys.exit(1)
    if mode == "mute":
        continue
    if mode == "split":  # one answer line in two writes, apart in time: two reads on our side
        line = json.dumps({"id": req["id"], "ok": True, "stdout": "x" * 1000}) + "\n"
        sys.stdout.write(line[:500]); sys.stdout.flush(); time.sleep(0.3)
        sys.stdout.write(line[500:]); sys.stdout.flush()
        continue
    rid = req["id"]
    print("not protocol", flush=True)
    print(json.dumps({"id": "x"}), flush=True)
    print(json.dumps([rid]), flush=True)
    print(json.dumps({"id": rid + 100, "ok": True}), flush=True)  # nobody waits for it
    if req["op"] == "import":
        print(json.dumps({"id": rid, "ready": True, "port": 4000, "key": "k"}), flush=True)
    print(json.dumps({"id": rid, "ok": True, "stdout": req["op"] + " done",
                      "log": ["line 1", 2]}), flush=True)
"""


def session(mode: str = "ok") -> serveclient.ServeSession | None:
    return open_session(LocalShell("pve2"), [sys.executable, "-c", SERVE, mode])


def test_a_session_serves_requests_by_id() -> None:
    s = session()
    assert s is not None
    try:
        assert s.node == "pve2" and s.ops == {"prepare-local-job", "import"} and s.alive
        first = s.call("prepare-local-job", {"jobid": "100-0"})
        assert first == serveclient.Answer(
            True, "prepare-local-job done", "request failed", ["line 1", "2"]
        )  # (an ok answer's error is never shown)
        pending = s.start("import", {"volid": "local-zfs:vm-100-disk-0"})
        assert pending.rid == 1
        assert pending.wait_ready(10) == {"id": 1, "ready": True, "port": 4000, "key": "k"}
        assert pending.answer(10).stdout == "import done" and pending.done
        with pytest.raises(SessionError) as err:
            s.start("export", {})
        assert str(err.value) == "session on 'pve2' does not serve 'export'"
    finally:
        s.close()
    assert not s.alive and s.proc.returncode == 0
    with pytest.raises(SessionError) as err:
        s.start("import", {})
    assert str(err.value) == "session on 'pve2': the session ended"  # it exited on EOF


@pytest.mark.parametrize("mode", ["usage", "version2", "stranger", "list", "garbage", "no-newline"])
def test_no_session_from_something_that_is_not_pverep_serve(mode: str) -> None:
    assert session(mode) is None


def test_no_session_from_a_target_that_says_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(serveclient, "HELLO_TIMEOUT", 0.3)
    assert session("silent") is None


def test_a_hello_without_an_ops_list_offers_nothing() -> None:
    s = session("ops-not-a-list")
    assert s is not None
    try:
        assert s.ops == frozenset()
    finally:
        s.close()


def test_a_session_that_dies_fails_the_waiting_request_with_its_last_words() -> None:
    s = session("dies")
    assert s is not None
    try:
        pending = s.start("prepare-local-job", {})
        assert pending.wait_ready(10) is None
        with pytest.raises(SessionError) as err:
            pending.answer(10)
        assert str(err.value) == "session on 'pve2': the session ended - serve: out of memory"
        assert not s.alive
        with pytest.raises(SessionError):
            s.start("prepare-local-job", {})
    finally:
        s.close()


def test_an_answer_that_does_not_come_in_time() -> None:
    s = session("mute")
    assert s is not None
    try:
        pending = s.start("prepare-local-job", {})
        with pytest.raises(SessionError) as err:
            pending.answer(0.2)
        assert str(err.value) == "session on 'pve2': no answer in 0.2 s"
        assert pending.rid not in s._pending  # forgotten
        assert s.alive
    finally:
        s.close()


def test_a_request_written_to_a_session_that_is_gone() -> None:
    s = session("ok")
    assert s is not None
    s.proc.kill()
    s.proc.wait(10)
    assert s.proc.stdin is not None
    s.proc.stdin.close()
    with pytest.raises(SessionError) as err:
        s.start("prepare-local-job", {})
    assert str(err.value) == "session on 'pve2': the session ended"
    assert s._pending == {}
    s.close()


def test_answers_are_parsed_leniently() -> None:
    assert _parse_answer({"ok": True}) == serveclient.Answer(True, "", "request failed", [])
    assert _parse_answer({"ok": 1, "error": "a\nb", "log": "x", "stdout": None}) == (
        serveclient.Answer(False, "", "a", [])
    )
    assert _parse_answer({"ok": False, "error": "", "log": [1, "two"], "stdout": "out"}) == (
        serveclient.Answer(False, "out", "request failed", ["1", "two"])
    )


def test_requests_are_one_json_line_each() -> None:
    s = session("mute")
    assert s is not None
    sent: list[bytes] = []

    class Recorder:
        closed = False

        def write(self, data: bytes) -> None:
            sent.append(data)

        def flush(self) -> None:
            pass

        def close(self) -> None:
            self.closed = True

    popen = s.proc._popen
    real = popen.stdin
    popen.stdin = Recorder()  # type: ignore[assignment]
    s.start("import", {"volid": "v"})
    s.start("import", {"volid": "w"})
    assert [json.loads(line) for line in sent] == [
        {"id": 0, "op": "import", "args": {"volid": "v"}},
        {"id": 1, "op": "import", "args": {"volid": "w"}},
    ]
    assert all(line.endswith(b"\n") and line.count(b"\n") == 1 for line in sent)
    popen.stdin = real
    s.close()


def test_a_dying_session_reports_only_its_last_two_stderr_lines() -> None:
    s = session("dies-talking")
    assert s is not None
    try:
        with pytest.raises(SessionError) as err:
            s.start("prepare-local-job", {}).answer(10)
        assert (
            str(err.value) == "session on 'pve2': the session ended - serve: second; serve: third"
        )
    finally:
        s.close()


def test_a_request_that_cannot_be_written_to_a_live_session() -> None:
    class Broken:
        closed = False

        def write(self, data: bytes) -> int:
            raise BrokenPipeError("broken pipe")

        def flush(self) -> None:
            pass

    s = session("mute")
    assert s is not None
    real = s.proc._popen.stdin
    try:
        s.proc._popen.stdin = Broken()  # type: ignore[assignment]
        with pytest.raises(SessionError) as err:
            s.start("prepare-local-job", {})
        assert str(err.value) == "session on 'pve2': the session ended"
        assert s._pending == {} and not s.alive
        with pytest.raises(SessionError) as again:
            s.start("prepare-local-job", {})
        assert str(again.value) == "session on 'pve2': the session ended"
    finally:
        s.proc._popen.stdin = real
        s.close()


def test_an_answer_line_that_arrives_in_two_pieces() -> None:
    s = session("split")
    assert s is not None
    try:
        assert s.start("prepare-local-job", {}).answer(10).stdout == "x" * 1000
        assert s.alive
    finally:
        s.close()
