"""transport/base.py and transport/procs.py on real child processes: timeouts and their
errors, the stderr tail, process groups, stop and kill, and the (pid, start time) identity
that keeps a recycled pid from being signalled. Every child is this test's own and is ended
by its pid."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pverep.transport import procs
from pverep.transport.base import (
    DEVNULL,
    PIPE,
    CommandError,
    CommandTimeout,
    Process,
    StderrTail,
    _lines,
    run_argv,
    spawn_argv,
)
from pverep.transport.local import LocalShell

PY = sys.executable


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    child = subprocess.Popen([PY, "-c", "import time; time.sleep(60)"])
    yield child
    if child.poll() is None:
        child.kill()
    child.wait()


# --- errors and the stderr tail --------------------------------------------------------------


def test_a_timeout_is_pvesrs_got_timeout_with_the_commands_details() -> None:
    err = CommandTimeout(["zfs", "list"], 2.5, ["a", "b"])
    assert (str(err), err.args, err.returncode) == ("got timeout", ("got timeout",), -9)
    assert (err.argv, err.timeout, err.stderr_tail) == (["zfs", "list"], 2.5, ["a", "b"])
    assert isinstance(err, CommandError)


def test_stderr_lines_keep_their_spaces_and_survive_bad_bytes() -> None:
    assert _lines(b"one \n\n  \nbad \xff\r\n") == ["one ", "bad \ufffd"]
    tail = StderrTail(limit=2)
    for line in ("a  \r\n", "\n", "b\n", "c \n"):
        tail.feed(line)
    assert list(tail.lines) == ["b", "c "]
    r, w = os.pipe()
    os.write(w, b"x\xfe\ny\n")
    os.close(w)
    seen: list[str] = []
    StderrTail(sink=seen.append).drain(os.fdopen(r, "rb"))
    assert seen == ["x\ufffd", "y"]


def test_a_command_shell_hands_its_input_to_the_command() -> None:
    argv = [PY, "-c", "import sys; print(sys.stdin.read()[::-1])"]
    res = LocalShell().run(argv, input=b"abc")
    assert (res.argv, res.returncode, res.stdout) == (argv, 0, b"cba\n")


def test_run_argv_feeds_input_and_times_out_with_the_tail() -> None:
    res = run_argv([PY, "-c", "import sys; print(sys.stdin.read().upper())"], input=b"abc")
    assert (res.returncode, res.stdout) == (0, b"ABC\n")
    quiet = run_argv([PY, "-c", "import sys; print(repr(sys.stdin.read()))"])
    assert quiet.stdout == b"''\n"  # no input: /dev/null, not our stdin
    lines = "".join(f"print({i}, file=sys.stderr); " for i in range(25))
    script = f"import sys, time; {lines}sys.stderr.flush(); time.sleep(30)"
    with pytest.raises(CommandTimeout) as err:
        run_argv([PY, "-c", script], timeout=0.5)
    assert err.value.timeout == 0.5 and err.value.argv == [PY, "-c", script]
    assert err.value.stderr_tail == [str(i) for i in range(5, 25)]  # the last 20


# --- Process ---------------------------------------------------------------------------------


def test_wait_with_a_timeout_kills_and_reports() -> None:
    proc = spawn_argv([PY, "-c", "import sys, time; print('late', file=sys.stderr, flush=True); "
                       "time.sleep(30)"], stdout=DEVNULL)  # fmt: skip
    assert proc.leads_group is False
    time.sleep(0.3)
    with pytest.raises(CommandTimeout) as err:
        proc.check(0.3)
    assert err.value.timeout == 0.3 and err.value.stderr_tail == ["late"]
    assert proc.returncode == -signal.SIGKILL and gone(proc.pid)


def test_check_raises_with_the_exit_code_and_tail() -> None:
    proc = spawn_argv([PY, "-c", "import sys; print('nope', file=sys.stderr); sys.exit(3)"],
                      stdout=DEVNULL)  # fmt: skip
    with pytest.raises(CommandError) as err:
        proc.check(10)
    assert (err.value.returncode, err.value.stderr_tail) == (3, ["nope"])
    assert spawn_argv([PY, "-c", "pass"], stdout=DEVNULL).wait(10) == 0


def test_a_group_leader_is_killed_with_its_children(tmp_path: Path) -> None:
    pidfile = tmp_path / "child"
    script = ("import subprocess, sys, time\n"
              f"c = subprocess.Popen([{PY!r}, '-c', 'import time; time.sleep(60)'])\n"
              f"open({str(pidfile)!r}, 'w').write(str(c.pid))\n"
              "time.sleep(60)\n")  # fmt: skip
    leader = LocalShell().spawn([PY, "-c", script], stdout=DEVNULL, new_group=True)
    assert leader.leads_group is True
    assert os.getpgid(leader.pid) == leader.pid != os.getpgid(0)
    while not pidfile.exists() or not pidfile.read_text():
        time.sleep(0.02)
    child = int(pidfile.read_text())
    leader.kill()
    deadline = time.monotonic() + 10
    while not gone(child) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert gone(child) and gone(leader.pid)
    leader.kill()  # again: nothing left, no error


def test_a_plain_child_is_killed_alone(tmp_path: Path) -> None:
    proc = spawn_argv([PY, "-c", "import time; time.sleep(60)"], stdin=PIPE, stdout=DEVNULL)
    assert os.getpgid(proc.pid) == os.getpgid(0)  # not a group of its own
    proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert proc.stdin is not None and proc.stdin.closed


def test_stop_lets_the_child_end_on_sigterm_first() -> None:
    proc = spawn_argv([PY, "-c", "import signal, sys, time\n"
                       "signal.signal(signal.SIGTERM, lambda *a: sys.exit(7))\n"
                       "print('up', flush=True)\ntime.sleep(60)\n"])  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline() == b"up\n"
    proc.stop()
    assert proc.returncode == 7  # its own exit on SIGTERM, not our SIGKILL


def test_stop_kills_a_child_that_ignores_sigterm_after_the_grace() -> None:
    proc = spawn_argv([PY, "-c", "import signal, time\n"
                       "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                       "print('up', flush=True)\ntime.sleep(60)\n"])  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline() == b"up\n"
    proc.stop(grace=0.2)
    assert proc.returncode == -signal.SIGKILL


def test_the_with_block_kills_a_child_still_running() -> None:
    with spawn_argv([PY, "-c", "import time; time.sleep(60)"], stdout=DEVNULL) as proc:
        pass
    assert proc.returncode == -signal.SIGKILL


# --- procs: a process by pid and start time --------------------------------------------------


def test_the_stat_of_a_process_whose_name_has_parentheses(tmp_path: Path) -> None:
    child = subprocess.Popen([PY, "-c", "open('/proc/self/comm', 'wb').write(b'a) 1 2 (\\xff');"
                              "print('x', flush=True); import time; time.sleep(60)"],
                             stdout=subprocess.PIPE)  # fmt: skip
    try:
        assert child.stdout is not None and child.stdout.readline() == b"x\n"
        # the child may still be running (R) just after its print: wait until it sleeps, so
        # both reads below see the same state
        deadline = time.monotonic() + 10
        while True:
            raw = Path(f"/proc/{child.pid}/stat").read_bytes()
            fields = raw[raw.rindex(b")") + 2 :].split()
            if fields[0] == b"S" or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        stat = procs._stat(child.pid)
        assert stat == procs._Stat(state=fields[0].decode(), pgid=os.getpgid(child.pid),
                                   start=int(fields[19]))  # fmt: skip
        assert procs.identify(child.pid) == procs.ProcessId(child.pid, int(fields[19]))
    finally:
        child.kill()
        child.wait()
        assert child.stdout is not None
        child.stdout.close()


def test_identify_of_a_pid_that_is_not_there() -> None:
    child = subprocess.Popen([PY, "-c", "pass"])
    child.wait()
    assert procs.identify(child.pid) is None


def test_this_process_without_procfs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert procs.this_process().pid == os.getpid()
    monkeypatch.setattr(procs, "PROC", str(tmp_path))
    with pytest.raises(OSError) as err:
        procs.this_process()
    assert str(err.value) == f"cannot read {tmp_path}/self/stat"


def test_kill_signals_only_the_recorded_process(sleeper: subprocess.Popen[bytes]) -> None:
    me = procs.identify(sleeper.pid)
    assert me is not None
    impostor = procs.ProcessId(sleeper.pid, me.start + 1)  # the pid, recycled
    assert procs.kill(impostor) is False and sleeper.poll() is None
    assert procs.kill(me, signal.SIGTERM) is True
    assert sleeper.wait(10) == -signal.SIGTERM
    assert procs.kill(me) is False  # a zombie or gone: nothing to signal


def test_kill_without_pidfd_uses_the_pid(
    sleeper: subprocess.Popen[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_pidfd(pid: int) -> int:
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(os, "pidfd_open", no_pidfd)
    me = procs.identify(sleeper.pid)
    assert me is not None and procs.kill(me, signal.SIGTERM) is True
    assert sleeper.wait(10) == -signal.SIGTERM


def test_kill_of_a_process_that_just_ended(
    sleeper: subprocess.Popen[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    def vanished(fd: int, sig: int) -> None:
        raise ProcessLookupError

    monkeypatch.setattr(signal, "pidfd_send_signal", vanished)
    me = procs.identify(sleeper.pid)
    assert me is not None and procs.kill(me) is False


def test_kill_group_ends_a_leaders_group_and_only_the_leader_otherwise(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    script = ("import subprocess, sys, time\n"
              f"c = subprocess.Popen([{PY!r}, '-c', 'import time; time.sleep(60)'])\n"
              "print(c.pid, flush=True)\ntime.sleep(60)\n")  # fmt: skip
    leader = subprocess.Popen([PY, "-c", script], stdout=subprocess.PIPE, process_group=0)
    try:
        assert leader.stdout is not None
        child = int(leader.stdout.readline())
        me = procs.identify(leader.pid)
        assert me is not None and procs.kill_group(me, signal.SIGTERM) is True
        assert leader.wait(10) == -signal.SIGTERM
        assert procs.kill_group(me) is False  # gone
        # a process that leads no group of its own: only it gets the signal
        plain = procs.identify(sleeper.pid)
        assert plain is not None and procs.kill_group(plain, signal.SIGTERM) is True
        assert sleeper.wait(10) == -signal.SIGTERM
        deadline = time.monotonic() + 10
        while not gone(child) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert gone(child)  # the whole group got it, the leader's child too
    finally:
        leader.kill()
        leader.wait()
        assert leader.stdout is not None
        leader.stdout.close()


def test_kill_group_of_a_group_that_just_ended(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    leader = subprocess.Popen([PY, "-c", "import time; time.sleep(60)"], process_group=0)
    try:

        def vanished(pgid: int, sig: int) -> None:
            raise ProcessLookupError

        monkeypatch.setattr(os, "killpg", vanished)
        me = procs.identify(leader.pid)
        assert me is not None and procs.kill_group(me) is False
    finally:
        leader.kill()
        leader.wait()


def test_settle_stderr_waits_for_the_last_words_and_leaves_the_child_alone() -> None:
    proc = spawn_argv([PY, "-c", "import os, sys, time; os.close(1); time.sleep(0.3); "
                       "print('last words', file=sys.stderr)"])  # fmt: skip
    assert proc.stdout is not None and proc.stdout.read() == b""  # its stdout ended first
    proc.settle_stderr(10)
    assert proc.stderr_tail == ["last words"]
    alive = spawn_argv([PY, "-c", "import time; time.sleep(60)"], stdout=DEVNULL)
    alive.settle_stderr(0.1)
    assert alive.returncode is None  # not killed, only waited for
    alive.kill()
    proc.wait(10)
    proc.close()


def test_a_local_shell_is_named_localhost_unless_told() -> None:
    assert LocalShell().node == "localhost" and LocalShell("pve1").node == "pve1"
    assert LocalShell().command(("zfs", "list")) == ["zfs", "list"]


# --- a grandchild that keeps our stderr pipe open --------------------------------------------

GRANDCHILD = "import time; time.sleep(60)"


def _with_grandchild(then: str) -> str:
    """A child that starts a grandchild holding its stderr, names its pid there, then ``then``."""
    return (
        "import subprocess, sys, time\n"
        f"g = subprocess.Popen([sys.executable, '-c', {GRANDCHILD!r}])\n"
        "print(f'grandchild {g.pid}', file=sys.stderr, flush=True)\n" + then
    )


def _grandchild_pid(proc: object) -> int:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lines = [s for s in proc.stderr_tail if s.startswith("grandchild ")]  # type: ignore[attr-defined]
        if lines:
            return int(lines[0].split()[1])
        time.sleep(0.01)
    raise AssertionError("the child never named its grandchild")


def _end_grandchild(pid: int) -> None:
    """Kill the grandchild by the pid it named, once /proc shows it is still that sleeper."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return
    if GRANDCHILD.encode() in cmdline:
        os.kill(pid, signal.SIGKILL)


