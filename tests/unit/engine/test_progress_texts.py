"""Progress texts compared whole: sizes and units, human sizes at their boundaries, the
thinning at each interval's edges, the estimate's forms."""

from __future__ import annotations

import pytest

from pverep.engine.progress import (
    ProgressThinner,
    human,
    parse_estimate,
    parse_size,
    progress_line,
    should_show,
    summary_line,
)


@pytest.mark.parametrize(
    ("number", "unit", "size"),
    [
        ("3", "", 3),
        ("3", "B", 3),
        ("1.5", "K", 1536),
        ("2", "M", 2 << 20),
        ("2", "G", 2 << 30),
        ("2", "T", 2 << 40),
        ("2", "P", 2 << 50),
        ("0.9", "", 0),
    ],
)
def test_parse_size(number: str, unit: str, size: int) -> None:
    assert parse_size(number, unit) == size


@pytest.mark.parametrize(
    ("line", "size"),
    [
        ("  total estimated size is 2T  \n", 2 << 40),
        ("total estimated size is 1.5MB", 3 << 19),
        ("total estimated size is\t7 KB", 7 << 10),
        ("total estimated size is 12B", 12),
        ("total estimated size is 1P", 1 << 50),
        ("xtotal estimated size is 1G", None),
        ("total estimated size is 1G!", None),
        ("total estimated size is 1X", None),
        ("total estimated size is", None),
    ],
)
def test_parse_estimate_forms(line: str, size: int | None) -> None:
    assert parse_estimate(line) == size


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (-1023, "-1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        ((1 << 20) - 1, "1024.0 KiB"),
        (1 << 20, "1.0 MiB"),
        (3 << 30, "3.0 GiB"),
        (5 << 40, "5.0 TiB"),
        (4096 << 40, "4096.0 TiB"),
    ],
)
def test_human(n: int, text: str) -> None:
    assert human(n) == text


@pytest.mark.parametrize(
    ("second", "shown"),
    [
        (0, True),
        (2, False),
        (59, False),
        (54, True),
        (61, False),
        (70, True),
        (599, False),
        (595, False),
        (620, False),
        (660, True),
        (900, True),
        (910, False),
    ],
)
def test_thinning_edges(second: int, shown: bool) -> None:
    assert should_show(second) is shown


def test_progress_line_without_or_with_zero_estimate_has_no_percent() -> None:
    assert progress_line(2048, 9.99, 1024.0, None) == "2048 bytes (2.0 KiB) copied, 9 s, 1.0 KiB/s"
    assert progress_line(2048, 9.0, 1.0, 0) == "2048 bytes (2.0 KiB) copied, 9 s, 1 B/s"


def test_percent_is_capped_at_100() -> None:
    assert progress_line(3000, 3.0, 1000.0, 1000) == (
        "3000 bytes (2.9 KiB) copied, 3 s, 1000 B/s, 100% of 1000 B"
    )
    assert progress_line(333, 3.0, 1.0, 1000).endswith(", 33% of 1000 B")


def test_summary_line_at_zero_seconds() -> None:
    assert summary_line(5, 0.0) == "5 bytes (5 B) copied, 0.000 s, 0.00 MB/s"
    assert summary_line(3_000_000, 0.5) == "3000000 bytes (2.9 MiB) copied, 0.500 s, 6.00 MB/s"


def test_summary_rate_is_in_decimal_megabytes() -> None:
    # 10^12 bytes in 1 s is exactly 10^6 MB/s: a divisor off by one shows in the last digits.
    assert summary_line(10**12, 1.0).endswith(", 1.000 s, 1000000.00 MB/s")


def test_thinner_lines_carry_the_estimate_and_skip_second_zero() -> None:
    thin = ProgressThinner(estimate=4096)
    assert thin.line(10, 0.5, 20.0) is None  # second 0 is never shown
    assert thin.line(1024, 3.2, 512.0) == (
        "1024 bytes (1.0 KiB) copied, 3 s, 512 B/s, 25% of 4.0 KiB"
    )
    assert thin.line(2048, 3.9, 512.0) is None  # the same second again
    assert thin.line(2048, 4.0, 512.0) is None  # not a third second
    assert thin.line(4096, 6.0, 512.0) == (
        "4096 bytes (4.0 KiB) copied, 6 s, 512 B/s, 100% of 4.0 KiB"
    )
