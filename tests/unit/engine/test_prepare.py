"""prepare() (spec §4.3): a stale snapshot that cannot be deleted is warned about and skipped."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence

import pytest

from pverep import _core
from pverep.engine import messages
from pverep.engine.prepare import prepare
from pverep.errors import PverepError

VOL = "local-zfs:vm-100-disk-0"
DS = "rpool/data/vm-100-disk-0"


class Volumes:
    """Real snapshot records in memory; deleting the ones in ``stuck`` fails like zfs does."""

    def __init__(self, names: Sequence[str], stuck: set[str]) -> None:
        self.snaps = [_core.SnapshotInfo(DS, n, 1000 + i, 10 + i, 100 + i) for i, n in
                      enumerate(names)]  # fmt: skip
        self.stuck = stuck
        self.deleted: list[str] = []

    def snapshot_info(self, volid: str) -> Sequence[_core.SnapshotInfo]:
        assert volid == VOL
        return [s for s in self.snaps if s.name not in self.deleted]

    def delete_snapshot(self, volid: str, snap: str) -> None:
        if snap in self.stuck:
            raise PverepError(f"zfs error: cannot destroy snapshot {DS}@{snap}: dataset is busy\n")
        self.deleted.append(snap)


def test_failed_stale_delete_is_warned_and_skipped() -> None:
    old1, old2, keep = (
        "__replicate_100-0_100__",
        "__replicate_100-0_200__",
        "__replicate_100-0_300__",
    )
    volumes = Volumes([old1, old2, keep, "manual"], stuck={old1})
    log: list[str] = []
    warnings: list[str] = []
    result = prepare(volumes, [VOL], "100-0", 300, None, log.append, warnings.append)
    # the stuck one is reported and skipped, the next stale one is still deleted
    assert volumes.deleted == [old2]
    error = f"zfs error: cannot destroy snapshot {DS}@{old1}: dataset is busy\n"
    assert warnings == [error]
    assert log == [
        messages.delete_stale_snapshot(old1, VOL),
        messages.delete_stale_snapshot_error(error),
        messages.delete_stale_snapshot(old2, VOL),
    ]
    assert result.cleaned == {VOL}
    assert set(result.snapshots[VOL]) >= {keep}


def test_volume_whose_only_stale_delete_fails_is_not_cleaned() -> None:
    old, keep = "__replicate_100-0_100__", "__replicate_100-0_300__"
    volumes = Volumes([old, keep], stuck={old})
    log: list[str] = []
    result = prepare(volumes, [VOL], "100-0", 300, None, log.append, lambda _msg: None)
    assert volumes.deleted == []
    assert result.cleaned == set()
    assert log[-1].startswith("delete stale replication snapshot error: zfs error")


def test_missing_last_sync_snapshot_keeps_everything_and_says_so() -> None:
    old, other = "__replicate_100-0_100__", "__replicate_100-0_200__"
    volumes = Volumes([old, other], stuck=set())
    log: list[str] = []
    result = prepare(volumes, [VOL], "100-0", 300, None, log.append, lambda _msg: None)
    assert volumes.deleted == []
    assert log == [messages.expected_snapshot_missing("__replicate_100-0_300__", VOL)]
    assert log[0] == (
        f"expected snapshot __replicate_100-0_300__ not present for {VOL}, not removing others"
    )
    assert set(result.snapshots[VOL]) == {old, other}
    assert result.cleaned == set()


def test_parent_snapshot_and_volumes_without_snapshots() -> None:
    old, parent, keep = (
        "__replicate_100-0_100__",
        "__replicate_100-0_200__",
        "__replicate_100-0_300__",
    )
    volumes = Volumes([old, parent, keep], stuck=set())
    empty = Volumes([], stuck=set())
    log: list[str] = []

    class Both:
        def snapshot_info(self, volid: str) -> Sequence[_core.SnapshotInfo]:
            return volumes.snapshot_info(VOL) if volid == VOL else []

        def delete_snapshot(self, volid: str, snap: str) -> None:
            (volumes if volid == VOL else empty).delete_snapshot(VOL, snap)

    other = "local-zfs:vm-100-disk-1"
    result = prepare(Both(), [VOL, other], "100-0", 300, parent, log.append, lambda _m: None)
    assert volumes.deleted == [old]  # the guest's parent snapshot is never stale
    assert set(result.snapshots[VOL]) == {parent, keep}
    assert result.snapshots[other] == {}  # no snapshots: nothing to do, no error
    assert log == [messages.delete_stale_snapshot(old, VOL)]


def test_default_warning_goes_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    old, keep = "__replicate_100-0_100__", "__replicate_100-0_300__"
    prepare(Volumes([old, keep], stuck={old}), [VOL], "100-0", 300, None, lambda _m: None)
    captured = capsys.readouterr()
    assert captured.err == f"zfs error: cannot destroy snapshot {DS}@{old}: dataset is busy\n"
    assert captured.out == ""


def test_warning_keeps_the_message_itself() -> None:
    # only the line end is dropped: trailing blanks or letters belong to the message
    class Odd(Volumes):
        def delete_snapshot(self, volid: str, snap: str) -> None:
            raise PverepError("cannot destroy: busy X  \n")

    old, keep = "__replicate_100-0_100__", "__replicate_100-0_300__"
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        prepare(Odd([old, keep], stuck=set()), [VOL], "100-0", 300, None, lambda _m: None)
    assert err.getvalue() == "cannot destroy: busy X  \n"
