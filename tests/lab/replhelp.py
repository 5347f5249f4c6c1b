"""Helpers for the replication lab tests: run pverep on a node, read logs, snapshots, state."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Mapping
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


def job_log(lab: Lab, node: str, jobid: str) -> list[str]:
    """The job log without timestamps (lines still start with ``<jobid>: ``)."""
    text = lab.exec(node, ["cat", f"/var/log/pve/replicate/{jobid}"], check=True).stdout
    return [STAMP_RE.sub("", line) for line in text.splitlines()]


def _log_so_far(lab: Lab, node: str, jobid: str) -> list[str]:
    """The job log while a first run may not have created it yet (then: no lines)."""
    res = lab.exec(node, ["cat", f"/var/log/pve/replicate/{jobid}"])
    return res.stdout.splitlines() if res.returncode == 0 else []


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


def run_and_cut_target(
    lab: Lab,
    source: str,
    target: str,
    jobid: str,
    stall: int,
    after: float,
    limit: float,
    phase: str = " incremental sync ",
) -> tuple[subprocess.Popen[str], float]:
    """Start ``pverep run --id`` on ``source``, cut ``target`` ``after`` s into its first
    ``phase`` job-log line (an incremental sync by default), wait until the run ends (at most
    ``limit`` s), heal. Returns the run's process and how long after the cut it failed."""
    import os

    align()
    env = {**os.environ, "PVEREP_STALL_TIMEOUT": str(stall)}
    proc = lab.popen(source, ["pverep", "run", "--id", jobid], env=env,
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + limit
        while not any(phase in ln for ln in _log_so_far(lab, source, jobid)):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.2)
        time.sleep(after)
        cut_at = time.monotonic()
        lab.cut(target)
        try:
            proc.communicate(timeout=limit)
            failed_after = time.monotonic() - cut_at
        finally:
            lab.heal(target)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc, failed_after
