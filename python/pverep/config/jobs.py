"""``/etc/pve/replication.cfg``: PVE's section config for replication jobs (spec §1.1).

Reading never raises on bad content: every line pvesr would complain about produces pvesr's
warning (through the ``warn`` callback) and is skipped. Writing reproduces pvesr's bytes:
sections in file order, ``comment`` then ``disable`` then ``target`` then the remaining keys
sorted, bare ``\\tdisable``, URI-escaped comments and one blank line after each section.
All read-modify-write happens under the pmxcfs lock of the file (``ConfigStore.locked``).
"""

from __future__ import annotations

import hashlib
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote_to_bytes

from pverep import validate
from pverep.atomic import atomic_write
from pverep.calendar import DEFAULT_SCHEDULE, verify_calendar_event
from pverep.errors import ConfigError, ValidationError
from pverep.locking import cfs_lock_file
from pverep.paths import Paths

T = TypeVar("T")

JOB_TYPE = "local"
CFG_NAME = "replication.cfg"

#: Properties a section may carry (besides the id from the header).
PROPERTIES = ("target", "schedule", "rate", "comment", "disable", "remove_job", "source")
REQUIRED = ("target",)
#: Written after comment/disable/required keys, in this (sorted) order.
OPTIONAL_WRITE_ORDER = ("rate", "remove_job", "schedule", "source")
#: May be set on create but never changed afterwards.
FIXED = ("target",)
REMOVE_MODES = ("local", "full")

SCHEDULE_MAX = 128
COMMENT_MAX = 4096

_HEADER_RE = re.compile(r"(\S+):\s*(\d+)-(\d+)\s*")
_PROPERTY_RE = re.compile(r"\s+(\S+)(\s+(.*\S))?\s*")
_NUMBER_RE = re.compile(r"[+-]?(\d+\.?\d*|\d*\.\d+)([eE][+-]?\d+)?")
_TRUE = ("1", "on", "yes", "true")
_FALSE = ("0", "off", "no", "false")

Warn = Callable[[str], None]


def _stderr_warn(message: str) -> None:
    sys.stderr.write(message + "\n")


# --- one job ---------------------------------------------------------------------------------


