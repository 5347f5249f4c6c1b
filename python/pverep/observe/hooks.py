"""The two calls the engine makes into observability: one per job run, one per ``pverep run``.

Neither may fail a replication: a history or metrics file that cannot be written is a warning.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pverep.engine.joblog import LogFunc
from pverep.engine.replicate import JobLike
from pverep.errors import PverepError
from pverep.observe import collect, settings, textfile
from pverep.observe.history import History, RunRecord
from pverep.observe.tally import Tally
from pverep.paths import Paths


def _warn(msg: str) -> None:
    print(msg, file=sys.stderr)


@dataclass
class HistoryObserver:
    """One job run → one history record (engine.runner.RunObserver)."""

    history: History
    job: JobLike
    node: str
    clock: Callable[[], float]
    warn: Callable[[str], None] = _warn
    tally: Tally = field(default_factory=Tally)
    start: float = 0.0

    def tap(self, log: LogFunc) -> LogFunc:
        self.start = self.clock()
        return self.tally.tap(log)

    def finish(self, error: str | None) -> None:
        record = RunRecord(
            jobid=self.job.id,
            guest=int(self.job.guest),
            target=self.job.target,
            node=self.node,
            start=round(self.start, 3),
            end=round(self.clock(), 3),
            result="error" if error else "ok",
            error=error,
            volumes=tuple(v.to_json() for v in self.tally.volumes),
        )
        try:
            self.history.append(record)
        except (OSError, PverepError) as err:
            self.warn(f"{self.job.id}: cannot record run history - {err}")


def history_observer(
    paths: Paths, node: str, clock: Callable[[], float] = time.time
) -> Callable[[JobLike], HistoryObserver]:
    return lambda job: HistoryObserver(settings.history(paths), job, node, clock)


def after_run(
    paths: Paths, clock: Callable[[], float] = time.time, warn: Callable[[str], None] = _warn
) -> Callable[[float | None], None]:
    """Record the pass's duration, then refresh the textfile collector's file if configured."""

    def done(cycle_duration: float | None) -> None:
        try:
            if cycle_duration is not None:
                collect.record_cycle(paths, clock(), cycle_duration)
            directory = settings.load(paths).textfile_dir
            if directory is not None:
                textfile.write(directory, collect.metrics_text(paths, int(clock())))
        except (OSError, PverepError) as err:
            warn(f"cannot update replication metrics - {err}")

    return done
