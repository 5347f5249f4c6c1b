"""Resumable transfers between pverep nodes on real OpenZFS 2.3 (issue 14) and encrypted
disks sent raw (issue 10.3). A transfer cut half way (the target partitioned off) keeps its
partial receive; the next run continues it with ``zfs send -t`` and sends at most 60 % of a
full resend, and the replica ends exactly as an uninterrupted one (content digest, guids).
Byte counts come from the job log's transfer summary lines; the reference is the size of
the very stream a full resend would send (``zfs send … | wc -c`` on the source).
"""

from __future__ import annotations

import os
import re
import subprocess
import time

from pverep.lab import guests
from pverep.lab.control import Lab
from tests.lab.replhelp import align, delete_jobs_of, job_log, pverep, run_job, state
from tests.openzfs.test_openzfs_replication import assert_replica_equal, repl_guids

#: dd's closing line (fractional seconds; the progress lines show whole seconds and "% of")
SUMMARY_RE = re.compile(r": (\d+) bytes .* copied, (\d+\.\d+) s, ")
PROGRESS_RE = re.compile(r"copied, \d+ s, .*, (\d+)% of ")
RESUMING_RE = re.compile(r"resuming '([^']+)' \((\S+)\) at (\d+) of (\d+|unknown) bytes")
PAYLOAD = 32 << 20  # written into a 40M zvol: about 32 MiB to send
RATE = "2"  # MB/s: about 17 s for the payload, so "half way" is a few seconds wide


def moved(lines: list[str]) -> int:
    """Bytes this run's streams moved (sum of the dd-style summary lines)."""
    return sum(int(m.group(1)) for ln in lines if (m := SUMMARY_RE.search(ln)))


def run_lines(lab: Lab, job: str) -> list[str]:
    """The job log of the last run only (the log is rewritten per run)."""
    return job_log(lab, "pve1", job)


def stream_size(lab: Lab, argv: list[str]) -> int:
    out = lab.exec("pve1", ["sh", "-c", '"$@" | wc -c', "sh", *argv], check=True)
    return int(out.stdout.strip())


def token_on(lab: Lab, node: str, ds: str) -> str:
    res = lab.exec(node, ["zfs", "get", "-Hp", "-o", "value", "receive_resume_token", ds])
    return res.stdout.strip()


