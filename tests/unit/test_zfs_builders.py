"""zfspool's argv builders and parsers in the forms the older tests leave out: exact lists."""

from __future__ import annotations

import pytest

from pverep.errors import ValidationError
from pverep.storage import zfs
from pverep.storage.streamform import StreamForm

DS = "rpool/data/vm-100-disk-0"
TOKEN = "1-abc123-def0-789abc"


def test_send_argv_of_every_stream_form() -> None:
    tail = ["--", f"{DS}@b"]
    plain = StreamForm(replication=False, resumable=True)
    raw = StreamForm(replication=False, resumable=True, raw=True)
    assert zfs.send_argv(DS, "b", form=plain) == ["zfs", "send", "-pv", *tail]
    assert zfs.send_argv(DS, "b", "a", form=raw) == ["zfs", "send", "-pvw", "-I", "a", *tail]
    assert zfs.send_argv(DS, "b", "a", form=raw, with_snapshots=False) == [
        "zfs", "send", "-pvw", "-i", "a", *tail,
    ]  # fmt: skip
    # an explicit form wins over the keyword
    pvesr = StreamForm()
    assert zfs.send_argv(DS, "b", form=pvesr, no_preserve_encryption=True)[2] == "-Rpv"
    assert zfs.send_argv(DS, "b", form=StreamForm(no_preserve_encryption=True)) == [
        "zfs", "send", "-RpvU", *tail,
    ]  # fmt: skip
    assert zfs.send_argv(DS, "b", no_preserve_encryption=True) == ["zfs", "send", "-RpvU", *tail]
    assert zfs.send_argv(DS, "b", no_preserve_encryption=False) == ["zfs", "send", "-Rpv", *tail]


def test_resume_recv_and_get_argv_exact() -> None:
    assert zfs.resume_send_argv(TOKEN) == ["zfs", "send", "-v", "-t", TOKEN]
    assert zfs.resume_send_argv(TOKEN, dry_run=True) == ["zfs", "send", "-nvP", "-t", TOKEN]
    with pytest.raises(ValidationError):
        zfs.resume_send_argv("-o x")
    assert zfs.recv_argv(DS, resumable=True) == ["zfs", "recv", "-F", "-s", "--", DS]
    assert zfs.recv_argv(DS, resumable=True, exclude_encryption=True) == [
        "zfs", "recv", "-F", "-s", "-x", "encryption", "--", DS,
    ]  # fmt: skip
    assert zfs.recv_argv(DS, resumable=False, exclude_encryption=False) == [
        "zfs", "recv", "-F", "--", DS,
    ]  # fmt: skip
    assert zfs.recv_abort_argv(DS) == ["zfs", "recv", "-A", "--", DS]
    assert zfs.get_value_argv("encryption", DS) == [
        "zfs", "get", "-Hp", "-o", "value", "encryption", DS,
    ]  # fmt: skip
    assert zfs.send_estimate_argv(DS, "a") == [
        "zfs", "get", "-Hp", "-o", "value", "written@a", DS,
    ]  # fmt: skip
    assert zfs.send_estimate_argv(DS, None) == [
        "zfs", "get", "-Hp", "-o", "value", "referenced", DS,
    ]  # fmt: skip
    assert zfs.snapshot_list_argv("a", "b")[-3:] == ["name,guid,createtxg,creation", "a", "b"]


def _clone_cases() -> list[tuple[str | None, str]]:
    return [
        (None, "vm-1-disk-0"),
        ("rpool/data/base-9-disk-0@__base__", "base-9-disk-0/vm-1-disk-0"),
        ("rpool/data/base-9-disk-0", "vm-1-disk-0"),  # no snapshot at all
        ("rpool/data/base-9-disk-0@__base__x", "vm-1-disk-0"),
        ("rpool/data/base-9-disk-0@XX__base__XX", "vm-1-disk-0"),
        ("base-9-disk-0@__base__", "vm-1-disk-0"),  # no pool part
        ("rpool/data/@__base__", "vm-1-disk-0"),  # empty base name
        ("rpool/data/base 9@__base__", "vm-1-disk-0"),  # whitespace in the base
        ("rpool/data/base\t9@__base__", "vm-1-disk-0"),
        ("rpool/data/base-9@other@__base__", "base-9@other/vm-1-disk-0"),  # last @ splits
        ("rpool/data/x/base-9@__base__", "vm-1-disk-0"),
    ]


