"""``ZfsPool.import_``'s receiver process, stall, prune and kept-partial paths, asserted on
exact arguments and texts. The receiver is the FAKE ``zfs recv`` of test_zfs_import_end (a
small Python process); helper calls get canned answers (real zfs: the lab)."""

from __future__ import annotations

import logging
import socket
from collections.abc import Sequence
from typing import Any

import pytest

from pverep.config.storage import StorageDef
from pverep.errors import PverepError
from pverep.storage import zfs
from pverep.storage.streamform import ImportMode
from pverep.storage.zfs import ZfsError, ZfsFlags, ZfsPool, ZfsRunner
from pverep.storage.zfscaps import ZfsCaps
from pverep.transport.base import PIPE, CommandResult
from tests.unit.test_zfs_import_end import STREAM
from tests.unit.test_zfs_import_partial import PropsShell, import_from_pipe
from tests.unit.test_zfscaps import OPENZFS, TOKEN

DS = "rpool/data/vm-100-disk-0"


class RecordingShell(PropsShell):
    """PropsShell that also records the receiver's spawn arguments and Process, and lists
    ``snaps`` for ``zfs list -t snapshot``."""

    def __init__(
        self, read: int, code: int, props: dict[tuple[str, str], str], snaps: Sequence[str] = ()
    ) -> None:
        super().__init__(read, code, props)
        self.snaps = list(snaps)
        self.spawn_kwargs: dict[str, Any] = {}
        self.procs: list[Any] = []

    def run(
        self, argv: Sequence[str], *, input: bytes | None = None, timeout: float | None = None
    ) -> CommandResult:
        a = list(argv)
        if a[1] == "list" and "snapshot" in a:
            self.calls.append(a)
            out = "".join(f"{DS}@{s}\t{i}\t{i}\t{i}\n" for i, s in enumerate(self.snaps, 1))
            return CommandResult(a, 0, out.encode(), b"")
        return super().run(argv, input=input, timeout=timeout)

    def spawn(self, argv: Sequence[str], **kwargs: object) -> object:
        self.spawn_kwargs = dict(kwargs)
        proc = super().spawn(argv, **kwargs)
        self.procs.append(proc)
        return proc


def _pool(shell: RecordingShell, caps: ZfsCaps = OPENZFS) -> ZfsPool:
    storage = StorageDef("local-zfs", "zfspool", {"pool": "rpool/data"})
    return ZfsPool(storage, ZfsRunner(shell), flags=ZfsFlags.from_caps(caps))


def _import(
    shell: RecordingShell, base: str | None, mode: ImportMode, **kwargs: Any
) -> str | PverepError:
    return import_from_pipe(_pool(shell), base, mode, **kwargs)


def test_receiver_leads_its_own_group_and_its_pid_is_handed_out() -> None:
    shell = RecordingShell(len(STREAM), 0, {})
    pids: list[int] = []
    lines: list[str] = []
    result = _import(shell, "a", ImportMode(), on_receiver=pids.append, on_stderr=lines.append)
    assert result == "local-zfs:vm-100-disk-0"
    assert shell.spawn_kwargs["new_group"] is True
    assert shell.spawn_kwargs["stdin"] == PIPE
    assert shell.spawn_kwargs["on_stderr"] == lines.append
    assert pids == [shell.procs[0].pid]
    assert lines == [f"receiver closed after {len(STREAM)} bytes"]


def test_prune_before_receiving_keeps_the_streams_base() -> None:
    shell = RecordingShell(len(STREAM), 0, {}, snaps=["old", "a", "older"])
    mode = ImportMode(prune=("old", "a", "never-here", "older"))
    assert _import(shell, "a", mode) == "local-zfs:vm-100-disk-0"
    assert [c for c in shell.calls if c[1] in ("list", "destroy")] == [
        zfs.snapshot_list_argv(DS),
        ["zfs", "destroy", f"{DS}@old"],
        ["zfs", "destroy", f"{DS}@older"],
    ]


def test_kept_partial_receive_is_said_on_the_importers_stderr(
    caplog: pytest.LogCaptureFixture,
) -> None:
    shell = RecordingShell(1000, 1, {("receive_resume_token", DS): TOKEN})
    lines: list[str] = []
    caplog.set_level(logging.INFO, logger=zfs.log.name)
    result = _import(shell, None, ImportMode(resumable=True), on_stderr=lines.append)
    assert str(result) == "zfs error: cannot receive new filesystem stream: invalid backup stream"
    kept = f"keeping the partial receive of '{DS}' to resume it"
    assert lines[-1] == kept
    assert [r.getMessage() for r in caplog.records if r.name == zfs.log.name] == [kept]


def test_encrypted_parent_without_recv_x_is_refused_with_its_reason() -> None:
    shell = RecordingShell(len(STREAM), 0, {("encryption", "rpool/data"): "aes-256-gcm"})
    storage = StorageDef("local-zfs", "zfspool", {"pool": "rpool/data"})
    pool = ZfsPool(storage, ZfsRunner(shell), flags=ZfsFlags(caps=ZfsCaps(send_raw=True)))
    with pytest.raises(PverepError) as err:
        pool.import_("vm-100-disk-0", -1, None)
    assert str(err.value) == (
        f"'rpool/data' is encrypted and this zfs cannot receive '{DS}' as an encrypted child "
        "(no zfs recv -x)"
    )
    assert shell.procs == []


def test_a_stalled_sender_aborts_the_receive_and_rolls_back() -> None:
    """The sender keeps its end open without a byte; the receiver waits for more: only the
    stall watchdog ends it (stall_timeout is handed to the pump)."""
    shell = RecordingShell(10 * len(STREAM), 0, {})
    ours, theirs = socket.socketpair()
    with ours, theirs, pytest.raises(ZfsError) as err:
        _pool(shell).import_("vm-100-disk-0", ours.fileno(), "a", stall_timeout=0.3)
    assert str(err.value) == (
        f"import of '{DS}' stalled - pump stalled: no progress on the read side for 0.3 s"
    )
    assert shell.procs[0].returncode is not None
    assert [c for c in shell.calls if c[1] in ("rollback", "destroy")] == [
        ["zfs", "rollback", "-r", "--", f"{DS}@a"]
    ]
