"""The node-local job state file ``pve-replication-state.json`` (spec §1.2).

One JSON object on a single line, ``{"<vmid>": {"local/<target>": {<state>}}}``, written
atomically under the state flock (and, for per-guest writes, the guest's migration lock).
Reading is tolerant: numbers given as strings (Perl is loose about that) are accepted, and an
entry that is not an object is ignored. A file that is not a state object is an error — and
then nothing is ever written over it.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pverep.atomic import atomic_write
from pverep.errors import ConfigError
from pverep.locking import FLOCK_TIMEOUT, flock
from pverep.paths import Paths

#: The defaults pvesr fills in when a job has no (or an incomplete) entry.
DEFAULTS: dict[str, int] = {"last_iteration": 0, "last_try": 0, "last_sync": 0, "fail_count": 0}
#: Key order on write (the spec's example order); unknown keys follow in their read order.
KEY_ORDER = (
    "last_iteration",
    "last_try",
    "last_sync",
    "fail_count",
    "error",
    "last_node",
    "storeid_list",
    "duration",
    "pid",
    "ptime",
)
MAX_SIZE = 1024 * 1024

StateObj = dict[str, dict[str, dict[str, Any]]]
RawState = dict[str, Any]

_SINGLE_LINE_OBJECT = re.compile(r"(\{.*\})\n?")


# --- parsing and formatting -----------------------------------------------------------------


def parse_state(raw: bytes, path: str = "pve-replication-state.json") -> StateObj:
    """Decode the state file; missing/empty → {}; anything else must be one JSON object line."""
    if not raw:
        return {}
    codec = "utf-8"  # pragma: no mutate - "UTF-8" or "utf8" name the same codec
    text = raw.decode(codec, "replace")
    m = _SINGLE_LINE_OBJECT.fullmatch(text)
    if m is None:
        raise ConfigError(f"invalid json data in '{path}'")
    try:
        data = json.loads(m.group(1))
    except ValueError as err:
        raise ConfigError(f"invalid json data in '{path}' - {err}") from None
    assert isinstance(data, dict)  # "{…}" that json accepts is an object
    obj: StateObj = {}
    for vmid, per_target in data.items():
        if isinstance(per_target, dict):
            entries = per_target.items()
            obj[str(vmid)] = {str(t): dict(s) for t, s in entries if isinstance(s, dict)}
    return obj


def format_state(obj: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> bytes:
    """One line, no trailing newline, keys of each job state in pvesr's usual order."""
    parts = []
    for vmid, per_target in obj.items():
        inner = ",".join(
            f"{_json(tid)}:{_json(_ordered(state))}" for tid, state in per_target.items()
        )
        parts.append(f"{_json(vmid)}:{{{inner}}}")
    text = "{" + ",".join(parts) + "}"
    return text.encode("utf-8")  # pragma: no mutate - "UTF-8" names the same codec


def _ordered(state: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: state[k] for k in KEY_ORDER if k in state}
    out.update({k: v for k, v in state.items() if k not in out})
    return out


def _json(value: Any) -> str:
    """JSON like Perl's JSON::XS: UTF-8 text, floats printed with %.15g."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "null"
        return f"{value:.15g}"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{_json(str(k))}:{_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_json(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


# --- a typed, tolerant view of one entry ------------------------------------------------------


#: What Perl reads as a number at the start of a string (leading blanks skipped, ASCII digits,
#: the rest ignored: "12abc" is 12, "1_000" is 1, "abc" is 0).
_PERL_NUMBER = re.compile(r"\s*([+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)", re.ASCII)
_INTEGER = re.compile(r"[+-]?[0-9]+")


def _int(value: Any) -> int:
    """A numeric field as pvesr (Perl) uses it, truncated to an integer; 0 for what is no
    number (null, lists, infinities)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        m = _PERL_NUMBER.match(value)
        if m is None:
            return 0
        text = m.group(1)
        if _INTEGER.fullmatch(text):
            return int(text)  # exact, also beyond a float's 53 bits
        value = float(text)
    if isinstance(value, float) and math.isfinite(value):
        return int(value)
    return 0


def _float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