@dataclass
class Job:
    """One ``local`` section. ``rate`` keeps its text so a rewrite reproduces the file."""

    id: str
    target: str
    schedule: str | None = None
    rate: str | None = None
    comment: str | None = None
    disable: bool = False
    remove_job: str | None = None
    source: str | None = None
    type: str = JOB_TYPE

    @property
    def guest(self) -> int:
        return validate.parse_job_id(self.id)[0]

    @property
    def jobnum(self) -> int:
        return validate.parse_job_id(self.id)[1]

    @property
    def tid(self) -> str:
        """The unique target id, key of the job state and of the one-job-per-target rule."""
        return f"{self.type}/{self.target}"

    @property
    def effective_schedule(self) -> str:
        return self.schedule or DEFAULT_SCHEDULE

    @property
    def rate_mbps(self) -> float | None:
        return float(self.rate) if self.rate is not None else None

    def to_api(self) -> dict[str, Any]:
        """The job as PVE's API returns it (config keys + guest, jobnum, id, type)."""
        out: dict[str, Any] = {
            "id": self.id,
            "type": self.type,
            "guest": self.guest,
            "jobnum": self.jobnum,
            "target": self.target,
        }
        for key in ("schedule", "comment", "remove_job", "source"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.rate is not None:
            out["rate"] = _number(self.rate)
        if self.disable:
            out["disable"] = 1
        return out


def _number(text: str) -> int | float:
    """A number as PVE reads it from the config: ``10.0`` is the number 10 (JSON ``10``)."""
    value = float(text)
    # Beyond 2**53 a float no longer holds every integer, so it stays a float; whether 2**53
    # itself is cut with < or <= is arbitrary (no rate is that big): the mutant is not a bug.
    exact = abs(value) < 2**53  # pragma: no mutate
    return int(value) if value.is_integer() and exact else value


def number_text(text: str) -> str:
    """How stock shows a config number (Perl numifies it, then prints ``%.15g``): ``10.0`` →
    ``10``, ``2.50`` → ``2.5``. The file keeps the text as written."""
    return f"{float(text):.15g}"


# --- property values (the job schema) ---------------------------------------------------------


def check_property(key: str, value: str | None) -> Any:
    """Check one property value given as text; returns the typed value (PVE's wording on error).

    ``None`` is a bare key, which only booleans accept. Comments are checked as given (the
    caller decodes the file's escaped form afterwards).
    """
    if key not in PROPERTIES:
        raise ValidationError(f"unexpected property '{key}'")
    if value is None:
        if key == "disable":
            return True
        raise ValidationError("missing property value")
    if key in ("target", "source"):
        return validate.check_node_name(value)
    if key == "schedule":
        if len(value) > SCHEDULE_MAX:
            raise ValidationError(f"value may only be {SCHEDULE_MAX} characters long")
        try:
            return verify_calendar_event(value)
        except ValidationError as err:
            raise ValidationError(f"invalid format - {err}") from None
    if key == "rate":
        if not _NUMBER_RE.fullmatch(value):
            raise ValidationError(f"type check ('number') failed - got '{value}'")
        if float(value) < 1:
            raise ValidationError("value must have a minimum value of 1")
        return value
    if key == "comment":
        if len(value) > COMMENT_MAX:
            raise ValidationError(f"value may only be {COMMENT_MAX} characters long")
        return value
    if key == "disable":
        return parse_boolean(value)
    # remove_job
    if value not in REMOVE_MODES:
        raise ValidationError(
            f"value '{value}' does not have a value in the enumeration '{', '.join(REMOVE_MODES)}'"
        )
    return value


def parse_boolean(value: str) -> bool:
    low = value.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValidationError(f"type check ('boolean') failed - got '{value}'")


# --- comment encoding ------------------------------------------------------------------------

_COMMENT_SAFE = (
    frozenset(range(0x20, 0x25)) | frozenset(range(0x26, 0x3A)) | frozenset(range(0x3B, 0x7F))
)


def encode_comment(text: str) -> str:
    """UTF-8, then %XX for every byte outside [\\x20-\\x24\\x26-\\x39\\x3b-\\x7e].

    Deviation from pvesr: spaces at the start and end are escaped too (%20). pvesr writes them
    literally and its own reader then trims them (a comment of only blanks even becomes an
    unparsable line); escaped, every reader decodes them back and nothing is lost.
    """
    data = text.encode("utf-8")  # pragma: no mutate - "UTF-8" names the same codec
    encoded = "".join(chr(b) if b in _COMMENT_SAFE else f"%{b:02X}" for b in data)
    # every other blank is escaped by now, so strip() and strip(" ") are the same (equivalent)
    core = encoded.strip(" ")  # pragma: no mutate
    if core == encoded:
        return encoded
    lead = len(encoded) - len(encoded.lstrip(" "))
    trail = len(encoded) - len(encoded.rstrip(" "))
    if not core:
        return "%20" * len(encoded)
    return "%20" * lead + core + "%20" * trail


def decode_comment(text: str) -> str:
    return unquote_to_bytes(text.encode("utf-8")).decode("utf-8", errors="replace")


# --- the whole file --------------------------------------------------------------------------


@dataclass
class ReplicationConfig:
    """All jobs, in file order (new jobs are appended), plus the digest of what was read."""

    jobs: dict[str, Job] = field(default_factory=dict)
    digest: str = hashlib.sha1(b"").hexdigest()  # noqa: S324 - PVE's digest is SHA-1

    def sorted_ids(self) -> list[str]:
        """String-sorted ids: the order pvesr visits jobs in."""
        return sorted(self.jobs)

    def find(self, jobid: str) -> Job | None:
        job = self.jobs.get(jobid)
        if job is None:
            try:
                job = self.jobs.get(validate.normalise_job_id(jobid))
            except ValidationError:
                return None
        return job

    def jobs_of_guest(self, vmid: int) -> list[Job]:
        return [self.jobs[i] for i in self.sorted_ids() if self.jobs[i].guest == vmid]

    def copy(self) -> ReplicationConfig:
        return ReplicationConfig({k: replace(v) for k, v in self.jobs.items()}, self.digest)


def parse_config(
    raw: bytes, filename: str = "/etc/pve/" + CFG_NAME, warn: Warn | None = None
) -> ReplicationConfig:
    """Parse replication.cfg; problems become pvesr's warnings, never exceptions."""
    warn = warn or _stderr_warn
    digest = hashlib.sha1(raw).hexdigest()  # noqa: S324
    sections: dict[str, dict[str, Any]] = {}
    # (Perl's split drops trailing empty fields; here they end a section like the file's end)
    lines = raw.decode("utf-8", errors="replace").split("\n")
    lineno = 0

    def next_line() -> str | None:
        nonlocal lineno
        while lines:
            line = lines.pop(0)
            lineno += 1
            if not line.lstrip().startswith("#"):
                return line
        return None

    def perl_true(line: str | None) -> bool:
        # pvesr ends a section at the first line that is false in Perl: "" (and, quirkily, "0")
        return line is not None and line not in ("", "0")

    while lines:
        line = next_line()
        if not perl_true(line):
            continue
        assert line is not None
        prefix = f"file {filename} line {lineno}"
        header = _HEADER_RE.fullmatch(line)
        if header is None:
            warn(f"{prefix} - ignore config line: {line}")
            continue
        sectype = header.group(1).lower()
        sid = f"{int(header.group(2))}-{int(header.group(3))}"
        skip = None
        try:
            validate.parse_job_id(sid)
        except ValidationError as err:
            skip = str(err)
        if skip is None and sectype != JOB_TYPE:
            skip = f"unsupported type '{sectype}'"
        if skip is None and sid in sections:
            skip = "duplicate section id"  # pverep: keep the first instead of overwriting it
        if skip is not None:
            warn(f"{prefix} (skip section '{sid}'): {skip}")
        values: dict[str, Any] = {}
        while perl_true(line := next_line()):
            assert line is not None
            if skip is not None:
                continue
            prefix = f"file {filename} line {lineno}"  # also used for the section check below
            prop = _PROPERTY_RE.fullmatch(line)
            if prop is None:
                warn(f"{prefix} (section '{sid}') - ignore config line: {line}")
                continue
            key, value = prop.group(1), prop.group(3)
            try:
                if key in values:
                    raise ValidationError("duplicate attribute")
                values[key] = check_property(key, value)
            except ValidationError as err:
                warn(f"{prefix} (section '{sid}') - unable to parse value of '{key}': {err}")
        if skip is not None:
            continue
        missing = [k for k in REQUIRED if k not in values]
        if missing:
            # pvesr leaves an undefined entry that makes the whole file unreadable (spec §9.4
            # #20); pverep skips just this section, like any other invalid one.
            warn(
                f"{prefix} (skip section '{sid}'): missing value for required option '{missing[0]}'"
            )
            continue
        sections[sid] = values

    cfg = ReplicationConfig(digest=digest)
    seen: set[tuple[int, str]] = set()
    dropped: set[str] = set()
    for sid in sorted(sections):
        values = sections[sid]
        guest = validate.parse_job_id(sid)[0]
        tid = f"{JOB_TYPE}/{values['target']}"
        if (guest, tid) in seen:
            warn(
                f"delete job {sid}: replication job for guest '{guest}' to target '{tid}' "
                "already exists"
            )
            dropped.add(sid)
        seen.add((guest, tid))
    for sid, values in sections.items():
        if sid in dropped:
            continue
        comment = values.pop("comment", None)
        job = Job(id=sid, **values)
        job.comment = decode_comment(comment) if comment is not None else None
        cfg.jobs[sid] = job
    return cfg


def format_config(cfg: ReplicationConfig | Iterable[Job]) -> bytes:
    """The file pvesr would write for these jobs (raises ConfigError like pvesr's writer)."""
    jobs = list(cfg.jobs.values()) if isinstance(cfg, ReplicationConfig) else list(cfg)
    seen: set[tuple[int, str]] = set()
    out: list[str] = []
    for job in jobs:
        if job.type != JOB_TYPE:
            raise ConfigError(f"unknown section type '{job.type}'")
        guest = job.guest
        if not job.id.startswith(f"{guest}-"):
            raise ConfigError("property 'guest' has wrong value")
        if (guest, job.tid) in seen:
            raise ConfigError(
                f"replication job for guest '{guest}' to target '{job.tid}' already exists"
            )
        seen.add((guest, job.tid))
        out.append(_format_section(job))
    return "".join(out).encode("utf-8")


def _format_section(job: Job) -> str:
    lines = [f"{job.type}: {job.id}\n"]
    if job.comment:
        lines.append(_config_line("comment", encode_comment(job.comment)))
    if job.disable:
        lines.append("\tdisable\n")
    if not job.target:
        raise ConfigError("missing property 'target'")
    lines.append(_config_line("target", job.target))
    for key in OPTIONAL_WRITE_ORDER:
        value = getattr(job, key)
        if value is not None and value != "":
            lines.append(_config_line(key, str(value)))
    return "".join(lines) + "\n"


def _config_line(key: str, value: str) -> str:
    if "\n" in value or "\r" in value:
        raise ConfigError(f"property '{key}' contains a line feed")
    return f"\t{key} {value}\n"


# --- the file on disk ------------------------------------------------------------------------


class ConfigStore:
    """replication.cfg under a root: read, write atomically, and lock (pmxcfs mkdir-lock)."""

    def __init__(self, paths: Paths, warn: Warn | None = None) -> None:
        self.paths = paths
        self.warn = warn or _stderr_warn

    @property
    def path(self) -> Path:
        return self.paths.replication_cfg

    def read_raw(self) -> bytes:
        if not self.paths.etc_pve.is_dir():
            raise ConfigError(
                f"pve cluster filesystem not online - '{self.paths.etc_pve}' does not exist"
            )
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return b""
        except OSError as err:
            raise ConfigError(f"unable to read '{self.path}' - {err.strerror}") from None

    def read(self) -> ReplicationConfig:
        return parse_config(self.read_raw(), str(self.path), self.warn)

    def write(self, cfg: ReplicationConfig) -> None:
        data = format_config(cfg)  # validates before anything touches the disk
        try:
            atomic_write(self.path, data, 0o640)
        except OSError as err:
            raise ConfigError(f"unable to write '{self.path}' - {err.strerror}") from None
        cfg.digest = hashlib.sha1(data).hexdigest()  # noqa: S324

    def locked(self, code: Callable[[], T]) -> T:
        """Run ``code`` under the cluster-wide lock of replication.cfg."""
        return cfs_lock_file(self.paths, CFG_NAME, code)

    def modify(self, change: Callable[[ReplicationConfig], T]) -> T:
        """Locked read-modify-write: ``change`` edits the config, which is then written."""

        def code() -> T:
            cfg = self.read()
            result = change(cfg)
            self.write(cfg)
            return result

        return self.locked(code)
