"""Gather the observer's data on this node: job views, the last cycle, the last runs.

Read-only: ``job_status`` may compute config fix-ups (source, stolen guests); they are not
written here (``pverep run``/``status`` do that under the config lock).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from pverep.atomic import atomic_write
from pverep.cluster.files import FilesCluster
from pverep.config.jobs import ConfigStore
from pverep.config.state import StateStore, job_process_running
from pverep.observe import settings
from pverep.observe.jobview import JobView, view_of
from pverep.observe.metrics import LastRun, NodeCycle, render
from pverep.paths import Paths
from pverep.schedule import job_status


@dataclass(frozen=True)
class NodeView:
    node: str
    jobs: list[JobView]
    cycle: NodeCycle
    last_runs: dict[str, LastRun]


def read_cycle(paths: Paths) -> tuple[float | None, float | None]:
    try:
        raw = json.loads(paths.cycle_file.read_text(encoding="utf-8"))
        return float(raw["end"]), float(raw["duration"])
    except (OSError, ValueError, KeyError, TypeError):
        return None, None


def record_cycle(paths: Paths, end: float, duration: float) -> None:
    paths.cycle_file.parent.mkdir(parents=True, exist_ok=True)
    data = json.dumps({"end": end, "duration": round(duration, 3)})
    atomic_write(paths.cycle_file, data.encode())


def node_view(paths: Paths, now: int) -> NodeView:
    cluster = FilesCluster(paths)
    node = cluster.local_node()
    statuses, _changed = job_status(
        ConfigStore(paths).read(),
        StateStore(paths).read(),
        cluster.vmlist(),
        cluster.members(),
        node,
        get_disabled=True,
    )
    jobs = [view_of(s, node, now, job_process_running(s.state)) for s in statuses]
    end, duration = read_cycle(paths)
    cycle = NodeCycle(node, end, duration, sum(j.running for j in jobs))
    last = {
        jobid: LastRun(r.bytes, r.full)
        for jobid, r in settings.history(paths).last_per_job().items()
    }
    return NodeView(node, jobs, cycle, last)


def metrics_text(paths: Paths, now: int) -> str:
    view = node_view(paths, now)
    return render(view.jobs, view.cycle, view.last_runs, now)
