"""Processes the lab started, remembered as (pid, start time) so a recycled PID is never killed.

The lab stops its nodes only through these records: a PID is signalled only while
``/proc/PID/stat`` still shows the start time recorded when the lab started it.
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProcRecord:
    pid: int
    start: int  # field 22 of /proc/PID/stat: clock ticks since boot

    def is_running(self) -> bool:
        """Same process as recorded, and not yet a zombie."""
        stat = read_stat(self.pid)
        return stat is not None and stat[1] == self.start and stat[0] != "Z"

    def kill(self, sig: int = signal.SIGKILL) -> bool:
        """Signal it (SIGKILL) if it is still the recorded process; True if a signal was sent."""
        if not self.is_running():
            return False
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            return False
        return True

    def wait_gone(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.is_running():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True


def only_child(pid: int) -> int | None:
    """The process ``pid`` forked (its only child): what nsenter runs inside a lab node."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return None
    return int(children[0]) if children else None


def read_stat(pid: int, proc: str = "/proc") -> tuple[str, int, int] | None:
    """(state, start time, ppid) of ``pid`` as seen through procfs ``proc``, None if gone."""
    try:
        raw = Path(f"{proc}/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # comm (field 2) may contain spaces and parentheses: split after its last ')'.
    rest = raw[raw.rindex(")") + 2 :].split()
    state, ppid, start = rest[0], int(rest[1]), int(rest[19])
    return state, start, ppid


def record(pid: int) -> ProcRecord | None:
    stat = read_stat(pid)
    return None if stat is None else ProcRecord(pid, stat[1])


def save_records(path: Path, records: dict[str, ProcRecord]) -> None:
    data = {name: [rec.pid, rec.start] for name, rec in records.items()}
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data) + "\n")
    tmp.replace(path)


def load_records(path: Path) -> dict[str, ProcRecord]:
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return {}
    out: dict[str, ProcRecord] = {}
    for name, value in data.items():
        if isinstance(value, list) and len(value) == 2:
            out[str(name)] = ProcRecord(int(value[0]), int(value[1]))
    return out
