"""Calendar events (`pve-calendar-event`): parser and next-event computation.

A pure-Python re-implementation of the algorithm of the proxmox-time crate that PVE uses since
2021-12 (spec §3.7): same grammar, same accept/reject decisions, same "smallest matching second
strictly after `last`" search, normalised through the calendar like libc's timegm/mktime.
Error texts are proxmox-time's (pvesr shows them to users): the same quoted fragment and nom kind.

Time zones come from zoneinfo and are injectable, so every computation is a pure function of
(event, last, zone). Wall-clock times that do not exist or exist twice around a DST change are
resolved like glibc's mktime with tm_isdst = -1 does in practice: with the UTC offset that was in
effect before the edit, which keeps the search moving forward in time.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pverep.errors import ValidationError

#: The default schedule of a replication job.
DEFAULT_SCHEDULE = "*/15"

#: What PVE's trim() removes (Perl's \s on a byte string). Python's str.strip() also removes
#: the separators \x1c-\x1f and Unicode spaces, which PVE leaves in place and then rejects.
_PERL_SPACE = " \t\n\r\f\v"

#: proxmox-time gives up after this many adjustment steps (and returns "no next event").
_MAX_STEPS = 1000


class CalendarEventError(ValidationError):
    """The text is not a calendar event."""


# --- the parsed event ------------------------------------------------------------------------


@dataclass(frozen=True)
class Single:
    value: int

    def contains(self, v: int) -> bool:
        return v == self.value

    def next_after(self, v: int) -> int | None:
        return self.value if self.value > v else None


@dataclass(frozen=True)
class Range:
    start: int
    end: int

    def contains(self, v: int) -> bool:
        return self.start <= v <= self.end

    def next_after(self, v: int) -> int | None:
        if v < self.start:
            return self.start
        n = v + 1  # > start, as v >= start here
        return n if n <= self.end else None


@dataclass(frozen=True)
class Repeated:
    """``start/step`` or ``start..end/step``; a step of 0 means just ``start``."""

    start: int
    step: int
    end: int | None = None

    def contains(self, v: int) -> bool:
        if v < self.start:
            return False
        if self.step == 0:
            return v == self.start
        return (v - self.start) % self.step == 0 and (self.end is None or v <= self.end)

    def next_after(self, v: int) -> int | None:
        if v < self.start:
            return self.start
        if self.step == 0:
            return None
        n = self.start + ((v - self.start + self.step) // self.step) * self.step
        return n if self.end is None or n <= self.end else None


Value = Single | Range | Repeated
#: An empty list means "any value".
ValueList = tuple[Value, ...]


def _list_contains(values: ValueList, v: int) -> bool:
    return any(x.contains(v) for x in values)


def _find_next(values: ValueList, v: int) -> int | None:
    found = [n for n in (x.next_after(v) for x in values) if n is not None]
    return min(found) if found else None


_ZERO: ValueList = (Single(0),)
ALL_WEEKDAYS = frozenset(range(7))


@dataclass(frozen=True)
class CalendarEvent:
    """A parsed event. Weekdays are numbered Monday = 0 … Sunday = 6; empty means every day."""

    text: str = ""
    utc: bool = False
    weekdays: frozenset[int] = field(default_factory=frozenset)
    second: ValueList = ()
    minute: ValueList = ()
    hour: ValueList = ()
    day: ValueList = ()
    month: ValueList = ()
    year: ValueList = ()

    @classmethod
    def parse(cls, text: str) -> CalendarEvent:
        """Parse like PVE: trim surrounding whitespace, reject empty input, then the grammar."""
        trimmed = text.strip(_PERL_SPACE)
        if not trimmed:
            raise CalendarEventError("unable to parse calendar event - event is empty")
        return _Parser(trimmed).event(original=text)


def parse_calendar_event(text: str) -> CalendarEvent:
    return CalendarEvent.parse(text)


def verify_calendar_event(text: str) -> str:
    """The `pve-calendar-event` format check, with PVE's schema wording; returns ``text``."""
    try:
        CalendarEvent.parse(text)
    except CalendarEventError as err:
        raise CalendarEventError(f"invalid calendar event '{text}' - {err}") from None
    return text


