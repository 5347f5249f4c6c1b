"""Helpers for the replication lab tests: run pverep on a node, read logs, snapshots, state."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from pverep.lab import guests
from pverep.lab.control import Lab

STAMP_RE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ")


def pverep(
    lab: Lab, node: str, *args: str, env: Mapping[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    import os

    full = dict(os.environ)
    full.update(env or {})
    res = lab.exec(node, ["pverep", *args], env=full, timeout=300)
    if check and res.returncode != 0:
        raise AssertionError(f"pverep {' '.join(args)} on {node} failed: {res.stderr}")
    return res


def align() -> None:
    """Wait for the next second: two runs of a job in one second would share a start time."""
    time.sleep(1.05 - (time.time() % 1))


def run_job(
    lab: Lab, node: str, jobid: str, aligned: bool = False, **kw: Any
) -> subprocess.CompletedProcess[str]:
    """One ``pverep run --id`` (after align() unless the caller did it)."""
    if not aligned:
        align()
    return pverep(lab, node, "run", "--id", jobid, **kw)


def cut_mid_sync(
    lab: Lab,
    proc: subprocess.Popen[str],
    jobid: str,
    victim: str,
    *,
    settle: float,
    timeout: float,
    start_timeout: float = 30.0,
) -> tuple[str, float]:
    """Once ``jobid``'s log on pve1 shows its incremental sync (plus ``settle`` s), cut
    ``victim`` off the network until ``proc`` (a pverep run on pve1) ends; heal it again.
    Returns the run's stderr and the seconds from the cut to the run's end."""
    try:
        deadline = time.monotonic() + start_timeout
        while not any(" incremental sync " in ln for ln in job_log(lab, "pve1", jobid)):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.2)
        time.sleep(settle)
        cut_at = time.monotonic()
        lab.cut(victim)
        try:
            _, err = proc.communicate(timeout=timeout)
            return err, time.monotonic() - cut_at
        finally:
            lab.heal(victim)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def job_log(lab: Lab, node: str, jobid: str) -> list[str]:
    """The job log without timestamps (lines still start with ``<jobid>: ``)."""
    text = lab.exec(node, ["cat", f"/var/log/pve/replicate/{jobid}"], check=True).stdout
    return [STAMP_RE.sub("", line) for line in text.splitlines()]


def state(lab: Lab, node: str) -> dict[str, Any]:
    res = lab.exec(node, ["cat", "/var/lib/pve-manager/pve-replication-state.json"])
    return json.loads(res.stdout) if res.returncode == 0 and res.stdout.strip() else {}


def snapshots(lab: Lab, node: str, vmid: int) -> dict[str, dict[str, str]]:
    """dataset name (below rpool/data) -> snapshot -> guid, for the guest's datasets."""
    out = lab.exec(
        node, ["zfs", "list", "-Hp", "-r", "-t", "snapshot", "-o", "name,guid", guests.DATA],
        check=True,
    ).stdout  # fmt: skip
    result: dict[str, dict[str, str]] = {}
    for line in out.splitlines():
        name, guid = line.split("\t")
        ds, _, snap = name.partition("@")
        short = ds.rsplit("/", 1)[1]
        if re.match(rf"^(subvol|vm)-{vmid}-disk-\d+$", short):
            result.setdefault(short, {})[snap] = guid
    return result


def datasets(lab: Lab, node: str, vmid: int) -> set[str]:
    out = lab.exec(node, ["zfs", "list", "-H", "-o", "name", "-r", guests.DATA], check=True).stdout
    names = {line.rsplit("/", 1)[1] for line in out.splitlines() if "/" in line}
    return {n for n in names if re.match(rf"^(subvol|vm)-{vmid}-disk-\d+$", n)}


