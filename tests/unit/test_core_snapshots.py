"""pverep._core snapshot-list parsing: grouping, order, errors with line numbers."""

import os

import pytest

import pverep._core as core
from pverep.errors import CoreError, PverepError, SnapshotParseError

LISTING = (
    "rpool/data/vm-100-disk-0@__replicate_100-0_1700000000__\t111\t10\t1700000000\n"
    "rpool/data/vm-100-disk-0@snap1\t112\t11\t1700000100\n"
    "rpool/data/vm-100-disk-1@__replicate_100-0_1700000000__\t211\t10\t1700000000\n"
)


def test_parse_groups_by_dataset_in_input_order() -> None:
    out = core.parse_snapshot_list(LISTING.encode())
    assert list(out) == ["rpool/data/vm-100-disk-0", "rpool/data/vm-100-disk-1"]
    first = out["rpool/data/vm-100-disk-0"]
    assert [s.name for s in first] == ["__replicate_100-0_1700000000__", "snap1"]
    snap = first[1]
    assert (snap.dataset, snap.guid, snap.createtxg, snap.creation) == (
        "rpool/data/vm-100-disk-0",
        112,
        11,
        1700000100,
    )
    assert snap.full_name == "rpool/data/vm-100-disk-0@snap1"


def test_str_and_bytes_agree_and_empty_input_is_fine() -> None:
    assert core.parse_snapshot_list(LISTING) == core.parse_snapshot_list(LISTING.encode())
    assert core.parse_snapshot_list(b"") == {}
    assert core.parse_snapshot_list("\n") == {}
    assert len(core.parse_snapshot_list(LISTING.rstrip("\n"))["rpool/data/vm-100-disk-1"]) == 1


def test_snapshot_info_is_frozen_and_hashable() -> None:
    a = core.SnapshotInfo("p/a", "s", 1, 2, 3)
    b = core.SnapshotInfo("p/a", "s", 1, 2, 3)
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a != core.SnapshotInfo("p/a", "s", 9, 2, 3)
    with pytest.raises(AttributeError):
        a.guid = 5  # type: ignore[misc]


@pytest.mark.parametrize(
    ("data", "line", "fragment"),
    [
        (LISTING + "garbage line\n", 4, "expected 4 tab-separated columns"),
        ("a@s\tnot-a-number\t1\t1\n", 1, "invalid guid 'not-a-number'"),
        ("a@s\t1\t1\t1\n\na@t\t1\t-5\t1\n", 3, "invalid createtxg '-5'"),
        ("a@s\t1\t1\t\n", 1, "invalid creation ''"),
        ("no-at-sign\t1\t1\t1\n", 1, "<dataset>@<snapshot>"),
        ("a@s\t1\t1\t1\t1\n", 1, "got 5"),
        (b"a@s\t1\t1\t1\n\xff\xfe\n", 2, "not valid UTF-8"),
    ],
)
def test_bad_input_raises_typed_error_with_line(
    data: str | bytes, line: int, fragment: str
) -> None:
    with pytest.raises(SnapshotParseError) as err:
        core.parse_snapshot_list(data)
    message = str(err.value)
    assert message.startswith(f"line {line}: "), message
    assert fragment in message
    assert isinstance(err.value, CoreError) and isinstance(err.value, PverepError)


def test_non_text_argument_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="expected bytes or str, got int"):
        core.parse_snapshot_list(42)  # type: ignore[arg-type]


def test_parse_zfs_get() -> None:
    out = core.parse_zfs_get("pool/a\tguid\t42\npool/a\trefquota\t-\npool/b@s\tguid\t7\n")
    assert out == {"pool/a": {"guid": "42", "refquota": "-"}, "pool/b@s": {"guid": "7"}}
    with pytest.raises(SnapshotParseError, match=r"^line 2: expected 3 tab-separated columns"):
        core.parse_zfs_get("pool/a\tguid\t42\npool/a guid 42\n")


def test_snapshot_table_and_compare() -> None:
    local = core.SnapshotTable("d@a\t1\t1\t1\nd@b\t2\t2\t2\nd@c\t3\t3\t3\ne@x\t9\t9\t9\n")
    remote = core.SnapshotTable(b"d@a\t1\t1\t1\nd@b\t7\t2\t2\nd@z\t4\t4\t4\n")
    assert len(local) == 4 and local.datasets() == ["d", "e"] and "e" in local
    assert [s.name for s in local.snapshots("d")] == ["a", "b", "c"]
    assert local.snapshots("nope") == []
    assert local.to_dict() == core.parse_snapshot_list(
        "d@a\t1\t1\t1\nd@b\t2\t2\t2\nd@c\t3\t3\t3\ne@x\t9\t9\t9\n"
    )
    d, e = local.compare(remote)
    assert (d.dataset, d.common, d.only_local, d.only_remote, d.diverged, d.newest_common) == (
        "d",
        1,
        ["c"],
        ["z"],
        ["b"],
        "a",
    )
    assert (e.dataset, e.common, e.only_local, e.newest_common) == ("e", 0, ["x"], None)


def test_snapshot_table_from_fd(tmp_path) -> None:
    r, w = os.pipe()
    with os.fdopen(w, "wb") as f:
        f.write(LISTING.encode())
    try:
        table = core.SnapshotTable.from_fd(r)
    finally:
        os.close(r)
    assert table.to_dict() == core.parse_snapshot_list(LISTING)
    bad = tmp_path / "bad"
    bad.write_text(LISTING + "x@y\t1\n")
    with open(bad, "rb") as f, pytest.raises(SnapshotParseError, match=r"^line 4: "):
        core.SnapshotTable.from_fd(f.fileno())
    with pytest.raises(OSError):
        core.SnapshotTable.from_fd(r)  # closed by now