def parse_weekdays(text: str) -> frozenset[int]:
    """A weekday list as in calendar events (``mon..fri``, ``sat,sun``; Monday = 0), e.g.
    for the time frames of a bandwidth schedule."""
    parser = _Parser(text)
    try:
        days, end = parser._weekday_list(0)
    except _Fail as fail:
        raise parser._error(fail) from None
    if end != len(text):
        raise parser._error(_Fail(end, "Nom(Eof)"))
    return days


# --- parser (mirrors the nom combinators of proxmox-time, including their backtracking) -------


class _Fail(Exception):
    """A parse failure at ``pos``; ``end`` limits the quoted text (proxmox-time quotes only the
    word it could not parse for a bad weekday, else the rest of the input)."""

    def __init__(self, pos: int, what: str, end: int | None = None) -> None:
        # never shown: a _Fail does not leave the parser, which quotes .what (mutants: equivalent)
        super().__init__(what)  # pragma: no mutate
        self.pos = pos
        self.what = what
        self.end = end


_KEYWORDS: dict[str, dict[str, ValueList]] = {
    "minutely": {"second": _ZERO},
    "hourly": {"minute": _ZERO, "second": _ZERO},
    "daily": {"hour": _ZERO, "minute": _ZERO, "second": _ZERO},
    "weekly": {"hour": _ZERO, "minute": _ZERO, "second": _ZERO},
    "monthly": {"hour": _ZERO, "minute": _ZERO, "second": _ZERO, "day": (Single(1),)},
    "yearly": {
        "hour": _ZERO,
        "minute": _ZERO,
        "second": _ZERO,
        "day": (Single(1),),
        "month": (Single(1),),
    },
    "quarterly": {
        "hour": _ZERO,
        "minute": _ZERO,
        "second": _ZERO,
        "day": (Single(1),),
        "month": (Single(1), Single(4), Single(7), Single(10)),
    },
    "semiannually": {
        "hour": _ZERO,
        "minute": _ZERO,
        "second": _ZERO,
        "day": (Single(1),),
        "month": (Single(1), Single(7)),
    },
}
_KEYWORDS["annually"] = _KEYWORDS["yearly"]
_KEYWORDS["semi-annually"] = _KEYWORDS["semiannually"]

_WEEKDAY_NAMES = {
    "mon": 0,
    "monday": 0,
    "tue": 1,
    "tuesday": 1,
    "wed": 2,
    "wednesday": 2,
    "thu": 3,
    "thursday": 3,
    "fri": 4,
    "friday": 4,
    "sat": 5,
    "saturday": 5,
    "sun": 6,
    "sunday": 6,
}
# ASCII only, like nom's digit1/alpha1 (Python's \d also takes Arabic-Indic or fullwidth digits).
_DIGITS = re.compile(r"[0-9]+")
_ALPHA = re.compile(r"[A-Za-z]+")