def _returns_soon(call: object) -> bool:
    import threading

    t = threading.Thread(target=call, daemon=True)  # type: ignore[arg-type]
    t.start()
    t.join(20)  # the grandchild sleeps 60 s: an unbounded drain would still be waiting
    return not t.is_alive()


def test_wait_does_not_hang_on_a_grandchild_holding_stderr() -> None:
    proc = spawn_argv([PY, "-c", _with_grandchild("sys.exit(3)")], stdout=DEVNULL)
    pid = _grandchild_pid(proc)
    try:
        codes: list[int] = []
        assert _returns_soon(lambda: codes.append(proc.wait()))
        assert codes == [3] and f"grandchild {pid}" in proc.stderr_tail
    finally:
        _end_grandchild(pid)


def test_kill_does_not_hang_on_a_grandchild_holding_stderr() -> None:
    proc = spawn_argv([PY, "-c", _with_grandchild("time.sleep(60)")], stdin=PIPE, stdout=DEVNULL)
    pid = _grandchild_pid(proc)
    try:
        assert _returns_soon(proc.kill)
        assert proc.returncode == -signal.SIGKILL
        assert proc.stdin is not None and proc.stdin.closed
    finally:
        _end_grandchild(pid)


def test_a_script_that_leaves_a_grandchild_still_exits() -> None:
    """The stderr drain is a daemon thread: an interpreter whose child left a grandchild holding
    the pipe exits at once instead of waiting for that grandchild (a hook script would hang)."""
    script = (
        "import sys\n"
        "from pverep.transport.base import spawn_argv, DEVNULL\n"
        f"p = spawn_argv([sys.executable, '-c', {_with_grandchild('pass')!r}], stdout=DEVNULL)\n"
        "p._popen.wait()\n"  # the child is gone; its grandchild still holds the pipe
        "print(p.pid, flush=True)\n"
    )
    # our sys.path, so that the script imports the very pverep under test (mutmut's copy too)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    run = subprocess.Popen([PY, "-c", script], stdout=PIPE, stderr=PIPE, env=env)
    try:
        out, err = run.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        run.kill()
        out, err = run.communicate()
    pids = [int(w) for w in err.decode().split() if w.isdigit()]
    for pid in pids:  # the grandchild named itself on the pipe the script never read
        _end_grandchild(pid)
    assert run.returncode == 0, err.decode()
    assert out.decode().strip().isdigit()