def add_disk(lab: Lab, vmid: int, index: int, size: str = "32M") -> str:
    """Create ``subvol-<vmid>-disk-<index>`` on the guest's node and add it as mountpoint."""
    guest = guests.find(lab, vmid)
    volname = f"subvol-{vmid}-disk-{index}"
    lab.exec(guest.node, ["zfs", "create", "-o", f"refquota={size}", guests.dataset(volname)],
             check=True)  # fmt: skip
    lines = guest.config.read_text().splitlines()
    lines.insert(1, f"mp{index}: {guests.STORAGE}:{volname},mp=/mnt/d{index},size={size}")
    guest.config.write_text("\n".join(lines) + "\n")
    return volname


def remove_disk_from_config(lab: Lab, vmid: int, volname: str) -> None:
    guest = guests.find(lab, vmid)
    lines = [ln for ln in guest.config.read_text().splitlines() if f":{volname}," not in ln]
    guest.config.write_text("\n".join(lines) + "\n")


def sshd_accepts(lab: Lab, node: str) -> int:
    """How many ssh connections ``node``'s sshd has accepted so far."""
    log = lab.config.node_dir(node) / "log" / "sshd.log"
    return log.read_text(errors="replace").count("Accepted publickey") if log.exists() else 0


def delete_jobs_of(lab: Lab, vmid: int) -> None:
    """Drop the guest's jobs from replication.cfg (the vmid fixture removes guest and disks)."""
    cfg = lab.config.etc_pve / "replication.cfg"
    if not cfg.exists():
        return
    out, skip = [], False
    for line in cfg.read_text().splitlines():
        if line and not line[0].isspace():
            skip = bool(re.match(rf"^local:\s*{vmid}-\d+\s*$", line))
        if not skip:
            out.append(line)
    cfg.write_text("\n".join(out) + ("\n" if out else ""))


def seed_removal_after_move(lab: Lab, vmid: int, prefix: str) -> None:
    """The seed case: jobs to pve2 and pve3 ran, the guest moves to pve3 (one rename, no
    state there), and removing job 0 on pve3 still finds and deletes pve2's replicas through
    the guest's storages. ``prefix``: "subvol" (CT) or "vm" (VM disks)."""
    pverep(lab, "pve1", "create-local-job", f"{vmid}-0", "pve2")
    pverep(lab, "pve1", "create-local-job", f"{vmid}-1", "pve3")
    run_job(lab, "pve1", f"{vmid}-0")
    run_job(lab, "pve1", f"{vmid}-1")
    guests.move(lab, vmid, "pve3")
    assert str(vmid) not in state(lab, "pve3")
    pverep(lab, "pve3", "delete", f"{vmid}-0")
    run_job(lab, "pve3", f"{vmid}-0")
    lines = job_log(lab, "pve3", f"{vmid}-0")
    assert lines[-1] == f"{vmid}-0: end replication job", lines
    assert datasets(lab, "pve2", vmid) == set()
    assert datasets(lab, "pve3", vmid) == {f"{prefix}-{vmid}-disk-{i}" for i in (0, 1)}


def pvesr_incremental_calls(
    job: str, volids: list[str], last_sync: int, base: str, snap: str, synced: int
) -> list[list[str]]:
    """What pvesr runs on a stock target for an incremental sync of ``volids`` (one storage,
    local-zfs), in its order: written out from pvesr's behaviour, not from our code."""
    imports = [
        ["pvesm", "import", v, "zfs", "-", "-with-snapshots", "1", "-snapshot", snap,
         "-allow-rename", "0", "-base", base]
        for v in volids
    ]  # fmt: skip
    return [
        ["pvesr", "prepare-local-job", job, "--scan", "local-zfs", *volids,
         "--last_sync", str(last_sync)],
        *imports,
        ["pvesr", "finalize-local-job", job, *volids, "--last_sync", str(synced)],
    ]  # fmt: skip


@contextmanager
def written_guest(lab: Lab, vmid: int, sizes: list[str], nbytes: int) -> Iterator[int]:
    """A container with disks of ``sizes`` on pve1, ``nbytes`` written; its jobs dropped after."""
    guests.create(lab, vmid, "pve1", "lxc", sizes)
    guests.write(lab, vmid, nbytes)
    try:
        yield vmid
    finally:
        delete_jobs_of(lab, vmid)
