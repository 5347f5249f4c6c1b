"""Type stubs for the Rust extension module pverep._core (checked with mypy.stubtest).

fd ownership: the pump never closes the fds it is given; the caller closes them.
"""

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import final

__all__ = [
    "BaseSelection",
    "Budget",
    "CancelledError",
    "CoreError",
    "DatasetComparison",
    "InvalidArgumentError",
    "PreparePlan",
    "Pump",
    "PumpError",
    "PumpStats",
    "PverepError",
    "SnapshotInfo",
    "SnapshotParseError",
    "SnapshotTable",
    "StallError",
    "core_version",
    "parse_snapshot_list",
    "parse_zfs_get",
    "plan_prepare",
    "pump",
    "select_bases",
]

def core_version() -> str: ...

# ---- exceptions -------------------------------------------------------------------------------

class PverepError(Exception):
    """Root of all expected pverep errors; str(err) is the one-line user-facing message."""

class CoreError(PverepError):
    """Base of the errors raised by the Rust core."""

class InvalidArgumentError(CoreError, ValueError):
    """A value passed to the core is invalid (negative rate, closed fd, ...)."""

class SnapshotParseError(CoreError):
    """Malformed `zfs list`/`zfs get` output; the message names the 1-based line."""

class PumpError(CoreError):
    """I/O failure in the pump; .side is 'read' or 'write', .errno the OS error number (if any)."""

    side: str | None
    errno: int | None

class StallError(PumpError):
    """No progress for stall_timeout seconds; .side is 'read' or 'write'."""

class CancelledError(PumpError):
    """The pump was cancelled (cancel() or Ctrl-C)."""

# ---- snapshot lists ---------------------------------------------------------------------------