@dataclass(frozen=True)
class JobState:
    """One job's state with pvesr's defaults; numeric fields accept numbers or digit strings."""

    last_iteration: int = 0
    last_try: int = 0
    last_sync: int = 0
    fail_count: int = 0
    error: str | None = None
    duration: float | None = None
    last_node: str | None = None
    storeid_list: tuple[str, ...] = ()
    pid: int | None = None
    ptime: str | None = None

    @classmethod
    def from_raw(cls, raw: Mapping[str, Any] | None) -> JobState:
        raw = raw or {}
        storeids = raw.get("storeid_list")
        return cls(
            last_iteration=_int(raw.get("last_iteration")),
            last_try=_int(raw.get("last_try")),
            last_sync=_int(raw.get("last_sync")),
            fail_count=_int(raw.get("fail_count")),
            error=None if raw.get("error") is None else str(raw["error"]),
            duration=_float(raw.get("duration")),
            last_node=None if raw.get("last_node") is None else str(raw["last_node"]),
            storeid_list=tuple(str(s) for s in storeids) if isinstance(storeids, list) else (),
            pid=_int(raw.get("pid")) or None,  # pvesr: a false pid (0, "", none) is no pid
            ptime=None if raw.get("ptime") in (None, "") else str(raw["ptime"]),
        )


def read_job_state(obj: StateObj, vmid: int | str, tid: str) -> RawState:
    """pvesr's extract_job_state: a copy of the entry with the four defaults filled in."""
    state = dict(obj.get(str(vmid), {}).get(tid, {}))
    for key, default in DEFAULTS.items():
        if state.get(key) is None:
            state[key] = default
    return state


def process_start_time(pid: int, proc: Path = Path("/proc")) -> str | None:
    """Field 22 of /proc/<pid>/stat (start time in clock ticks), or None if no such process.

    A zombie counts as no process: it has ended (PVE's check_process_running skips it too)."""
    try:
        stat = (proc / str(pid) / "stat").read_bytes()  # a process name may be any bytes
    except OSError:
        return None
    fields = stat.rpartition(b")")[2].split()
    if fields[:1] == [b"Z"]:
        return None
    # fields[0] is field 3 (state); a damaged start time must not raise either
    return fields[19].decode(errors="replace") if len(fields) > 19 else None


def job_process_running(state: JobState, proc: Path = Path("/proc")) -> bool:
    """True if the (pid, ptime) recorded for a running job still names a live process."""
    # "and" would answer the same: a ptime never equals a missing start time, and no
    # /proc/None exists (mutant: equivalent)
    if state.pid is None or state.ptime is None:  # pragma: no mutate
        return False
    return process_start_time(state.pid, proc) == state.ptime


# --- the file on disk ------------------------------------------------------------------------


class StateStore:
    """Reads and writes the state file of one node, with pvesr's locks."""

    def __init__(self, paths: Paths, lock_timeout: float = FLOCK_TIMEOUT) -> None:
        self.paths = paths
        self.lock_timeout = lock_timeout

    @property
    def path(self) -> Path:
        return self.paths.state_file

    def read(self) -> StateObj:
        try:
            with self.path.open("rb") as fh:
                # enough to tell "too large"; reading more is refused alike (mutants: equivalent)
                raw = fh.read(MAX_SIZE + 1)  # pragma: no mutate
        except FileNotFoundError:
            return {}
        except OSError as err:
            raise ConfigError(f"unable to read '{self.path}' - {err.strerror}") from None
        if len(raw) > MAX_SIZE:
            raise ConfigError(f"invalid json data in '{self.path}' - file larger than 1 MiB")
        return parse_state(raw, str(self.path))

    def _write(self, obj: StateObj) -> None:
        # Called under the state lock, whose file beside it has created the directory.
        # 0o644 is also atomic_write's default: leaving it out is the same (mutant: equivalent;
        # the lifecycle test checks the mode).
        atomic_write(self.path, format_state(obj), 0o644)  # pragma: no mutate

    def modify(self, change: Callable[[StateObj], None], vmid: int | None = None) -> None:
        """Re-read, change and write the file under the state lock (and the guest's migration
        lock when ``vmid`` is given, as every per-guest write in pvesr does)."""

        def update() -> None:
            with flock(self.paths.state_lock, self.lock_timeout):
                obj = self.read()  # raises on a broken file: never overwrite what we can't read
                change(obj)
                self._write(obj)

        if vmid is None:
            update()
        else:
            with flock(self.paths.migrate_lock(vmid), self.lock_timeout):
                update()

    # pvesr's state operations ----------------------------------------------------------------

    def write_job_state(self, vmid: int, tid: str, state: RawState | None) -> None:
        """Store (or, with None, delete) one job's entry."""

        def change(obj: StateObj) -> None:
            key = str(vmid)
            if state is not None:
                obj.setdefault(key, {})[tid] = dict(state)
            else:
                obj.get(key, {}).pop(tid, None)
                if key in obj and not obj[key]:
                    del obj[key]

        self.modify(change, vmid)

    def write_vmid_job_states(self, vmid: int, states: Mapping[str, Mapping[str, Any]]) -> None:
        """Replace all entries of one guest (``pvesr set-state``)."""

        def change(obj: StateObj) -> None:
            obj[str(vmid)] = {str(tid): dict(s) for tid, s in states.items()}

        self.modify(change, vmid)

    def delete_guest_states(self, vmid: int) -> None:
        def change(obj: StateObj) -> None:
            obj.pop(str(vmid), None)

        self.modify(change)

    def schedule_job_now(self, vmid: int, tid: str) -> None:
        """Make an existing entry due at once (``last_try = 0``); no entry: nothing to do."""

        def change(obj: StateObj) -> None:
            entry = obj.get(str(vmid), {}).get(tid)
            if entry is not None:
                entry["last_try"] = 0

        self.modify(change, vmid)

    def purge_old_states(self, keep: Iterable[tuple[int, str]]) -> None:
        """Drop every entry not in ``keep`` (see states_to_keep)."""
        wanted = {(str(v), t) for v, t in keep}

        def change(obj: StateObj) -> None:
            for vmid in list(obj):
                for tid in list(obj[vmid]):
                    if (vmid, tid) not in wanted:
                        del obj[vmid][tid]
                if not obj[vmid]:
                    del obj[vmid]

        self.modify(change)


