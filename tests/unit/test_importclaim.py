"""The per-volume import registry with real processes: a stale importer and its receiver's
process group are stopped, a recycled pid is never signalled, a finished import unregisters."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pverep.engine.importclaim import ImportRecord, ImportRegistry
from pverep.errors import PverepError
from pverep.transport import procs
from pverep.transport.procs import ProcessId

VOLUME = "rpool/data/subvol-100-disk-0"

#: A stand-in for a stale `pverep import`: claims the volume, starts a "receiver" leading its
#: own process group (with a child of its own), records it, says ready, then hangs.
HOLDER = textwrap.dedent(
    """
    import subprocess, sys, time
    from pathlib import Path
    from pverep.engine.importclaim import ImportRegistry
    reg = ImportRegistry(Path(sys.argv[1]), print)
    claim = reg.claim(sys.argv[2])
    recv = subprocess.Popen(["sh", "-c", "sleep 600 & wait"], process_group=0)
    claim.set_receiver(recv.pid)
    print("ready", flush=True)
    time.sleep(600)
    """
)


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path), VOLUME], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "ready\n"
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    proc.stdout.close()


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            rest = stat[stat.rindex(")") + 2 :].split()
            if int(rest[2]) == pgid and rest[0] != "Z":
                members.append(int(entry.name))
    return members


def test_claim_records_itself_and_its_receiver_and_release_unregisters(tmp_path: Path) -> None:
    lines: list[str] = []
    reg = ImportRegistry(tmp_path, lines.append)
    with subprocess.Popen(["sleep", "30"]) as child:
        try:
            with reg.claim(VOLUME) as claim:
                rec = reg.read(VOLUME)
                assert rec is not None and rec.importer == procs.this_process()
                assert rec.receiver is None
                claim.set_receiver(child.pid)
                rec = reg.read(VOLUME)
                assert rec is not None and rec.receiver == procs.identify(child.pid)
            assert reg.read(VOLUME) is None
            with reg.claim(VOLUME):  # free again at once, nobody to stop
                pass
        finally:
            child.kill()
    assert lines == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rpool%2Fdata%2Fsubvol-100-disk-0.lock"]


def test_newer_claim_stops_the_stale_importer_and_its_receivers_group(
    tmp_path: Path, holder: subprocess.Popen[str]
) -> None:
    reg = ImportRegistry(tmp_path, lambda line: None)
    stale = reg.read(VOLUME)
    assert stale is not None and stale.receiver is not None
    assert stale.importer.pid == holder.pid
    deadline = time.monotonic() + 5  # the receiver's sh may not have started its sleep yet
    while len(group := _group_members(stale.receiver.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(group) == 2  # sh and its sleep

    lines: list[str] = []
    reg = ImportRegistry(tmp_path, lines.append, receiver_grace=0.2)
    with reg.claim(VOLUME):
        assert holder.wait(5) == -signal.SIGKILL
        assert not procs.is_running(stale.receiver)
        assert _group_members(stale.receiver.pid) == []
        rec = reg.read(VOLUME)
        assert rec is not None and rec.importer == procs.this_process()
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stale.since))
    assert lines == [
        f"stopping stale import of '{VOLUME}' (pid {holder.pid}, "
        f"zfs recv pid {stale.receiver.pid}, started {started}): superseded by this import"
    ]


def test_a_recycled_pid_is_never_signalled(tmp_path: Path) -> None:
    """The lock is held by a live process whose record names a pid now used by another
    process (other start time): that process survives, the claim gives up after its timeout."""
    reg = ImportRegistry(tmp_path, lambda line: None, timeout=0.5, receiver_grace=0.1)
    with subprocess.Popen(["sleep", "30"]) as bystander:
        try:
            locker = subprocess.Popen(
                ["flock", str(reg.lock_path(VOLUME)), "sleep", "30"], stdin=subprocess.DEVNULL
            )
            real = procs.identify(bystander.pid)
            assert real is not None
            fake = ProcessId(real.pid, real.start + 1)
            reg.write(ImportRecord(VOLUME, fake, fake, 0.0))
            try:
                _wait_locked(reg, VOLUME)
                with pytest.raises(PverepError) as err:
                    reg.claim(VOLUME)
                assert str(err.value) == (
                    f"another import of '{VOLUME}' is running (pid {real.pid}) and did not "
                    "stop within 0.5 s"
                )
                assert procs.is_running(real)
            finally:
                locker.kill()
                locker.wait()
        finally:
            bystander.kill()


def _wait_locked(reg: ImportRegistry, volume: str) -> None:
    import fcntl
    import time

    fd = os.open(reg.lock_path(volume), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + 5
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(fd, fcntl.LOCK_UN)
            except BlockingIOError:
                return
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"{",
        b"[]",
        b'{"volume":"x"}',
        b'{"volume":"x","importer":["a",1],"receiver":null,"since":0}',
    ],
)
def test_a_malformed_record_is_ignored(data: bytes) -> None:
    assert ImportRecord.from_json(data) is None


def test_record_round_trip() -> None:
    rec = ImportRecord(VOLUME, ProcessId(10, 20), ProcessId(11, 21), 1234.0)
    assert ImportRecord.from_json(rec.to_json()) == rec


def test_a_claim_held_by_this_same_process_is_waited_for_never_stopped(tmp_path: Path) -> None:
    # a ``pverep serve`` session runs its requests in one process: one request must never
    # kill the session (itself) to take a volume another request of it holds
    lines: list[str] = []
    reg = ImportRegistry(tmp_path, lines.append, timeout=0.3)
    busy = r"another import of .* is running"
    with reg.claim(VOLUME), pytest.raises(PverepError, match=busy):
        reg.claim(VOLUME)
    assert lines == []  # no "stopping stale import" of itself
    with reg.claim(VOLUME):  # released: free again
        pass


#: A stand-in for a ``pverep serve`` session hosting an import: its claim is ``hosted``; when
#: its receiver dies the request fails and releases the claim, the session itself lives on.
HOSTED_HOLDER = textwrap.dedent(
    """
    import subprocess, sys, time
    from pathlib import Path
    from pverep.engine.importclaim import ImportRegistry
    reg = ImportRegistry(Path(sys.argv[1]), print, clock=lambda: 86400.0 * 365)
    claim = reg.claim(sys.argv[2], hosted=True)
    recv = subprocess.Popen(["sh", "-c", "sleep 600 & wait"], process_group=0)
    claim.set_receiver(recv.pid)
    print("ready", flush=True)
    recv.wait()
    claim.release()
    print("released", flush=True)
    time.sleep(600)
    """
)


def test_superseding_a_session_hosted_import_stops_only_its_receiver(tmp_path: Path) -> None:
    session = subprocess.Popen(
        [sys.executable, "-c", HOSTED_HOLDER, str(tmp_path), VOLUME],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert session.stdout is not None
    try:
        assert session.stdout.readline() == "ready\n"
        stale = ImportRegistry(tmp_path, lambda line: None).read(VOLUME)
        assert stale is not None and stale.hosted and stale.receiver is not None
        lines: list[str] = []
        reg = ImportRegistry(tmp_path, lines.append, timeout=10)
        with reg.claim(VOLUME):
            assert not procs.is_running(stale.receiver)
            assert _group_members(stale.receiver.pid) == []
            rec = reg.read(VOLUME)
            assert rec is not None and rec.importer == procs.this_process() and not rec.hosted
        assert session.stdout.readline() == "released\n"
        assert session.poll() is None  # the session (the importer process) lives on
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stale.since))
        assert lines == [
            f"stopping stale import of '{VOLUME}' (serve session pid {session.pid}, "
            f"zfs recv pid {stale.receiver.pid}, started {started}): superseded by this import"
        ]
    finally:
        session.kill()
        session.wait()
        session.stdout.close()


def test_a_hosted_record_round_trips_and_an_old_record_is_not_hosted() -> None:
    rec = ImportRecord(VOLUME, ProcessId(10, 20), ProcessId(11, 21), 1234.0, hosted=True)
    assert ImportRecord.from_json(rec.to_json()) == rec
    plain = ImportRecord(VOLUME, ProcessId(10, 20), None, 1234.0)
    assert b"hosted" not in plain.to_json()
    assert ImportRecord.from_json(plain.to_json()) == plain


def test_the_record_on_disk() -> None:
    """The exact bytes another (newer or older) pverep reads: compact JSON, one line."""
    rec = ImportRecord(VOLUME, ProcessId(10, 20), ProcessId(11, 21), 1234.75)
    assert rec.to_json() == (
        b'{"volume":"rpool/data/subvol-100-disk-0","importer":[10,20],"receiver":[11,21],'
        b'"since":1234}\n'
    )
    hosted = ImportRecord(VOLUME, ProcessId(10, 20), None, 5.0, hosted=True)
    assert hosted.to_json() == (
        b'{"volume":"rpool/data/subvol-100-disk-0","importer":[10,20],"receiver":null,'
        b'"since":5,"hosted":true}\n'
    )
    # only a JSON true is hosted: a record is never trusted further than it says
    assert ImportRecord.from_json(hosted.to_json().replace(b"true", b'"yes"')) == ImportRecord(
        VOLUME, ProcessId(10, 20), None, 5.0, hosted=False
    )


def test_the_registry_files_are_private_and_named_after_the_volume(tmp_path: Path) -> None:
    directory = tmp_path / "a" / "imports"
    reg = ImportRegistry(directory, lambda line: None, clock=lambda: 4321.9)
    with reg.claim("tank/vm 1%"):
        assert (tmp_path / "a").is_dir()
        assert directory.stat().st_mode & 0o777 == 0o700
        assert sorted(p.name for p in directory.iterdir()) == [
            "tank%2Fvm%201%25.json",
            "tank%2Fvm%201%25.lock",
        ]
        for p in directory.iterdir():
            assert p.stat().st_mode & 0o777 == 0o600
        assert (directory / "tank%2Fvm%201%25.json").read_bytes() == ImportRecord(
            "tank/vm 1%", procs.this_process(), None, 4321.0
        ).to_json()
        rec = reg.read("tank/vm 1%")
        assert rec is not None and rec.since == 4321.0 and not rec.hosted
    with reg.claim("tank/vm 1%", hosted=True):
        rec = reg.read("tank/vm 1%")
        assert rec is not None and rec.hosted


def test_a_record_of_another_volume_or_a_broken_one_is_not_read(tmp_path: Path) -> None:
    reg = ImportRegistry(tmp_path, lambda line: None)
    other = ImportRecord("rpool/other", ProcessId(10, 20), None, 0.0)
    reg.record_path(VOLUME).write_bytes(other.to_json())
    assert reg.read(VOLUME) is None
    reg.record_path(VOLUME).write_bytes(b"{")
    assert reg.read(VOLUME) is None
    reg.record_path(VOLUME).unlink()
    assert reg.read(VOLUME) is None


def test_release_is_idempotent_and_tolerates_a_removed_record(tmp_path: Path) -> None:
    reg = ImportRegistry(tmp_path, lambda line: None, timeout=0.2)
    claim = reg.claim(VOLUME)
    reg.record_path(VOLUME).unlink()
    claim.release()
    claim.release()
    with reg.claim(VOLUME):  # the lock is free
        pass


def test_the_lock_is_not_inherited_by_children(tmp_path: Path) -> None:
    """Only the importer holds its flock: a child that outlives it (a receiver hanging on)
    must not keep the volume claimed."""
    reg = ImportRegistry(tmp_path, lambda line: None, timeout=0.3)
    with reg.claim(VOLUME):
        child = subprocess.Popen(["sleep", "30"], close_fds=False)
    try:
        with reg.claim(VOLUME):
            pass
    finally:
        child.kill()
        child.wait()


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_a_failed_claim_closes_its_lock_fd_and_names_no_pid_without_a_record(
    tmp_path: Path,
) -> None:
    reg = ImportRegistry(tmp_path, lambda line: None, timeout=0.3)
    tmp_path.mkdir(exist_ok=True)
    locker = subprocess.Popen(
        ["flock", str(reg.lock_path(VOLUME)), "sleep", "30"], stdin=subprocess.DEVNULL
    )
    try:
        _wait_locked(reg, VOLUME)
        before = _open_fds()
        with pytest.raises(PverepError) as err:
            reg.claim(VOLUME)
        assert str(err.value) == (
            f"another import of '{VOLUME}' is running and did not stop within 0.3 s"
        )
        assert _open_fds() == before
    finally:
        locker.kill()
        locker.wait()


def test_a_receiver_left_behind_by_a_dead_importer_is_stopped(tmp_path: Path) -> None:
    """The importer is gone (its lock with it), its receiver still runs: the new claim gives
    it the grace time, then kills its process group."""
    reg = ImportRegistry(tmp_path, lambda line: None, receiver_grace=0.2)
    with subprocess.Popen(["sh", "-c", "sleep 600 & wait"], process_group=0) as recv:
        try:
            receiver = procs.identify(recv.pid)
            assert receiver is not None
            dead = ProcessId(receiver.pid, receiver.start + 1)  # no such process
            reg.write(ImportRecord(VOLUME, dead, receiver, 0.0))
            start = time.monotonic()
            with reg.claim(VOLUME):
                assert time.monotonic() - start >= 0.2
                assert recv.wait(5) == -signal.SIGKILL
                assert _group_members(recv.pid) == []
        finally:
            if recv.poll() is None:
                recv.kill()


#: A stale import that has not started its receiver yet.
BARE_HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from pverep.engine.importclaim import ImportRegistry
    claim = ImportRegistry(Path(sys.argv[1]), print, clock=lambda: 86400.0 * 365).claim(sys.argv[2])
    print("ready", flush=True)
    time.sleep(600)
    """
)


