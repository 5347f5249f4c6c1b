"""Calendar events against every vector of spec §3.7 (pve-common and proxmox-time tests)."""

from __future__ import annotations

import builtins
import shutil
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import IO
from zoneinfo import ZoneInfo

import pytest

from pverep import calendar
from pverep.calendar import (
    CalendarEvent,
    CalendarEventError,
    Range,
    Repeated,
    Single,
    compute_next_event,
    parse_calendar_event,
    parse_weekdays,
    verify_calendar_event,
)


def nxt(spec: str, last: int, zone: str | None = None) -> int | None:
    event = CalendarEvent.parse(spec)
    return compute_next_event(event, last, ZoneInfo(zone) if zone else UTC)


# pve-common test/calendar_event_test.pl (TZ=UTC): schedule → [(last, next), …]
PVE_COMMON = {
    "*": [(0, 60), (30, 60), (59, 60), (60, 120)],
    "*/10": [(0, 600), (599, 600), (600, 1200), (3000, 3600)],
    "*/12:0": [(10, 43200), (46800, 86400)],
    "1/12:0/15": [
        (0, 3600),
        (3600, 4500),
        (4560, 5400),
        (5400, 6300),
        (6300, 46800),
        (46801, 47700),
        (47700, 48600),
        (48600, 49500),
        (49500, 90000),
    ],
    "1,4,6": [(0, 60), (60, 240), (300, 360), (360, 3660)],
    "Mon": [(0, 345600), (345600, 950400), (950400, 1555200)],
    "sat..sun": [(0, 172800), (172800, 259200), (259200, 777600)],
    "22/1:0": [(0, 79200), (79200, 82800), (82740, 82800)],
    "*/2:*": [(0, 60), (3600, 7200), (7200, 7260)],
    "20..22:*/30": [(0, 72000), (72000, 73800), (81000, 158400)],
    "0,1,3..5": [(0, 60), (60, 180), (300, 3600)],
    "2,4:0,1,3..5": [(0, 7200), (7260, 7380), (7500, 14400)],
    # replication-relevant derived values (*/15)
    "*/15": [
        (0, 900),
        (899, 900),
        (900, 1800),
        (1000, 1800),
        (1840, 2700),
        (2740, 3600),
        (3040, 3600),
        (3640, 4500),
    ],
}


@pytest.mark.parametrize(
    ("spec", "last", "expected"),
    [(spec, last, exp) for spec, pairs in PVE_COMMON.items() for last, exp in pairs],
)
def test_pve_common_vectors(spec: str, last: int, expected: int) -> None:
    assert nxt(spec, last) == expected


ALL_DAYS = frozenset(range(7))


@pytest.mark.parametrize(
    ("spec", "fields"),
    [
        ("0..3", {"minute": (Range(0, 3),), "hour": (), "weekdays": frozenset()}),
        ("23..23:0..3", {"hour": (Range(23, 23),), "minute": (Range(0, 3),)}),
        ("sun..sat", {"weekdays": ALL_DAYS, "hour": (Single(0),)}),
        ("wed,mon..tue,fri", {"weekdays": frozenset({0, 1, 2, 4})}),
        ("mon */15", {"weekdays": frozenset({0}), "minute": (Repeated(0, 15),), "hour": ()}),
        ("Fri..Mon", {"weekdays": frozenset({4, 5, 6, 0})}),
        ("8..17/3:0", {"hour": (Repeated(8, 3, 17),), "minute": (Single(0),)}),
    ],
)
def test_parse_ok(spec: str, fields: dict[str, object]) -> None:
    event = CalendarEvent.parse(spec)
    assert {name: getattr(event, name) for name in fields} == fields
    assert event.second == (Single(0),)


# Range ends are inclusive: "mon..fri 8..17:0" fires at 17:00 too (2024-01-01 is a Monday).
MON_0000 = 1704067200
HOUR = 3600