@final
class SnapshotInfo:
    """One snapshot (frozen, hashable)."""

    def __new__(
        cls, dataset: str, name: str, guid: int, createtxg: int, creation: int
    ) -> SnapshotInfo: ...
    @property
    def dataset(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def guid(self) -> int: ...
    @property
    def createtxg(self) -> int: ...
    @property
    def creation(self) -> int: ...
    @property
    def full_name(self) -> str: ...
    def __eq__(self, value: object, /) -> bool: ...
    def __hash__(self) -> int: ...

def parse_snapshot_list(data: bytes | str) -> dict[str, list[SnapshotInfo]]:
    """Parse `zfs list -Hp -o name,guid,createtxg,creation -t snapshot` output.

    Key = dataset (part before '@'), each list in input order; empty input, blank lines and a
    trailing newline are fine. Raises SnapshotParseError naming the 1-based line.
    """

def parse_zfs_get(data: bytes | str) -> dict[str, dict[str, str]]:
    """Parse `zfs get -Hp -o name,property,value` output: name -> property -> value."""

@final
class DatasetComparison:
    """How one dataset's snapshots compare between two listings."""

    @property
    def dataset(self) -> str: ...
    @property
    def common(self) -> int: ...
    @property
    def only_local(self) -> list[str]: ...
    @property
    def only_remote(self) -> list[str]: ...
    @property
    def diverged(self) -> list[str]: ...
    @property
    def newest_common(self) -> str | None: ...

@final
class SnapshotTable:
    """A parsed `zfs list` listing kept on the Rust side (no Python object per snapshot)."""

    def __new__(cls, data: bytes | str) -> SnapshotTable: ...
    @staticmethod
    def from_fd(fd: int) -> SnapshotTable:
        """Parse a listing read from fd until EOF (GIL released, streamed in 1 MiB pieces,
        the fd is not closed); OSError if reading fails."""
    def __len__(self) -> int: ...
    def __contains__(self, key: str, /) -> bool: ...
    def datasets(self) -> list[str]: ...
    def snapshots(self, dataset: str) -> list[SnapshotInfo]: ...
    def to_dict(self) -> dict[str, list[SnapshotInfo]]: ...
    def compare(self, remote: SnapshotTable) -> list[DatasetComparison]:
        """Per dataset (local order, then remote-only ones): common (same name and guid),
        only-local, only-remote and diverged (same name, other guid) snapshots, and the
        common snapshot with the greatest createtxg."""

# ---- pvesr decisions --------------------------------------------------------------------------

@final
class PreparePlan:
    """pvesr prepare() (spec §4.3) as data."""

    @property
    def keep(self) -> dict[str, dict[str, SnapshotInfo]]:
        """volid -> snapshots that stay (prepare's result); every volid appears."""
    @property
    def stale(self) -> dict[str, list[str]]:
        """volid -> snapshot names to delete, input order; every volid appears."""
    @property
    def missing_keep(self) -> list[str]:
        """volids for which `expected snapshot <keep_name> not present for <volid>, not
        removing others` must be logged."""
    @property
    def keep_name(self) -> str | None:
        """`__replicate_<jobid>_<last_sync>__`, or None without a jobid."""

def plan_prepare(
    snapshots: Mapping[str, Sequence[SnapshotInfo]],
    jobid: str | None,
    last_sync: int,
    parent_snapname: str | None = None,
) -> PreparePlan:
    """Keys of `snapshots` are volids. last_sync 0 = never delete, 1 = delete all of the job's
    replication snapshots; negative raises InvalidArgumentError."""

@final
class BaseSelection:
    """find_common_replication_snapshot (spec §4.4) as data."""

    @property
    def bases(self) -> dict[str, str]:
        """volid -> base snapshot (incremental sync)."""
    @property
    def full(self) -> list[str]:
        """volids absent on the remote -> full sync."""
    @property
    def missing(self) -> list[str]:
        """volids with no common base -> the job fails."""

def select_bases(
    local: Mapping[str, Mapping[str, SnapshotInfo]],
    remote: Mapping[str, Mapping[str, int | None]],
    jobid: str,
    last_sync: int,
    parent_snapname: str | None,
    config_snapshots: Collection[str],
) -> BaseSelection:
    """remote: volid -> snapname -> guid, or None where the peer answered `1` (legacy).
    Base = last_sync snapshot if common by name+guid, else the parent, else the newest common
    config/replication snapshot by creation (ties: greater createtxg, then input order)."""

# ---- the data pump ----------------------------------------------------------------------------

@final
class PumpStats:
    """A snapshot of a pump's progress counters."""

    @property
    def bytes(self) -> int:
        """Bytes delivered to the destination."""
    @property
    def elapsed(self) -> float:
        """Seconds since the pump started (frozen when it ends)."""
    @property
    def rate(self) -> float:
        """Bytes/s over the last tick while running; the average over the run once done."""

@final
class Budget:
    """A bandwidth budget of `rate` bytes/s (> 0) shared by every pump given it as `budget=`,
    on any thread, on top of each pump's own `rate`: pumps take tokens before they move bytes
    and give back what did not move, so together they never exceed rate x t + one burst
    (max(rate x 50 ms, 256 KiB)). It starts empty."""

    def __new__(cls, rate: float) -> Budget: ...
    @property
    def rate(self) -> float: ...
    def set_rate(self, rate: float) -> None:
        """Change the rate; running pumps follow at their next step."""
    @property
    def bytes(self) -> int:
        """Bytes moved under this budget so far."""

@final
class Pump:
    """Copy src_fd to dst_fd until EOF: splice(2) when either side is a pipe, else read/write;
    optional token-bucket limit `rate` (bytes/s, > 0) with `burst` bytes (default
    max(rate x 10 ms, 64 KiB)); StallError after `stall_timeout` s without progress; pipes
    among the fds are enlarged to `pipe_size` bytes (default 256 KiB, 0 = leave alone).

    fd ownership: the pump never closes the fds; the caller closes them after run() returns.
    While running, both fds are non-blocking; their flags are restored afterwards.
    """

    def __new__(
        cls,
        src_fd: int,
        dst_fd: int,
        *,
        rate: float | None = None,
        burst: int | None = None,
        stall_timeout: float | None = None,
        pipe_size: int | None = None,
        budget: Budget | None = None,
    ) -> Pump: ...
    def run(self) -> PumpStats:
        """Block until EOF with the GIL released; Ctrl-C or cancel() raise CancelledError."""
    def stats(self) -> PumpStats:
        """Callable from another thread while run() runs."""
    def cancel(self) -> None: ...

def pump(
    src_fd: int,
    dst_fd: int,
    *,
    rate: float | None = None,
    burst: int | None = None,
    stall_timeout: float | None = None,
    pipe_size: int | None = None,
    budget: Budget | None = None,
    progress: Callable[[PumpStats], None] | None = None,
    progress_interval: float = 1.0,
) -> PumpStats:
    """Pump(...).run(), calling `progress` about every `progress_interval` seconds from the
    calling thread; an exception in `progress` cancels the pump and propagates."""
