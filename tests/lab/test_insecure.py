"""Insecure transmission end to end (spec §1.6, §4.5 step 6, §5.6): ``pverep run`` with
``replication: type=insecure[,network=<cidr>]`` in datacenter.cfg on the lab cluster.

The data goes over a plain TCP connection that the target's ``pverep import tcp://…`` announces;
without a rate limit ``zfs send`` writes into that socket itself, with one the pump relays and
limits. Real zfs-fuse, real sshd; the target's data is checked by checksum and snapshot guid.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest

from pverep.lab import guests
from pverep.lab.control import Lab

from .replhelp import align, delete_jobs_of, job_log, pverep, run_job, snapshots

#: the pump's lines (engine/progress.py): only a relayed transfer has them
PUMP_RE = re.compile(r": \d+ bytes \([^)]*\) copied, ")
#: the pump's closing line, with the exact seconds
SUMMARY_RE = re.compile(r": (\d+) bytes \([^)]*\) copied, (\d+\.\d+) s, ")
#: the §4.6 lines and the source's own zfs output: everything else must come from the target
SOURCE_LINE_RE = re.compile(
    r": (start replication job|guest => |volumes => |create snapshot |using |full sync |"
    r"incremental sync |delete previous |\(remote_\w+\) |end replication job|"
    r"sending from |full send of |send from |total estimated size|TIME |\d\d:\d\d:\d\d\s|"
    r"\d+ bytes \()"
)


@pytest.fixture
def transport(lab: Lab) -> Iterator[Callable[[str], None]]:
    """Sets ``replication: <value>`` in datacenter.cfg; the lab's shared file is restored after."""
    path = lab.config.etc_pve / "datacenter.cfg"
    before = path.read_text()
    kept = [ln for ln in before.splitlines() if not ln.startswith(("replication:", "migration:"))]

    def set_transport(value: str) -> None:
        path.write_text("\n".join([*kept, f"replication: {value}"]) + "\n")

    try:
        yield set_transport
    finally:
        path.write_text(before)


def sync_snapshot(lines: list[str]) -> str:
    m = re.search(r"create snapshot '(__replicate_\S+_\d+__)'", "\n".join(lines))
    assert m is not None
    return m.group(1)


def _raw_log(lab: Lab, job: str) -> str:
    return lab.exec("pve1", ["cat", f"/var/log/pve/replicate/{job}"]).stdout  # may not exist yet


def repl_guids(lab: Lab, node: str, vmid: int, snap: str) -> dict[str, str | None]:
    return {ds: snaps.get(snap) for ds, snaps in snapshots(lab, node, vmid).items()}


@pytest.mark.parametrize("with_network", [False, True], ids=["target-ip", "network"])
def test_insecure_full_then_incremental_direct(
    lab: Lab, vmid: int, transport: Callable[[str], None], with_network: bool
) -> None:
    network = f"{lab.config.subnet}.0/24" if with_network else None
    transport("type=insecure" + (f",network={network}" if network else ""))
    over = f" over {network}" if network else ""
    job = f"{vmid}-0"
    v0, v1 = f"local-zfs:subvol-{vmid}-disk-0", f"local-zfs:subvol-{vmid}-disk-1"
    guests.create(lab, vmid, "pve1", "lxc", ["64M", "32M"])
    try:
        guests.write(lab, vmid, 3_000_000)
        pverep(lab, "pve1", "create-local-job", job, "pve2")
        for kind in ("full", "incremental"):
            run_job(lab, "pve1", job)
            lines = job_log(lab, "pve1", job)
            sync = sync_snapshot(lines)
            assert f"{job}: using insecure transmission{over}, rate limit: none" in lines
            for volid in (v0, v1):
                assert sum(f": {kind} sync '{volid}' (" in ln for ln in lines) == 1
                # the importer's lines come back over ssh, each marked with the target's name
                assert f"{job}: [pve2] successfully imported '{volid}'" in lines
            target_lines = [ln for ln in lines if not SOURCE_LINE_RE.search(ln)]
            assert target_lines, lines
            assert all(ln.startswith(f"{job}: [pve2] ") for ln in target_lines), target_lines
            # no rate limit: zfs send wrote into the socket itself, the pump never ran
            assert not any(PUMP_RE.search(ln) for ln in lines), lines
            assert lines[-1] == f"{job}: end replication job"

            src = repl_guids(lab, "pve1", vmid, sync)
            assert set(src) == {f"subvol-{vmid}-disk-0", f"subvol-{vmid}-disk-1"}
            assert None not in src.values()
            assert repl_guids(lab, "pve2", vmid, sync) == src
            assert guests.checksum(lab, vmid, "pve2") == guests.checksum(lab, vmid, "pve1")
            guests.write(lab, vmid, 2_000_000)
    finally:
        delete_jobs_of(lab, vmid)


