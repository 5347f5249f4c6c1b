"""The node-local record of repairs (``/var/lib/pve-manager/pverep-reconcile.json``) and the
reconcile log (``/var/log/pve/replicate/reconcile``), so ``pverep status`` can say that a job
was repaired after a relocation, and an admin can read what was found and done.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pverep.atomic import atomic_write
from pverep.locking import flock
from pverep.paths import Paths

#: Entries older than this are dropped on the next write.
KEEP_SECONDS = 30 * 86400


def journal_path(paths: Paths) -> Path:
    return paths.state_file.parent / "pverep-reconcile.json"


def log_path(paths: Paths) -> Path:
    return paths.job_log_dir / "reconcile"


def read_journal(paths: Paths) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(journal_path(paths).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return (
        {str(k): v for k, v in data.items() if isinstance(v, dict)}
        if isinstance(data, dict)
        else {}
    )


def record_repairs(
    paths: Paths, node: str, done: dict[str, list[str]], now: float | None = None
) -> None:
    """Remember, per job, when and what was repaired on this node."""
    if not done:
        return
    now = time.time() if now is None else now
    path = journal_path(paths)
    path.parent.mkdir(parents=True, exist_ok=True)
    with flock(path.with_name(path.name + ".lck"), 10.0):
        data = read_journal(paths)
        data = {k: v for k, v in data.items() if now - float(v.get("time", 0)) < KEEP_SECONDS}
        for jobid, lines in done.items():
            data[jobid] = {"time": int(now), "node": node, "done": list(lines)}
        atomic_write(path, (json.dumps(data, sort_keys=True) + "\n").encode())


def append_log(paths: Paths, lines: Sequence[str], now: float | None = None) -> None:
    if not lines:
        return
    now = time.time() if now is None else now
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
    path = log_path(paths)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.writelines(f"{stamp} {line}\n" for line in lines)


def repair_notes(paths: Paths, jobids: Sequence[str]) -> dict[str, str]:
    """jobid → "repaired <time> on <node>: <what>" for the jobs reconcile repaired lately."""
    data = read_journal(paths)
    out = {}
    for jobid in jobids:
        entry = data.get(jobid)
        if entry is None:
            continue
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(entry.get("time", 0))))
        what = "; ".join(str(x) for x in entry.get("done", []))
        out[jobid] = f"repaired {stamp} on {entry.get('node', '?')}: {what}"
    return out
