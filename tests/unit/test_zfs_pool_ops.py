"""ZfsRunner's and ZfsPool's helper calls over the FAKE zfs: exact argv, timeouts, log texts.

The FAKE zfs (tests/unit/zfs_fake.py) answers the helper calls; ``TimedShell`` also records
each call's timeout and every spawn's arguments (stream commands never start here).
"""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import pytest

from pverep import _core
from pverep.config.storage import StorageDef
from pverep.errors import PverepError
from pverep.storage import zfs
from pverep.storage.streamform import ImportMode
from pverep.storage.zfs import ZfsDatasetMissing, ZfsError, ZfsFlags, ZfsPool, ZfsRunner
from pverep.storage.zfscaps import ZfsCaps
from pverep.transport.base import CommandResult, CommandTimeout
from tests.unit.zfs_fake import FakeZfsShell

POOL = "rpool/data"
DS = f"{POOL}/subvol-100-disk-0"
VOL = "subvol-100-disk-0"
TOKEN = "1-abc123-def0-789abc"
RESUME = ZfsCaps(recv_resumable=True, recv_abort=True)


class TimedShell(FakeZfsShell):
    """FAKE zfs that records (argv, timeout) of helper calls and the spawns' arguments."""

    def __init__(self) -> None:
        super().__init__()
        self.timeouts: list[tuple[list[str], float | None]] = []
        self.spawned: list[tuple[list[str], dict[str, Any]]] = []
        self.raise_on: str | None = None  # a verb whose calls raise CommandTimeout

    def run(
        self, argv: Sequence[str], *, input: bytes | None = None, timeout: float | None = None
    ) -> CommandResult:
        self.timeouts.append((list(argv), timeout))
        if self.raise_on is not None and argv[1] == self.raise_on:
            raise CommandTimeout(argv, timeout or 0.0, ["got timeout"])
        return super().run(argv, input=input, timeout=timeout)

    def spawn(self, argv: Sequence[str], **kwargs: object) -> Any:
        self.spawned.append((list(argv), dict(kwargs)))
        return "the process"


def _pool(shell: FakeZfsShell, caps: ZfsCaps | None = None, aware: bool = False) -> ZfsPool:
    flags = ZfsFlags(encryption_aware=aware, caps=caps or ZfsCaps())
    storage = StorageDef("local-zfs", "zfspool", {"pool": POOL})
    return ZfsPool(storage, ZfsRunner(shell), flags=flags, sleep=lambda _s: None)


def _messages(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == zfs.log.name]


# --- the runner -------------------------------------------------------------------------------


def test_runner_timeouts_default_explicit_and_none() -> None:
    shell = TimedShell()
    shell.add(DS)
    runner = ZfsRunner(shell, timeout=7.5)
    runner.run(zfs.exists_argv(DS))
    runner.run(zfs.exists_argv(DS), timeout=None)
    runner.run(zfs.exists_argv(DS), timeout=3.0)
    assert runner.succeeds(zfs.exists_argv(DS)) is True
    assert runner.succeeds(zfs.exists_argv(DS + "@x")) is False
    assert [t for _, t in shell.timeouts] == [7.5, None, 3.0, 7.5, 7.5]
    assert ZfsRunner(shell).timeout == 10.0


def test_succeeds_is_false_when_the_call_raises() -> None:
    shell = TimedShell()
    shell.add(DS)
    shell.raise_on = "get"
    assert ZfsRunner(shell).succeeds(zfs.exists_argv(DS)) is False


