"""The per-job log file: its path, its prefixed lines, what the caller's log function sees."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pverep.engine.joblog import JobLog
from pverep.errors import PverepError

T0 = 1_700_000_000  # 2023-11-14 22:13:20 UTC


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_lines_are_prefixed_with_time_and_jobid_and_echoed_bare(tmp_path: Path) -> None:
    ticks = iter([T0, T0 + 61])
    seen: list[str] = []
    directory = tmp_path / "a" / "b"  # created with its parents
    with JobLog(directory, "100-0", clock=lambda: next(ticks), echo=seen.append) as log:
        assert log.jobid == "100-0"
        assert log.path == directory / "100-0"
        log("first")
        # written through at once (flushed), not at close
        assert (directory / "100-0").read_text() == "2023-11-14 22:13:20 100-0: first\n"
        log("two\nlines")
    assert (directory / "100-0").read_text(encoding="utf-8") == (
        "2023-11-14 22:13:20 100-0: first\n2023-11-14 22:14:21 100-0: two\nlines\n"
    )
    assert seen == ["first", "two\nlines"]


def test_verbose_echo_sees_the_prefixed_line(tmp_path: Path) -> None:
    seen: list[str] = []
    with JobLog(tmp_path, "7-1", clock=lambda: T0, echo=seen.append, verbose=True) as log:
        log("hé")
    assert seen == ["2023-11-14 22:13:20 7-1: hé"]
    assert (tmp_path / "7-1").read_bytes() == "2023-11-14 22:13:20 7-1: hé\n".encode()


def test_an_old_log_is_truncated(tmp_path: Path) -> None:
    (tmp_path / "1-0").write_text("old run\n" * 10)
    with JobLog(tmp_path, "1-0", clock=lambda: T0) as log:
        log("new")
    assert (tmp_path / "1-0").read_text() == "2023-11-14 22:13:20 1-0: new\n"


def test_after_close_lines_still_reach_the_echo_only(tmp_path: Path) -> None:
    seen: list[str] = []
    log = JobLog(tmp_path, "1-0", clock=lambda: T0, echo=seen.append)
    log.close()
    log.close()  # twice is fine
    log("late")
    assert seen == ["late"]
    assert (tmp_path / "1-0").read_text() == ""


def test_unopenable_log_is_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "1-0").mkdir()
    with pytest.raises(PverepError) as err:
        JobLog(tmp_path, "1-0", clock=lambda: T0)
    assert str(err.value) == f"unable to open replication log '{tmp_path / '1-0'}' - Is a directory"


def test_unmakeable_directory_is_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(PverepError) as err:
        JobLog(tmp_path / "file" / "logs", "1-0", clock=lambda: T0)
    path = tmp_path / "file" / "logs" / "1-0"
    assert str(err.value) == f"unable to open replication log '{path}' - Not a directory"
