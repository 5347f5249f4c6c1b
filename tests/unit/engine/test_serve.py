"""``pverep serve`` (engine/serve.py) and its client (transport/serveclient.py): request
validation, errors as one line, the target's checks per request, a session that dies."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable

import pytest

from pverep.engine import remote, serve
from pverep.transport.base import Process
from pverep.transport.serveclient import ServeSession, SessionError, _read_hello
from tests.unit.test_remote import P, make_target
from tests.unit.zfs_fake import FakeZfsShell

VOL = "local-zfs:subvol-100-disk-0"


def factory(shell: FakeZfsShell, guests: dict[int, str] | None = None) -> serve.TargetFactory:
    def make(probe: bool, log: Callable[[str], None]) -> remote.TargetNode:
        target, _ = make_target(shell, guests)
        target.log = log
        return target

    return make


def run_serve(make: serve.TargetFactory, *lines: str) -> list[dict[str, object]]:
    out = io.BytesIO()
    serve.serve(make, io.BytesIO("".join(f"{x}\n" for x in lines).encode()), out)
    return [json.loads(x) for x in out.getvalue().decode().splitlines()]


def req(rid: object, op: str, **args: object) -> str:
    return json.dumps({"id": rid, "op": op, "args": args})


def test_hello_then_one_answer_per_request_with_the_verbs_output() -> None:
    shell = FakeZfsShell()
    shell.add(f"{P}/subvol-100-disk-0", "__replicate_100-0_10__", "__replicate_100-0_20__")
    # one session each: requests of one session run at once, and both would delete the
    # stale snapshot (the fake zfs then fails the second delete)
    answers = run_serve(
        factory(shell),
        req(1, "prepare", jobid="100-0", volids=[VOL], scan=["local-zfs"], last_sync=20),
    )
    answers += run_serve(
        factory(shell), req(2, "finalize", jobid="100-0", volids=[VOL], last_sync=20)
    )[1:]
    assert answers[0] == {
        "serve": "pverep", "version": 1, "ops": ["prepare", "finalize", "import"]
    }  # fmt: skip
    by_id = {a["id"]: a for a in answers[1:]}
    first = by_id[1]
    assert first["ok"] is True
    snaps = json.loads(str(first["stdout"]))[VOL]
    assert list(snaps) == ["__replicate_100-0_20__"]  # the stale one was deleted
    assert first["log"] == [f"delete stale replication snapshot '__replicate_100-0_10__' on {VOL}"]
    assert by_id[2] == {"id": 2, "ok": True, "stdout": "", "log": []}
    assert shell.snapshot_names(f"{P}/subvol-100-disk-0") == ["__replicate_100-0_20__"]


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("not json", "request is not a JSON object"),
        ("[1]", "request is not a JSON object"),
        ('{"op": "prepare"}', "request id: a non-negative integer expected"),
        ('{"id": true, "op": "prepare"}', "request id: a non-negative integer expected"),
        ('{"id": 4, "op": "export"}', "unknown request 'export'"),
        ('{"id": 4, "op": "prepare", "args": []}', "args: a JSON object expected"),
        (req(4, "prepare", jobid="100-0", volids="x"), "volids: a list of strings expected"),
        (req(4, "prepare", jobid="100-0", volids=[VOL], last_sync="1"),
         'last_sync: type check failed - got "1"'),
        (req(4, "prepare", jobid="100-0", volids=[VOL], last_sync=True),
         "last_sync: type check failed - got true"),
        (req(4, "prepare", jobid="100-0", volids=[VOL], last_sync=-1),
         "last_sync must be >= 0"),
        (req(4, "prepare", jobid="100-0", volids=["local-zfs:../etc"]),
         "unable to parse zfs volume name '../etc'"),
        (req(4, "prepare", jobid="100-0; rm -rf /", volids=[VOL]),
         "invalid format - invalid replication job id '100-0; rm -rf /'"),
        (req(4, "prepare", jobid="100-0", volids=[VOL], scan=["a b"]),
         "storage ID 'a b' contains illegal characters"),
        (req(4, "prepare", jobid="100-0", volids=[VOL], parent_snapname="../x"),
         "invalid format - invalid configuration ID '../x'"),
        (req(4, "finalize", jobid="100-0", volids=[]), "no volumes specified"),
        (req(4, "prepare", jobid="100-0", volids=["local-zfs:vm-101-disk-0"]),
         "volume 'local-zfs:vm-101-disk-0' has wrong owner"),
    ],
)  # fmt: skip
def test_bad_requests_get_one_line_and_touch_nothing(line: str, error: str) -> None:
    shell = FakeZfsShell()
    shell.add(f"{P}/subvol-100-disk-0", "__replicate_100-0_10__")
    answers = run_serve(factory(shell), line)
    assert len(answers) == 2
    bad = answers[1]
    assert bad["ok"] is False
    assert bad["error"] == error, bad
    assert "\n" not in str(bad["error"])
    assert bad["id"] == (4 if '"id": 4' in line else None)
    assert shell.calls == []


def test_a_guest_living_on_the_target_is_refused_for_every_request() -> None:
    shell = FakeZfsShell()
    shell.add(f"{P}/subvol-100-disk-0", "__replicate_100-0_10__")
    answers = run_serve(
        factory(shell, {100: "pve2"}),
        req(1, "prepare", jobid="100-0", volids=[VOL], last_sync=20),
        req(2, "finalize", jobid="100-0", volids=[VOL], last_sync=20),
        req(3, "prepare", jobid="100-0", volids=[], scan=["local-zfs"], last_sync=1, force=True),
    )
    assert sorted((a["id"], a["error"]) for a in answers[1:]) == [
        (i, "guest '100' is on local node") for i in (1, 2, 3)
    ]
    assert shell.calls == []
    assert shell.snapshot_names(f"{P}/subvol-100-disk-0") == ["__replicate_100-0_10__"]


def test_an_unexpected_error_is_one_line_and_the_session_goes_on() -> None:
    def broken(probe: bool, log: Callable[[str], None]) -> remote.TargetNode:
        raise KeyError("boom\nsecond line")

    answers = run_serve(
        broken,
        req(1, "finalize", jobid="100-0", volids=[VOL], last_sync=2),
        req(2, "finalize", jobid="100-0", volids=[VOL], last_sync=2),
    )
    assert sorted(str(a["id"]) for a in answers[1:]) == ["1", "2"]
    for a in answers[1:]:
        assert a["ok"] is False and str(a["error"]).startswith("internal error: KeyError")
        assert "\n" not in str(a["error"])


# --- the client -----------------------------------------------------------------------------

FAKE_SERVER = """
import json, sys, os
hello = {"serve": "pverep", "version": 1, "ops": ["prepare", "finalize"]}
sys.stdout.write(json.dumps(hello) + "\\n")
sys.stdout.flush()
for line in sys.stdin:
    doc = json.loads(line)
    if doc["args"].get("die"):
        sys.stderr.write("target went away\\n"); sys.stderr.flush()
        os._exit(3)
    if doc["args"].get("hang"):
        continue
    sys.stdout.write(json.dumps({"id": doc["id"], "ok": doc["op"] == "prepare",
        "stdout": "out-" + doc["args"]["jobid"], "error": "refused\\nmore",
        "log": ["line of " + doc["args"]["jobid"]]}) + "\\n")
    sys.stdout.flush()