def test_insecure_rate_limited_uses_the_pump(
    lab: Lab, vmid: int, transport: Callable[[str], None]
) -> None:
    transport("insecure")
    job, rate = f"{vmid}-0", 20  # MB/s
    guests.create(lab, vmid, "pve1", "lxc", ["160M"])
    try:
        guests.write(lab, vmid, 64 << 20)  # incompressible
        pverep(lab, "pve1", "create-local-job", job, "pve2", "--rate", str(rate))
        run_job(lab, "pve1", job)
        lines = job_log(lab, "pve1", job)
        assert f"{job}: using insecure transmission, rate limit: {rate} MByte/s" in lines
        volid = f"local-zfs:subvol-{vmid}-disk-0"
        assert f"{job}: [pve2] successfully imported '{volid}'" in lines
        summaries = [m for m in map(SUMMARY_RE.search, lines) if m]
        assert len(summaries) == 1, lines  # the pump relayed the one volume
        nbytes, secs = int(summaries[0].group(1)), float(summaries[0].group(2))
        assert nbytes >= 64 << 20
        measured = nbytes / secs / 1e6
        assert abs(measured - rate) <= 0.1 * rate, f"{measured:.2f} MB/s"
        sync = sync_snapshot(lines)
        src = repl_guids(lab, "pve1", vmid, sync)
        assert None not in src.values()
        assert repl_guids(lab, "pve2", vmid, sync) == src
        assert guests.checksum(lab, vmid, "pve2") == guests.checksum(lab, vmid, "pve1")
        print(f"\n[figures] insecure, rate limit {rate} MB/s: measured {measured:.2f} MB/s")
    finally:
        delete_jobs_of(lab, vmid)


def test_insecure_direct_send_to_a_hung_target_ends(
    lab: Lab, vmid: int, transport: Callable[[str], None]
) -> None:
    """Without the pump the socket's send timeout is the stall watchdog: a frozen target makes
    zfs send fail, and the run ends (ssh connection cut) while the target is still frozen."""
    transport("insecure")
    job = f"{vmid}-0"
    guests.create(lab, vmid, "pve1", "lxc", ["64M"])
    try:
        guests.write(lab, vmid, 24 << 20)
        pverep(lab, "pve1", "create-local-job", job, "pve2")
        align()
        env = {**os.environ, "PVEREP_STALL_TIMEOUT": "3"}
        lab.shape("pve2", "8mbit")
        try:
            proc = lab.popen("pve1", ["pverep", "run", "--id", job], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
            try:
                deadline = time.monotonic() + 20
                while ": sending from " not in _raw_log(lab, job):
                    assert time.monotonic() < deadline and proc.poll() is None
                    time.sleep(0.2)
                time.sleep(1)
                lab.freeze("pve2")
                frozen_at = time.monotonic()
                try:
                    _, err = proc.communicate(timeout=120)
                    ended_after = time.monotonic() - frozen_at
                finally:
                    lab.thaw("pve2")
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        finally:
            lab.shape("pve2", None)
        assert proc.returncode != 0, err
        lines = job_log(lab, "pve1", job)
        assert not any(PUMP_RE.search(ln) for ln in lines), lines
        assert lines[-1].startswith(f"{job}: end replication job with error: command 'zfs send ")
        assert not any("__replicate_" in s for ss in snapshots(lab, "pve1", vmid).values()
                       for s in ss)  # fmt: skip
        print(f"\n[figures] insecure direct, frozen target: run ended {ended_after:.1f}s later")
    finally:
        delete_jobs_of(lab, vmid)
