"""Stream features asked from zfs's usage text, the stream-form decision and its argv (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from pverep.engine.resume import ResumeCheckError, parse_resume_check
from pverep.errors import ValidationError
from pverep.storage.streamform import StreamForm, StreamFormError, choose_stream_form
from pverep.storage.zfs import ZfsFlags, recv_abort_argv, recv_argv, resume_send_argv, send_argv
from pverep.storage.zfscaps import ZfsCaps, parse_caps
from pverep.transport.base import CommandResult
from tests.unit.zfs_fake import FakeZfsShell

# zfs-fuse 0.7's usage lines, as its binary carries them
ZFS_FUSE_SEND = "usage:\n\tsend [-RDp] [-[iI] snapshot] <snapshot>\n"
ZFS_FUSE_RECV = (
    "usage:\n\treceive [-vnF] <filesystem|volume|snapshot>\n\treceive [-vnF] -d <filesystem>\n"
)
# the shape of OpenZFS 2.x's usage (flag clusters, continuation lines, the -t and -A forms)
OPENZFS_SEND = """missing snapshot argument
usage:
\tsend [-DLPbcehnpsVvw] [-i|-I snapshot]
\t     [-R [-X dataset[,dataset]...]]     <snapshot>
\tsend [-DnVvPLecw] [-i snapshot|bookmark] <filesystem|volume|snapshot>
\tsend [-PnVv] -t <receive_resume_token>
\tsend [-PnVv] --saved filesystem
"""
OPENZFS_RECV = """usage:
\treceive [-vMnsFhu] [-o <property>=<value>] ... [-x <property>] ...
\t    <filesystem|volume|snapshot>
\treceive -A <filesystem|volume>
"""
PROXMOX_SEND = OPENZFS_SEND.replace("[-DLPbcehnpsVvw]", "[-DLPUbcehnpsVvw]")

TOKEN = "1-10a1b2c3d4-c0-789c636064000310a500c4ec50360710e72765a526973030"
OPENZFS = parse_caps(OPENZFS_SEND, OPENZFS_RECV)


def test_zfs_fuse_has_no_stream_extras() -> None:
    assert parse_caps(ZFS_FUSE_SEND, ZFS_FUSE_RECV) == ZfsCaps()


def test_openzfs_resume_raw_exclude_but_no_proxmox_u() -> None:
    # Parsed here, not OPENZFS: that one is computed at collection, before mutmut switches a
    # mutant on, so comparing with it could not catch a mutant of parse_caps.
    assert ZfsCaps(
        send_resume=True, recv_resumable=True, recv_abort=True, send_raw=True,
        send_no_preserve_encryption=False, recv_exclude=True, send_dry_run=True,
    ) == parse_caps(OPENZFS_SEND, OPENZFS_RECV)  # fmt: skip
    assert OPENZFS.resume_target
    assert ZfsFlags.from_caps(OPENZFS).encryption_aware is False


def test_proxmox_zfsutils_turn_on_pvesms_encryption_flags() -> None:
    caps = parse_caps(PROXMOX_SEND, OPENZFS_RECV)
    assert caps.send_no_preserve_encryption
    assert ZfsFlags.from_caps(caps).encryption_aware


def test_caps_survive_the_wire_and_ignore_junk() -> None:
    assert ZfsCaps.from_json(OPENZFS.to_json()) == OPENZFS
    assert ZfsCaps.from_json({"send_resume": "yes", "bogus": True}) == ZfsCaps()
    assert ZfsCaps.from_json(None) == ZfsCaps()


def test_a_zfs_that_cannot_be_asked_counts_as_zfs_fuse() -> None:
    from pverep.storage.zfscaps import probe_caps

    assert probe_caps(FakeZfsShell()) == ZfsCaps()  # the fake fails both probes


FUSE = ZfsCaps()


@pytest.mark.parametrize(
    ("pverep", "local", "remote", "encrypted", "form"),
    [
        (False, OPENZFS, OPENZFS, False, StreamForm()),  # stock peer: pvesr's stream
        (False, OPENZFS, None, True, StreamForm()),
        (True, FUSE, FUSE, False, StreamForm()),  # zfs-fuse lab: pvesr's stream
        (True, OPENZFS, FUSE, False, StreamForm()),  # target cannot keep partial state
        (True, OPENZFS, None, False, StreamForm()),  # target did not say
        (True, OPENZFS, OPENZFS, False, StreamForm(replication=False, resumable=True)),
        (True, OPENZFS, OPENZFS, True, StreamForm(replication=False, resumable=True, raw=True)),
        (
            True,
            OPENZFS,
            ZfsCaps(send_raw=True),
            True,
            StreamForm(replication=False, resumable=False, raw=True),
        ),
    ],
)
def test_choose_stream_form(
    pverep: bool, local: ZfsCaps, remote: ZfsCaps | None, encrypted: bool, form: StreamForm
) -> None:
    got = choose_stream_form(peer_is_pverep=pverep, local=local, remote=remote, encrypted=encrypted)
    assert got == form


def test_stock_peer_keeps_pvesrs_u_flag_when_the_tool_has_it() -> None:
    caps = parse_caps(PROXMOX_SEND, OPENZFS_RECV)
    form = choose_stream_form(peer_is_pverep=False, local=caps, remote=None, encrypted=True)
    assert send_argv("p/d", "s", None, form=form) == ["zfs", "send", "-RpvU", "--", "p/d@s"]


def test_encrypted_disk_without_raw_or_u_is_refused() -> None:
    with pytest.raises(StreamFormError, match="encrypted volume"):
        choose_stream_form(peer_is_pverep=True, local=OPENZFS, remote=FUSE, encrypted=True)


def test_send_and_recv_argv_per_form() -> None:
    assert send_argv("p/d", "s", "b") == ["zfs", "send", "-Rpv", "-I", "b", "--", "p/d@s"]
    resumable = StreamForm(replication=False, resumable=True)
    assert send_argv("p/d", "s", "b", form=resumable) == [
        "zfs", "send", "-pv", "-I", "b", "--", "p/d@s",
    ]  # fmt: skip
    raw = StreamForm(replication=False, resumable=True, raw=True)
    assert send_argv("p/d", "s", None, form=raw) == ["zfs", "send", "-pvw", "--", "p/d@s"]
    assert recv_argv("p/d") == ["zfs", "recv", "-F", "--", "p/d"]
    assert recv_argv("p/d", resumable=True, exclude_encryption=True) == [
        "zfs", "recv", "-F", "-s", "-x", "encryption", "--", "p/d",
    ]  # fmt: skip
    assert recv_abort_argv("p/d") == ["zfs", "recv", "-A", "--", "p/d"]
    assert resume_send_argv(TOKEN) == ["zfs", "send", "-v", "-t", TOKEN]
    assert resume_send_argv(TOKEN, dry_run=True)[2] == "-nvP"


@pytest.mark.parametrize("token", ["", "-", "1-2-3", "1-ab-cd-ef; rm -rf /", "x-ab-cd-ef"])
def test_resume_tokens_are_validated_before_any_argv(token: str) -> None:
    with pytest.raises(ValidationError):
        resume_send_argv(token)


DRY_RUN = """resume token contents:
nvlist version: 0
\tobject = 0x1
\toffset = 0x1c0000
\tbytes = 0x1100000
\ttoguid = 0x5c3ad8d2b4c7e2a1
\ttoname = rpool/data/vm-100-disk-0@__replicate_100-0_1700000000__
full\trpool/data/vm-100-disk-0@__replicate_100-0_1700000000__\t16777216
size\t16777216
"""


def test_resume_check_reads_snapshot_done_and_estimate() -> None:
    point = parse_resume_check(TOKEN, "rpool/data/vm-100-disk-0", DRY_RUN)
    assert point.snapshot == "__replicate_100-0_1700000000__"
    assert point.done == 0x1100000
    assert point.estimate == 16777216


def test_resume_check_refuses_another_datasets_token() -> None:
    with pytest.raises(ResumeCheckError, match="belongs to"):
        parse_resume_check(TOKEN, "rpool/data/vm-100-disk-1", DRY_RUN)
    with pytest.raises(ResumeCheckError, match="no snapshot"):
        parse_resume_check(TOKEN, "rpool/data/vm-100-disk-0", "size\t5\n")


class UsageShell:
    """Prints the given usage texts for ``zfs send`` / ``zfs receive``; counts the calls."""

    def __init__(self, node: str) -> None:
        self._node = node
        self.calls = 0

    @property
    def node(self) -> str:
        return self._node

    def run(self, argv: Sequence[str], *, timeout: float | None = None) -> CommandResult:
        self.calls += 1
        text = OPENZFS_SEND if argv[1] == "send" else OPENZFS_RECV
        return CommandResult(list(argv), 2, b"", text.encode())


def test_caps_are_cached_per_binary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pverep.storage import zfscaps

    binary = tmp_path / "bin" / "zfs"
    binary.parent.mkdir()
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    monkeypatch.setenv("PATH", str(binary.parent))
    monkeypatch.setattr(zfscaps, "_CACHE", {})  # a fresh process (mutmut reruns in one)
    cache = tmp_path / "run" / "zfs-caps.json"

    first = UsageShell("n1")
    assert zfscaps.local_caps(first, cache) == OPENZFS  # type: ignore[arg-type]
    assert first.calls == 2 and cache.exists()
    again = UsageShell("n2")  # another process (another node name: no in-process cache)
    assert zfscaps.local_caps(again, cache) == OPENZFS  # type: ignore[arg-type]
    assert again.calls == 0
    binary.write_text("#!/bin/sh\n# upgraded\n")  # a new binary is asked again
    upgraded = UsageShell("n3")
    zfscaps.local_caps(upgraded, cache)  # type: ignore[arg-type]
    assert upgraded.calls == 2


def test_usage_parsing_details() -> None:
    # "recv" is receive's short name; continuation lines start with [, < or -
    recv = "usage:\n\trecv [-s] <fs>\n\treceive\n\t  -A <fs>\n\trecv -x prop\n"
    caps = parse_caps("usage:\n\tsend [-nP]\n\t  [-w]\n\tsend -t <token>\n", recv)
    assert caps == ZfsCaps(
        send_resume=True, recv_resumable=True, recv_abort=True, send_raw=True,
        recv_exclude=True, send_dry_run=True,
    )  # fmt: skip
    # flags of other verbs, or after an unrelated line, are not this verb's
    other = "usage:\n\tlist [-w]\n\t[-U]\n\tsnapshot [-n]\n\tsend [-P]\n"
    assert parse_caps(other, "usage:\n\tlist [-s]\n\t-A x\n") == ZfsCaps()
    # -t / -A only as words; -n without -P is no dry run with sizes
    assert parse_caps("usage:\n\tsend [-n] -tx\n", "usage:\n\treceive -Ax\n") == ZfsCaps()
    assert parse_caps("usage:\n\tsend -t\n", "usage:\n\treceive -A\n") == ZfsCaps(recv_abort=True)
    assert parse_caps("usage:\n\tsend [-n] [-P]\n", "").send_dry_run


def test_the_probes_ask_zfs_send_and_receive_with_a_timeout() -> None:
    from pverep.storage import zfscaps

    seen: list[tuple[list[str], float | None]] = []

    class Shell(UsageShell):
        def run(self, argv: Sequence[str], *, timeout: float | None = None) -> CommandResult:
            seen.append((list(argv), timeout))
            return super().run(argv, timeout=timeout)

    assert zfscaps.probe_caps(Shell("n")) == OPENZFS  # type: ignore[arg-type]
    assert seen == [(["zfs", "send"], 10.0), (["zfs", "receive"], 10.0)]


def test_a_zfs_that_fails_to_start_counts_as_zfs_fuse() -> None:
    from pverep.storage import zfscaps

    class Broken(UsageShell):
        def run(self, argv: Sequence[str], *, timeout: float | None = None) -> CommandResult:
            raise FileNotFoundError(2, "No such file or directory", "zfs")

    assert zfscaps.probe_caps(Broken("n")) == ZfsCaps()  # type: ignore[arg-type]


def test_binary_identity(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pverep.storage import zfscaps

    monkeypatch.setenv("PATH", str(tmp_path))
    assert zfscaps.binary_identity() is None
    (tmp_path / "real").write_text("#!/bin/sh\n")
    (tmp_path / "real").chmod(0o755)
    (tmp_path / "zfs").symlink_to(tmp_path / "real")
    st = (tmp_path / "real").stat()
    assert zfscaps.binary_identity() == (
        f"{tmp_path / 'real'}:{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"
    )
    assert zfscaps.binary_identity("real") == zfscaps.binary_identity()


def test_the_cache_file_and_its_bad_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pverep.storage import zfscaps

    binary = tmp_path / "bin" / "zfs"
    binary.parent.mkdir()
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    monkeypatch.setenv("PATH", str(binary.parent))
    ident = zfscaps.binary_identity()
    cache = tmp_path / "run" / "deep" / "zfs-caps.json"
    monkeypatch.setattr(zfscaps, "_CACHE", {})
    zfscaps.local_caps(UsageShell("a"), cache)  # type: ignore[arg-type]
    doc = {"binary": ident, "caps": OPENZFS.to_json()}
    assert cache.read_text() == __import__("json").dumps(doc, sort_keys=True) + "\n"
    for bad in ["{", "[]", '{"binary": "other", "caps": {}}']:
        cache.write_text(bad)
        shell = UsageShell(f"n-{bad}")
        assert zfscaps.local_caps(shell, cache) == OPENZFS  # type: ignore[arg-type]
        assert shell.calls == 2
    # the same process asks once per node, with or without a cache file
    shell = UsageShell("b")
    zfscaps.local_caps(shell, None)  # type: ignore[arg-type]
    zfscaps.local_caps(shell, None)  # type: ignore[arg-type]
    assert shell.calls == 2
    # a cache that cannot be written is no error
    blocked = tmp_path / "file"
    blocked.write_text("")
    assert zfscaps.local_caps(UsageShell("c"), blocked / "caps.json") == OPENZFS  # type: ignore[arg-type]
    # no zfs on PATH: no cache file is read or written
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    elsewhere = tmp_path / "none.json"
    assert zfscaps.local_caps(UsageShell("d"), elsewhere) == OPENZFS  # type: ignore[arg-type]
    assert not elsewhere.exists()


def test_usage_text_details_that_still_count() -> None:
    from pverep.storage import zfscaps

    # a continuation line that starts with an operand still belongs to its verb
    recv = "usage:\n\treceive [-s]\n\t    <filesystem> [-x <property>]\n"
    assert parse_caps("", recv) == ZfsCaps(recv_resumable=True, recv_exclude=True)

    class Latin1(UsageShell):  # a translated usage text in another codec: no reason to fail
        def run(self, argv: Sequence[str], *, timeout: float | None = None) -> CommandResult:
            text = (OPENZFS_SEND if argv[1] == "send" else OPENZFS_RECV) + "Verwendung: \xfc\n"
            return CommandResult(list(argv), 2, b"", text.encode("latin-1"))

    assert zfscaps.probe_caps(Latin1("n")) == OPENZFS  # type: ignore[arg-type]


def test_the_cache_in_an_existing_directory_and_none_without_a_binary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pverep.storage import zfscaps

    binary = tmp_path / "bin" / "zfs"
    binary.parent.mkdir()
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    monkeypatch.setenv("PATH", str(binary.parent))
    monkeypatch.setattr(zfscaps, "_CACHE", {})
    (tmp_path / "run").mkdir()
    cache = tmp_path / "run" / "zfs-caps.json"
    zfscaps.local_caps(UsageShell("a"), cache)  # type: ignore[arg-type]
    assert cache.exists()
    # without a zfs binary there is no identity, and a record without one is never used
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    everything = ZfsCaps(True, True, True, True, True, True, True)
    cache.write_text(__import__("json").dumps({"binary": None, "caps": everything.to_json()}))
    shell = UsageShell("b")
    assert zfscaps.local_caps(shell, cache) == OPENZFS  # type: ignore[arg-type]
    assert shell.calls == 2