def states_to_keep(
    jobs: Iterable[tuple[int, str]], guest_nodes: Mapping[int, str], local_node: str
) -> set[tuple[int, str]]:
    """(vmid, tid) pairs purge_old_states keeps: a job exists and its guest is on this node.

    ``jobs`` are the (guest, tid) pairs of replication.cfg; ``guest_nodes`` maps every guest of
    the (fresh) cluster vmlist to its node.
    """
    return {(vmid, tid) for vmid, tid in jobs if guest_nodes.get(vmid) == local_node}


# --- the job lifecycle (pvesr's record_* functions) -------------------------------------------


def record_job_start(
    store: StateStore,
    vmid: int,
    tid: str,
    state: RawState,
    *,
    start_time: int,
    iteration: int,
    nodename: str,
    pid: int | None = None,
    ptime: str | None = None,
) -> None:
    """Mark the job running (pid, ptime), remember node and try time; ``state`` is updated."""
    pid = os.getpid() if pid is None else pid
    if ptime is None:
        ptime = process_start_time(pid) or "0"
    state["pid"] = pid
    state["ptime"] = ptime
    state["last_node"] = nodename
    state["last_try"] = start_time
    state["last_iteration"] = iteration
    if state.get("storeid_list") is None:
        state["storeid_list"] = []
    store.write_job_state(vmid, tid, state)


def record_sync_end(
    store: StateStore, vmid: int, tid: str, state: RawState, *, start_time: int
) -> None:
    """All volumes transferred: persist last_sync before any old snapshot is removed."""
    state["last_sync"] = start_time
    store.write_job_state(vmid, tid, state)


def record_job_end(
    store: StateStore,
    vmid: int,
    tid: str,
    state: RawState,
    *,
    start_time: int,
    duration: float,
    error: str | None,
    removal: bool = False,
) -> None:
    """Finish a run: failure counts up; success resets; a finished removal drops the entry.

    ``duration`` is kept to the microsecond, as pvesr's ``tv_interval`` measures it, so the
    status table shows ``3.512871`` rather than a float's full noise.
    """
    state["duration"] = round(duration, 6)
    state.pop("pid", None)
    state.pop("ptime", None)
    if error:
        state["fail_count"] = _int(state.get("fail_count")) + 1
        state["error"] = error[:-1] if error.endswith("\n") else error
        store.write_job_state(vmid, tid, state)
    elif removal:
        store.write_job_state(vmid, tid, None)
    else:
        state["last_sync"] = start_time
        state["fail_count"] = 0
        state.pop("error", None)
        store.write_job_state(vmid, tid, state)
