"""The state file is written under pvesr's locks: the state flock always, and the guest's
migration lock for per-guest writes. Checked while the write happens, not only before."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pverep.config import state
from pverep.config.state import StateStore
from pverep.errors import LockError
from pverep.paths import Paths

from .lockprobe import busy, hold

TID = "local/pve2"
ENTRY = {"last_sync": 1700000100, "last_try": 1700000100, "fail_count": 0}


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    paths = Paths(tmp_path)
    paths.state_lock.parent.mkdir(parents=True)
    paths.migrate_lock_dir.mkdir(parents=True)
    return StateStore(paths, lock_timeout=0.2)


def test_locks_are_held_while_the_file_is_written(
    store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    held: list[tuple[str, bool, bool]] = []
    real_write = state.atomic_write

    def spy(path: Path, data: bytes, mode: int = 0o644) -> None:
        locks = (busy(store.paths.state_lock), busy(store.paths.migrate_lock(100)))
        held.append((path.name, *locks))
        real_write(path, data, mode)

    monkeypatch.setattr(state, "atomic_write", spy)
    store.write_job_state(100, TID, ENTRY)
    store.schedule_job_now(100, TID)
    store.write_vmid_job_states(100, {TID: ENTRY})
    name = store.path.name
    assert held == [(name, True, True)] * 3  # per guest: state lock and migration lock
    store.purge_old_states([(100, TID)])
    store.delete_guest_states(100)
    assert held[3:] == [(name, True, False)] * 2  # whole file: the state lock
    assert store.read() == {}


@pytest.mark.parametrize("lock", ["state", "migrate"])
def test_a_held_lock_blocks_the_write(store: StateStore, lock: str) -> None:
    store.write_job_state(100, TID, ENTRY)
    before = store.path.read_bytes()
    path = store.paths.state_lock if lock == "state" else store.paths.migrate_lock(100)
    fd = hold(path)
    try:
        with pytest.raises(LockError, match=f"can't lock file '{path}' - got timeout"):
            store.write_job_state(100, TID, {**ENTRY, "fail_count": 3})
    finally:
        os.close(fd)
    assert store.path.read_bytes() == before
    # another guest's migration lock does not matter
    fd = hold(store.paths.migrate_lock(101))
    try:
        store.write_job_state(100, TID, {**ENTRY, "fail_count": 4})
    finally:
        os.close(fd)
    assert store.read()["100"][TID]["fail_count"] == 4
