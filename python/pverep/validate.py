"""The spec's identifier patterns in one place: job ids, vmids, node names, storage ids,
volume ids and snapshot names.

Every function either returns the (normalised) value or raises ValidationError with pvesr's own
wording, so callers on both sides of the wire (CLI, config parser, target side) agree on what is
acceptable before a value reaches a file name, an argv list or a remote command line.
"""

from __future__ import annotations

import re

from pverep.errors import ValidationError

#: Smallest and largest guest id PVE accepts (ids below 100 are reserved).
VMID_MIN = 100
VMID_MAX = 999_999_999

#: The API's pattern for `pve-replication-job-id` (checked on user input, not in the file).
JOB_ID_API_RE = re.compile(r"[1-9][0-9]{2,8}-[0-9]{1,9}")
_JOB_ID_RE = re.compile(r"([0-9]+)-([0-9]+)")  # [0-9]: \d would take any script's digits

#: `pve-node`: a host name label, no dots.
NODE_RE = re.compile(r"[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?")

# re.ASCII on every case-insensitive pattern: without it Python's [a-z] also matches letters
# that case-fold to ASCII (the Kelvin sign, long s, dotless i), which Perl's patterns refuse.

#: `pve-storage-id` (length >= 2 follows from the pattern).
STORAGE_ID_RE = re.compile(r"[a-z][a-z0-9\-_.]*[a-z0-9]", re.IGNORECASE | re.ASCII)

#: `storeid:volname` as PVE::Storage::parse_volume_id splits it.
_VOLID_RE = re.compile(r"([a-z][a-z0-9\-_.]*[a-z0-9]):(.+)", re.IGNORECASE | re.ASCII | re.DOTALL)

#: What `pvesm export/import` accept for -snapshot/-base (so the longest usable name is 40).
TRANSFER_SNAPSHOT_RE = re.compile(r"[a-z0-9_\-]{1,40}", re.IGNORECASE | re.ASCII)

#: A zfs ``receive_resume_token``: ``<version>-<checksum>-<length>-<compressed nvlist>`` (hex).
RESUME_TOKEN_RE = re.compile(r"[0-9]{1,3}-[0-9a-f]{1,64}-[0-9a-f]{1,16}-[0-9a-f]{2,65536}")

#: `pve-configid`, used for the guest's parent snapshot name (max 40 characters).
CONFIGID_RE = re.compile(r"[a-z][a-z0-9_\-]+", re.IGNORECASE | re.ASCII)
CONFIGID_MAX = 40

REPLICATION_SNAPSHOT_PREFIX = "__replicate_"

#: A snippet's file name (``<storeid>:snippets/<name>``): one path component, no blanks, no
#: leading dot (stricter than PVE's ``[^/\s]+``: it becomes a file name pverep writes).
SNIPPET_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-]{0,127}")


# --- job ids ---------------------------------------------------------------------------------


def parse_job_id(jobid: str) -> tuple[int, int]:
    """Split a job id into (guest, jobnum) the way pvesr does (leading zeros are dropped).

    This is the `pve-replication-job-id` format check used for ids read from replication.cfg.
    """
    m = _JOB_ID_RE.fullmatch(jobid)
    if not m:
        raise ValidationError(f"invalid replication job id '{jobid}'")
    guest, jobnum = int(m.group(1)), int(m.group(2))
    if guest < VMID_MIN:
        raise ValidationError(
            f"invalid replication job id '{jobid}' (guest IDs < 100 are reserved)"
        )
    return guest, jobnum


def normalise_job_id(jobid: str) -> str:
    """``0100-007`` → ``100-7``; raises ValidationError for anything that is not a job id."""
    guest, jobnum = parse_job_id(jobid)
    return f"{guest}-{jobnum}"