def cut_half_way(lab: Lab, job: str, phase: str) -> float:
    """Run the job on pve1 and partition pve2 off once the progress lines of the ``phase``
    transfer pass half way; heal after the run failed. Returns the run's wall time."""
    align()
    started = time.monotonic()
    # The cut run ends by the ssh master's keepalives (about 30 s). A short stall watchdog
    # would end it sooner, but 5 s and 20 s were both seen to fire before the cut on a loaded
    # machine: a TCG guest's zfs recv can stop reading for that long.
    env = {**os.environ, "PVEREP_STALL_TIMEOUT": "90"}
    proc = lab.popen("pve1", ["pverep", "run", "--id", job], env=env,
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                out, err = proc.communicate()
                log = lab.exec("pve1", ["cat", f"/var/log/pve/replicate/{job}"]).stdout
                ps = lab.exec("pve2", ["ps", "-eo", "pid,etime,stat,args"]).stdout
                raise AssertionError(f"the run ended before half way: {out}{err}\n{log}\n{ps}")
            assert time.monotonic() < deadline, "no half way seen"
            res = lab.exec("pve1", ["cat", f"/var/log/pve/replicate/{job}"])
            lines = res.stdout.splitlines() if res.returncode == 0 else []
            at = next((i for i, ln in enumerate(lines) if phase in ln), None)
            if at is not None and any(
                (m := PROGRESS_RE.search(ln)) and int(m.group(1)) >= 50 for ln in lines[at:]
            ):
                break
            time.sleep(0.5)
        lab.cut("pve2")
        try:
            proc.communicate(timeout=300)
        finally:
            lab.heal("pve2")
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    return time.monotonic() - started


def test_full_sync_cut_half_way_resumes(lab: Lab, vmid: int) -> None:
    job, ref_job = f"{vmid}-0", f"{vmid}-1"
    guests.create(lab, vmid, "pve1", "qemu", ["40M"])
    guests.write(lab, vmid, PAYLOAD)
    volid, ds = f"local-zfs:vm-{vmid}-disk-0", guests.dataset(f"vm-{vmid}-disk-0")
    try:
        pverep(lab, "pve1", "create-local-job", job, "pve2", "--rate", RATE)
        first_wall = cut_half_way(lab, job, " full sync ")
        lines = run_lines(lab, job)
        assert any(f"stream form for '{volid}': resumable" in ln for ln in lines), lines
        err = state(lab, "pve1")[str(vmid)]["local/pve2"]["error"]
        assert f"partial receive of '{volid}' kept on 'pve2'" in err, err
        kept = [s for s in repl_guids(lab, "pve1", vmid, job)[f"vm-{vmid}-disk-0"]]
        assert len(kept) == 1  # the broken run's snapshot stays for the resume

        started = time.monotonic()
        run_job(lab, "pve1", job)
        second_wall = time.monotonic() - started
        lines = run_lines(lab, job)
        m = next((m for ln in lines if (m := RESUMING_RE.search(ln))), None)
        assert m is not None, lines
        assert (m.group(1), m.group(2)) == (volid, kept[0])
        done = int(m.group(3))
        second = moved(lines)
        assert not token_on(lab, "pve2", ds) or token_on(lab, "pve2", ds) == "-"
        assert_replica_equal(lab, vmid, job, "pve1", "pve2")
        last = next(iter(repl_guids(lab, "pve1", vmid, job)[f"vm-{vmid}-disk-0"]))
        full = stream_size(lab, ["zfs", "send", "-p", f"{ds}@{last}"])

        # reference: the same disk in full to another target, same rate
        pverep(lab, "pve1", "create-local-job", ref_job, "pve3", "--rate", RATE)
        started = time.monotonic()
        run_job(lab, "pve1", ref_job)
        ref_wall = time.monotonic() - started
        ref_bytes = moved(job_log(lab, "pve1", ref_job))
        print(
            f"\n[figures] full {full} B stream; cut run {first_wall:.1f}s (target had {done} B);"
            f" resumed run {second} B in {second_wall:.1f}s ({100 * second / full:.0f} %);"
            f" full resend {ref_bytes} B in {ref_wall:.1f}s"
        )
        assert 0 < done < full
        assert second <= 0.6 * full, (second, full)
    finally:
        delete_jobs_of(lab, vmid)


def test_incremental_cut_half_way_resumes(lab: Lab, vmid: int) -> None:
    job = f"{vmid}-0"
    guests.create(lab, vmid, "pve1", "qemu", ["40M"])
    guests.write(lab, vmid, 1_000_000)
    volid, ds = f"local-zfs:vm-{vmid}-disk-0", guests.dataset(f"vm-{vmid}-disk-0")
    try:
        pverep(lab, "pve1", "create-local-job", job, "pve2", "--rate", RATE)
        run_job(lab, "pve1", job)
        base = next(iter(repl_guids(lab, "pve1", vmid, job)[f"vm-{vmid}-disk-0"]))
        guests.write(lab, vmid, PAYLOAD)
        first_wall = cut_half_way(lab, job, " incremental sync ")
        src = repl_guids(lab, "pve1", vmid, job)[f"vm-{vmid}-disk-0"]
        kept = sorted(set(src) - {base})
        assert base in src and len(kept) == 1, src
        # (the token shows once the partitioned import ends: the next prepare stops it)
        full = stream_size(lab, ["zfs", "send", "-p", "-I", base, f"{ds}@{kept[0]}"])

        started = time.monotonic()
        run_job(lab, "pve1", job)
        second_wall = time.monotonic() - started
        lines = run_lines(lab, job)
        m = next((m for ln in lines if (m := RESUMING_RE.search(ln))), None)
        assert m is not None and m.group(2) == kept[0], lines
        assert any(f"incremental sync '{volid}' ({kept[0]} => " in ln for ln in lines), lines
        second = moved(lines)
        assert_replica_equal(lab, vmid, job, "pve1", "pve2")
        assert token_on(lab, "pve2", ds) in ("", "-")
        print(
            f"\n[figures] incremental {full} B stream; cut run {first_wall:.1f}s (target had"
            f" {m.group(3)} B); resumed run {second} B in {second_wall:.1f}s"
            f" ({100 * second / full:.0f} %)"
        )
        assert second <= 0.6 * full, (second, full)
        # the kept snapshot went after the sync: only the newest is left on both sides
        assert all(len(s) == 1 for s in repl_guids(lab, "pve1", vmid, job).values())
        assert all(len(s) == 1 for s in repl_guids(lab, "pve2", vmid, job).values())
    finally:
        delete_jobs_of(lab, vmid)


def test_stale_token_is_discarded_and_the_normal_path_runs(lab: Lab, vmid: int) -> None:
    job = f"{vmid}-0"
    guests.create(lab, vmid, "pve1", "qemu", ["40M"])
    guests.write(lab, vmid, PAYLOAD)
    volid, ds = f"local-zfs:vm-{vmid}-disk-0", guests.dataset(f"vm-{vmid}-disk-0")
    try:
        pverep(lab, "pve1", "create-local-job", job, "pve2", "--rate", RATE)
        cut_half_way(lab, job, " full sync ")
        kept = next(iter(repl_guids(lab, "pve1", vmid, job)[f"vm-{vmid}-disk-0"]))
        lab.exec("pve1", ["zfs", "destroy", f"{ds}@{kept}"], check=True)  # the token's snapshot
        run_job(lab, "pve1", job)
        lines = run_lines(lab, job)
        assert any(f"cannot resume '{volid}' (" in ln for ln in lines), lines
        assert any(f"full sync '{volid}' " in ln for ln in lines), lines
        assert_replica_equal(lab, vmid, job, "pve1", "pve2")
    finally:
        delete_jobs_of(lab, vmid)
