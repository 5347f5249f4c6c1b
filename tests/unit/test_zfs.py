"""zfspool argv builders (exact, spec §5.8), parsers, the zfs wrapper, and the operations."""

from __future__ import annotations

import sys

import pytest

from pverep.config.storage import StorageDef
from pverep.storage import zfs
from pverep.storage.zfs import ZfsError, ZfsFlags, ZfsPool, ZfsRunner
from pverep.transport import LocalShell
from pverep.transport.base import DEVNULL
from tests.unit.zfs_fake import FakeZfsShell

DS = "rpool/data/vm-100-disk-0"


def test_helper_argv_exact() -> None:
    assert zfs.snapshot_argv(DS, "s") == ["zfs", "snapshot", f"{DS}@s"]
    assert zfs.get_refquota_argv(DS) == ["zfs", "get", "-o", "value", "-Hp", "refquota", DS]
    assert zfs.set_snapshot_refquota_argv(DS, "s", "8589934592") == [
        "zfs", "set", "pve-storage:refquota=8589934592", f"{DS}@s",
    ]  # fmt: skip
    assert zfs.snapshot_list_argv(DS) == [
        "zfs", "list", "-Hp", "-r", "-t", "snapshot", "-o", "name,guid,createtxg,creation", DS,
    ]  # fmt: skip
    assert zfs.destroy_snapshot_argv(DS, "s") == ["zfs", "destroy", f"{DS}@s"]
    assert zfs.destroy_volume_argv(DS) == ["zfs", "destroy", "-r", DS]
    assert zfs.list_images_argv("rpool/data") == [
        "zfs", "list", "-o", "name,volsize,origin,type,refquota", "-t", "volume,filesystem",
        "-d1", "-Hp", "rpool/data",
    ]  # fmt: skip


def test_stream_argv_exact() -> None:
    assert zfs.send_argv(DS, "__replicate_100-0_1700000100__") == [
        "zfs", "send", "-Rpv", "--", f"{DS}@__replicate_100-0_1700000100__",
    ]  # fmt: skip
    assert zfs.send_argv(DS, "b", "a") == ["zfs", "send", "-Rpv", "-I", "a", "--", f"{DS}@b"]
    assert zfs.send_argv(DS, "b", "a", with_snapshots=False) == [
        "zfs", "send", "-Rpv", "-i", "a", "--", f"{DS}@b",
    ]  # fmt: skip
    assert zfs.send_argv(DS, "b", "a", no_preserve_encryption=True)[2] == "-RpvU"
    assert zfs.recv_argv(DS) == ["zfs", "recv", "-F", "--", DS]
    assert zfs.recv_argv(DS, exclude_encryption=True) == [
        "zfs", "recv", "-F", "-x", "encryption", "--", DS,
    ]  # fmt: skip
    assert zfs.exists_argv(f"{DS}@a") == ["zfs", "get", "-H", "name", f"{DS}@a"]
    assert zfs.rollback_argv(DS, "a") == ["zfs", "rollback", "-r", "--", f"{DS}@a"]
    assert zfs.destroy_after_failed_import_argv(DS) == ["zfs", "destroy", "-r", "--", DS]


def test_parse_image_list() -> None:
    text = (
        "rpool/data\t-\t-\tfilesystem\tnone\n"
        "rpool/data/vm-100-disk-0\t8589934592\t-\tvolume\t-\n"
        "rpool/data/subvol-101-disk-0\t-\t-\tfilesystem\t2147483648\n"
        "rpool/data/subvol-101-disk-1\t-\t-\tfilesystem\tnone\n"
        "rpool/data/vm-102-disk-0\t1024\trpool/data/base-9-disk-0@__base__\tvolume\t-\n"
        "rpool/data/other\t-\t-\tfilesystem\tnone\n"
        "rpool/data/deeper/vm-103-disk-0\t1\t-\tvolume\t-\n"
    )
    images = zfs.parse_image_list(text, "rpool/data")
    assert [(i.name, i.owner, i.size, i.format) for i in images] == [
        ("vm-100-disk-0", 100, 8589934592, "raw"),
        ("subvol-101-disk-0", 101, 2147483648, "subvol"),
        ("subvol-101-disk-1", 101, 0, "subvol"),
        ("vm-102-disk-0", 102, 1024, "raw"),
    ]
    assert images[3].origin == "rpool/data/base-9-disk-0@__base__"
    # ZFSPoolPlugin::list_images: a linked clone of <base>@__base__ is "<base>/<name>"
    assert [i.volname for i in images] == [
        "vm-100-disk-0", "subvol-101-disk-0", "subvol-101-disk-1", "base-9-disk-0/vm-102-disk-0",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("origin", "volname"),
    [
        (None, "vm-1-disk-0"),
        ("rpool/data/base-9-disk-0@__base__", "base-9-disk-0/vm-1-disk-0"),
        ("rpool/data/base-9-disk-0@snap1", "vm-1-disk-0"),  # not the template snapshot
        ("tank/base-9-disk-0@__base__", "vm-1-disk-0"),  # another pool
        ("rpool/data/x/base-9-disk-0@__base__", "vm-1-disk-0"),  # not a direct child
    ],
)
def test_clone_volname(origin: str | None, volname: str) -> None:
    assert zfs.clone_volname("vm-1-disk-0", origin, "rpool/data") == volname


# --- the wrapper against real processes ---------------------------------------------------------


