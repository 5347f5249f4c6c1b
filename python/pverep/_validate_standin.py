"""PRIVATE STAND-IN for pverep.validate (branch `found`), same names and texts; to be deleted
when that module is merged."""

from __future__ import annotations

import re

from pverep.errors import ValidationError

_JOB_ID_RE = re.compile(r"(\d+)-(\d+)")
JOB_ID_API_RE = re.compile(r"[1-9][0-9]{2,8}-\d{1,9}")
TRANSFER_SNAPSHOT_RE = re.compile(r"[a-z0-9_\-]{1,40}", re.IGNORECASE)
CONFIGID_RE = re.compile(r"[a-z][a-z0-9_\-]+", re.IGNORECASE)
REPLICATION_SNAPSHOT_PREFIX = "__replicate_"


def parse_job_id(jobid: str) -> tuple[int, int]:
    m = _JOB_ID_RE.fullmatch(jobid)
    if not m or int(m.group(1)) < 100:
        raise ValidationError(f"invalid replication job id '{jobid}'")
    return int(m.group(1)), int(m.group(2))


def check_job_id_param(jobid: str) -> str:
    guest, jobnum = parse_job_id(jobid)
    if not JOB_ID_API_RE.fullmatch(jobid):
        raise ValidationError("value does not match the regex pattern")
    return f"{guest}-{jobnum}"


def check_transfer_snapshot_name(name: str) -> str:
    if not TRANSFER_SNAPSHOT_RE.fullmatch(name):
        raise ValidationError(f"invalid snapshot name '{name}'")
    return name


def check_parent_snapname(name: str) -> str:
    if len(name) > 40:
        raise ValidationError("value may only be 40 characters long")
    if not CONFIGID_RE.fullmatch(name):
        raise ValidationError(f"invalid format - invalid configuration ID '{name}'")
    return name


def is_replication_snapshot(name: str, jobid: str | None = None) -> bool:
    return name.startswith(REPLICATION_SNAPSHOT_PREFIX + (jobid or ""))
