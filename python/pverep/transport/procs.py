"""Identify and stop processes this program did not start itself (here: a stale importer).

A process is named by (pid, start time): field 22 of ``/proc/<pid>/stat`` is fixed for the
life of a process, so a pid that was recycled by an unrelated process never matches a record.
Signals go through a pidfd opened *before* the identity check, which closes the window in
which the pid could be recycled between check and kill.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

PROC = "/proc"
_POLL = 0.02


@dataclass(frozen=True)
class ProcessId:
    """One process, as opposed to one pid."""

    pid: int
    start: int  # clock ticks since boot (field 22 of /proc/<pid>/stat)


@dataclass(frozen=True)
class _Stat:
    state: str
    pgid: int
    start: int


def _stat(pid: int) -> _Stat | None:
    try:
        with open(f"{PROC}/{pid}/stat", encoding="ascii", errors="replace") as fh:
            raw = fh.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # comm (field 2) may contain spaces and parentheses: split after its last ')'.
    rest = raw[raw.rindex(")") + 2 :].split()
    return _Stat(state=rest[0], pgid=int(rest[2]), start=int(rest[19]))


def identify(pid: int) -> ProcessId | None:
    """The process now running as ``pid`` (None: no such process)."""
    stat = _stat(pid)
    return None if stat is None else ProcessId(pid, stat.start)


def this_process() -> ProcessId:
    me = identify(os.getpid())
    if me is None:  # only without procfs, which this program cannot run without anyway
        raise OSError(f"cannot read {PROC}/self/stat")
    return me


def is_running(proc: ProcessId) -> bool:
    """Still the recorded process, and not a zombie (a zombie holds nothing any more)."""
    stat = _stat(proc.pid)
    return stat is not None and stat.start == proc.start and stat.state != "Z"


@contextlib.contextmanager
def _pidfd(pid: int) -> Iterator[int | None]:
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        yield None
        return
    except OSError:  # kernel without pidfd (< 5.3): fall back to the plain pid
        yield -1
        return
    try:
        yield fd
    finally:
        os.close(fd)


def kill(proc: ProcessId, sig: int = signal.SIGKILL) -> bool:
    """Signal ``proc`` if it is still the recorded process; True if a signal was sent."""
    with _pidfd(proc.pid) as fd:
        if fd is None or not is_running(proc):
            return False
        try:
            if fd >= 0:
                signal.pidfd_send_signal(fd, sig)
            else:
                os.kill(proc.pid, sig)
        except ProcessLookupError:
            return False
        return True


def kill_group(leader: ProcessId, sig: int = signal.SIGKILL) -> bool:
    """Signal the process group that ``leader`` leads, if ``leader`` is still the recorded
    process and still leads it (a live leader keeps its pgid from being reused)."""
    with _pidfd(leader.pid) as fd:
        if fd is None or not is_running(leader):
            return False
        stat = _stat(leader.pid)
        if stat is None or stat.pgid != leader.pid:
            return kill(leader, sig)
        try:
            os.killpg(leader.pid, sig)
        except ProcessLookupError:
            return False
        return True


def wait_gone(procs: Iterable[ProcessId], timeout: float) -> bool:
    """Wait until none of ``procs`` runs any more; False if one still runs after ``timeout``."""
    pending = list(procs)
    deadline = time.monotonic() + timeout
    while True:
        pending = [p for p in pending if is_running(p)]
        if not pending:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL)
