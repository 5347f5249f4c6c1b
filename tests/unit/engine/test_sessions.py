"""One ssh master per target and run, shared by the jobs to that target (a few at a time)."""

from __future__ import annotations

from pathlib import Path

from pverep.engine.wiring import MAX_JOBS_PER_MASTER, SshSessions
from pverep.paths import Paths


def test_jobs_to_one_target_share_a_shell_up_to_the_cap(tmp_path: Path) -> None:
    sessions = SshSessions()
    paths = Paths(tmp_path)
    taken = [sessions.take(paths, "pve2", "10.0.0.2") for _ in range(MAX_JOBS_PER_MASTER)]
    assert all(shell is taken[0] for shell in taken)
    extra = sessions.take(paths, "pve2", "10.0.0.2")  # one more at once: a second master
    assert extra is not taken[0]
    assert sessions.take(paths, "pve3", "10.0.0.3") is not taken[0]
    sessions.release(taken[0])
    assert sessions.take(paths, "pve2", "10.0.0.2") is taken[0]  # a freed slot is reused
    sessions.close()
    assert sessions.take(paths, "pve2", "10.0.0.2") is not taken[0]  # a new run, new shells
