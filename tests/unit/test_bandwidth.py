"""The node's bandwidth budget: rate/time-frame syntax, [run] settings, the shared _core.Budget."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest

from pverep import _core
from pverep.bandwidth import BandwidthPlan, Timeframe, parse_rate
from pverep.config.runconf import DEFAULT_MAX_WORKERS, read_run_settings
from pverep.engine import nodebudget
from pverep.engine.nodebudget import UNLIMITED, NodeBudget
from pverep.errors import ConfigError, InvalidArgumentError, ValidationError
from pverep.transport import tcp

# 2026-12-02 is a Wednesday, 2026-12-05 a Saturday
WED_09 = datetime(2026, 12, 2, 9, 0)
WED_18 = datetime(2026, 12, 2, 18, 0)
SAT_09 = datetime(2026, 12, 5, 9, 0)


@pytest.mark.parametrize(
    ("text", "bps"),
    [("20MB", 20e6), ("20", 20e6), ("1.5GiB", 1.5 * 2**30), ("800 KiB/s", 800 * 1024),
     ("10mb", 10e6), ("512B", 512.0)],
)  # fmt: skip
def test_parse_rate(text: str, bps: float) -> None:
    assert parse_rate(text) == bps


@pytest.mark.parametrize("text", ["", "0MB", "fast", "20 parsecs", "-5MB", "1e3"])
def test_parse_rate_rejects(text: str) -> None:
    with pytest.raises(ValidationError, match="invalid rate"):
        parse_rate(text)


def test_timeframes_weekdays_and_midnight() -> None:
    work = Timeframe.parse("mon..fri 08:00-18:00")
    assert work.contains(WED_09) and not work.contains(WED_18) and not work.contains(SAT_09)
    night = Timeframe.parse("fri 22-6")  # friday evening into saturday morning
    assert night.contains(datetime(2026, 12, 4, 22, 0))
    assert night.contains(datetime(2026, 12, 4, 23, 30))
    assert night.contains(datetime(2026, 12, 5, 5, 59))
    assert not night.contains(datetime(2026, 12, 5, 6, 0))
    assert not night.contains(datetime(2026, 12, 3, 23, 0))  # thursday evening
    assert Timeframe.parse("0-24:00").contains(SAT_09)
    for bad in ("mon..fri", "xyz 8-9", "8-8", "25-26", "8:61-9"):
        with pytest.raises(ValidationError):
            Timeframe.parse(bad)


def test_plan_first_matching_rule_else_default() -> None:
    plan = BandwidthPlan.parse("200MB", "20MB mon..fri 08:00-18:00; 50MB sat,sun 8-12")
    assert plan.rate_at(WED_09) == 20e6
    assert plan.rate_at(WED_18) == 200e6
    assert plan.rate_at(SAT_09) == 50e6
    unlimited_by_night = BandwidthPlan.parse(None, "20MB 8-18")
    assert unlimited_by_night.rate_at(datetime(2026, 12, 2, 3, 0)) is None
    assert not BandwidthPlan.parse(None, None).limited
    with pytest.raises(ValidationError, match="rule"):
        BandwidthPlan.parse(None, "20MB")


def test_run_settings_from_pverep_conf(tmp_path: Path) -> None:
    conf = tmp_path / "pverep.conf"
    assert read_run_settings(conf).max_workers == DEFAULT_MAX_WORKERS
    conf.write_text("[run]\nmax_workers = 1\nbandwidth = 100MB\n")
    settings = read_run_settings(conf)
    assert settings.max_workers == 1 and settings.bandwidth.default == 100e6
    for body, msg in [
        ("max_workers = 0", "max_workers"),
        ("max_workers = 500", "max_workers must be 1..64"),
        ("bandwidth = lots", "invalid rate"),
        ("bandwith = 1MB", "unknown key 'bandwith'"),
    ]:
        conf.write_text(f"[run]\n{body}\n")
        with pytest.raises(ConfigError, match=msg):
            read_run_settings(conf)


def test_node_budget_follows_the_schedule() -> None:
    now = [WED_09]
    budget = NodeBudget(BandwidthPlan.parse(None, "20MB mon..fri 8-18"), clock=lambda: now[0])
    shared = budget.current()
    assert shared is not None and shared.rate == 20e6
    now[0] = WED_18
    assert budget.current() is None  # unlimited now: new transfers take their fast paths
    assert shared.rate == UNLIMITED  # ...and one still running is no longer held back
    now[0] = datetime(2026, 12, 3, 9, 0)
    assert budget.current() is shared and shared.rate == 20e6
    assert NodeBudget(BandwidthPlan(None)).current() is None


def test_budget_rejects_bad_rates() -> None:
    with pytest.raises(InvalidArgumentError):
        _core.Budget(0.0)
    with pytest.raises(InvalidArgumentError):
        _core.Budget(5e6).set_rate(-1.0)


def _pump_through(budget: _core.Budget, data: bytes, digests: list[str]) -> None:
    src_r, src_w = os.pipe()
    dst_r, dst_w = os.pipe()

    def feed() -> None:
        with os.fdopen(src_w, "wb") as f:
            f.write(data)

    out: list[bytes] = []

    def drain() -> None:
        with os.fdopen(dst_r, "rb") as f:
            out.append(f.read())

    threads = [threading.Thread(target=feed), threading.Thread(target=drain)]
    for t in threads:
        t.start()
    try:
        _core.pump(src_r, dst_w, budget=budget)
    finally:
        os.close(src_r)
        os.close(dst_w)
    for t in threads:
        t.join()
    digests.append(hashlib.sha256(out[0]).hexdigest())


def test_pumps_on_threads_share_one_budget() -> None:
    """Three pumps (GIL released) share 24 MB/s: together they take ~1 s for 24 MB, where one
    alone unlimited takes milliseconds; every stream arrives intact."""
    budget = _core.Budget(24e6)
    streams = [os.urandom(8 << 20) for _ in range(3)]
    digests: list[str] = []
    t0 = time.monotonic()
    workers = [threading.Thread(target=_pump_through, args=(budget, s, digests)) for s in streams]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.monotonic() - t0
    total = sum(len(s) for s in streams)
    assert sorted(digests) == sorted(hashlib.sha256(s).hexdigest() for s in streams)
    assert budget.bytes == total
    # never faster than the budget (it starts empty; one burst of 1.2 MB is the slack)
    assert total / elapsed <= 24e6 * 1.02 + 1.2e6 / elapsed


def test_dead_peer_options_on_a_socket() -> None:
    listener = tcp.listen("127.0.0.1")
    a = tcp.connect("127.0.0.1", listener.getsockname()[1])
    b = tcp.accept_one(listener)  # the target's side gets the same options
    with a, b:
        assert b.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 30_000
        tcp.fail_dead_peer(a, 30)
        assert a.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 30_000
        assert a.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        idle = a.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE)
        interval = a.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL)
        count = a.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT)
        assert idle + interval * count <= 30


def _budget_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "pverep-budget"}


def _wait_for_rate(budget: _core.Budget, rate: float) -> bool:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if budget.rate == rate:
            return True
        time.sleep(0.01)
    return False


def test_a_running_budget_follows_the_schedule_by_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    """A transfer that runs across 18:00 changes speed there, although nobody asks current()
    again: one daemon thread per budget re-reads the schedule."""
    monkeypatch.setattr(nodebudget, "FOLLOW_INTERVAL", 0.01)
    before = _budget_threads()
    now = [WED_09]
    budget = NodeBudget(BandwidthPlan.parse(None, "20MB mon..fri 8-18"), clock=lambda: now[0])
    shared = budget.current()
    assert shared is not None and shared.rate == 20e6
    assert budget.current() is shared
    followers = _budget_threads() - before
    assert len(followers) == 1 and all(t.daemon for t in followers)
    now[0] = WED_18
    assert _wait_for_rate(shared, UNLIMITED)
    now[0] = datetime(2026, 12, 3, 9, 0)
    assert _wait_for_rate(shared, 20e6)  # it keeps following, not just once
    assert _budget_threads() - before == followers


def test_a_budget_without_schedule_rules_starts_no_thread() -> None:
    before = _budget_threads()
    budget = NodeBudget(BandwidthPlan.parse("5MB", None))
    shared = budget.current()
    assert shared is not None and shared.rate == 5e6
    assert budget.current() is shared
    assert _budget_threads() - before == set()


def test_a_budget_starts_when_its_first_limited_time_frame_begins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(nodebudget, "FOLLOW_INTERVAL", 0.01)
    now = [WED_18]
    budget = NodeBudget(BandwidthPlan.parse(None, "20MB mon..fri 8-18"), clock=lambda: now[0])
    assert budget.current() is None
    now[0] = SAT_09
    assert budget.current() is None
    now[0] = WED_09
    shared = budget.current()
    assert shared is not None and shared.rate == 20e6


def test_unlimited_is_faster_than_any_link() -> None:
    assert UNLIMITED >= 1e12  # 8 Tbit/s


def test_the_default_clock_is_local_wall_clock_time() -> None:
    """A rule for the current hour (local time, the schedule's clock) applies now."""
    hour = datetime.now().hour
    if datetime.now().minute == 59:
        pytest.skip("the hour may change during the test")
    frame = f"{hour}:00-{hour + 1}:00" if hour < 23 else "23:00-24:00"
    budget = NodeBudget(BandwidthPlan.parse("1MB", f"7MB {frame}"))
    shared = budget.current()
    assert shared is not None and shared.rate == 7e6