class _Parser:
    def __init__(self, text: str) -> None:
        self.s = text

    def _error(self, fail: _Fail) -> CalendarEventError:
        return CalendarEventError(
            f"unable to parse calendar event at '{self.s[fail.pos : fail.end]}' - {fail.what}"
        )

    def event(self, original: str) -> CalendarEvent:
        try:
            fields, utc, end = self._event()
        except _Fail as fail:
            raise self._error(fail) from None
        if end != len(self.s):
            raise self._error(_Fail(end, "Nom(Eof)"))
        return CalendarEvent(text=original, utc=utc, **fields)  # type: ignore[arg-type]

    def _space0(self, pos: int) -> int:
        while pos < len(self.s) and self.s[pos] in " \t":
            pos += 1
        return pos

    def _event(self) -> tuple[dict[str, object], bool, int]:
        utc = False
        if self.s.endswith("UTC"):
            utc = True
            self.s = self.s[:-3].rstrip(" ")
        s = self.s
        fields: dict[str, object] = {}
        pos = 0
        # only tested for truth, so False or None is the same (mutants: equivalent)
        has_day = has_date = has_time = False  # pragma: no mutate
        if s[:1].isascii() and s[:1].isalpha():
            if s in _KEYWORDS:
                fields.update(_KEYWORDS[s])
                if s == "weekly":
                    fields["weekdays"] = frozenset({0})
                return fields, utc, len(s)
            days, pos = self._weekday_list(pos)
            fields["weekdays"] = days
            has_day = True
            pos = self._space0(pos)
        try:
            (year, month, day), after = self._date_spec(pos)
        except _Fail:
            pass
        else:
            fields.update(year=year, month=month, day=day)
            has_date = True
            pos = self._space0(after)
        try:
            (hour, minute, second), after = self._time_spec(pos)
        except _Fail:
            fields.update(hour=_ZERO, minute=_ZERO, second=_ZERO)
        else:
            fields.update(hour=hour, minute=minute, second=second)
            has_time = True
            pos = after
        if not (has_day or has_date or has_time):
            what = 'Context("date or time specification")'
            # nothing was parsed: quoted from the start (a position of None does the same)
            raise _Fail(0, what)  # pragma: no mutate
        return fields, utc, pos

    # weekdays
    def _weekday(self, pos: int) -> tuple[int, int]:
        m = _ALPHA.match(self.s, pos)
        # Both failures reach the user only from position 0 (a later weekday is optional and
        # backtracks), where a position of None quotes the same text as 0 (mutants: equivalent).
        if not m:
            what = "Nom(Alpha)"
            raise _Fail(pos, what)  # pragma: no mutate
        day = _WEEKDAY_NAMES.get(m.group().lower())
        if day is None:
            what, end = 'Context("weekday")', m.end()
            raise _Fail(pos, what, end)  # pragma: no mutate
        return day, m.end()

    def _weekday_range(self, pos: int) -> tuple[frozenset[int], int]:
        start, pos = self._weekday(pos)
        if self.s.startswith("..", pos):
            try:
                end, after = self._weekday(pos + 2)
            except _Fail:
                return frozenset({start}), pos
            if start > end:  # wraps over the week end: fri..mon
                return frozenset(range(start, 7)) | frozenset(range(end + 1)), after
            return frozenset(range(start, end + 1)), after
        return frozenset({start}), pos

    def _weekday_list(self, pos: int) -> tuple[frozenset[int], int]:
        days, pos = self._weekday_range(pos)
        while self.s.startswith(",", pos):
            try:
                more, after = self._weekday_range(pos + 1)
            except _Fail:
                break
            days, pos = days | more, after
        return days, pos

    # numbers and lists
    def _comp(self, pos: int, limit: int) -> tuple[int, int]:
        m = _DIGITS.match(self.s, pos)
        # The failures of numbers, lists and date specs are all caught by _event (date and time
        # are optional there): their position and text never reach the user, only the "date or
        # time specification" or Eof failure they lead to (mutants: equivalent).
        if not m:
            raise _Fail(pos, "Nom(Digit)")  # pragma: no mutate
        value = int(m.group())
        if value >= limit:
            raise _Fail(m.end(), 'Context("time value too large")')  # pragma: no mutate
        return value, m.end()

    def _date_time_comp(self, pos: int, limit: int) -> tuple[Value, int]:
        value, pos = self._comp(pos, limit)
        if self.s.startswith("..", pos):
            try:
                end, after = self._comp(pos + 2, limit)
            except _Fail:
                pass  # "5.." is 5, the ".." stays unparsed
            else:
                if value > end:
                    what = 'Context("range start is bigger than end")'  # pragma: no mutate
                    raise _Fail(after, what)  # pragma: no mutate (see _comp)
                if self.s.startswith("/", after):
                    step, after = self._comp(after + 1, limit)
                    return Repeated(value, step, end), after
                return Range(value, end), after
        if self.s.startswith("/", pos):
            step, pos = self._comp(pos + 1, limit)
            return Repeated(value, step), pos
        return Single(value), pos

    def _list(self, pos: int, start: int, limit: int) -> tuple[ValueList, int]:
        if self.s.startswith("*", pos):
            rest = pos + 1
            if self.s.startswith("/", rest):
                step, after = self._comp(rest + 1, limit)
                if step > 0:
                    return (Repeated(start, step),), after
            # bare "*" = any; "*/0" leaves "/0" unparsed, which then fails the whole event
            return (), rest
        first, pos = self._date_time_comp(pos, limit)
        values = [first]
        while self.s.startswith(",", pos):
            try:
                value, after = self._date_time_comp(pos + 1, limit)
            except _Fail:
                break
            values.append(value)
            pos = after
        return tuple(values), pos

    def _expect(self, pos: int, tag: str) -> int:
        if not self.s.startswith(tag, pos):
            raise _Fail(pos, "Nom(Tag)")  # pragma: no mutate (see _comp)
        return pos + len(tag)

    def _date_spec(self, pos: int) -> tuple[tuple[ValueList, ValueList, ValueList], int]:
        try:
            year, p = self._list(pos, 0, 2200)
            month, p = self._list(self._expect(p, "-"), 1, 13)
            day, p = self._list(self._expect(p, "-"), 1, 32)
            return (year, month, day), p
        except _Fail:
            pass
        try:
            month, p = self._list(pos, 1, 13)
            day, p = self._list(self._expect(p, "-"), 1, 32)
            return ((), month, day), p
        except _Fail:
            # (see _comp)
            raise _Fail(pos, 'Context("invalid date spec")') from None  # pragma: no mutate

    def _time_spec(self, pos: int) -> tuple[tuple[ValueList, ValueList, ValueList], int]:
        hour: ValueList = ()
        try:
            h, p = self._list(pos, 0, 24)
            pos, hour = self._expect(p, ":"), h
        except _Fail:
            pass
        minute, pos = self._list(pos, 0, 60)
        second: ValueList = _ZERO
        if self.s.startswith(":", pos):
            with contextlib.suppress(_Fail):  # ":" not followed by seconds: leave it unparsed
                second, pos = self._list(pos + 1, 0, 60)
        return (hour, minute, second), pos