def test_a_stale_import_without_a_receiver_is_stopped_and_logged(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", BARE_HOLDER, str(tmp_path), VOLUME],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    try:
        assert proc.stdout.readline() == "ready\n"
        lines: list[str] = []
        with ImportRegistry(tmp_path, lines.append, timeout=10).claim(VOLUME):
            assert proc.wait(5) == -signal.SIGKILL
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(86400.0 * 365))
        assert lines == [
            f"stopping stale import of '{VOLUME}' (pid {proc.pid}, started {started}): "
            "superseded by this import"
        ]
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()


def test_a_recorded_importer_that_is_gone_is_not_signalled_or_logged(tmp_path: Path) -> None:
    """The lock is held by someone else while the record names a process that no longer
    exists: nothing is signalled, nothing logged; the claim waits for the lock."""
    lines: list[str] = []
    reg = ImportRegistry(tmp_path, lines.append, timeout=5)
    locker = subprocess.Popen(
        ["flock", str(reg.lock_path(VOLUME)), "sleep", "0.5"], stdin=subprocess.DEVNULL
    )
    try:
        _wait_locked(reg, VOLUME)
        me = procs.this_process()
        reg.write(ImportRecord(VOLUME, ProcessId(me.pid, me.start + 1), None, 0.0))
        with reg.claim(VOLUME):
            assert locker.poll() == 0  # it ended by itself, unsignalled
        assert lines == []
    finally:
        if locker.poll() is None:
            locker.kill()
        locker.wait()