@pytest.mark.parametrize(
    ("spec", "last", "expected"),
    [
        ("mon..fri 8..17:0", MON_0000 + 16 * HOUR, MON_0000 + 17 * HOUR),
        ("mon..fri 8..17:0", MON_0000 + 17 * HOUR, MON_0000 + 32 * HOUR),
        ("8..17/3:0", MON_0000 + 14 * HOUR, MON_0000 + 17 * HOUR),
        ("8..17/3:0", MON_0000 + 17 * HOUR, MON_0000 + 32 * HOUR),
        ("fri..mon 0:0", MON_0000, MON_0000 + 4 * 24 * HOUR),
        ("0:10..20", MON_0000 + 19 * 60, MON_0000 + 20 * 60),
        ("0:10..20/5", MON_0000 + 15 * 60, MON_0000 + 20 * 60),
    ],
)
def test_range_ends_are_inclusive(spec: str, last: int, expected: int) -> None:
    assert nxt(spec, last) == expected


@pytest.mark.parametrize(
    "spec",
    [
        "61",
        "*/61",
        "0..80",
        " mon 0 0 0",
        "",
        " mon 0 0",
        "*/0",
        "*/00",
        "  ",
        "foo",
        "5..3",
        "1,",
        "mon..",
        "Daily",
        "12:60",
        "24:00:00",
        "1:2:3:4",
        "UTC",
        "2020-13-01",
        "02-32",
    ],
)
def test_parse_errors(spec: str) -> None:
    with pytest.raises(CalendarEventError):
        CalendarEvent.parse(spec)


def test_error_texts() -> None:
    with pytest.raises(CalendarEventError) as err:
        CalendarEvent.parse("")
    assert str(err.value) == "unable to parse calendar event - event is empty"
    with pytest.raises(CalendarEventError) as err:
        verify_calendar_event("61")
    assert str(err.value).startswith("invalid calendar event '61' - unable to parse calendar event")
    with pytest.raises(CalendarEventError) as err:
        CalendarEvent.parse("*/0")
    assert str(err.value) == "unable to parse calendar event at '/0' - Nom(Eof)"


# proxmox-time's texts (pvesr shows them): a bad weekday is quoted alone, the rest of the input
# otherwise; only ASCII digits count, and only ASCII blanks are trimmed.
@pytest.mark.parametrize(
    ("spec", "text"),
    [
        ("Daily 12:00", "at 'Daily' - Context(\"weekday\")"),
        ("foo", "at 'foo' - Context(\"weekday\")"),
        ("mon,tuesd 1:0", "at ',tuesd 1:0' - Nom(Eof)"),
        ("\u0661\u0662:00", "at '\u0661\u0662:00' - Context(\"date or time specification\")"),
        ("\uff11\uff12", "at '\uff11\uff12' - Context(\"date or time specification\")"),
        ("1\uff12:00", "at '\uff12:00' - Nom(Eof)"),
        ("\x1c*", "at '\x1c*' - Context(\"date or time specification\")"),
        ("12:00\x1f", "at '\x1f' - Nom(Eof)"),
        ("12:00\u00a0", "at '\u00a0' - Nom(Eof)"),
        ("\u3000*/5", "at '\u3000*/5' - Context(\"date or time specification\")"),
    ],
)
def test_parse_error_texts_match_proxmox_time(spec: str, text: str) -> None:
    with pytest.raises(CalendarEventError) as err:
        CalendarEvent.parse(spec)
    assert str(err.value) == f"unable to parse calendar event {text}"


@pytest.mark.parametrize("blank", [" ", "\t", "\n", "\r", "\f", "\v"])
def test_ascii_blanks_are_trimmed(blank: str) -> None:
    assert CalendarEvent.parse(f"{blank}12:00{blank}").hour == (Single(12),)


def test_dst_vienna() -> None:
    # Sunday 2018-10-28 00:00 local (CEST); DST ends that night.
    assert nxt("mon..fri", 1540677600, "Europe/Vienna") == 1540767600
    assert nxt("mon..fri UTC", 1540677600, "Europe/Vienna") == 1540771200