# --- next event ------------------------------------------------------------------------------

_NAIVE_EPOCH = datetime(1970, 1, 1)


class _BrokenDownTime:
    """Editable broken-down time, normalised after every edit like libc's timegm/mktime."""

    def __init__(self, epoch: int, zone: tzinfo | None) -> None:
        self.zone = zone
        self._load(datetime.fromtimestamp(epoch, zone or UTC))

    def _load(self, dt: datetime) -> None:
        self.year, self.month, self.day = dt.year, dt.month, dt.day
        self.hour, self.minute, self.second = dt.hour, dt.minute, dt.second
        self.day_num = dt.weekday()
        offset = dt.utcoffset()
        assert offset is not None  # dt is aware (zone or UTC)
        self.offset = offset

    def _naive(self) -> datetime:
        year = self.year + (self.month - 1) // 12
        month = (self.month - 1) % 12 + 1
        return datetime(year, month, 1) + timedelta(
            days=self.day - 1, hours=self.hour, minutes=self.minute, seconds=self.second
        )

    def epoch(self) -> int:
        naive = self._naive()
        if self.zone is None:
            return int((naive - _NAIVE_EPOCH).total_seconds())
        candidates = [naive.replace(tzinfo=self.zone, fold=fold) for fold in (0, 1)]
        # fold 0 and 1 differ only in a gap or an overlap, and there the loop below takes the one
        # with the offset we had; the default matters only if neither has it (a zone changing its
        # offset twice within the edited span): not in the tz database's recent data.
        chosen = candidates[0]  # pragma: no mutate
        if candidates[0].utcoffset() != candidates[1].utcoffset():
            # DST gap or overlap: keep the offset we had before the edit (glibc's guess)
            for cand in candidates:
                if cand.utcoffset() == self.offset:
                    chosen = cand
                    break
        return int(chosen.timestamp())

    def _normalise(self) -> None:
        self._load(datetime.fromtimestamp(self.epoch(), self.zone or UTC))

    def add_years(self, years: int) -> None:
        if years:
            self.year += years
            self.month, self.day, self.hour, self.minute, self.second = 1, 1, 0, 0, 0
            self._normalise()

    def add_months(self, months: int) -> None:
        if months:
            self.month += months
            self.day, self.hour, self.minute, self.second = 1, 0, 0, 0
            self._normalise()

    def add_days(self, days: int) -> None:
        if days:
            self.day += days
            self.hour, self.minute, self.second = 0, 0, 0
            self._normalise()

    def set_time(self, hour: int, minute: int, second: int) -> None:
        self.hour, self.minute, self.second = hour, minute, second
        self._normalise()

    def set_min_sec(self, minute: int, second: int) -> None:
        self.minute, self.second = minute, second
        self._normalise()

    def set_sec(self, second: int) -> None:
        self.second = second
        self._normalise()


