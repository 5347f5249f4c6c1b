"""The node's bandwidth budget as configured: a default rate and time-of-day rules.

The syntax follows Proxmox's traffic-control rules: a rate is a number with a byte unit
(``20MB``, ``1.5GiB``, ``800KiB``; a bare number means MB/s like a job's ``rate``), a time frame
is ``[<weekdays>] <start>-<end>`` with calendar-event weekdays (``mon..fri 08:00-18:00``,
``sat,sun 9-12``; ``<end>`` may be ``24:00``; a frame whose end is before its start runs over
midnight). ``bandwidth_schedule`` lists ``<rate> <time frame>`` rules separated by ``;``; the
first rule whose frame contains the local wall-clock time wins, otherwise ``bandwidth``.

Pure: the caller passes the time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from pverep.calendar import ALL_WEEKDAYS, parse_weekdays
from pverep.errors import ValidationError

_UNITS = {
    "": 1e6,  # bare number: MB/s, as replication.cfg's rate
    "b": 1.0,
    "kb": 1e3,
    "mb": 1e6,
    "gb": 1e9,
    "tb": 1e12,
    "kib": 1024.0,
    "mib": 1024.0**2,
    "gib": 1024.0**3,
    "tib": 1024.0**4,
}
_RATE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([A-Za-z]*)(?:/s)?")
_TIME_RE = re.compile(r"(\d{1,2})(?::(\d{2}))?")
_FRAME_RE = re.compile(r"(?:(\S+)\s+)?(\S+)-(\S+)")


def parse_rate(text: str) -> float:
    """Bytes per second from ``20MB``, ``1.5GiB``, ``800 KiB/s`` or ``20`` (MB/s); > 0."""
    m = _RATE_RE.fullmatch(text.strip())
    unit = _UNITS.get(m.group(2).lower()) if m else None
    if m is None or unit is None or float(m.group(1)) <= 0:
        raise ValidationError(f"invalid rate '{text}' (e.g. 20MB, 1.5GiB)")
    return float(m.group(1)) * unit


def _minutes(text: str, frame: str) -> int:
    m = _TIME_RE.fullmatch(text)
    if m is None:
        raise ValidationError(f"invalid time '{text}' in time frame '{frame}'")
    hour, minute = int(m.group(1)), int(m.group(2) or 0)
    value = hour * 60 + minute
    if minute > 59 or value > 24 * 60:
        raise ValidationError(f"invalid time '{text}' in time frame '{frame}'")
    return value


@dataclass(frozen=True)
class Timeframe:
    """Weekdays (Monday = 0) and a daily window [start, end) in minutes after midnight."""

    weekdays: frozenset[int]
    start: int
    end: int

    @classmethod
    def parse(cls, text: str) -> Timeframe:
        m = _FRAME_RE.fullmatch(text.strip())
        if m is None:
            raise ValidationError(f"invalid time frame '{text}' (e.g. mon..fri 08:00-18:00)")
        days = ALL_WEEKDAYS if m.group(1) is None else parse_weekdays(m.group(1))
        start, end = _minutes(m.group(2), text), _minutes(m.group(3), text)
        if start == end:
            raise ValidationError(f"empty time frame '{text}'")
        return cls(days, start, end)

    def contains(self, when: datetime) -> bool:
        minute = when.hour * 60 + when.minute
        if self.start < self.end:
            return when.weekday() in self.weekdays and self.start <= minute < self.end
        # over midnight: the evening belongs to the listed day, the morning to the day after
        if minute >= self.start:
            return when.weekday() in self.weekdays
        return minute < self.end and (when.weekday() - 1) % 7 in self.weekdays


@dataclass(frozen=True)
class BandwidthPlan:
    """``default`` (bytes/s, None = unlimited) unless a rule's time frame applies."""

    default: float | None
    rules: tuple[tuple[float, Timeframe], ...] = ()

    @classmethod
    def parse(cls, default: str | None, schedule: str | None) -> BandwidthPlan:
        rate = parse_rate(default) if default else None
        rules = []
        for part in (schedule or "").split(";"):
            if not part.strip():
                continue
            words = part.strip().split(None, 1)
            if len(words) != 2:
                raise ValidationError(f"invalid schedule rule '{part.strip()}' (<rate> <frame>)")
            rules.append((parse_rate(words[0]), Timeframe.parse(words[1])))
        return cls(rate, tuple(rules))

    @property
    def limited(self) -> bool:
        return self.default is not None or bool(self.rules)

    def rate_at(self, when: datetime) -> float | None:
        """The budget in force at local wall-clock time ``when``."""
        for rate, frame in self.rules:
            if frame.contains(when):
                return rate
        return self.default
