"""``engine.resume.parse_resume_check``: what ``zfs send -nvP -t <token>`` says about a kept
partial receive, read field by field (the output's shape as OpenZFS prints it)."""

from __future__ import annotations

import pytest

from pverep.engine.resume import ResumeCheckError, ResumePoint, parse_resume_check

DATASET = "rpool/data/vm-100-disk-0"
SNAP = "__replicate_100-0_1700000000__"
TOKEN = "1-e2c1c0a1a-f8-789c636064000310a500c4ec50360710e72765a526973030"


def _output(*, toname: str = f"{DATASET}@{SNAP}", bytes_line: str | None = "0x1100000",
            size: str | None = "16777216") -> str:  # fmt: skip
    lines = ["resume token contents:", "nvlist version: 0", "\tobject = 0x1",
             "\toffset = 0x1c0000"]  # fmt: skip
    if bytes_line is not None:
        lines.append(f"\tbytes = {bytes_line}")
    lines += ["\ttoguid = 0x5c3ad8d2b4c7e2a1", f"\ttoname = {toname}",
              f"full\t{toname}\t16777216"]  # fmt: skip
    if size is not None:
        lines.append(f"size\t{size}")
    return "\n".join(lines) + "\n"


def test_the_whole_resume_point() -> None:
    assert parse_resume_check(TOKEN, DATASET, _output()) == ResumePoint(
        TOKEN, SNAP, 0x1100000, 16777216
    )


@pytest.mark.parametrize(
    ("value", "done"),
    [("0x1100000", 0x1100000), ("0xAbC", 0xABC), ("12345", 12345), ("0", 0)],
)
def test_bytes_in_hex_or_decimal(value: str, done: int) -> None:
    assert parse_resume_check(TOKEN, DATASET, _output(bytes_line=value)).done == done


@pytest.mark.parametrize("value", ["0x", "12abc", "-5", "0x12 34"])
def test_a_malformed_bytes_line_is_not_read(value: str) -> None:
    assert parse_resume_check(TOKEN, DATASET, _output(bytes_line=value)).done == 0


def test_without_bytes_nothing_is_done_and_without_size_no_estimate() -> None:
    point = parse_resume_check(TOKEN, DATASET, _output(bytes_line=None, size=None))
    assert (point.done, point.estimate) == (0, None)


def test_spacing_around_the_fields() -> None:
    text = f"  toname   =   {DATASET}@{SNAP}  \n bytes=7 \n  size \t 99  \n"
    assert parse_resume_check(TOKEN, DATASET, text) == ResumePoint(TOKEN, SNAP, 7, 99)


@pytest.mark.parametrize(
    "line",
    ["\tsize = 5", "sizes\t5", "size\t5x", "incremental\tsize\t5", "size\t"],
)
def test_only_the_estimate_line_gives_the_estimate(line: str) -> None:
    text = f"\ttoname = {DATASET}@{SNAP}\n{line}\n"
    assert parse_resume_check(TOKEN, DATASET, text).estimate is None


@pytest.mark.parametrize(
    "line", ["\ttonames = x@y", "\tfromname = " + DATASET + "@" + SNAP, "\ttoname = a b@c"]
)
def test_other_fields_are_no_snapshot(line: str) -> None:
    with pytest.raises(ResumeCheckError) as err:
        parse_resume_check(TOKEN, DATASET, f"{line}\nsize\t5\n")
    assert str(err.value) == "the token names no snapshot"


@pytest.mark.parametrize(
    "toname", [DATASET, f"{DATASET}-x@{SNAP}", f"rpool/data@{SNAP}", f"{DATASET}/sub@{SNAP}"]
)
def test_a_token_of_another_dataset_or_without_a_snapshot_is_refused(toname: str) -> None:
    with pytest.raises(ResumeCheckError) as err:
        parse_resume_check(TOKEN, DATASET, _output(toname=toname))
    assert str(err.value) == f"the token belongs to '{toname}'"


def test_the_last_toname_counts_and_a_snapshot_may_hold_an_at() -> None:
    text = f"\ttoname = other/ds@x\n\ttoname = {DATASET}@a@b\n"
    assert parse_resume_check(TOKEN, DATASET, text).snapshot == "a@b"
