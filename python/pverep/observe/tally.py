"""What one run did, read off its job-log messages: volumes, full or incremental, bytes.

The runner already tells the job log everything a history record needs (engine/messages.py's
``full sync``/``incremental sync`` lines and the transfer's dd-style byte counts), so the
history taps that stream instead of threading counters through every engine port.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pverep.engine.joblog import LogFunc

_FULL = re.compile(r"^full sync '(?P<volid>[^']+)' \((?P<sync>[^)]+)\)$")
_INCR = re.compile(r"^incremental sync '(?P<volid>[^']+)' \((?P<base>\S+) => (?P<sync>[^)]+)\)$")
_BYTES = re.compile(r"^(?P<n>\d+) bytes \(.*\) copied, ")


@dataclass
class VolumeRun:
    volid: str
    mode: str  # "full" or "incremental"
    base: str | None
    bytes: int = 0

    def to_json(self) -> dict[str, object]:
        return {"volid": self.volid, "mode": self.mode, "base": self.base, "bytes": self.bytes}


@dataclass
class Tally:
    """Collects the volumes of one run; ``tap(log)`` passes every message on unchanged."""

    volumes: list[VolumeRun] = field(default_factory=list)

    def see(self, msg: str) -> None:
        if m := _FULL.match(msg):
            self.volumes.append(VolumeRun(m["volid"], "full", None))
        elif m := _INCR.match(msg):
            self.volumes.append(VolumeRun(m["volid"], "incremental", m["base"]))
        elif (m := _BYTES.match(msg)) and self.volumes:
            # progress lines count up; the closing summary is the last and largest
            self.volumes[-1].bytes = max(self.volumes[-1].bytes, int(m["n"]))

    def tap(self, log: LogFunc) -> LogFunc:
        def tapped(msg: str) -> None:
            self.see(msg)
            log(msg)

        return tapped

    @property
    def total_bytes(self) -> int:
        return sum(v.bytes for v in self.volumes)
