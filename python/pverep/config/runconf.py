"""``[run]`` in pverep.conf: how ``pverep run`` runs the node's jobs.

``max_workers`` (jobs at once; 1 = pvesr's strictly serial order), ``bandwidth`` (the node's
budget shared by every transfer running at once, on top of each job's ``rate``) and
``bandwidth_schedule`` (time-of-day rules, see ``pverep.bandwidth``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pverep.bandwidth import BandwidthPlan
from pverep.config import pveconf
from pverep.errors import ConfigError, ValidationError

SECTION = "run"
KEYS = ("max_workers", "bandwidth", "bandwidth_schedule")
#: Jobs at once by default: measured with `make bench` (benches/compare_cycle.py), see README.
DEFAULT_MAX_WORKERS = 4
#: More workers than this only add ssh connections and zfs processes on a node.
MAX_WORKERS_LIMIT = 64


@dataclass(frozen=True)
class RunSettings:
    max_workers: int = DEFAULT_MAX_WORKERS
    bandwidth: BandwidthPlan = field(default_factory=lambda: BandwidthPlan(None))


def check_max_workers(value: int, where: str) -> int:
    if not 1 <= value <= MAX_WORKERS_LIMIT:
        raise ConfigError(f"{where}: max_workers must be 1..{MAX_WORKERS_LIMIT}, got {value}")
    return value


def read_run_settings(path: Path) -> RunSettings:
    values = pveconf.section(path, SECTION, KEYS)
    workers = pveconf.get_int(values, "max_workers", DEFAULT_MAX_WORKERS, path, minimum=1)
    try:
        plan = BandwidthPlan.parse(values.get("bandwidth"), values.get("bandwidth_schedule"))
    except ValidationError as err:
        raise ConfigError(f"{path}: [{SECTION}] {err}") from None
    return RunSettings(check_max_workers(workers, str(path)), plan)