def test_a_hosted_claim_stays_hosted_when_its_receiver_is_recorded(tmp_path: Path) -> None:
    reg = ImportRegistry(tmp_path, lambda line: None, clock=lambda: 77.0)
    with subprocess.Popen(["sleep", "30"]) as child:
        try:
            with reg.claim(VOLUME, hosted=True) as claim:
                claim.set_receiver(child.pid)
                expected = ImportRecord(
                    VOLUME, procs.this_process(), procs.identify(child.pid), 77.0, hosted=True
                )
                assert claim.record == expected and reg.read(VOLUME) == expected
        finally:
            child.kill()


def test_a_hosted_import_whose_receiver_is_not_recorded_yet_is_waited_for(tmp_path: Path) -> None:
    """A session's claim before its receiver is recorded: nothing to stop yet, the new claim
    waits (here until its timeout) and signals nobody."""
    lines: list[str] = []
    reg = ImportRegistry(tmp_path, lines.append, timeout=0.3)
    with subprocess.Popen(["sleep", "30"]) as session:
        locker = subprocess.Popen(
            ["flock", str(reg.lock_path(VOLUME)), "sleep", "30"], stdin=subprocess.DEVNULL
        )
        try:
            _wait_locked(reg, VOLUME)
            importer = procs.identify(session.pid)
            assert importer is not None
            reg.write(ImportRecord(VOLUME, importer, None, 0.0, hosted=True))
            with pytest.raises(PverepError) as err:
                reg.claim(VOLUME)
            assert str(err.value) == (
                f"another import of '{VOLUME}' is running (pid {session.pid}) and did not "
                "stop within 0.3 s"
            )
            assert procs.is_running(importer) and lines == []
        finally:
            locker.kill()
            locker.wait()
            session.kill()
