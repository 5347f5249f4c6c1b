"""flock with timeout and pvesr's texts; the pmxcfs mkdir-lock with its timeouts and expiry."""

from __future__ import annotations

import io
import os
import threading
import time
from pathlib import Path

import pytest

from pverep import locking
from pverep.errors import LockError
from pverep.paths import Paths

from .lockprobe import busy, hold


def test_flock_timeout_text(tmp_path: Path) -> None:
    lock = tmp_path / "var/lock/pvesr.lck"
    fd = hold(lock)
    err = io.StringIO()
    entered: list[bool] = []
    try:
        with pytest.raises(LockError) as exc, locking.flock(lock, 0.2, stderr=err):
            entered.append(True)
    finally:
        os.close(fd)
    assert entered == []  # the locked code never ran
    assert str(exc.value) == f"can't lock file '{lock}' - got timeout"
    assert err.getvalue() == "trying to acquire lock... failed\n"


def test_flock_waits_then_succeeds(tmp_path: Path) -> None:
    lock = tmp_path / "state.lck"
    fd = hold(lock)
    threading.Timer(0.2, os.close, [fd]).start()
    err = io.StringIO()
    with locking.flock(lock, 5, stderr=err):
        pass
    assert err.getvalue() == "trying to acquire lock... OK\n"


def test_flock_is_reentrant_in_one_thread(tmp_path: Path) -> None:
    lock = tmp_path / "pve-migrate-100"
    with locking.flock(lock, 0.2):
        with locking.flock(lock, 0.2):  # re-entered at once, no timeout against itself
            assert busy(lock)
        assert busy(lock)  # still held after the inner block
    assert not busy(lock)  # released with the outer block
    with locking.flock(lock, 0.2), locking.flock(lock, 0.2):
        assert busy(lock)
    assert not busy(lock)


def cfs_paths(tmp_path: Path) -> Paths:
    (tmp_path / "etc/pve").mkdir(parents=True)
    return Paths(tmp_path)


def test_cfs_lock_runs_code_and_cleans_up(tmp_path: Path) -> None:
    paths = cfs_paths(tmp_path)
    seen = []

    def code() -> int:
        seen.append((paths.cfs_lock_dir / "file-replication_cfg").is_dir())
        return 7

    assert locking.cfs_lock_file(paths, "replication.cfg", code) == 7
    assert seen == [True]
    assert not (paths.cfs_lock_dir / "file-replication_cfg").exists()


def test_cfs_lock_timeout_and_code_errors_pass_through(tmp_path: Path) -> None:
    paths = cfs_paths(tmp_path)
    held = paths.cfs_lock_dir / "file-replication_cfg"
    held.mkdir(parents=True)
    err = io.StringIO()
    start = time.monotonic()
    with pytest.raises(LockError) as exc:
        locking.cfs_lock_file(paths, "replication.cfg", lambda: 1, acquire_timeout=0.3, stderr=err)
    assert time.monotonic() - start < 2
    assert str(exc.value) == "cfs-lock 'file-replication_cfg' error: got lock request timeout"
    assert err.getvalue() == "trying to acquire cfs lock 'file-replication_cfg' ...\n"
    assert held.is_dir()  # someone else's lock is not ours to remove
    held.rmdir()

    def boom() -> None:
        raise LockError("inner problem")

    with pytest.raises(LockError, match=r"^inner problem$"):
        locking.cfs_lock_file(paths, "replication.cfg", boom)


def test_cfs_lock_expires_stale_lock_on_plain_directory(tmp_path: Path) -> None:
    paths = cfs_paths(tmp_path)
    stale = paths.cfs_lock_dir / "file-replication_cfg"
    stale.mkdir(parents=True)
    old = time.time() - locking.CFS_LOCK_EXPIRY - 5
    os.utime(stale, (old, old))
    assert (
        locking.cfs_lock_file(paths, "replication.cfg", lambda: "ok", stderr=io.StringIO()) == "ok"
    )


def test_cfs_locked_command_timeout(tmp_path: Path) -> None:
    paths = cfs_paths(tmp_path)
    with pytest.raises(LockError, match="'file-replication_cfg'-locked command timed out"):
        locking.cfs_lock_file(paths, "replication.cfg", lambda: time.sleep(3), run_timeout=1)
    assert not (paths.cfs_lock_dir / "file-replication_cfg").exists()


def test_cfs_lock_without_etc_pve(tmp_path: Path) -> None:
    with pytest.raises(LockError, match="pve cluster filesystem not online"):
        locking.cfs_lock_file(Paths(tmp_path), "replication.cfg", lambda: 1)
    assert not (tmp_path / "etc").exists()
