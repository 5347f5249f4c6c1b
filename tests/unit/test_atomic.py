"""atomic_write: a new file renamed over the old one, fsynced first, no temp file left behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pverep import atomic


def test_replaces_by_rename_never_in_place(tmp_path: Path) -> None:
    path = tmp_path / "replication.cfg"
    path.write_bytes(b"old content\n")
    before = path.stat().st_ino
    with path.open("rb") as reader:  # a reader that opened the file before the write
        atomic.atomic_write(path, b"new\n", 0o640)
        assert reader.read() == b"old content\n"  # it keeps the complete old file
    assert path.read_bytes() == b"new\n"
    assert path.stat().st_ino != before
    assert path.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["replication.cfg"]


def test_data_is_fsynced_before_the_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "state.json"
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        target = os.readlink(f"/proc/self/fd/{fd}")
        events.append(("fsync", Path(target).name))
        # what is fsynced is the complete new content
        assert Path(target).read_bytes() == b"payload"
        real_fsync(fd)

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        events.append(("replace", Path(src).name))
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    monkeypatch.setattr(atomic.os, "replace", replace)
    atomic.atomic_write(path, b"payload")
    tmp_name = f"state.json.tmp.{os.getpid()}"
    assert events == [("fsync", tmp_name), ("replace", tmp_name)]
    assert path.read_bytes() == b"payload"


@pytest.mark.parametrize("failing", ["fsync", "replace", "chmod"])
def test_failure_keeps_the_old_file_and_removes_the_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(b"old")

    def fail(*_args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, failing, fail)
    with pytest.raises(OSError, match="No space left"):
        atomic.atomic_write(path, b"new")
    monkeypatch.undo()
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]
