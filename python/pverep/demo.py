"""``make demo``: the main job of pverep, shown on the embedded lab cluster.

Brings up a 3-node lab (namespaces, zfs-fuse, sshd) in a directory derived from this checkout,
creates container 100 with two disks on pve1 and job 100-0 to pve2 (10 MB/s), runs it (full),
writes data, runs it again (incremental), prints ``pverep status`` and the job log, verifies the
replica on pve2 by checksum and snapshot guid, and tears the lab down.
"""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path

import pverep
from pverep.lab import guests
from pverep.lab.control import Lab

VMID = 100
JOB = f"{VMID}-0"
RATE_MB = "10"


def _lab_dir() -> Path:
    checkout = Path(__file__).resolve().parents[2]
    return Path(f"/var/tmp/pverep-demo-{hashlib.sha256(str(checkout).encode()).hexdigest()[:10]}")


def _step(text: str) -> None:
    print(f"\n== {text}", flush=True)


def _pverep(lab: Lab, node: str, *args: str) -> str:
    res = lab.exec(node, ["pverep", *args], timeout=300)
    if res.returncode != 0:
        raise SystemExit(f"pverep {' '.join(args)} on {node} failed:\n{res.stderr}")
    return str(res.stdout)


def _run(lab: Lab) -> None:
    time.sleep(1.05 - (time.time() % 1))  # a new start time (snapshot name) per run
    started = time.monotonic()
    out = _pverep(lab, "pve1", "run", "--id", JOB, "--verbose")
    print(out, end="")
    print(f"(run took {time.monotonic() - started:.2f} s)")


def _replication_guids(lab: Lab, node: str) -> dict[str, str]:
    out = lab.exec(
        node, ["zfs", "list", "-Hp", "-r", "-t", "snapshot", "-o", "name,guid", guests.DATA],
        check=True,
    ).stdout  # fmt: skip
    return {
        name.rsplit("/", 1)[1]: guid
        for name, guid in (line.split("\t") for line in out.splitlines())
        if f"@__replicate_{JOB}_" in name
    }


def main() -> None:
    print(f"pverep {pverep.__version__}: storage replication demo on a 3-node lab")
    lab = Lab(_lab_dir())
    ok = False
    _step("lab up: pve1, pve2, pve3 (network namespaces, zfs-fuse, sshd)")
    print(f"up in {lab.up(3):.2f} s, lab dir {lab.config.dir}")
    try:
        _step(f"container {VMID} with two disks on pve1, 4 MiB of data each")
        guest = guests.create(lab, VMID, "pve1", "lxc", ["64M", "32M"])
        guests.write(lab, VMID, 4 << 20)
        print("\n".join(f"  local-zfs:{v}" for v in guest.volumes))
        _step(f"pverep create-local-job {JOB} pve2 --rate {RATE_MB}")
        _pverep(lab, "pve1", "create-local-job", JOB, "pve2", "--rate", RATE_MB)
        _step("first run: full sync")
        _run(lab)
        _step("guest writes 2 MiB more, second run: incremental sync")
        guests.write(lab, VMID, 2 << 20)
        _run(lab)
        _step("pverep status (on pve1)")
        print(_pverep(lab, "pve1", "status"), end="")
        _step(f"job log /var/log/pve/replicate/{JOB} (on pve1)")
        print(lab.exec("pve1", ["cat", f"/var/log/pve/replicate/{JOB}"], check=True).stdout, end="")
        _step("verify the replica on pve2")
        src, dst = guests.checksum(lab, VMID, "pve1"), guests.checksum(lab, VMID, "pve2")
        gsrc, gdst = _replication_guids(lab, "pve1"), _replication_guids(lab, "pve2")
        for volid, digest in src.items():
            mark = "OK " if dst.get(volid) == digest else "BAD"
            print(f"  {mark} {volid} sha256 {digest[:16] if digest else None}…")
        for ds, guid in gsrc.items():
            mark = "OK " if gdst.get(ds) == guid else "BAD"
            print(f"  {mark} {ds} snapshot guid {guid}")
        ok = src == dst and gsrc == gdst and len(gsrc) == len(guest.volumes)
        print("replica verified: data and snapshot guids equal" if ok else "REPLICA MISMATCH")
    finally:
        _step("lab down")
        print(f"down in {lab.down():.2f} s")
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