def test_dst_spring_gap_and_autumn_overlap() -> None:
    vienna = "Europe/Vienna"
    # 2018-03-25: 02:00 CET jumps to 03:00 CEST. From 01:50 CET (00:50 UTC) "*:30" is 01:30?
    # no: next is 03:30 CEST (01:30 UTC) — the hour 02 does not exist.
    assert nxt("*:30", 1521939000, vienna) == 1521941400
    # "2:30" daily: 02:00 normalises into 03:00 CEST like mktime, so the event that falls into
    # the gap is skipped and the next one is the following day's 02:30 CEST (00:30 UTC).
    assert nxt("2:30", 1521939000, vienna) == 1522024200
    # 2018-10-28: 03:00 CEST falls back to 02:00 CET; events keep moving forward in the
    # repeated hour: from 02:15 CET (01:15 UTC) the next quarter is 02:30 CET (01:30 UTC).
    assert nxt("*/15", 1540689300, vienna) == 1540690200
    # … and from 02:45 CEST (00:45 UTC) the next is 02:00 CET? mktime normalises 02:60 to
    # 03:00 → 03:00 CET (02:00 UTC).
    assert nxt("*/15", 1540687500, vienna) == 1540692000
    # local events are always strictly later than last, across a whole DST year
    event = CalendarEvent.parse("*:0/20")
    zone = ZoneInfo(vienna)
    t = 1514761200  # 2018-01-01 00:00 CET
    for _ in range(800):
        n = compute_next_event(event, t, zone)
        assert n is not None and n > t
        t = n + 11 * 3600


T, M, H, D = 0, 60, 3600, 86400
JUL = 1596153600  # Fri 2020-07-31
DEC = 1609372800  # Thu 2020-12-31


def chain(spec: str, start: int, expected: list[int]) -> None:
    last = start
    for exp in expected:
        got = nxt(spec + " UTC", last)
        assert got == exp, (spec, last, got, exp)
        last = got


def test_proxmox_time_vectors() -> None:
    chain("0", T, [T + H])
    chain("*", T, [T + M])
    chain("*:0", T, [T + H])
    chain("*:*", T, [T + i * M for i in range(1, 100)])
    chain("*:*:*", T, [T + 1])
    chain("*:3:5", T, [T + 3 * M + 5])
    chain("mon *:*", T, [T + 4 * D])
    chain("mon 2:*", T, [T + 4 * D + 2 * H])
    chain("mon 2:50", T, [T + 4 * D + 2 * H + 50 * M])
    for day, off in [("tue", 5), ("wed", 6), ("thu", 7), ("fri", 1), ("sat", 2), ("sun", 3)]:
        chain(day, T, [T + off * D])
    chain("4..10/2:0", T, [T + 4 * H])
    chain("4..10/2:0", T + 5 * H, [T + 6 * H])
    chain("4..10/2:0", T + 11 * H, [T + D + 4 * H])
    chain("5,10:4,8", T, [T + 5 * H + 4 * M])
    chain("10,5:8,4", T, [T + 5 * H + 4 * M])
    chain("6,4..10:23,5/5", T, [T + 4 * H + 5 * M])
    chain("4..10,6:5/5,23", T, [T + 4 * H + 5 * M])
    for i, day in enumerate(["sat", "sun", "mon", "tue", "wed", "thu", "fri"], start=1):
        chain(day, JUL, [JUL + i * D])
    for i, day in enumerate(["fri", "sat", "sun", "mon", "tue", "wed", "thu"], start=1):
        chain(day, DEC, [DEC + i * D])
    chain("daily", T, [T + D])
    chain("daily", T + 1, [T + D])
    chain("5/2:0", T, [T + 5 * H, T + 7 * H, T + 9 * H, T + 11 * H])
    chain("*:0", T, [T + i * H for i in range(1, 100)])
    chain("1:0", T + 15 * H, [T + i * D + H for i in range(1, 100)])
    chain("2020-07-31", 0, [JUL])
    chain("02-28", 0, [58 * D])
    chain("02-29", 0, [2 * 365 * D + 59 * D])
    chain("1965/5-01-01", -1, [0])
    chain("2020-7..9-2/2", JUL, [JUL + 2 * D])
    chain("2020,2021-12-31", JUL, [DEC])
    chain("minutely", T, [T + M])
    chain("hourly", T, [T + H])
    chain("weekly", T, [T + 4 * D])
    chain("monthly", 0, [31 * D])
    chain("quarterly", 0, [90 * D])
    chain("semiannually", 0, [181 * D])
    chain("semi-annually", 0, [181 * D])
    chain("yearly", 0, [365 * D])
    chain("annually", 0, [365 * D])
    assert nxt("2021-02-29 UTC", 0) is None
    assert nxt("02-30 UTC", 0) is None


