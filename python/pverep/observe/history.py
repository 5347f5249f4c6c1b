"""The run history: one JSON line per run, in a bounded file rotated like logrotate's ``.1``.

Appends happen under the history's flock; a line is written with one ``write`` on an
``O_APPEND`` descriptor and fsynced, so a reader sees whole records (a torn last line after a
crash is skipped, never fatal). When the file passes ``max_bytes`` it becomes ``.1``
(``.1`` → ``.2`` …, ``keep`` files in all) before the next append.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pverep.locking import flock

DEFAULT_MAX_BYTES = 1 << 20
DEFAULT_KEEP = 3


@dataclass(frozen=True)
class RunRecord:
    jobid: str
    guest: int
    target: str
    node: str
    start: float
    end: float
    result: str  # "ok" or "error"
    error: str | None
    volumes: tuple[dict[str, Any], ...]

    @property
    def bytes(self) -> int:
        return sum(int(v.get("bytes", 0)) for v in self.volumes)

    @property
    def full(self) -> bool:
        return any(v.get("mode") == "full" for v in self.volumes)

    def to_json(self) -> dict[str, Any]:
        return {
            "jobid": self.jobid,
            "guest": self.guest,
            "target": self.target,
            "node": self.node,
            "start": self.start,
            "end": self.end,
            "result": self.result,
            "error": self.error,
            "bytes": self.bytes,
            "volumes": list(self.volumes),
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> RunRecord:
        return cls(
            jobid=str(raw["jobid"]),
            guest=int(raw["guest"]),
            target=str(raw["target"]),
            node=str(raw.get("node", "")),
            start=float(raw["start"]),
            end=float(raw["end"]),
            result=str(raw["result"]),
            error=None if raw.get("error") is None else str(raw["error"]),
            volumes=tuple(v for v in raw.get("volumes", []) if isinstance(v, dict)),
        )


class History:
    def __init__(
        self, path: Path, max_bytes: int = DEFAULT_MAX_BYTES, keep: int = DEFAULT_KEEP
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.keep = max(1, keep)

    @property
    def _lock(self) -> Path:
        return self.path.with_name(self.path.name + ".lck")

    def _rotated(self, n: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{n}")

    def append(self, record: RunRecord) -> None:
        line = (json.dumps(record.to_json(), separators=(",", ":")) + "\n").encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with flock(self._lock, 10.0):
            self._rotate_if_full()
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)

    def _rotate_if_full(self) -> None:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return
        if size < self.max_bytes:
            return
        self._rotated(self.keep).unlink(missing_ok=True)
        for n in range(self.keep - 1, 0, -1):
            if self._rotated(n).exists():
                os.replace(self._rotated(n), self._rotated(n + 1))
        os.replace(self.path, self._rotated(1))

    def records(self) -> Iterator[RunRecord]:
        """Every stored record, oldest first (rotated files first)."""
        files = [self._rotated(n) for n in range(self.keep, 0, -1)] + [self.path]
        for file in files:
            try:
                text = file.read_text(encoding="utf-8", errors="replace")
            except FileNotFoundError:
                continue
            for line in text.splitlines():
                try:
                    yield RunRecord.from_json(json.loads(line))
                except (ValueError, KeyError, TypeError):
                    continue  # a torn line after a crash, or a foreign one

    def query(self, guest: int | None = None, since: float | None = None) -> list[RunRecord]:
        return [
            r
            for r in self.records()
            if (guest is None or r.guest == guest) and (since is None or r.end >= since)
        ]

    def last_per_job(self) -> dict[str, RunRecord]:
        last: dict[str, RunRecord] = {}
        for record in self.records():
            last[record.jobid] = record
        return last
