"""``pverep report --html``: one self-contained page (inline CSS and SVG, no scripts, no
external assets) with each guest's RPO over time and its failures, from the run history. Pure.

The RPO between runs grows linearly from the last successful sync's start; each successful
run brings it down to its own duration. Failed runs are red marks at their end.
"""

from __future__ import annotations

import html
import time
from collections.abc import Sequence
from itertools import groupby

from pverep.observe.history import RunRecord

WIDTH, HEIGHT, PAD = 720, 160, 40

_CSS = """
body{font-family:sans-serif;margin:2em;color:#222;background:#fff}
h1{font-size:1.4em} h2{font-size:1.1em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0} td,th{border:1px solid #ccc;padding:2px 8px}
th{background:#eee} .fail{color:#c00;font-weight:bold} .ok{color:#070}
svg{border:1px solid #ddd;background:#fafafa}
"""


def _stamp(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(epoch)) + " UTC"


def rpo_series(runs: Sequence[RunRecord], now: float) -> list[tuple[float, float]]:
    """(time, RPO seconds) corner points of the sawtooth, oldest first."""
    points: list[tuple[float, float]] = []
    last_sync: float | None = None
    for run in sorted(runs, key=lambda r: r.end):
        if run.result != "ok":
            continue
        if last_sync is not None:
            points.append((run.end, run.end - last_sync))
        last_sync = run.start
        points.append((run.end, run.end - run.start))
    if last_sync is not None:
        points.append((now, now - last_sync))
    return points


def _svg(runs: Sequence[RunRecord], now: float) -> str:
    series = rpo_series(runs, now)
    t0 = min((r.start for r in runs), default=now)
    span = max(now - t0, 1.0)
    top = max((v for _, v in series), default=1.0) or 1.0

    def x(t: float) -> float:
        return PAD + (WIDTH - 2 * PAD) * (t - t0) / span

    def y(v: float) -> float:
        return HEIGHT - PAD + (2 * PAD - HEIGHT) * v / top

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'role="img" aria-label="RPO over time">',
        f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}" '
        'stroke="#888"/>',
        f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{HEIGHT - PAD}" stroke="#888"/>',
        f'<text x="{PAD}" y="{PAD - 8}" font-size="11">RPO max {top:.0f} s</text>',
        f'<text x="{PAD}" y="{HEIGHT - 12}" font-size="11">{_stamp(t0)}</text>',
        f'<text x="{WIDTH - PAD}" y="{HEIGHT - 12}" font-size="11" text-anchor="end">'
        f"{_stamp(now)}</text>",
    ]
    if series:
        pts = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in series)
        parts.append(
            f'<polyline class="rpo" points="{pts}" fill="none" stroke="#1565c0" stroke-width="2"/>'
        )
    for run in runs:
        if run.result != "ok":
            parts.append(
                f'<circle class="failure" cx="{x(run.end):.1f}" cy="{HEIGHT - PAD}" r="5" '
                f'fill="#d32f2f"><title>{html.escape(run.error or "failed")}</title></circle>'
            )
    parts.append("</svg>")
    return "".join(parts)


def _job_section(jobid: str, runs: Sequence[RunRecord], now: float) -> str:
    failures = [r for r in runs if r.result != "ok"]
    rows = "".join(
        f'<tr><td>{_stamp(r.end)}</td><td class="fail">{html.escape(r.error or "")}</td></tr>'
        for r in failures[-10:]
    )
    fail_table = (
        f"<table><tr><th>failed at</th><th>error</th></tr>{rows}</table>" if failures else ""
    )
    sent = sum(r.bytes for r in runs)
    return (
        f'<h3 id="job-{html.escape(jobid)}">job {html.escape(jobid)} → '
        f"{html.escape(runs[-1].target)}</h3>"
        f'<p>{len(runs)} runs, <span class="{"fail" if failures else "ok"}">'
        f"{len(failures)} failed</span>, "
        f"{sent} bytes sent</p>{_svg(runs, now)}{fail_table}"
    )


def render(records: Sequence[RunRecord], now: float, title: str = "pverep replication") -> str:
    body: list[str] = []
    by_guest = sorted(records, key=lambda r: (r.guest, r.jobid, r.end))
    for guest, guest_runs in groupby(by_guest, key=lambda r: r.guest):
        body.append(f'<h2 id="guest-{guest}">guest {guest}</h2>')
        for jobid, runs in groupby(list(guest_runs), key=lambda r: r.jobid):
            body.append(_job_section(jobid, list(runs), now))
    if not body:
        body.append("<p>No replication runs recorded yet.</p>")
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><p>generated {_stamp(now)}</p>"
        + "".join(body)
        + "</body></html>\n"
    )