DOC_START = 1704067200  # Mon 2024-01-01 00:00:00 UTC


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("*/5", ["2024-01-01 00:05", "2024-01-01 00:10", "2024-01-01 00:15"]),
        ("*:00", ["2024-01-01 01:00", "2024-01-01 02:00", "2024-01-01 03:00"]),
        ("12:05", ["2024-01-01 12:05", "2024-01-02 12:05", "2024-01-03 12:05"]),
        ("mon..wed 30/10", ["2024-01-01 00:30", "2024-01-01 00:40", "2024-01-01 00:50"]),
        ("mon..fri 8..17,22:0/15", ["2024-01-01 08:00", "2024-01-01 08:15", "2024-01-01 08:30"]),
        ("fri 12..13:5/20", ["2024-01-05 12:05", "2024-01-05 12:25", "2024-01-05 12:45"]),
        ("12/2:5", ["2024-01-01 12:05", "2024-01-01 14:05", "2024-01-01 16:05"]),
        ("*-05", ["2024-01-05 00:00", "2024-02-05 00:00", "2024-03-05 00:00"]),
        ("Sat *-1..7 15:00", ["2024-01-06 15:00", "2024-02-03 15:00", "2024-03-02 15:00"]),
        ("sat..sun", ["2024-01-06 00:00", "2024-01-07 00:00", "2024-01-13 00:00"]),
        ("weekly", ["2024-01-08 00:00", "2024-01-15 00:00", "2024-01-22 00:00"]),
    ],
)
def test_documentation_examples(spec: str, expected: list[str]) -> None:
    from datetime import datetime

    last, got = DOC_START, []
    for _ in expected:
        n = nxt(spec, last)
        assert n is not None
        got.append(datetime.fromtimestamp(n, UTC).strftime("%Y-%m-%d %H:%M"))
        last = n
    assert got == expected


def test_never_and_invalid_docs_examples() -> None:
    assert nxt("2015-10-21", DOC_START) is None
    with pytest.raises(CalendarEventError):
        CalendarEvent.parse("*/00")


def test_surrounding_blanks_are_trimmed_and_utc_suffix() -> None:
    assert CalendarEvent.parse("  */5  ").minute
    ev = CalendarEvent.parse("mon 2:50   UTC")
    assert ev.utc and ev.weekdays == frozenset({0})


def test_24_00_is_minute_24_like_proxmox_time() -> None:
    # "24" is too large for an hour, so the parser backtracks and reads minutes:seconds.
    assert nxt("24:00", 0) == 24 * 60


# --- the value classes: "next value after v" for any v (the search asks only for values the
# list does not contain, so these pin what each class promises on its own) ---------------------