def _py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_runner_maps_failure_to_last_stderr_line() -> None:
    runner = ZfsRunner(LocalShell())
    code = (
        "import sys; print('first', file=sys.stderr); "
        "print('cannot open x: boom', file=sys.stderr); sys.exit(1)"
    )
    with pytest.raises(ZfsError) as exc:
        runner.run(_py(code))
    assert str(exc.value) == "zfs error: cannot open x: boom"


def test_runner_without_stderr_reports_exit_code() -> None:
    with pytest.raises(ZfsError, match=r"^zfs error: command '.*' failed: exit code 3$"):
        ZfsRunner(LocalShell()).run(_py("raise SystemExit(3)"))


def test_runner_timeout() -> None:
    runner = ZfsRunner(LocalShell(), timeout=0.2)
    with pytest.raises(ZfsError, match=r"^zfs error: got timeout$"):
        runner.run(_py("import time; time.sleep(5)"))


def test_runner_returns_stdout_and_stderr_tail_is_bounded() -> None:
    assert ZfsRunner(LocalShell()).run(_py("print('a\\tb')")) == "a\tb\n"
    code = "import sys\nfor i in range(500): print(f'line {i}', file=sys.stderr)\nsys.exit(2)"
    with LocalShell().spawn(_py(code), stdout=DEVNULL) as proc:
        assert proc.wait() == 2
        assert len(proc.stderr_tail) == 20 and proc.stderr_tail[-1] == "line 499"


# --- operations through the fake ----------------------------------------------------------------


def _pool(shell: FakeZfsShell) -> tuple[ZfsPool, list[float]]:
    slept: list[float] = []
    storage = StorageDef("local-zfs", "zfspool", {"pool": "rpool/data"})
    return ZfsPool(storage, ZfsRunner(shell), sleep=slept.append), slept


def test_destroy_retries_busy_then_succeeds() -> None:
    shell = FakeZfsShell()
    shell.add("rpool/data/subvol-100-disk-0", busy=3)
    pool, slept = _pool(shell)
    pool.destroy_volume("subvol-100-disk-0")
    assert "rpool/data/subvol-100-disk-0" not in shell.datasets
    assert len(shell.calls) == 4 and slept == [1.0, 1.0, 1.0]


def test_destroy_gives_up_after_six_busy_tries() -> None:
    shell = FakeZfsShell()
    shell.add("rpool/data/subvol-100-disk-0", busy=10)
    pool, slept = _pool(shell)
    with pytest.raises(ZfsError, match="dataset is busy"):
        pool.destroy_volume("subvol-100-disk-0")
    assert len(shell.calls) == 6 and len(slept) == 5


def test_destroy_of_missing_volume_is_success() -> None:
    pool, _ = _pool(FakeZfsShell())
    pool.destroy_volume("vm-100-disk-9")


def test_subvol_snapshot_records_refquota() -> None:
    shell = FakeZfsShell()
    shell.add("rpool/data/subvol-100-disk-0")
    shell.datasets["rpool/data/subvol-100-disk-0"].refquota = "8589934592"
    shell.add("rpool/data/vm-100-disk-1", kind="volume")
    pool, _ = _pool(shell)
    pool.snapshot("subvol-100-disk-0", "s1")
    pool.snapshot("vm-100-disk-1", "s1")
    assert shell.calls == [
        ["zfs", "snapshot", "rpool/data/subvol-100-disk-0@s1"],
        ["zfs", "get", "-o", "value", "-Hp", "refquota", "rpool/data/subvol-100-disk-0"],
        ["zfs", "set", "pve-storage:refquota=8589934592", "rpool/data/subvol-100-disk-0@s1"],
        ["zfs", "snapshot", "rpool/data/vm-100-disk-1@s1"],
    ]


def test_snapshot_info_through_core_parser() -> None:
    shell = FakeZfsShell()
    shell.add("rpool/data/subvol-100-disk-0", "a", "__replicate_100-0_5__")
    pool, _ = _pool(shell)
    infos = pool.snapshot_info("subvol-100-disk-0")
    assert [i.name for i in infos] == ["a", "__replicate_100-0_5__"]
    assert infos[0].guid == 1101 and infos[0].dataset == "rpool/data/subvol-100-disk-0"
    with pytest.raises(ZfsError, match="dataset does not exist"):
        pool.snapshot_info("subvol-100-disk-7")


def test_import_prechecks() -> None:
    shell = FakeZfsShell()
    shell.add("rpool/data/subvol-100-disk-0", "a")
    pool, _ = _pool(shell)
    with pytest.raises(Exception, match=r"^volume 'rpool/data/subvol-100-disk-0' already exists$"):
        pool.check_import("subvol-100-disk-0", None)
    with pytest.raises(
        Exception, match=r"^base snapshot 'rpool/data/subvol-100-disk-0@b' doesn't exist$"
    ):
        pool.check_import("subvol-100-disk-0", "b")
    pool.check_import("subvol-100-disk-0", "a")
    pool.check_import("subvol-100-disk-1", None)


def test_export_needs_a_snapshot() -> None:
    pool, _ = _pool(FakeZfsShell())
    with pytest.raises(Exception, match="storage can only export snapshots"):
        pool.export("vm-100-disk-0", None, stdout=1)


def test_zfs_flags_default_to_legacy_dialect() -> None:
    assert ZfsFlags().encryption_aware is False