def test_runner_logs_argv_node_and_durations(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    ticks = iter([10.0, 10.25, 20.0, 20.5])
    monkeypatch.setattr(zfs, "time", SimpleNamespace(monotonic=lambda: next(ticks)))
    shell = TimedShell()
    shell.add(DS)
    runner = ZfsRunner(shell)
    caplog.set_level(logging.DEBUG, logger=zfs.log.name)
    runner.run(zfs.exists_argv(DS))
    with pytest.raises(ZfsError):
        runner.run(zfs.exists_argv(DS + "@gone"))
    runner.succeeds(zfs.exists_argv(DS))
    runner.spawn(["zfs", "send", "x"])
    argv = ["zfs", "get", "-H", "name", DS]
    assert _messages(caplog) == [
        (logging.DEBUG, f"zfs on pve2: {argv}"),
        (logging.DEBUG, "zfs done in 0.250s"),
        (logging.DEBUG, f"zfs on pve2: {[*argv[:4], DS + '@gone']}"),
        (logging.DEBUG, "zfs failed after 0.500s: ['dataset does not exist']"),
        (logging.DEBUG, f"zfs on pve2: {argv}"),
        (logging.DEBUG, "zfs stream on pve2: ['zfs', 'send', 'x']"),
    ]


def test_runner_spawn_forwards_every_argument() -> None:
    shell = TimedShell()
    runner = ZfsRunner(shell)

    def sink(line: str) -> None:
        pass

    assert runner.spawn(["zfs", "send", "a"]) == "the process"
    runner.spawn(["zfs", "recv", "b"], stdin=5, stdout=6, on_stderr=sink, new_group=True)
    assert shell.spawned == [
        (["zfs", "send", "a"], {"stdin": -3, "stdout": -3, "on_stderr": None, "new_group": False}),
        (["zfs", "recv", "b"], {"stdin": 5, "stdout": 6, "on_stderr": sink, "new_group": True}),
    ]


# --- the pool ---------------------------------------------------------------------------------


def test_pool_refuses_other_storages() -> None:
    runner = ZfsRunner(FakeZfsShell())
    for storage in (
        StorageDef("nas", "dir", {"pool": POOL}),
        StorageDef("nas", "zfspool", {}),
        StorageDef("nas", "dir", {}),
    ):
        with pytest.raises(PverepError) as err:
            ZfsPool(storage, runner)
        assert str(err.value) == "storage 'nas' is not replicatable"
    assert ZfsFlags.from_caps(ZfsCaps(send_no_preserve_encryption=True)).encryption_aware is True
    assert ZfsFlags.from_caps(RESUME) == ZfsFlags(encryption_aware=False, caps=RESUME)


def test_export_argv_stdout_and_filtered_stderr() -> None:
    shell = TimedShell()
    seen: list[str] = []
    proc = _pool(shell, aware=True).export(VOL, "b", "a", stdout=9, on_stderr=seen.append)
    assert proc == "the process"
    _pool(shell).export(VOL, "b", "a", with_snapshots=False, stdout=8)
    _pool(shell).export(VOL, "b", stdout=7)
    (argv1, kw1), (argv2, kw2), (argv3, kw3) = shell.spawned
    assert argv1 == ["zfs", "send", "-RpvU", "-I", "a", "--", f"{DS}@b"]
    assert argv2 == ["zfs", "send", "-Rpv", "-i", "a", "--", f"{DS}@b"]
    assert argv3 == ["zfs", "send", "-Rpv", "--", f"{DS}@b"]
    assert (kw1["stdout"], kw2["stdout"], kw3["stdout"]) == (9, 8, 7)
    assert kw2["on_stderr"] is None and kw1["new_group"] is False
    kw1["on_stderr"]("WARNING: no-preserve-encryption flag set, sending dataset " + DS)
    kw1["on_stderr"]("total estimated size is 1K")
    assert seen == ["total estimated size is 1K"]
    with pytest.raises(PverepError) as err:
        _pool(shell).export(VOL, None, stdout=1)
    assert str(err.value) == "PVE::Storage::ZFSPoolPlugin storage can only export snapshots"


def test_snapshot_info_missing_and_other_errors() -> None:
    shell = TimedShell()
    pool = _pool(shell)
    with pytest.raises(ZfsDatasetMissing) as err:
        pool.snapshot_info(VOL)
    assert str(err.value) == f"zfs error: cannot open '{DS}': dataset does not exist"
    shell.add(DS)
    shell.raise_on = "list"
    with pytest.raises(ZfsError) as other:
        pool.snapshot_info(VOL)
    assert type(other.value) is ZfsError and str(other.value) == "zfs error: got timeout"


def test_destroy_stops_at_other_errors() -> None:
    shell = TimedShell()
    shell.add(DS)
    shell.raise_on = "destroy"
    with pytest.raises(ZfsError, match=r"^zfs error: got timeout$"):
        _pool(shell).destroy_volume(VOL)
    assert len(shell.timeouts) == 1


def test_list_images_by_owner_and_delete_snapshot() -> None:
    shell = TimedShell()
    shell.add(DS, "s1", "s2")
    shell.add(f"{POOL}/vm-101-disk-0", kind="volume")
    pool = _pool(shell)
    assert [i.name for i in pool.list_images()] == [VOL, "vm-101-disk-0"]
    assert [i.name for i in pool.list_images(101)] == ["vm-101-disk-0"]
    assert pool.list_images(102) == []
    pool.delete_snapshot(VOL, "s1")
    assert shell.snapshot_names(DS) == ["s2"]
    assert pool.volid("vm-1-disk-0") == "local-zfs:vm-1-disk-0"


# --- partial receives and encryption -------------------------------------------------------------


def test_resume_token_values(caplog: pytest.LogCaptureFixture) -> None:
    shell = TimedShell()
    shell.add(DS)
    props = shell.datasets[DS].props
    pool = _pool(shell, RESUME)
    caplog.set_level(logging.WARNING, logger=zfs.log.name)
    assert pool.resume_token(VOL) is None  # the fake's "-"
    for value in ("", "-"):
        props["receive_resume_token"] = value
        assert pool.resume_token(VOL) is None
    assert _messages(caplog) == []  # no partial state is nothing unexpected
    props["receive_resume_token"] = f"  {TOKEN}  "
    assert pool.resume_token(VOL) == TOKEN
    props["receive_resume_token"] = "x; rm -rf /"
    assert pool.resume_token(VOL) is None
    assert _messages(caplog) == [
        (logging.WARNING, f"ignoring an unexpected receive_resume_token on {VOL}")
    ]
    assert _pool(shell).resume_token(VOL) is None  # a zfs without recv -s/-A: never asked
    assert pool.resume_token("subvol-100-disk-9") is None  # zfs failed: no state


def test_abort_partial_only_with_state_and_without_timeout() -> None:
    shell = TimedShell()
    shell.add(DS, "a")
    pool = _pool(shell, RESUME)
    assert pool.abort_partial(VOL) is False  # no token: no recv -A
    assert [a[1] for a, _ in shell.timeouts] == ["get"]
    shell.datasets[DS].props["receive_resume_token"] = TOKEN
    assert _pool(shell).abort_partial(VOL) is False  # this zfs has no recv -A
    assert pool.abort_partial(VOL) is True
    assert shell.timeouts[-1] == (["zfs", "recv", "-A", "--", DS], None)


def test_check_import_discards_resumes_and_names_the_volume(
    caplog: pytest.LogCaptureFixture,
) -> None:
    shell = TimedShell()
    shell.add(DS, "a")
    shell.datasets[DS].props["receive_resume_token"] = TOKEN
    pool = _pool(shell, RESUME)
    pool.check_import(VOL, None, mode=ImportMode(resuming=True))  # it continues the partial
    with pytest.raises(PverepError) as err:
        pool.check_import(VOL, None, allow_rename=True)
    assert str(err.value) == (
        f"volume '{DS}' already exists - importing under a new name is not supported"
    )
    caplog.set_level(logging.INFO, logger=zfs.log.name)
    pool.check_import(VOL, "a", mode=ImportMode(discard_partial=True))
    assert ["recv", "-A", "--", DS] in [a[1:] for a, _ in shell.timeouts]
    assert _messages(caplog) == [(logging.INFO, f"discarded the partial receive of '{DS}'")]
    with pytest.raises(PverepError) as none:
        pool.check_import("subvol-100-disk-1", None, mode=ImportMode(resuming=True))
    assert str(none.value) == f"volume '{POOL}/subvol-100-disk-1' has no partial receive to resume"


def test_encryption_values() -> None:
    shell = TimedShell()
    shell.add(DS)
    props = shell.datasets[DS].props
    raw = ZfsCaps(send_raw=True)
    props["encryption"] = "aes-256-gcm"
    assert _pool(shell, raw).encryption(DS) == "aes-256-gcm"
    assert _pool(shell, raw).is_encrypted(VOL) is True
    assert _pool(shell).encryption(DS) == "off"  # no raw sends: no encryption at all
    assert _pool(shell).is_encrypted(VOL) is False
    assert _pool(shell, raw).encryption(POOL + "/gone") == "off"
    props["encryption"] = ""
    assert _pool(shell, raw).encryption(DS) == "off"
    for value in ("off", "-"):
        props["encryption"] = value
        assert _pool(shell, raw).is_encrypted(VOL) is False
        assert _pool(shell, raw)._unencrypted_replica(DS) is not None
    props["encryption"] = "aes-256-gcm"
    assert _pool(shell, raw)._unencrypted_replica(DS) is None
    props["encryption"] = "off"
    err = _pool(shell, raw)._unencrypted_replica(DS)
    assert str(err) == f"refusing an unencrypted replica '{DS}' under encrypted '{POOL}'"


def test_prune_destroys_only_what_is_there_and_not_the_base(
    caplog: pytest.LogCaptureFixture,
) -> None:
    shell = TimedShell()
    shell.add(DS, "a", "b", "c")
    pool = _pool(shell)
    caplog.set_level(logging.INFO, logger=zfs.log.name)
    pool._prune(DS, "b", ["a", "b", "x"])
    assert shell.snapshot_names(DS) == ["b", "c"]
    assert _messages(caplog) == [(logging.INFO, f"removing snapshot '{DS}@a' (gone on the source)")]
    shell.add(f"{POOL}/vm-1-disk-0")  # no snapshots at all: nothing to do
    pool._prune(f"{POOL}/vm-1-disk-0", None, ["a"])
    assert shell.calls[-1] == zfs.snapshot_list_argv(f"{POOL}/vm-1-disk-0")


def test_cleanup_after_failed_import(caplog: pytest.LogCaptureFixture) -> None:
    shell = TimedShell()
    shell.add(DS, "a")
    pool = _pool(shell)
    pool._cleanup_failed_import(DS, "a")
    pool._cleanup_failed_import(DS, None)
    assert shell.timeouts == [
        (["zfs", "rollback", "-r", "--", f"{DS}@a"], None),
        (["zfs", "destroy", "-r", "--", DS], None),
    ]
    caplog.set_level(logging.WARNING, logger=zfs.log.name)
    pool._cleanup_failed_import(DS, None)  # gone already: logged, not raised
    assert _messages(caplog) == [
        (
            logging.WARNING,
            f"cleanup after failed import: zfs error: cannot open '{DS}': dataset does not exist",
        )
    ]


def _epipe() -> _core.PumpError:
    err = _core.PumpError("write failed: Broken pipe")
    err.side, err.errno = "write", errno.EPIPE
    return err


def test_early_end_failure_texts(caplog: pytest.LogCaptureFixture) -> None:
    other = _core.PumpError("read failed: Connection reset by peer")
    other.side, other.errno = "read", errno.ECONNRESET
    fail = ZfsPool._early_end_failure
    assert str(fail(DS, other, 0, -1, None)) == (
        f"import of '{DS}' failed - read failed: Connection reset by peer"
    )
    assert str(fail(DS, _epipe(), 5, -1, None)) == (
        f"import of '{DS}' failed - the receiver stopped reading with 5 bytes of the stream unread"
    )
    ours, theirs = socket.socketpair()
    with ours, theirs:
        # the input neither ends nor goes on: the stall timeout given decides
        assert str(fail(DS, _epipe(), 0, ours.fileno(), 0.2)) == (
            f"import of '{DS}' failed - the receiver stopped reading but the stream did not "
            "end within 0.2 s"
        )
        theirs.shutdown(socket.SHUT_WR)
        caplog.set_level(logging.DEBUG, logger=zfs.log.name)
        assert fail(DS, _epipe(), 0, ours.fileno(), 0.2) is None
    assert _messages(caplog) == [
        (logging.DEBUG, f"zfs recv of {DS} finished before its input's end arrived")
    ]
