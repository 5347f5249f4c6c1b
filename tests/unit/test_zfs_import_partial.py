"""``ZfsPool.import_`` with the pverep-only modes: a broken resumable receive keeps its
partial state, a plain one is cleaned up as before; an encrypted parent never gets an
unencrypted replica. The receiver is the FAKE ``zfs recv`` of test_zfs_import_end (a small
Python process); the helper calls get canned answers (real zfs: the lab)."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any

import pytest

from pverep.config.storage import StorageDef
from pverep.errors import PverepError
from pverep.storage.streamform import ImportMode
from pverep.storage.zfs import ZfsError, ZfsFlags, ZfsPool, ZfsRunner
from pverep.storage.zfscaps import ZfsCaps, parse_caps
from pverep.transport.base import CommandResult
from tests.unit.test_zfs_import_end import STREAM, FakeRecvShell
from tests.unit.test_zfscaps import OPENZFS, OPENZFS_RECV, PROXMOX_SEND, TOKEN

DS = "rpool/data/vm-100-disk-0"
PROXMOX = parse_caps(PROXMOX_SEND, OPENZFS_RECV)


class PropsShell(FakeRecvShell):
    """FakeRecvShell whose ``zfs get -Hp -o value <prop> <ds>`` answers come from a table."""

    def __init__(self, read: int, code: int, props: dict[tuple[str, str], str]) -> None:
        super().__init__(read, code)
        self.props = props
        self.recv_argv: list[str] = []

    def run(
        self, argv: Sequence[str], *, input: bytes | None = None, timeout: float | None = None
    ) -> CommandResult:
        a = list(argv)
        if a[1:5] == ["get", "-Hp", "-o", "value"]:
            self.calls.append(a)
            return CommandResult(a, 0, (self.props.get((a[5], a[6]), "-") + "\n").encode(), b"")
        return super().run(argv, input=input, timeout=timeout)

    def spawn(self, argv: Sequence[str], **kwargs: object) -> object:  # type: ignore[override]
        self.recv_argv = list(argv)
        return super().spawn(argv, **kwargs)  # type: ignore[arg-type]


def do_import(
    shell: PropsShell, mode: ImportMode, base: str | None, caps: ZfsCaps = OPENZFS
) -> str | ZfsError | PverepError:
    storage = StorageDef("local-zfs", "zfspool", {"pool": "rpool/data"})
    pool = ZfsPool(storage, ZfsRunner(shell), flags=ZfsFlags.from_caps(caps))
    return import_from_pipe(pool, base, mode)


def import_from_pipe(
    pool: ZfsPool, base: str | None, mode: ImportMode, **kwargs: Any
) -> str | PverepError:
    """``pool.import_`` of vm-100-disk-0 from a pipe a thread fills with STREAM; the error
    raised, if any, is returned."""
    read_fd, write_fd = os.pipe()

    def sender() -> None:
        try:
            os.write(write_fd, STREAM)
        except BrokenPipeError:
            pass
        finally:
            os.close(write_fd)

    thread = threading.Thread(target=sender)
    thread.start()
    try:
        return pool.import_("vm-100-disk-0", read_fd, base, stall_timeout=20, mode=mode, **kwargs)
    except PverepError as err:
        return err
    finally:
        os.close(read_fd)  # a writer still blocked (nothing was received) ends with EPIPE
        thread.join(20)


def cleanups(shell: FakeRecvShell) -> list[list[str]]:
    return [c for c in shell.calls if c[1] in ("rollback", "destroy")]


@pytest.mark.parametrize("base", [None, "a"])
def test_broken_resumable_receive_keeps_its_partial_state(base: str | None) -> None:
    shell = PropsShell(1000, 1, {("receive_resume_token", DS): TOKEN})
    result = do_import(shell, ImportMode(resumable=True), base)
    assert isinstance(result, ZfsError)
    assert shell.recv_argv == ["zfs", "recv", "-F", "-s", "--", DS]
    assert cleanups(shell) == []  # no rollback, no destroy: the next run continues it


def test_broken_resumable_receive_without_a_token_is_cleaned_as_before() -> None:
    shell = PropsShell(1000, 1, {})
    result = do_import(shell, ImportMode(resumable=True), "a")
    assert isinstance(result, ZfsError)
    assert cleanups(shell) == [["zfs", "rollback", "-r", "--", f"{DS}@a"]]


def test_plain_receive_is_cleaned_even_if_zfs_kept_state() -> None:
    shell = PropsShell(1000, 1, {("receive_resume_token", DS): TOKEN})
    result = do_import(shell, ImportMode(), None)
    assert isinstance(result, ZfsError)
    assert shell.recv_argv == ["zfs", "recv", "-F", "--", DS]
    assert cleanups(shell) == [["zfs", "destroy", "-r", "--", DS]]


def test_encrypted_parent_gets_exclude_encryption_and_an_encrypted_replica() -> None:
    props = {("encryption", "rpool/data"): "aes-256-gcm", ("encryption", DS): "aes-256-gcm"}
    shell = PropsShell(len(STREAM), 0, props)
    assert do_import(shell, ImportMode(resumable=True), None) == "local-zfs:vm-100-disk-0"
    assert shell.recv_argv == ["zfs", "recv", "-F", "-s", "-x", "encryption", "--", DS]


def test_unencrypted_replica_under_encrypted_parent_is_refused_and_removed() -> None:
    shell = PropsShell(len(STREAM), 0, {("encryption", "rpool/data"): "aes-256-gcm"})
    result = do_import(shell, ImportMode(), None)
    assert isinstance(result, ZfsError)
    assert "refusing an unencrypted replica" in str(result)
    assert cleanups(shell) == [["zfs", "destroy", "-r", "--", DS]]


@pytest.mark.parametrize("caps", [OPENZFS, PROXMOX])
def test_raw_stream_keeps_its_own_encryption(caps: ZfsCaps) -> None:
    props = {("encryption", "rpool/data"): "aes-256-gcm", ("encryption", DS): "aes-256-gcm"}
    shell = PropsShell(len(STREAM), 0, props)
    assert do_import(shell, ImportMode(raw=True), None, caps) == "local-zfs:vm-100-disk-0"
    assert shell.recv_argv == ["zfs", "recv", "-F", "--", DS]


def test_proxmox_zfsutils_receive_like_pvesm() -> None:
    shell = PropsShell(len(STREAM), 0, {})
    assert do_import(shell, ImportMode(), "a", PROXMOX) == "local-zfs:vm-100-disk-0"
    assert shell.recv_argv == ["zfs", "recv", "-F", "-x", "encryption", "--", DS]


def test_encrypted_parent_and_a_zfs_without_x_refuses_before_receiving() -> None:
    caps = ZfsCaps(send_raw=True)  # knows encryption, but no recv -x
    shell = PropsShell(len(STREAM), 0, {("encryption", "rpool/data"): "aes-256-gcm"})
    result = do_import(shell, ImportMode(), None, caps)
    assert isinstance(result, PverepError)
    assert "cannot receive" in str(result)
    assert shell.recv_argv == []


def test_zfs_fuse_asks_nothing_new() -> None:
    shell = PropsShell(len(STREAM), 0, {})
    assert do_import(shell, ImportMode(), "a", ZfsCaps()) == "local-zfs:vm-100-disk-0"
    assert shell.calls == []  # no encryption or token look-ups on a zfs without them
    assert shell.recv_argv == ["zfs", "recv", "-F", "--", DS]
