"""Transfer progress lines for the job log, thinned the way pvesr thins dd-style output.

Lines look like dd's (``<n> bytes (<human>) copied, <s> s, <rate>``) so pvesr's own filter
(storage_migrate: every 3rd second for the first minute, every 10th up to 10 minutes, then every
30th) applies to them unchanged; a percentage is appended when the send stream announced its
total estimated size (OpenZFS ``zfs send -v``; zfs-fuse does not).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}
_ESTIMATE_RE = re.compile(r"^total estimated size is\s+([0-9.]+)\s*([KMGTP]?)B?\s*$")


def parse_size(number: str, unit: str) -> int:
    return int(float(number) * _UNITS[unit])


def parse_estimate(line: str) -> int | None:
    """Bytes from zfs send -v's ``total estimated size is 1.23G`` line, else None."""
    m = _ESTIMATE_RE.match(line.strip())
    return parse_size(m.group(1), m.group(2)) if m else None


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")  # pragma: no mutate (never reached: "TiB" returns)


def should_show(elapsed_s: int) -> bool:
    """pvesr's storage_migrate thinning of ``N bytes … copied, S s`` lines."""
    # The bounds are multiples of both steps around them (60 of 3 and 10, 600 of 10 and 30):
    # the boundary second is shown either way, so `<` and `<=` there cannot be told apart.
    if elapsed_s < 60:  # pragma: no mutate (see above)
        return elapsed_s % 3 == 0
    if elapsed_s < 600:  # pragma: no mutate (see above)
        return elapsed_s % 10 == 0
    return elapsed_s % 30 == 0


def progress_line(nbytes: int, elapsed: float, rate: float, estimate: int | None) -> str:
    line = f"{nbytes} bytes ({human(nbytes)}) copied, {int(elapsed)} s, {human(rate)}/s"
    if estimate:
        line += f", {min(100.0, 100.0 * nbytes / estimate):.0f}% of {human(estimate)}"
    return line


def summary_line(nbytes: int, elapsed: float) -> str:
    """The closing line (like dd's last one): exact seconds, average rate in decimal MB/s.

    pvesr's thinning pattern needs whole seconds before `` s``, so this line is always kept.
    """
    rate = nbytes / elapsed if elapsed > 0 else 0.0
    return f"{nbytes} bytes ({human(nbytes)}) copied, {elapsed:.3f} s, {rate / 1e6:.2f} MB/s"


@dataclass
class ProgressThinner:
    """Turns once-a-second byte counts into the few lines pvesr would keep."""

    estimate: int | None = None
    _last_second: int = -1

    def line(self, nbytes: int, elapsed: float, rate: float) -> str | None:
        second = int(elapsed)
        if second == 0 or second == self._last_second or not should_show(second):
            return None
        self._last_second = second
        return progress_line(nbytes, elapsed, rate, self.estimate)