def check_job_id_param(jobid: str) -> str:
    """A job id given by a user or a peer: format check, then the API pattern; normalised."""
    try:
        normalised = normalise_job_id(jobid)
    except ValidationError as err:
        raise ValidationError(f"invalid format - {err}") from None
    if not JOB_ID_API_RE.fullmatch(jobid):
        raise ValidationError("value does not match the regex pattern")
    return normalised


# --- guests, nodes, storages, volumes --------------------------------------------------------


def check_vmid(value: str | int) -> int:
    """`pve-vmid`: an integer 100 … 999999999."""
    text = str(value)
    if not re.fullmatch(r"[+-]?[0-9]+", text.strip()):
        raise ValidationError(f"type check ('integer') failed - got '{text}'")
    vmid = int(text)
    if vmid < VMID_MIN:
        raise ValidationError(f"value must have a minimum value of {VMID_MIN}")
    if vmid > VMID_MAX:
        raise ValidationError(f"value must have a maximum value of {VMID_MAX}")
    return vmid


def is_valid_node_name(name: str) -> bool:
    return NODE_RE.fullmatch(name) is not None


def check_node_name(name: str) -> str:
    """`pve-node`; raises with PVE's format error text."""
    if not is_valid_node_name(name):
        raise ValidationError("invalid format - value does not look like a valid node name")
    return name


def check_storage_id(storeid: str) -> str:
    if not STORAGE_ID_RE.fullmatch(storeid):
        raise ValidationError(f"storage ID '{storeid}' contains illegal characters")
    return storeid


def check_snippet_name(name: str) -> str:
    if not SNIPPET_NAME_RE.fullmatch(name):
        raise ValidationError(f"invalid snippet name '{name}'")
    return name


def parse_volume_id(volid: str) -> tuple[str, str]:
    """``local-zfs:vm-100-disk-0`` → (``local-zfs``, ``vm-100-disk-0``)."""
    m = _VOLID_RE.fullmatch(volid)
    if not m:
        raise ValidationError(f"unable to parse volume ID '{volid}'")
    return m.group(1), m.group(2)


# --- snapshot names --------------------------------------------------------------------------


def check_transfer_snapshot_name(name: str) -> str:
    """A snapshot name that may be passed to `pvesm export/import` (-snapshot / -base)."""
    if not TRANSFER_SNAPSHOT_RE.fullmatch(name):
        raise ValidationError(f"invalid snapshot name '{name}'")
    return name


def check_resume_token(token: str) -> str:
    """A ``receive_resume_token`` as zfs prints it (it ends up in ``zfs send -t``'s argv)."""
    if not RESUME_TOKEN_RE.fullmatch(token):
        raise ValidationError("invalid receive resume token")
    return token


def check_parent_snapname(name: str) -> str:
    """`pve-configid` with at most 40 characters (prepare-local-job's --parent_snapname)."""
    if len(name) > CONFIGID_MAX:
        raise ValidationError(f"value may only be {CONFIGID_MAX} characters long")
    if not CONFIGID_RE.fullmatch(name):
        raise ValidationError(f"invalid format - invalid configuration ID '{name}'")
    return name


def replication_snapshot_prefix(jobid: str) -> str:
    """``__replicate_<jobid>_`` (with the trailing ``_``: the prefix prepare() treats as stale)."""
    return f"{REPLICATION_SNAPSHOT_PREFIX}{jobid}_"


def replication_snapshot_name(jobid: str, start_time: int) -> str:
    """``__replicate_<jobid>_<start_time>__``."""
    return f"{REPLICATION_SNAPSHOT_PREFIX}{jobid}_{start_time}__"


def is_replication_snapshot(name: str, jobid: str | None = None) -> bool:
    """pvesr's predicate: prefix ``__replicate_<jobid>`` WITHOUT the trailing ``_``.

    So job ``100-1`` also matches ``__replicate_100-10_…`` — kept on purpose for compatibility
    (spec §9.4 #16).
    """
    return name.startswith(REPLICATION_SNAPSHOT_PREFIX + (jobid or ""))