"""


def spawn(code: str) -> Process:
    popen = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    return Process(popen, ["fake-serve"])


def session(code: str = FAKE_SERVER) -> ServeSession:
    proc = spawn(code)
    hello = _read_hello(proc, 10)
    assert hello is not None
    return ServeSession(proc, "pve2", hello["ops"])


def test_client_matches_answers_of_concurrent_requests() -> None:
    s = session()
    results: dict[str, str] = {}

    def ask(jobid: str) -> None:
        results[jobid] = s.call("prepare", {"jobid": jobid}).stdout

    threads = [threading.Thread(target=ask, args=(f"{i}-0",)) for i in range(100, 120)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == {f"{i}-0": f"out-{i}-0" for i in range(100, 120)}
    failed = s.call("finalize", {"jobid": "7-0"})
    assert (failed.ok, failed.error, failed.log) == (False, "refused", ["line of 7-0"])
    s.close()
    assert s.proc.returncode == 0
    with pytest.raises(SessionError, match=r"^session on 'pve2': the session ended$"):
        s.call("prepare", {"jobid": "1-0"})


def test_a_dying_session_fails_the_requests_waiting_on_it_with_one_line() -> None:
    s = session()
    waiting: list[BaseException] = []

    def hang() -> None:
        try:
            s.call("prepare", {"jobid": "101-0", "hang": True})
        except SessionError as err:
            waiting.append(err)

    t = threading.Thread(target=hang)
    t.start()
    with pytest.raises(SessionError) as exc:
        s.call("prepare", {"jobid": "100-0", "die": True})
    t.join(10)
    assert not t.is_alive()
    assert str(exc.value) == "session on 'pve2': the session ended - target went away"
    assert [str(e) for e in waiting] == [str(exc.value)]
    assert not s.alive
    s.close()


def test_no_hello_means_no_session() -> None:
    # an older pverep: click's one-line usage error, exit 255, nothing on stdout
    proc = spawn("import sys; sys.stderr.write(\"No such command 'serve'.\\n\"); sys.exit(255)")
    assert _read_hello(proc, 10) is None
    proc.kill()
    proc = spawn("print('something else'); import time; time.sleep(5)")
    assert _read_hello(proc, 10) is None
    proc.kill()


def test_unknown_op_is_refused_before_sending() -> None:
    s = session()
    with pytest.raises(SessionError, match="does not serve 'import'"):
        s.call("import", {})
    s.close()
    assert os.environ  # the fake server saw no request


def test_a_remote_verb_loads_only_the_remote_verbs() -> None:
    # every remote call pays this start: no observe/reconcile/lab imports for it
    code = (
        "import sys; from pverep.cli import main\n"
        "try:\n    main(['peer-info'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m.startswith('pverep.cli.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines()[-1] == "['pverep.cli.apiopts', 'pverep.cli.remote']"
