"""Carries out a reconcile plan, step by step, and reports exactly what it did.

Config changes go through the replication.cfg lock and re-check that the job is still as
planned; state changes go through the state lock; target changes go to the target's own
``pverep replica-clean`` (which re-validates them) or, for an orphaned job, through the
ordinary removal protocol (``prepare-local-job --last_sync 1 --force``).

A target running stock Proxmox VE gets only what pvesr itself sends it: the removal as
``pvesr prepare-local-job … --last_sync 1 --force``. It has no ``replica-clean``, so those
steps are skipped with the reason; the job's next run does that clean-up the stock way (its
``prepare-local-job`` deletes this job's stale snapshots, and stale volumes on the storages it
scans). Nothing is destroyed that the target itself did not check.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pverep.config.jobs import ConfigStore, ReplicationConfig
from pverep.config.state import StateObj, StateStore
from pverep.errors import PverepError
from pverep.reconcile.gather import Node
from pverep.reconcile.model import (
    AdoptState,
    DeleteTargetSnapshot,
    DestroyTargetVolume,
    ExtendRemovalScan,
    Plan,
    RemoveOrphanJob,
    Repoint,
    RetryRemoval,
    SetSource,
    Step,
)
from pverep.reconcile.planner import tid
from pverep.transport.peer import PeerCommands


@dataclass
class Outcome:
    done: list[Step] = field(default_factory=list)
    skipped: list[tuple[Step, str]] = field(default_factory=list)
    failed: list[tuple[Step, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


def execute(node: Node, plan: Plan, log: Callable[[str], None]) -> Outcome:
    out = Outcome()
    config_steps = [s for s in plan.steps if isinstance(s, SetSource | Repoint)]
    if config_steps:
        _config(node, config_steps, out, log)
    for step in plan.steps:
        if isinstance(step, AdoptState | ExtendRemovalScan | RetryRemoval):
            _guarded(out, step, log, lambda s=step: _state(node, s))  # type: ignore[misc]
    groups: dict[tuple[str, int, str], list[Step]] = defaultdict(list)
    for step in plan.steps:
        if isinstance(step, DeleteTargetSnapshot | DestroyTargetVolume):
            groups[(step.node, step.vmid, step.jobid)].append(step)
    for (target, vmid, jobid), steps in groups.items():
        _target_clean(node, target, vmid, jobid, steps, out, log)
    for step in plan.steps:
        if isinstance(step, RemoveOrphanJob):
            _guarded(out, step, log, lambda s=step: _remove_orphan(node, s, log))  # type: ignore[misc]
    # report in plan order (execution goes by kind: config, state, targets, orphans)
    order = {step: n for n, step in enumerate(plan.steps)}
    out.done.sort(key=lambda s: order.get(s, len(order)))
    return out


def _guarded(
    out: Outcome, step: Step, log: Callable[[str], None], action: Callable[[], str | None]
) -> None:
    try:
        skipped = action()
    except PverepError as err:
        out.failed.append((step, str(err)))
        log(f"FAILED: {step.describe()}: {err}")
        return
    if skipped:
        out.skipped.append((step, skipped))
        log(f"skipped: {step.describe()}: {skipped}")
    else:
        out.done.append(step)
        log(f"done: {step.describe()}")


def _config(node: Node, steps: Sequence[Step], out: Outcome, log: Callable[[str], None]) -> None:
    store = ConfigStore(node.paths, node.warn)
    results: dict[Step, str | None] = {}

    def change(cfg: ReplicationConfig) -> None:
        for step in steps:
            job = cfg.jobs.get(step.jobid)
            if job is None:
                results[step] = "job no longer exists"
            elif isinstance(step, SetSource):
                if job.source:
                    results[step] = f"source already set ({job.source})"
                else:
                    job.source = step.source
                    results[step] = None
            elif isinstance(step, Repoint):
                if job.source != step.source_from or job.target != step.target_from:
                    results[step] = "job changed meanwhile"
                else:
                    job.source = step.source_to
                    job.target = step.target_to
                    results[step] = None

    try:
        store.modify(change)
    except PverepError as err:
        for step in steps:
            out.failed.append((step, str(err)))
            log(f"FAILED: {step.describe()}: {err}")
        return
    for step in steps:
        _guarded(out, step, log, lambda s=step: results.get(s))  # type: ignore[misc]


def _state(node: Node, step: AdoptState | ExtendRemovalScan | RetryRemoval) -> str | None:
    states = StateStore(node.paths)
    key = tid(step.target)

    def change(obj: StateObj) -> None:
        entry = obj.setdefault(str(step.vmid), {}).setdefault(key, {})
        if isinstance(step, RetryRemoval):
            entry["last_try"] = 0  # next_sync = 0 + back-off: in the past, due now
            return
        entry["storeid_list"] = list(step.storeid_list)
        if isinstance(step, AdoptState):
            entry["last_sync"] = step.last_sync
            entry["last_try"] = 0  # due at the next scheduler pass
            for k, default in (("last_iteration", 0), ("fail_count", 0)):
                entry.setdefault(k, default)

    states.modify(change, step.vmid)
    return None


def _target_clean(
    node: Node,
    target: str,
    vmid: int,
    jobid: str,
    steps: list[Step],
    out: Outcome,
    log: Callable[[str], None],
) -> None:
    try:
        kind = node.peer_kind(target)
    except PverepError as err:
        for step in steps:
            out.failed.append((step, str(err)))
            log(f"FAILED: {step.describe()}: {err}")
        return
    if kind == "pve":
        for step in steps:
            _guarded(out, step, log, lambda s=step: stock_clean_skipped(target, s))  # type: ignore[misc]
        return
    argv = ["replica-clean", str(vmid), "--job", jobid]
    for step in steps:
        if isinstance(step, DeleteTargetSnapshot):
            argv += ["--delete-snapshot", f"{step.volid}@{step.snapshot}"]
        elif isinstance(step, DestroyTargetVolume):
            argv += ["--destroy", step.volid]
    try:
        result = node.run_pverep(target, argv)
    except PverepError as err:
        for step in steps:
            out.failed.append((step, str(err)))
            log(f"FAILED: {step.describe()}: {err}")
        return
    done = set(result.stdout_text.split("\n"))
    for step in steps:
        if isinstance(step, DeleteTargetSnapshot):
            key = f"delete-snapshot {step.volid}@{step.snapshot}"
        else:
            key = f"destroy-volume {step.volid}"  # type: ignore[attr-defined]
        reason = None if key in done else "already gone"
        _guarded(out, step, log, lambda r=reason: r)  # type: ignore[misc]


def stock_clean_skipped(target: str, step: Step) -> str:
    """Why a target clean-up step is not done on a stock node (and what does it instead)."""
    what = (
        "removes it if it scans that storage"
        if isinstance(step, DestroyTargetVolume)
        else "deletes this stale snapshot"
    )
    return (
        f"{target} runs stock Proxmox VE (no 'pverep replica-clean' there): the job's next run "
        f"{what} ('pvesr prepare-local-job')"
    )


def _remove_orphan(node: Node, step: RemoveOrphanJob, log: Callable[[str], None]) -> str | None:
    # pvesr's own removal argv: a stock target gets exactly it (pvesr ...), a pverep one
    # the same verb behind pverep
    peer = PeerCommands(kind=node.peer_kind(step.target))
    argv = peer.prepare_local_job(step.jobid, [], scan=step.scan, last_sync=1, force=True)
    result = node.run_remote(step.target, argv)
    for line in result.stderr.decode("utf-8", "replace").splitlines():
        if line.strip():
            log(f"({step.target}) {line}")
    store = ConfigStore(node.paths, node.warn)

    def drop(cfg: ReplicationConfig) -> None:
        cfg.jobs.pop(step.jobid, None)

    store.modify(drop)
    return None
