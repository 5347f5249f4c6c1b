"""engine/remote.py ``prepare_local_job`` at its edges, on the FAKE zfs: the default last_sync,
the checks of the parent snapshot name and last_sync, whose volumes are looked at, and which
job's snapshots make an unwanted volume stale."""

from __future__ import annotations

import pytest

from pverep.engine import remote
from pverep.errors import ValidationError
from tests.unit.test_remote import P, make_target
from tests.unit.zfs_fake import FakeZfsShell

WANTED = "local-zfs:subvol-100-disk-0"


def test_without_last_sync_nothing_is_expected_and_nothing_deleted_on_wanted_volumes() -> None:
    shell = FakeZfsShell()
    shell.add(f"{P}/subvol-100-disk-0", "__replicate_100-0_1000__")
    target, log = make_target(shell)
    result = remote.prepare_local_job(target, "100-0", [WANTED])
    assert list(result[WANTED]) == ["__replicate_100-0_1000__"] and log == []


def test_the_parent_snapshot_name_and_last_sync_are_checked() -> None:
    shell = FakeZfsShell()
    shell.add(f"{P}/subvol-100-disk-0", "__replicate_100-0_2000__", "__replicate_100-0_1500__")
    target, log = make_target(shell)
    result = remote.prepare_local_job(target, "100-0", [WANTED], last_sync=2000,
                                      parent_snapname="before")  # fmt: skip
    assert list(result[WANTED]) == ["__replicate_100-0_2000__"]
    assert log == [f"delete stale replication snapshot '__replicate_100-0_1500__' on {WANTED}"]
    with pytest.raises(ValidationError):
        remote.prepare_local_job(target, "100-0", [WANTED], last_sync=2000,
                                 parent_snapname="a;b")  # fmt: skip
    with pytest.raises(ValidationError) as err:
        remote.prepare_local_job(target, "100-0", [WANTED], last_sync=-1)
    assert str(err.value) == "last_sync must be >= 0"


def test_only_this_guests_volumes_and_this_jobs_snapshots_count() -> None:
    shell = FakeZfsShell()
    shell.add(f"{P}/subvol-100-disk-0", "__replicate_100-0_1000__")
    shell.add(f"{P}/subvol-101-disk-0", "__replicate_100-0_1000__")  # another guest's
    shell.add(f"{P}/subvol-100-disk-1", "__replicate_100-1_1000__")  # this guest, other job
    target, log = make_target(shell, {100: "pve1", 101: "pve1"})
    result = remote.prepare_local_job(target, "100-0", [WANTED], last_sync=1000)
    assert list(result) == [WANTED, "local-zfs:subvol-100-disk-1"]
    assert f"{P}/subvol-101-disk-0" in shell.datasets
    assert f"{P}/subvol-100-disk-1" in shell.datasets and log == []