def test_value_classes_contain_and_next_after() -> None:
    r = Range(3, 5)
    assert [r.contains(v) for v in range(2, 7)] == [False, True, True, True, False]
    assert [r.next_after(v) for v in range(1, 7)] == [3, 3, 4, 5, None, None]
    assert Range(4, 4).next_after(4) is None
    s = Single(7)
    assert [s.contains(v) for v in (6, 7, 8)] == [False, True, False]
    assert [s.next_after(v) for v in (6, 7, 8)] == [7, None, None]
    rep = Repeated(2, 3, 9)
    assert [v for v in range(12) if rep.contains(v)] == [2, 5, 8]
    assert [rep.next_after(v) for v in (0, 2, 4, 5, 8, 9)] == [2, 5, 5, 8, None, None]
    open_end = Repeated(2, 3)
    assert [v for v in range(12) if open_end.contains(v)] == [2, 5, 8, 11]
    assert [open_end.next_after(v) for v in (1, 2, 10, 11)] == [2, 5, 11, 14]
    zero_step = Repeated(4, 0)
    assert [v for v in range(9) if zero_step.contains(v)] == [4]
    assert [zero_step.next_after(v) for v in (3, 4, 5)] == [4, None, None]


# --- weekdays --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "days"),
    [
        ("mon..tue", {0, 1}),
        ("tue..tue", {1}),
        ("sat..mon", {5, 6, 0}),
        ("sun..mon", {6, 0}),
        ("thu,tue..wed", {1, 2, 3}),
    ],
)
def test_weekday_ranges(spec: str, days: set[int]) -> None:
    assert CalendarEvent.parse(spec).weekdays == frozenset(days)
    assert parse_weekdays(spec) == frozenset(days)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("1", "at '1' - Nom(Alpha)"),
        ("", "at '' - Nom(Alpha)"),
        ("mon,", "at ',' - Nom(Eof)"),
        ("xyz,mon", "at 'xyz' - Context(\"weekday\")"),
        ("mon tue", "at ' tue' - Nom(Eof)"),
    ],
)
def test_parse_weekdays_errors(text: str, error: str) -> None:
    with pytest.raises(CalendarEventError) as err:
        parse_weekdays(text)
    assert str(err.value) == f"unable to parse calendar event {error}"


def test_parse_calendar_event_is_parse() -> None:
    assert parse_calendar_event(" mon 8:30 ") == CalendarEvent.parse(" mon 8:30 ")
    assert parse_calendar_event("mon 8:30").hour == (Single(8),)


def test_only_blanks_and_tabs_separate_the_parts() -> None:
    assert CalendarEvent.parse("mon\t*-01\t12:00").hour == (Single(12),)
    for spec in ("*-01X12:00", "monX 12:00", "*-01\n12:00"):
        with pytest.raises(CalendarEventError):
            CalendarEvent.parse(spec)


# --- the local time zone (what libc would use) -------------------------------------------------

VIENNA_FILE = Path("/usr/share/zoneinfo/Europe/Vienna")
SUMMER = datetime(2024, 7, 1, 12, tzinfo=UTC)
WINTER = datetime(2024, 1, 1, 12, tzinfo=UTC)


def offsets(zone: tzinfo) -> tuple[timedelta | None, timedelta | None]:
    return SUMMER.astimezone(zone).utcoffset(), WINTER.astimezone(zone).utcoffset()


VIENNA_OFFSETS = (timedelta(hours=2), timedelta(hours=1))
UTC_OFFSETS = (timedelta(0), timedelta(0))


@pytest.fixture
def vienna_copy(tmp_path: Path) -> Path:
    """Europe/Vienna's TZif data under a name that is no zone name (it must be read as a file)."""
    if not VIENNA_FILE.exists():
        pytest.skip("no /usr/share/zoneinfo")
    path = tmp_path / "my-zone"
    shutil.copyfile(VIENNA_FILE, path)
    return path


@pytest.mark.parametrize("tz", ["", ":", "UTC", ":UTC"])
def test_local_zone_utc_forms(monkeypatch: pytest.MonkeyPatch, tz: str) -> None:
    monkeypatch.setenv("TZ", tz)
    assert calendar.local_zone() is UTC


@pytest.mark.parametrize("tz", ["Europe/Vienna", ":Europe/Vienna"])
def test_local_zone_by_name(monkeypatch: pytest.MonkeyPatch, tz: str) -> None:
    if not VIENNA_FILE.exists():
        pytest.skip("no /usr/share/zoneinfo")
    monkeypatch.setenv("TZ", tz)
    zone = calendar.local_zone()
    assert offsets(zone) == VIENNA_OFFSETS
    assert str(zone) == "Europe/Vienna"