def compute_next_event(event: CalendarEvent, last: int, zone: tzinfo | None = None) -> int | None:
    """The first second strictly after ``last`` that matches ``event``, or None if there is none.

    ``zone`` is the local time zone (default: the system's); ignored for ``… UTC`` events.
    """
    if not event.utc and zone is None:
        zone = local_zone()
    try:
        return _next_event(event, last, None if event.utc else zone)
    except (OverflowError, ValueError, OSError):
        return None  # outside the calendar datetime can represent: nothing to schedule


def _next_event(event: CalendarEvent, last: int, zone: tzinfo | None) -> int | None:
    t = _BrokenDownTime(last + 1, zone)
    all_days = not event.weekdays or event.weekdays == ALL_WEEKDAYS
    count = 0
    while True:
        if count > _MAX_STEPS:
            return None
        count += 1

        if event.year and not _list_contains(event.year, t.year):
            n = _find_next(event.year, t.year)
            if n is None:
                return None
            t.add_years(n - t.year)
            continue
        if event.month and not _list_contains(event.month, t.month):
            n = _find_next(event.month, t.month)
            if n is not None:
                t.add_months(n - t.month)
            else:
                t.add_years(1)
            continue
        if event.day and not _list_contains(event.day, t.day):
            n = _find_next(event.day, t.day)
            if n is not None:
                t.add_days(n - t.day)
            else:
                t.add_months(1)
            continue
        if not all_days and t.day_num not in event.weekdays:
            # today is not one of them, so > and >= find the same (mutants: equivalent)
            later = [d for d in event.weekdays if d > t.day_num]  # pragma: no mutate
            t.add_days((min(later) if later else 7) - t.day_num)  # else: next Monday
            continue
        if event.hour and not _list_contains(event.hour, t.hour):
            n = _find_next(event.hour, t.hour)
            if n is not None:
                t.set_time(n, 0, 0)
            else:
                t.add_days(1)
            continue
        if event.minute and not _list_contains(event.minute, t.minute):
            n = _find_next(event.minute, t.minute)
            if n is not None:
                t.set_min_sec(n, 0)
            else:
                t.set_time(t.hour + 1, 0, 0)
            continue
        if event.second and not _list_contains(event.second, t.second):
            n = _find_next(event.second, t.second)
            if n is not None:
                t.set_sec(n)
            else:
                t.set_min_sec(t.minute + 1, 0)
            continue
        return t.epoch()


def local_zone() -> tzinfo:
    """The zone libc would use: $TZ (a zone name or file), else /etc/localtime, else UTC.

    A $TZ that names no zone file (unknown names, POSIX rule strings such as ``CET-1CEST``) is
    read as UTC, as glibc does for a name it cannot find (its rule strings are not supported).
    """
    tz = os.environ.get("TZ")
    if tz is not None:
        name = tz.removeprefix(":")
        if not name or name == "UTC":
            return UTC
        try:
            if name.startswith("/"):
                with open(name, "rb") as fh:
                    return ZoneInfo.from_file(fh, key=name)
            return ZoneInfo(name)
        except (OSError, ValueError, ZoneInfoNotFoundError):
            return UTC
    try:
        with open("/etc/localtime", "rb") as fh:
            return ZoneInfo.from_file(fh, key="localtime")
    except (OSError, ValueError):
        return UTC
