"""The per-job log file ``/var/log/pve/replicate/<jobid>`` (spec §1.3, §3.4 step 4).

Each message becomes ``<YYYY-MM-DD HH:MM:SS> <jobid>: <msg>``; a multi-line message continues on
lines without prefix, as pvesr's ``print "$ctime $jobid: $msg\\n"`` does. The caller's log
function (``pverep run --verbose``) sees the prefixed line when verbose, else the bare message.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO

from pverep.errors import PverepError

LogFunc = Callable[[str], None]
Clock = Callable[[], float]


class JobLog:
    """Open (truncate) the job's log file and write prefixed lines to it."""

    def __init__(
        self,
        directory: Path,
        jobid: str,
        *,
        clock: Clock,
        echo: LogFunc | None = None,
        verbose: bool = False,
    ) -> None:
        self.jobid = jobid
        self.path = directory / jobid
        self._clock = clock
        self._echo = echo
        self._verbose = verbose
        try:
            directory.mkdir(parents=True, exist_ok=True)
            self._fh: IO[str] | None = open(self.path, "w", encoding="utf-8")  # noqa: SIM115
        except OSError as err:
            raise PverepError(
                f"unable to open replication log '{self.path}' - {err.strerror}"
            ) from None

    def __call__(self, msg: str) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self._clock()))
        line = f"{stamp} {self.jobid}: {msg}"
        if self._fh is not None:
            self._fh.write(line + "\n")
            self._fh.flush()
        if self._echo is not None:
            self._echo(line if self._verbose else msg)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> JobLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
