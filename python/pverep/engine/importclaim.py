"""One running import per volume on a target node: a newer ``pverep import`` supersedes a
stale one (a deviation from pvesm, see the README).

The failure this repairs: a network partition cuts a running transfer. The source's stall
watchdog gives up, but no FIN/RST ever reaches the target, so its sshd session, the importer
and the importer's ``zfs recv`` live on (TCP keepalive is 2 h, sshd has no ClientAlive by
default) and the receive holds the dataset: every later run of the job fails with
``dataset is busy`` until TCP gives up.

Why superseding is safe: the job's source holds the guest's migration lock for its whole run
and there is only one job per (guest, target), so a second import of the same volume can only
come from a run that has already given up on the first.

How: every import holds an exclusive flock on ``<registry>/<dataset>.lock`` for its whole
life (the fd is close-on-exec, so only the importer itself holds it) and records itself and its
receiver as (pid, start time) in ``<dataset>.json``. A new import that finds the lock held reads
the record, stops the recorded importer (which closes the receiver's stdin: a clean end of
stream), gives the receiver a moment to abort on its own, kills its process group if it does
not, and takes the lock once the old importer is gone. A recycled pid never matches a record.

An import hosted by a ``pverep serve`` session (``hosted``) shares its importer process with
the session's other requests: superseding it stops only its receiver (the ``zfs recv`` process
group); the session then sees its receive fail, closes that request's data channel and
releases the claim, and its other requests go on.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pverep.atomic import atomic_write
from pverep.errors import PverepError
from pverep.transport import procs
from pverep.transport.procs import ProcessId

#: How long a new import waits for a stale one to go away before giving up.
SUPERSEDE_TIMEOUT = 30.0
#: How long a stale receiver may take to abort by itself once its stream has ended.
RECEIVER_GRACE = 5.0
_POLL = 0.05


@dataclass(frozen=True)
class ImportRecord:
    """What a running import says about itself."""

    volume: str
    importer: ProcessId
    receiver: ProcessId | None
    since: float  # wall-clock start, for the log line only
    #: The importer is a ``pverep serve`` session: never stop it, only the receiver.
    hosted: bool = False

    def to_json(self) -> bytes:
        doc: dict[str, Any] = {
            "volume": self.volume,
            "importer": [self.importer.pid, self.importer.start],
            "receiver": None if self.receiver is None else [self.receiver.pid, self.receiver.start],
            "since": int(self.since),
        }
        if self.hosted:
            doc["hosted"] = True
        return (json.dumps(doc, separators=(",", ":")) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes) -> ImportRecord | None:
        """None for anything that is not a well-formed record (never trusted further)."""
        try:
            doc = json.loads(data)
            importer = ProcessId(int(doc["importer"][0]), int(doc["importer"][1]))
            rec = doc["receiver"]
            receiver = None if rec is None else ProcessId(int(rec[0]), int(rec[1]))
            hosted = doc.get("hosted", False) is True
            return cls(str(doc["volume"]), importer, receiver, float(doc["since"]), hosted)
        except (ValueError, TypeError, KeyError, IndexError):
            return None


class ImportClaim:
    """This process's registration as the one import of a volume; hold it until done."""

    def __init__(self, registry: ImportRegistry, record: ImportRecord, fd: int) -> None:
        self._registry = registry
        self.record = record
        self._fd: int | None = fd

    def set_receiver(self, pid: int) -> None:
        """Record the receiver (call right after starting it, before it reads anything)."""
        self.record = ImportRecord(
            self.record.volume,
            self.record.importer,
            procs.identify(pid),
            self.record.since,
            self.record.hosted,
        )
        self._registry.write(self.record)

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            self._registry.record_path(self.record.volume).unlink()
        os.close(self._fd)  # drops the flock
        self._fd = None

    def __enter__(self) -> ImportClaim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class ImportRegistry:
    """The per-node directory of running imports (``Paths.import_registry_dir``)."""

    def __init__(
        self,
        directory: Path,
        log: Callable[[str], None],
        *,
        timeout: float = SUPERSEDE_TIMEOUT,
        receiver_grace: float = RECEIVER_GRACE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = directory
        self.log = log
        self.timeout = timeout
        self.receiver_grace = receiver_grace
        self.clock = clock

    def _stem(self, volume: str) -> str:
        return urllib.parse.quote(volume, safe="")  # a dataset name has '/'; nothing else to fear

    def lock_path(self, volume: str) -> Path:
        return self.directory / f"{self._stem(volume)}.lock"

    def record_path(self, volume: str) -> Path:
        return self.directory / f"{self._stem(volume)}.json"

    def read(self, volume: str) -> ImportRecord | None:
        try:
            data = self.record_path(volume).read_bytes()
        except OSError:
            return None
        record = ImportRecord.from_json(data)
        return record if record is not None and record.volume == volume else None

    def write(self, record: ImportRecord) -> None:
        atomic_write(self.record_path(record.volume), record.to_json(), mode=0o600)

    def claim(self, volume: str, *, hosted: bool = False) -> ImportClaim:
        """Become the one import of ``volume`` (the dataset name), stopping a stale one.
        ``hosted``: this import is one request of a ``pverep serve`` session."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.lock_path(volume), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            self._acquire(fd, volume)
            record = ImportRecord(volume, procs.this_process(), None, self.clock(), hosted)
            self.write(record)
        except BaseException:
            os.close(fd)
            raise
        return ImportClaim(self, record, fd)

    def _acquire(self, fd: int, volume: str) -> None:
        deadline = time.monotonic() + self.timeout
        stopped: set[ProcessId] = set()
        holder: ImportRecord | None = None
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                pass
            holder = self.read(volume) or holder
            if holder is not None and holder.hosted:
                # a session's request: stop its receiver, never the session itself (its
                # receiver is recorded right after the claim: the next poll sees it)
                if holder.receiver is not None and holder.receiver not in stopped:
                    # pragma below: stopping it twice only finds it gone (_stop_hosted waited)
                    stopped.add(holder.receiver)  # pragma: no mutate
                    self._stop_hosted(holder, holder.receiver)
            elif holder is not None and holder.importer == procs.this_process():
                # another request of this same process (a ``pverep serve`` session): never
                # stop ourselves; it ends on its own (the timeout below otherwise)
                stopped.add(holder.importer)  # pragma: no mutate (no branch reads it for us)
            elif holder is not None and holder.importer not in stopped:
                # pragma below: stopping it twice only finds it gone (_stop waited)
                stopped.add(holder.importer)  # pragma: no mutate
                self._stop(holder)
            if time.monotonic() >= deadline:
                who = f" (pid {holder.importer.pid})" if holder is not None else ""
                raise PverepError(
                    f"another import of '{volume}' is running{who} and did not stop "
                    f"within {self.timeout:g} s"
                )
            time.sleep(_POLL)
        # The previous holder is gone; a receiver it left behind must not hold the dataset.
        last = self.read(volume)
        if last is not None and last.receiver is not None:
            self._stop_receiver(last.receiver)

    def _stop(self, holder: ImportRecord) -> None:
        if not procs.is_running(holder.importer):
            return
        receiver = f", zfs recv pid {holder.receiver.pid}" if holder.receiver else ""
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.since))
        self.log(
            f"stopping stale import of '{holder.volume}' (pid {holder.importer.pid}{receiver}, "
            f"started {started}): superseded by this import"
        )
        procs.kill(holder.importer)
        procs.wait_gone([holder.importer], self.timeout)
        if holder.receiver is not None:
            self._stop_receiver(holder.receiver)

    def _stop_hosted(self, holder: ImportRecord, receiver: ProcessId) -> None:
        """A session-hosted receiver reads a socket its session keeps open: it never sees an
        end of stream by itself, so its process group is stopped right away."""
        if not procs.is_running(receiver):
            return
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.since))
        self.log(
            f"stopping stale import of '{holder.volume}' (serve session pid "
            f"{holder.importer.pid}, zfs recv pid {receiver.pid}, started {started}): "
            "superseded by this import"
        )
        procs.kill_group(receiver)
        procs.wait_gone([receiver], self.timeout)

    def _stop_receiver(self, receiver: ProcessId) -> None:
        """Its stdin was the dead importer's pipe: it sees end of stream and aborts the receive
        by itself, which lets the storage release the dataset in order; kill it if it hangs."""
        if procs.wait_gone([receiver], self.receiver_grace):
            return
        procs.kill_group(receiver)
        procs.wait_gone([receiver], self.timeout)