def test_the_stderr_drain_of_a_process_made_here_is_a_daemon() -> None:
    """The same property in this process: mutmut only runs tests that reached the mutated code in
    its own process, and the script above reaches Process only in a child interpreter."""
    proc = spawn_argv([PY, "-c", "pass"], stdout=DEVNULL)
    try:
        assert proc._reader is not None and proc._reader.daemon is True
    finally:
        assert proc.wait(timeout=10) == 0


# --- defaults: a plain child, no stderr pipe, zero timeouts, stdin ---------------------------


def test_a_process_made_without_leads_group_kills_only_its_own_pid() -> None:
    popen = subprocess.Popen(
        ["sh", "-c", "sleep 60 >/dev/null 2>&1 & echo $!; wait"],
        stdout=PIPE, process_group=0,
    )  # fmt: skip
    proc = Process(popen, ["sh"])
    assert popen.stdout is not None
    sleep_pid = int(popen.stdout.readline())
    try:
        proc.kill()
        assert proc.returncode == -signal.SIGKILL
        assert not gone(sleep_pid)  # the group's other member lives on
    finally:
        if b"sleep" in Path(f"/proc/{sleep_pid}/cmdline").read_bytes():
            os.kill(sleep_pid, signal.SIGKILL)


def test_a_process_whose_stderr_is_not_a_pipe_waits_and_kills() -> None:
    popen = subprocess.Popen([PY, "-c", "import sys; sys.exit(4)"], stderr=DEVNULL)
    assert Process(popen, ["x"]).wait() == 4
    popen = subprocess.Popen([PY, "-c", "import time; time.sleep(60)"], stderr=DEVNULL)
    proc = Process(popen, ["x"])
    proc.kill()
    assert proc.returncode == -signal.SIGKILL and proc.stderr_tail == []


