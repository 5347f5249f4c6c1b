"""The observability modules' pure parts: interval, tally, history, metrics, health, report."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import replace
from datetime import UTC
from pathlib import Path

import pytest

from pverep.engine import messages
from pverep.engine.progress import summary_line
from pverep.errors import ValidationError
from pverep.observe import health, metrics, report
from pverep.observe.history import History, RunRecord
from pverep.observe.jobview import JobView, schedule_interval
from pverep.observe.tally import Tally

NOW = 1_704_068_200  # 2024-01-01 00:16:40 UTC

JOB = JobView(
    jobid="100-0",
    guest=100,
    source="pve1",
    target="pve2",
    schedule="*/15",
    interval=900,
    last_sync=NOW - 600,
    last_try=NOW - 600,
    next_sync=NOW + 300,
    fail_count=0,
    error=None,
    duration=3.5,
    running=False,
    disabled=False,
    removing=False,
)


def test_schedule_interval_is_the_gap_between_the_next_two_events() -> None:
    assert schedule_interval("*/15", NOW, UTC) == 900
    assert schedule_interval("*/1", NOW, UTC) == 60
    assert schedule_interval("02:30", NOW, UTC) == 86400
    assert schedule_interval("not a schedule", NOW, UTC) is None


def test_tally_reads_volumes_modes_and_final_bytes_off_the_job_log() -> None:
    seen: list[str] = []
    tally = Tally()
    log = tally.tap(seen.append)
    sync = "__replicate_100-0_1704068200__"
    log(messages.full_sync("local-zfs:vm-100-disk-0", sync))
    log("3000 bytes (2.9 KiB) copied, 3 s, 0.00 MB/s")
    log(summary_line(123456, 4.2))
    log(messages.incremental_sync("local-zfs:vm-100-disk-1", "__replicate_100-0_1__", sync))
    log(summary_line(789, 0.1))
    assert [v.to_json() for v in tally.volumes] == [
        {"volid": "local-zfs:vm-100-disk-0", "mode": "full", "base": None, "bytes": 123456},
        {
            "volid": "local-zfs:vm-100-disk-1",
            "mode": "incremental",
            "base": "__replicate_100-0_1__",
            "bytes": 789,
        },
    ]
    assert tally.total_bytes == 123456 + 789
    assert len(seen) == 5  # every message passed on


def _record(n: int, result: str = "ok", guest: int = 100) -> RunRecord:
    return RunRecord(
        jobid=f"{guest}-0",
        guest=guest,
        target="pve2",
        node="pve1",
        start=NOW + 100.0 * n,
        end=NOW + 100.0 * n + 5,
        result=result,
        error=None if result == "ok" else f"boom {n}",
        volumes=({"volid": "local-zfs:vm-100-disk-0", "mode": "incremental", "bytes": n},),
    )


def test_history_appends_rotates_and_keeps_a_bounded_number_of_files(tmp_path: Path) -> None:
    hist = History(tmp_path / "history.jsonl", max_bytes=600, keep=2)
    for n in range(40):
        hist.append(_record(n))
    files = sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lck"))
    assert files == ["history.jsonl", "history.jsonl.1", "history.jsonl.2"]
    assert all(p.stat().st_size < 600 + 400 for p in tmp_path.glob("history.jsonl*"))
    kept = [r.volumes[0]["bytes"] for r in hist.records()]
    assert kept == sorted(kept) and kept[-1] == 39 and kept[0] > 0  # oldest dropped, order kept


def test_history_skips_a_torn_last_line_and_filters(tmp_path: Path) -> None:
    hist = History(tmp_path / "h.jsonl")
    hist.append(_record(1))
    hist.append(_record(2, "error", guest=101))
    with open(hist.path, "a") as fh:
        fh.write('{"jobid": "100-0", "gue')  # a crash mid-write
    assert [r.guest for r in hist.records()] == [100, 101]
    assert [r.guest for r in hist.query(guest=101)] == [101]
    assert [r.guest for r in hist.query(since=NOW + 150)] == [101]
    assert hist.last_per_job()["101-0"].error == "boom 2"


def _parse_exposition(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def test_metrics_exposition_values() -> None:
    failing = replace(JOB, jobid="101-0", guest=101, fail_count=2, last_sync=0, error="x")
    text = metrics.render(
        [JOB, failing],
        metrics.NodeCycle("pve1", NOW - 30.0, 12.5, 0),
        {"100-0": metrics.LastRun(4096, False)},
        NOW,
    )
    values = _parse_exposition(text)
    lab = '{jobid="100-0",guest="100",target="pve2"}'
    assert values[f"pverep_job_rpo_seconds{lab}"] == 600
    assert values[f"pverep_job_schedule_interval_seconds{lab}"] == 900
    assert values[f"pverep_job_last_run_bytes{lab}"] == 4096
    assert values['pverep_job_rpo_seconds{jobid="101-0",guest="101",target="pve2"}'] == float("inf")
    assert values['pverep_job_state{jobid="101-0",guest="101",target="pve2",state="never"}'] == 0
    assert values['pverep_job_state{jobid="101-0",guest="101",target="pve2",state="failing"}'] == 1
    assert values['pverep_node_last_cycle_duration_seconds{node="pve1"}'] == 12.5
    assert values['pverep_node_jobs{node="pve1"}'] == 2
    assert re.search(r"^# TYPE pverep_job_consecutive_failures gauge$", text, re.M)


@pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool (Debian: prometheus) missing"
)
def test_metrics_pass_promtool_check_metrics() -> None:
    text = metrics.render([JOB], metrics.NodeCycle("pve1", None, None, 1), {}, NOW)
    run = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout + run.stderr == ""  # no lint complaints either
    # and promtool does complain about a counter-looking gauge (the check can fail)
    bad = text + "# HELP pverep_x_total x\n# TYPE pverep_x_total gauge\npverep_x_total 1\n"
    run = subprocess.run(
        ["promtool", "check", "metrics"], input=bad, capture_output=True, text=True
    )
    assert "counter" in run.stdout + run.stderr


def test_threshold_forms() -> None:
    assert health.Threshold.parse("3x").limit(900) == 2700
    assert health.Threshold.parse("90m").limit(None) == 5400
    assert health.Threshold.parse("3600").limit(60) == 3600
    with pytest.raises(ValidationError, match="invalid threshold"):
        health.Threshold.parse("soon")


def test_health_verdicts_and_nagios_precedence() -> None:
    warn, crit = health.Threshold.parse("2x"), health.Threshold.parse("4x")
    late = replace(JOB, jobid="101-0", guest=101, last_sync=NOW - 2000)
    very_late = replace(JOB, jobid="102-0", guest=102, last_sync=NOW - 4000, fail_count=5)
    failing_recent = replace(JOB, jobid="103-0", guest=103, fail_count=1, error="oops")
    verdicts = health.evaluate(
        {"pve1": [JOB, late, very_late, failing_recent]},
        {"pve3": "node 'pve3' is offline"},
        {100: "pve1", 101: "pve1", 102: "pve1", 103: "pve1", 104: "pve3"},
        [100, 101, 102, 103, 104],
        NOW,
        warn,
        crit,
    )
    assert [(g.guest, health.NAMES[g.code]) for g in verdicts] == [
        (100, "OK"),
        (101, "WARNING"),
        (102, "CRITICAL"),
        (103, "WARNING"),
        (104, "UNKNOWN"),
    ]
    assert health.worst(g.code for g in verdicts) == health.CRITICAL
    assert health.worst([health.OK, health.UNKNOWN, health.WARNING]) == health.UNKNOWN
    text = health.format_text(verdicts)
    assert text.startswith("REPLICATION CRITICAL - 5 guests, 4 not OK\n")
    assert "103-0 -> pve2 [failing] 1 failures - oops" in text
    assert json.loads(json.dumps(verdicts[4].to_json()))["reason"] == "node 'pve3' is offline"


def test_report_series_is_a_sawtooth_and_the_page_is_self_contained() -> None:
    runs = [_record(0), _record(1, "error"), _record(2)]
    series = report.rpo_series(runs, NOW + 400.0)
    # after run 0: its duration; at run 2's end: back from run 0's start; then the last gap
    assert series == [
        (NOW + 5.0, 5.0),
        (NOW + 205.0, 205.0),
        (NOW + 205.0, 5.0),
        (NOW + 400.0, 200.0),
    ]
    page = report.render(runs, NOW + 400.0)
    assert page.count('class="failure"') == 1 and "boom 1" in page
    assert not re.search(r"(src|href)=\"(https?:)?//", page)  # nothing external
    assert "<script" not in page