@pytest.mark.parametrize("colon", ["", ":"])
def test_local_zone_from_a_tzif_file(
    monkeypatch: pytest.MonkeyPatch, vienna_copy: Path, colon: str
) -> None:
    monkeypatch.setenv("TZ", f"{colon}{vienna_copy}")
    zone = calendar.local_zone()
    assert offsets(zone) == VIENNA_OFFSETS
    assert str(zone) == str(vienna_copy)
    # and the next event is computed in it: from 11:00 in Vienna (09:00 UTC), 12:00 is next
    noon_utc = int(SUMMER.timestamp())
    assert compute_next_event(CalendarEvent.parse("12:00"), noon_utc - 3 * 3600) == (
        noon_utc - 2 * 3600
    )


@pytest.mark.parametrize(
    "tz",
    ["/nonexistent/zone", "Not/AZone", "CET-1CEST", "../etc/passwd", "/etc/hostname"],
)
def test_local_zone_unusable_tz_is_utc(monkeypatch: pytest.MonkeyPatch, tz: str) -> None:
    monkeypatch.setenv("TZ", tz)
    assert calendar.local_zone() is UTC


def fake_localtime(monkeypatch: pytest.MonkeyPatch, target: Path | None) -> list[str]:
    """Let calendar's open() see ``target`` (None: nothing) as /etc/localtime; returns the
    names it was asked to open."""
    asked: list[str] = []
    real_open = builtins.open

    def fake_open(name: str, mode: str = "r") -> IO[bytes]:
        asked.append(name)
        assert mode == "rb"
        if name != "/etc/localtime" or target is None:
            raise FileNotFoundError(name)
        return real_open(target, mode)

    monkeypatch.setattr(calendar, "open", fake_open, raising=False)
    return asked


def test_local_zone_without_tz_reads_etc_localtime(
    monkeypatch: pytest.MonkeyPatch, vienna_copy: Path
) -> None:
    monkeypatch.delenv("TZ", raising=False)
    asked = fake_localtime(monkeypatch, vienna_copy)
    zone = calendar.local_zone()
    assert asked == ["/etc/localtime"]
    assert offsets(zone) == VIENNA_OFFSETS
    assert str(zone) == "localtime"
    # compute_next_event without a zone uses it
    last = int(WINTER.timestamp())  # 13:00 in Vienna
    assert compute_next_event(CalendarEvent.parse("14:00"), last) == last + 3600


def test_local_zone_without_tz_or_etc_localtime_is_utc(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("TZ", raising=False)
    fake_localtime(monkeypatch, None)
    assert calendar.local_zone() is UTC
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"not a TZif file")
    fake_localtime(monkeypatch, garbage)
    assert calendar.local_zone() is UTC


def test_tz_file_is_preferred_to_etc_localtime(
    monkeypatch: pytest.MonkeyPatch, vienna_copy: Path
) -> None:
    monkeypatch.setenv("TZ", str(vienna_copy))
    asked = fake_localtime(monkeypatch, None)
    monkeypatch.setattr(calendar, "open", builtins.open)
    assert offsets(calendar.local_zone()) == VIENNA_OFFSETS
    assert asked == []


# --- parser details the vectors above do not reach ----------------------------------------------


def test_event_keeps_the_given_text_and_a_false_utc() -> None:
    event = CalendarEvent.parse(" mon 8:30 ")
    assert event.text == " mon 8:30 "
    assert event.utc is False
    assert CalendarEvent.parse("mon 8:30 UTC").utc is True