@pytest.mark.parametrize("i", range(len(_clone_cases())))
def test_clone_volname_edges(i: int) -> None:
    origin, volname = _clone_cases()[i]
    assert zfs.clone_volname("vm-1-disk-0", origin, "rpool/data") == volname


def test_parse_image_list_skips_and_fallbacks() -> None:
    text = (
        "rpool/data/vm-100-disk-0\t1024\t-\tvolume\n"  # 4 fields: skipped
        "rpool/data/vm-101-disk-0\t1024\t-\tsnapshot\t-\n"  # not volume/filesystem
        "rpool/data/subvol-102-disk-0\t-\t-\tfilesystem\t-\n"  # "-" quota: size 0
        "rpool/data/vm-103-disk-0\tjunk\t-\tvolume\t-\textra\n"  # unparsable size: 0
        "rpool/data/subvol-104-disk-0\t-\t-\tfilesystem\tjunk\n"
        "rpool/data/basevol-105-disk-0\t-\t-\tfilesystem\t4096\n"
        "rpool/data/base-106-disk-0\t2048\t-\tvolume\t-\n"
        "rpool/data/vm-10x-disk-0\t1\t-\tvolume\t-\n"  # owner not a number
        "rpool/data/vm-107-\t1\t-\tvolume\t-\n"  # no name after the owner
        "xrpool/data/vm-108-disk-0\t1\t-\tvolume\t-\n"
        "vm-109-disk-0\t1\t-\tvolume\t-\n"  # no parent
        "rpool/data/subvol-110-disk-0\t-\ttank/base-1@__base__\tfilesystem\tnone\n"
    )
    images = zfs.parse_image_list(text, "rpool/data")
    assert images == [
        zfs.ZfsImage("subvol-102-disk-0", 102, 0, "subvol", None, "subvol-102-disk-0"),
        zfs.ZfsImage("vm-103-disk-0", 103, 0, "raw", None, "vm-103-disk-0"),
        zfs.ZfsImage("subvol-104-disk-0", 104, 0, "subvol", None, "subvol-104-disk-0"),
        zfs.ZfsImage("basevol-105-disk-0", 105, 4096, "subvol", None, "basevol-105-disk-0"),
        zfs.ZfsImage("base-106-disk-0", 106, 2048, "raw", None, "base-106-disk-0"),
        zfs.ZfsImage(
            "subvol-110-disk-0", 110, 0, "subvol", "tank/base-1@__base__", "subvol-110-disk-0"
        ),
    ]


def test_parse_image_list_space_separated_and_empty() -> None:
    assert zfs.parse_image_list("", "p") == []
    assert zfs.parse_image_list("p/vm-1-disk-0 7 - volume -\n", "p") == [
        zfs.ZfsImage("vm-1-disk-0", 1, 7, "raw", None, "vm-1-disk-0")
    ]


def test_filter_send_noise() -> None:
    assert zfs._filter_send_noise(None) is None
    seen: list[str] = []
    forward = zfs._filter_send_noise(seen.append)
    assert forward is not None
    forward("WARNING: no-preserve-encryption flag set, sending dataset rpool/x")
    forward("full send of rpool/x@s estimated size is 1K")
    forward("note: WARNING: no-preserve-encryption flag set, sending dataset")
    assert seen == [
        "full send of rpool/x@s estimated size is 1K",
        "note: WARNING: no-preserve-encryption flag set, sending dataset",
    ]


def test_constants() -> None:
    assert zfs.HELPER_TIMEOUT == 10.0
    assert zfs.DESTROY_TRIES == 6
    assert zfs.BASE_SNAPSHOT == "__base__"
    assert zfs.ZFS == "zfs"
