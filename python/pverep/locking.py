"""The two kinds of lock pvesr uses.

* ``flock`` on a node-local lock file (state file, run lock, guest migration lock), with a
  timeout, the ``trying to acquire lock...`` notice and pvesr's error text. Re-entrant within one
  thread, like PVE's ``lock_file`` nesting for the migration lock.
* The pmxcfs lock for a cluster file: ``mkdir /etc/pve/priv/lock/<lockid>``, 10 s to acquire,
  60 s for the locked code, ``cfs-lock '<lockid>' error: …`` on failure.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO, TypeVar

from pverep.errors import LockError, PverepError
from pverep.paths import Paths

T = TypeVar("T")

#: Default flock timeout of PVE's lock_file.
FLOCK_TIMEOUT = 10.0
#: pmxcfs lock: time to acquire, time the locked code may run, age after which pmxcfs expires it.
CFS_ACQUIRE_TIMEOUT = 10.0
CFS_RUN_TIMEOUT = 60
CFS_LOCK_EXPIRY = 120.0

_POLL = 0.05

_held: dict[tuple[str, int], tuple[int, int]] = {}  # (path, thread) -> (fd, depth)
_held_guard = threading.Lock()


@contextlib.contextmanager
def flock(
    path: Path, timeout: float = FLOCK_TIMEOUT, *, stderr: TextIO | None = None
) -> Iterator[None]:
    """Hold an exclusive flock on ``path`` (created if missing, parents too)."""
    key = (str(path), threading.get_ident())
    with _held_guard:
        held = _held.get(key)
        if held is not None:
            _held[key] = (held[0], held[1] + 1)
    if held is not None:
        try:
            yield
        finally:
            with _held_guard:
                fd, depth = _held[key]
                _held[key] = (fd, depth - 1)
        return

    fd = _open_lock_file(path)
    try:
        _acquire(fd, path, timeout, stderr or sys.stderr)
        with _held_guard:
            _held[key] = (fd, 1)
        try:
            yield
        finally:
            with _held_guard:
                del _held[key]
    finally:
        os.close(fd)  # closing releases the flock


def _open_lock_file(path: Path) -> int:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise LockError(f"can't lock file '{path}' - can't open file - {err.strerror}") from None


def _acquire(fd: int, path: Path, timeout: float, stderr: TextIO) -> None:
    if _try_flock(fd):
        return
    stderr.write("trying to acquire lock...")
    stderr.flush()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(_POLL)
        if _try_flock(fd):
            stderr.write(" OK\n")
            return
    stderr.write(" failed\n")
    raise LockError(f"can't lock file '{path}' - got timeout")


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


# --- pmxcfs lock ------------------------------------------------------------------------------


class CfsLockTimeout(LockError):
    """The code run under a cfs lock exceeded its time."""


def cfs_lock_file(
    paths: Paths,
    filename: str,
    code: Callable[[], T],
    *,
    acquire_timeout: float = CFS_ACQUIRE_TIMEOUT,
    run_timeout: int = CFS_RUN_TIMEOUT,
    stderr: TextIO | None = None,
) -> T:
    """Run ``code`` under the pmxcfs lock for ``/etc/pve/<filename>`` (``replication.cfg``)."""
    lockid = "file-" + filename.replace(".", "_")
    lock_dir = paths.cfs_lock_dir
    lock = lock_dir / lockid
    try:
        _cfs_acquire(paths, lock, lockid, acquire_timeout, stderr or sys.stderr)
    except PverepError as err:
        raise LockError(f"cfs-lock '{lockid}' error: {err}") from None
    try:
        with _alarm(run_timeout, f"'{lockid}'-locked command timed out - aborting"):
            return code()
    finally:
        with contextlib.suppress(OSError):
            lock.rmdir()


def _cfs_acquire(paths: Paths, lock: Path, lockid: str, timeout: float, stderr: TextIO) -> None:
    if paths.etc_pve.is_dir():
        with contextlib.suppress(OSError):
            lock.parent.mkdir(parents=True, exist_ok=True)
    if not lock.parent.is_dir():
        raise LockError("pve cluster filesystem not online.")
    pmxcfs = _on_pmxcfs(lock.parent)
    deadline = time.monotonic() + timeout
    told = False
    while True:
        try:
            lock.mkdir()
            return
        except FileExistsError:
            pass
        except OSError as err:
            if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise LockError("no quorum!") from None
            raise LockError(f"unable to create lock - {err.strerror}") from None
        if time.monotonic() >= deadline:
            raise LockError("got lock request timeout")
        if not told:
            stderr.write(f"trying to acquire cfs lock '{lockid}' ...\n")
            stderr.flush()
            told = True
        _expire_stale(lock, pmxcfs)
        time.sleep(_POLL * 4)


def _expire_stale(lock: Path, pmxcfs: bool) -> None:
    """pmxcfs drops locks older than 120 s when asked with utime(0, 0); a plain directory
    (tests, the lab's shared /etc/pve) gets the same expiry by age, so a crashed holder cannot
    block the cluster file forever."""
    with contextlib.suppress(OSError):
        if pmxcfs:
            os.utime(lock, (0, 0))
        elif time.time() - lock.stat().st_mtime > CFS_LOCK_EXPIRY:
            lock.rmdir()


def _on_pmxcfs(path: Path) -> bool:
    """True if ``path`` lives on a FUSE mount (pmxcfs mounts /etc/pve as ``/dev/fuse``)."""
    try:
        real = os.path.realpath(path)
        with open("/proc/self/mounts", encoding="utf-8", errors="replace") as fh:
            mounts = [line.split()[:3] for line in fh if line.strip()]
    except OSError:
        return False
    best, fstype = "", ""
    for dev, mnt, kind in mounts:
        mnt = mnt.replace("\\040", " ")
        if (real == mnt or real.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
            best, fstype = mnt, f"{dev} {kind}"
    return fstype == "/dev/fuse fuse"


@contextlib.contextmanager
def _alarm(seconds: int, message: str) -> Iterator[None]:
    """Abort the block after ``seconds`` (main thread only; elsewhere it runs unbounded)."""
    if threading.current_thread() is not threading.main_thread() or seconds <= 0:
        yield
        return
    if signal.getitimer(signal.ITIMER_REAL)[0] > 0:
        yield  # someone else owns the alarm; do not steal it
        return

    def on_alarm(signum: int, frame: object) -> None:
        raise CfsLockTimeout(message)

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
