"""transport/ssh.py: the multiplexing master's life (start, reuse, restart after it died, a
master that fails or never gets ready, close) and the ``ssh -W`` forward through it.

The master is a FAKE: ``master_argv`` is replaced by a small Python process that creates (or
does not create) the control socket path and then waits, as ``ssh -N -o ControlMaster=yes``
does; no sshd runs here (tests/lab drives the real one). Everything else is the real code:
the private directory, the process handling, the argv built around the control path.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

from pverep.transport import ssh
from pverep.transport.base import CommandError

T = ssh.SshTarget("pve2", "10.0.0.2")

#: FAKE master: ``argv[1]``: the control path; ``argv[2]``: "ready" (create it, then wait),
#: "die" (exit 255 with a message) or "hang" (never create it).
MASTER = """
import os, sys, time
path, mode = sys.argv[1], sys.argv[2]
if os.readlink("/proc/self/fd/0") != "/dev/null" or os.readlink("/proc/self/fd/1") != "/dev/null":
    sys.exit(9)  # a master reads and writes nothing: both must be /dev/null
if mode == "die":
    print("ssh: connect to host 10.0.0.2 port 22: No route to host", file=sys.stderr)
    sys.exit(255)
if mode == "ready":
    open(path, "w").close()
time.sleep(600)
"""


class FakeMasterShell(ssh.SshShell):
    def __init__(self, mode: str = "ready", **kw: object) -> None:
        super().__init__(T, prefer_aes_gcm=False, **kw)  # type: ignore[arg-type]
        self.mode = mode
        self.started: list[Path] = []

    def master_argv(self, control_path: Path) -> list[str]:
        self.started.append(control_path)
        return [sys.executable, "-c", MASTER, str(control_path), self.mode]


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_open_starts_one_master_in_a_private_directory_and_reuses_it() -> None:
    shell = FakeMasterShell()
    try:
        assert shell.open() is shell
        path = shell.control_path
        assert path is not None and path.exists() and path.name == "master"
        assert path.parent.name.startswith("pverep-ssh-")
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        master = shell._master
        assert master is not None and master.returncode is None
        assert shell.open() is shell and shell._master is master and shell.started == [path]
        assert shell.command(["true"]) == [
            *ssh.ssh_options(T), "-o", f"ControlPath={path}", "-o", "ControlMaster=no",
            "root@10.0.0.2", "--", "true",
        ]  # fmt: skip
    finally:
        shell.close()


def test_close_ends_the_master_by_its_pid_and_removes_the_directory() -> None:
    shell = FakeMasterShell()
    shell.open()
    master, path = shell._master, shell.control_path
    assert master is not None and path is not None
    shell.close()
    assert master.returncode is not None and not alive(master.pid)
    assert not path.parent.exists()
    assert shell._master is None and shell.control_path is None
    shell.close()  # twice: nothing left to do


def test_a_master_that_died_is_replaced_on_the_next_open() -> None:
    shell = FakeMasterShell()
    try:
        shell.open()
        first, first_path = shell._master, shell.control_path
        assert first is not None and first_path is not None
        first.kill()
        first.wait(5)
        shell.open()
        assert shell._master is not first and shell._master is not None
        assert shell._master.returncode is None
        assert not first_path.parent.exists() and shell.control_path != first_path
        assert len(shell.started) == 2
    finally:
        shell.close()


def test_the_master_reads_dev_null_whatever_our_own_stdin_is() -> None:
    """Run from a terminal or a hook's pipe, the master must not inherit (and eat) our stdin:
    the FAKE master exits 9 unless its stdin and stdout are /dev/null."""
    read_end, write_end = os.pipe()
    saved = os.dup(0)
    os.dup2(read_end, 0)  # our stdin is now a pipe, as under a hook script
    shell = FakeMasterShell()
    try:
        shell.open()
        master = shell._master
        assert master is not None and master.returncode is None
    finally:
        os.dup2(saved, 0)
        for fd in (saved, read_end, write_end):
            os.close(fd)
        shell.close()


def test_a_master_that_fails_to_start_raises_with_its_exit_and_message() -> None:
    shell = FakeMasterShell("die")
    with pytest.raises(CommandError) as err:
        shell.open()
    assert err.value.returncode == 255
    assert err.value.stderr_tail == ["ssh: connect to host 10.0.0.2 port 22: No route to host"]
    assert shell._master is None and shell.control_path is None
    assert not shell.started[0].parent.exists()


def test_a_master_that_never_gets_ready_is_stopped_at_the_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ssh, "MASTER_START_TIMEOUT", 0.3)
    shell = FakeMasterShell("hang")
    with pytest.raises(CommandError) as err:
        shell.open()
    assert err.value.returncode == -1
    assert shell._master is None and not shell.started[0].parent.exists()


def test_the_with_block_opens_and_closes() -> None:
    with FakeMasterShell() as shell:
        master = shell._master
        assert master is not None and master.returncode is None
    assert master.returncode is not None and shell.control_path is None


def test_without_multiplexing_no_master_and_no_forward() -> None:
    shell = FakeMasterShell(multiplex=False)
    assert shell.open() is shell
    assert shell.started == [] and shell.control_path is None
    assert shell.forward_argv(4000) is None


def test_forward_rides_on_the_master_to_the_targets_loopback() -> None:
    shell = FakeMasterShell()
    assert shell.forward_argv(4000) is None  # no master yet
    try:
        shell.open()
        path = shell.control_path
        assert shell.forward_argv(4000) == [
            *ssh.ssh_options(T), "-o", f"ControlPath={path}", "-o", "ControlMaster=no",
            "-W", "127.0.0.1:4000", "root@10.0.0.2",
        ]  # fmt: skip
        assert shell.forward_argv(1) is not None and shell.forward_argv(65535) is not None
        assert shell.forward_argv(0) is None and shell.forward_argv(65536) is None
        assert shell.forward_argv(-1) is None
    finally:
        shell.close()


def test_the_local_cpu_check_reads_proc_cpuinfo(monkeypatch: pytest.MonkeyPatch) -> None:
    with open("/proc/cpuinfo") as f:
        expected = ssh.cpu_has_aes(f.read())
    ssh.local_cpu_has_aes.cache_clear()
    try:
        assert ssh.local_cpu_has_aes() is expected
        ssh.local_cpu_has_aes.cache_clear()
        monkeypatch.setattr(ssh, "Path", lambda p: Path(os.devnull + ".missing"))
        assert ssh.local_cpu_has_aes() is False
    finally:
        ssh.local_cpu_has_aes.cache_clear()


def test_close_after_the_directory_went_away() -> None:
    import shutil

    shell = FakeMasterShell()
    shell.open()
    path = shell.control_path
    assert path is not None
    shutil.rmtree(path.parent)  # e.g. a tmp cleaner
    shell.close()
    assert shell.control_path is None and shell._master is None


def test_aes_preference_comes_from_this_cpu_unless_given() -> None:
    assert ssh.SshShell(T).prefer_aes_gcm is ssh.local_cpu_has_aes()
    assert ssh.SshShell(T, prefer_aes_gcm=False).prefer_aes_gcm is False


def test_cpuinfo_flags_lines() -> None:
    assert ssh.cpu_has_aes("flags:aes") is True
    assert ssh.cpu_has_aes("flags\t: x:y aes") is True
    assert ssh.cpu_has_aes("model name\t: aes\n") is False
    assert ssh.cpu_has_aes("flags\t: aesni sse\n") is False


def test_target_and_command_errors_name_the_bad_value() -> None:
    from pverep.errors import ValidationError

    with pytest.raises(ValidationError) as err:
        ssh.SshTarget("pve 2", "10.0.0.2")
    assert str(err.value) == "invalid node name 'pve 2'"
    with pytest.raises(ValidationError) as err:
        ssh.SshTarget("pve2", "10.0.0.256")
    assert str(err.value) == "invalid IP address '10.0.0.256'"
    with pytest.raises(ValidationError) as err:
        ssh.quote_remote([])
    assert str(err.value) == "empty remote command"
    assert ssh.mtunnel_argv(T, "10.77.0.5/24")[-3:] == ["-migration_network", "10.77.0.5/24",
                                                        "-get_migration_ip"]  # fmt: skip
