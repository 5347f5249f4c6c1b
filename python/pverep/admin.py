"""The configuration verbs as functions: what PVE's replication config/status API does.

Each function takes the stores and the cluster view it needs (no globals, no click), so the CLI,
hooks and tests share one implementation. Texts are pvesr's.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import tzinfo
from typing import Any

from pverep import validate
from pverep.cluster import Cluster, GuestLocation
from pverep.config.jobs import (
    FIXED,
    JOB_TYPE,
    PROPERTIES,
    REQUIRED,
    ConfigStore,
    Job,
    ReplicationConfig,
    check_property,
)
from pverep.config.state import StateStore
from pverep.errors import ConfigError, ParameterError, PverepError, ValidationError
from pverep.schedule import JobStatus, job_status

#: The replicatable-volume check of create-local-job: the guest's volume ids that would be
#: replicated. None skips the check (see ``create_job``).
VolumeLister = Callable[[GuestLocation], Sequence[str]]

MODIFIED_MSG = "detected modified configuration - file changed by other user? Try again."


def check_params(values: Mapping[str, str | None]) -> dict[str, Any]:
    """Validate job properties given as text; a bad one raises ParameterError."""
    out: dict[str, Any] = {}
    for key, text in values.items():
        if text is None:
            continue
        try:
            out[key] = check_property(key, text)
        except ValidationError as err:
            raise ParameterError(key, str(err)) from None
    return out


def check_jobid_param(jobid: str) -> str:
    try:
        return validate.check_job_id_param(jobid)
    except ValidationError as err:
        raise ParameterError("id", str(err)) from None


# --- cluster/replication (config) ------------------------------------------------------------


def list_jobs(store: ConfigStore) -> list[Job]:
    cfg = store.read()
    return [cfg.jobs[i] for i in cfg.sorted_ids()]


def read_job(store: ConfigStore, jobid: str) -> dict[str, Any]:
    cfg = store.read()
    job = cfg.find(jobid)
    if job is None:
        raise ConfigError(f"no such replication job '{jobid}'")
    return {**job.to_api(), "digest": cfg.digest}


def create_job(
    store: ConfigStore,
    cluster: Cluster,
    jobid: str,
    target: str,
    options: Mapping[str, Any],
    *,
    list_volumes: VolumeLister | None = None,
) -> Job:
    """``POST /cluster/replication``: checks against the cluster view, then appends the job.

    ``options`` are already checked values (see check_params). ``list_volumes`` is the hook for
    the "No replicatable volumes found" check; None skips that check (guest volume discovery
    lives in pverep.guests and is plugged in by the caller).
    """
    guest, _ = validate.parse_job_id(jobid)
    vmlist = cluster.vmlist()
    members = cluster.members()
    where = vmlist.get(guest)
    if where is None:
        raise ConfigError(f"Guest '{guest}' does not exist.")
    if target not in members:
        raise ConfigError(f"Target '{target}' does not exist.")
    source = options.get("source")
    if source is not None and source != where.node:
        raise ConfigError(
            f"Source '{source}' does not match current node of guest '{guest}' ({where.node})"
        )
    source = source or where.node
    if source == target:
        raise ConfigError("Source and target must not be identical")
    if list_volumes is not None and not list_volumes(where):
        raise ConfigError("No replicatable volumes found")

    job = Job(id=jobid, target=target, **{k: v for k, v in options.items() if k != "source"})
    job.source = source

    def add(cfg: ReplicationConfig) -> Job:
        if jobid in cfg.jobs:
            raise ConfigError(f"replication job '{jobid}' already exists")
        cfg.jobs[jobid] = job
        return job

    return store.modify(add)


def split_list(text: str) -> list[str]:
    """PVE's split_list: separated by NUL, or by commas, semicolons and blanks."""
    parts = text.split("\0") if "\0" in text else re.split(r"[,;\s]+", text)
    return [p for p in (s.strip() for s in parts) if p]


def update_job(
    store: ConfigStore,
    jobid: str,
    changes: Mapping[str, Any],
    delete: Sequence[str] = (),
    digest: str | None = None,
) -> None:
    """``PUT /cluster/replication/{id}``: set ``changes``, then delete the ``delete`` keys."""

    def change(cfg: ReplicationConfig) -> None:
        if digest is not None and digest != cfg.digest:
            raise ConfigError(MODIFIED_MSG)
        job = cfg.find(jobid)
        if job is None:
            raise ConfigError(f"no such job '{jobid}'")
        for key, value in changes.items():
            if key in FIXED:
                raise ConfigError(f"can't change value of fixed parameter '{key}'")
            setattr(job, key, value)
        for key in delete:
            if key not in PROPERTIES:
                raise ConfigError(f"no such option '{key}'")
            if key in REQUIRED:
                raise ConfigError(f"unable to delete required option '{key}'")
            if key in FIXED:
                raise ConfigError(f"unable to delete fixed option '{key}'")
            setattr(job, key, False if key == "disable" else None)

    store.modify(change)


def delete_job(store: ConfigStore, jobid: str, *, keep: bool = False, force: bool = False) -> bool:
    """``DELETE /cluster/replication/{id}``. With ``force`` the section just goes; otherwise the
    job is marked for removal (``full``, or ``local`` with ``keep``) and True is returned."""
    if force and keep:
        raise ParameterError("keep", "conflicts with parameter 'force'")

    def change(cfg: ReplicationConfig) -> bool:
        job = cfg.find(jobid)
        if force:
            if job is not None:
                del cfg.jobs[job.id]
            return False
        if job is None:
            raise ConfigError(f"no such job '{jobid}'")
        job.remove_job = "full" if not keep and job.type == JOB_TYPE else "local"
        return True

    return store.modify(change)


# --- nodes/<node>/replication (status) -------------------------------------------------------


def load_job_status(
    store: ConfigStore,
    states: StateStore,
    cluster: Cluster,
    *,
    get_disabled: bool = False,
    zone: tzinfo | None = None,
) -> list[JobStatus]:
    """job_status under the config lock, writing back source fix-ups / target switches."""

    def code() -> list[JobStatus]:
        cfg = store.read()
        statuses, changed = job_status(
            cfg,
            states.read(),
            cluster.vmlist(),
            cluster.members(),
            cluster.local_node(),
            get_disabled=get_disabled,
            zone=zone,
        )
        if changed:
            store.write(cfg)
        return statuses

    return store.locked(code)


def schedule_now(store: ConfigStore, states: StateStore, jobid: str) -> None:
    job = store.read().find(jobid)
    if job is None:
        raise ConfigError(f"no such replication job '{jobid}'")
    states.schedule_job_now(job.guest, job.tid)


def set_state(states: StateStore, vmid_text: str, state_json: str) -> None:
    """``pvesr set-state <vmid> <json>``: replace the guest's job states with the given ones."""
    try:
        vmid = validate.check_vmid(vmid_text)
    except ValidationError as err:
        raise ParameterError("vmid", str(err)) from None
    try:
        data = json.loads(state_json)
    except ValueError as err:
        raise PverepError(f"unable to decode job state JSON - {err}") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise PverepError("job state JSON must be an object of job state objects")
    states.write_vmid_job_states(vmid, data)