@pytest.mark.parametrize(
    ("spec", "fields"),
    [
        ("monUTC", {"weekdays": frozenset({0}), "utc": True}),
        ("12:00   UTC", {"hour": (Single(12),), "utc": True}),
        ("0..0", {"minute": (Range(0, 0),)}),
        ("5..", None),
        ("*/1", {"minute": (Repeated(0, 1),)}),
        ("*:*:*/20", {"second": (Repeated(0, 20),)}),
        ("*:*:59", {"second": (Single(59),)}),
        ("*/500-01-01", {"year": (Repeated(0, 500),), "month": (Single(1),)}),
        ("2199-01-01", {"year": (Single(2199),)}),
        ("*-*/5-01", {"year": (), "month": (Repeated(1, 5),), "day": (Single(1),)}),
        ("*/5-01", {"year": (), "month": (Repeated(1, 5),), "day": (Single(1),)}),
        ("*-*-*/10", {"day": (Repeated(1, 10),)}),
        ("*/10-*/3", {"year": (), "month": (Repeated(1, 10),), "day": (Repeated(1, 3),)}),
        ("12-31", {"month": (Single(12),), "day": (Single(31),)}),
        ("2020-12-31", {"year": (Single(2020),), "day": (Single(31),)}),
    ],
)
def test_parse_fields(spec: str, fields: dict[str, object] | None) -> None:
    if fields is None:
        with pytest.raises(CalendarEventError):
            CalendarEvent.parse(spec)
        return
    event = CalendarEvent.parse(spec)
    assert {name: getattr(event, name) for name in fields} == fields


@pytest.mark.parametrize(
    "spec",
    [
        "mon\nUTC",
        "12:00X UTC",
        "2200-01-01",
        "2020-13-01",
        "13-01",
        "2020-01-32",
        "0:0:60",
        "12:00:",
    ],
)
def test_more_parse_errors(spec: str) -> None:
    with pytest.raises(CalendarEventError):
        CalendarEvent.parse(spec)


@pytest.mark.parametrize(
    ("spec", "text"),
    [
        ("m\u00e9", "at 'm' - Context(\"weekday\")"),
        ("m1", "at 'm' - Context(\"weekday\")"),
        ("12:00:", "at ':' - Nom(Eof)"),
        ("61", "at '61' - Context(\"date or time specification\")"),
    ],
)
def test_more_error_texts(spec: str, text: str) -> None:
    with pytest.raises(CalendarEventError) as err:
        CalendarEvent.parse(spec)
    assert str(err.value) == f"unable to parse calendar event {text}"


def test_next_event_across_the_year_end() -> None:
    dec_10 = int(datetime(2020, 12, 10, tzinfo=UTC).timestamp())
    jan_5 = int(datetime(2021, 1, 5, tzinfo=UTC).timestamp())
    assert nxt("*-05", dec_10) == jan_5
    assert nxt("*-*-05", dec_10) == jan_5
    # a repeated year list counts from year 0: 2000, 2500, …
    assert nxt("*/500-01-01 UTC", 0) == int(datetime(2000, 1, 1, tzinfo=UTC).timestamp())
    # seconds counted from 0
    assert nxt("*:*:*/20 UTC", 0) == 20
    # monday after a later weekday wraps to the next week: Fri 2024-01-05 → Mon 2024-01-08
    fri = MON_0000 + 4 * 24 * HOUR
    assert nxt("mon,wed", fri) == MON_0000 + 7 * 24 * HOUR
    assert nxt("tue,sat", fri) == MON_0000 + 5 * 24 * HOUR


def test_next_event_gives_up_after_max_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    # A Monday 29 February: 1988, found in the 61st step from 1970 (proxmox-time gives up
    # after 1000 steps; the limit is lowered here to reach it).
    event = CalendarEvent.parse("mon *-02-29 UTC")
    found = int(datetime(1988, 2, 29, tzinfo=UTC).timestamp())
    assert compute_next_event(event, 0) == found
    monkeypatch.setattr(calendar, "_MAX_STEPS", 60)
    assert compute_next_event(event, 0) == found
    monkeypatch.setattr(calendar, "_MAX_STEPS", 59)
    assert compute_next_event(event, 0) is None