def test_a_zero_timeout_is_reported_as_zero() -> None:
    proc = spawn_argv([PY, "-c", "import time; time.sleep(60)"], stdout=DEVNULL)
    with pytest.raises(CommandTimeout) as waited:
        proc.wait(0)
    assert waited.value.timeout == 0.0 and proc.returncode == -signal.SIGKILL
    with pytest.raises(CommandTimeout) as ran:
        run_argv([PY, "-c", "import time; time.sleep(60)"], timeout=0)
    assert ran.value.timeout == 0.0


def test_a_stderr_line_keeps_what_it_ends_with_but_the_line_end() -> None:
    tail = StderrTail()
    for line in ("cannot open 'XX'\r\n", "ends in X\n", "X\n"):
        tail.feed(line)
    assert list(tail.lines) == ["cannot open 'XX'", "ends in X", "X"]


def test_a_spawned_child_stays_in_our_group_unless_asked() -> None:
    proc = LocalShell().spawn([PY, "-c", "import time; time.sleep(60)"], stdout=DEVNULL)
    try:
        assert os.getpgid(proc.pid) == os.getpgid(0) and proc.leads_group is False
    finally:
        proc.kill()


def test_a_command_without_input_reads_dev_null() -> None:
    """No input: stdin is /dev/null, not a pipe (an ssh then never waits on a terminal)."""
    script = "import os; print(os.readlink('/proc/self/fd/0'))"
    assert run_argv([PY, "-c", script]).stdout_text.strip() == "/dev/null"
    assert run_argv([PY, "-c", script], input=b"").stdout_text.startswith("pipe:")
