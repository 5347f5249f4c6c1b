"""Progress lines: dd-style text, pvesr's thinning, the zfs send -v estimate."""

from __future__ import annotations

import re

import pytest

from pverep.engine.progress import ProgressThinner, parse_estimate, progress_line, should_show

#: pvesr's storage_migrate filter for dd-style lines; our lines must match it.
PVESR_DD_RE = re.compile(r"(?:\d+ bytes)(?:.+?copied, )(\d+) s")


@pytest.mark.parametrize(
    ("second", "shown"),
    [
        (1, False),
        (3, True),
        (57, True),
        (58, False),
        (60, True),
        (65, False),
        (590, True),
        (600, True),
        (610, False),
        (630, True),
    ],
)
def test_thinning_intervals(second: int, shown: bool) -> None:
    assert should_show(second) is shown


def test_line_matches_pvesrs_dd_pattern_and_shows_percent() -> None:
    line = progress_line(50 << 20, 3.4, 10e6, 100 << 20)
    m = PVESR_DD_RE.search(line)
    assert m is not None and m.group(1) == "3"
    assert line == "52428800 bytes (50.0 MiB) copied, 3 s, 9.5 MiB/s, 50% of 100.0 MiB"


def test_thinner_emits_each_second_once() -> None:
    thin = ProgressThinner()
    seen = [thin.line(n, t, 1.0) for n, t in [(1, 1.0), (2, 3.0), (3, 3.9), (4, 6.1)]]
    assert [s is not None for s in seen] == [False, True, False, True]


@pytest.mark.parametrize(
    ("line", "size"),
    [
        ("total estimated size is 1.50G", 3 << 29),
        ("total estimated size is 512K", 512 << 10),
        ("total estimated size is 1000", 1000),
        ("full send of x@y estimated size is 1G", None),
    ],
)
def test_estimate_from_zfs_send_v(line: str, size: int | None) -> None:
    assert parse_estimate(line) == size


def test_summary_line_is_never_thinned() -> None:
    from pverep.engine.progress import summary_line

    line = summary_line(20_000_000, 2.0)
    assert line == "20000000 bytes (19.1 MiB) copied, 2.000 s, 10.00 MB/s"
    assert PVESR_DD_RE.search(line) is None
