"""One replication cycle of many guests on one node: pverep's parallel run against pvesr's
pattern, in the same run, on the lab (real zfs-fuse, real sshd).

50 CTs with one small disk each live on pve1, replicated to pve2 and pve3 (alternating).
After an untimed first (full) sync, each cycle writes ~100 KB into every guest, makes every
job due, and times one ``pverep run`` pass (the scheduler's, as the timer runs it):

* ``pvesr``     — ``--max-workers 1`` with ``PVEREP_SSH_MULTIPLEX=0``: pvesr's pattern (one job
                  after the other, one ssh connection per remote call);
* ``serial``    — ``--max-workers 1``: pvesr's order over one ssh master per job;
* ``workers=N`` — N jobs at once (the default, DEFAULT_MAX_WORKERS, among them);
* ``per-verb``  — the default worker count with ``PVEREP_SERVE_SESSION=0``: prepare, import
                  and finalize as their own remote commands, as before the ``pverep serve``
                  session (issue 13.3), for the before/after ratio in the same run;
* ``verb-import`` — the default worker count with the session but ``PVEREP_SERVE_IMPORT=0``:
                  prepare and finalize through the session, every import its own ``pverep
                  import`` (as before imports went through the session).

Reported per mode: the pass's wall time, its speed-up against ``pvesr``, and the spread of the
recovery points (newest minus oldest last_sync among the guests: how long the last guest waits
behind the others). Needs root and the lab's prerequisites.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

from pverep.config.runconf import DEFAULT_MAX_WORKERS
from pverep.lab import guests
from pverep.lab.control import Lab

FIRST_VMID = 30000
CHANGE = 100_000
LAB_DIR = Path(
    "/var/tmp/pverep-lab-cycle-"
    + hashlib.sha256(str(Path(__file__).resolve().parents[1]).encode()).hexdigest()[:10]
)
MAKE_DUE = """
import json, sys
from pverep.config.state import StateStore
from pverep.paths import Paths
store = StateStore(Paths())
for vmid, tid in json.loads(sys.argv[1]):
    store.schedule_job_now(vmid, tid)
"""
STATE_FILE = "/var/lib/pve-manager/pve-replication-state.json"


def run_pass(
    lab: Lab, workers: int | None, multiplex: bool, serve: bool = True, serve_import: bool = True
) -> float:
    argv = ["pverep", "run"] + ([] if workers is None else ["--max-workers", str(workers)])
    env = dict(os.environ)
    env["PVEREP_SSH_MULTIPLEX"] = "1" if multiplex else "0"
    env["PVEREP_SERVE_SESSION"] = "1" if serve else "0"
    env["PVEREP_SERVE_IMPORT"] = "1" if serve_import else "0"
    t0 = time.monotonic()
    res = lab.exec("pve1", argv, env=env, timeout=1800)
    wall = time.monotonic() - t0
    if res.returncode != 0 or "error" in res.stderr:
        raise SystemExit(f"pverep run failed: {res.stderr[-2000:]}")
    return wall


def recovery_points(lab: Lab, plan: list[tuple[int, str]]) -> list[int]:
    raw = lab.exec("pve1", ["cat", STATE_FILE], check=True).stdout
    state = json.loads(raw)
    return [int(state[str(vmid)][f"local/{target}"]["last_sync"]) for vmid, target in plan]


def cycle(
    lab: Lab,
    plan: list[tuple[int, str]],
    workers: int | None,
    multiplex: bool,
    serve: bool,
    serve_import: bool,
) -> dict:
    for vmid, _target in plan:
        guests.write(lab, vmid, CHANGE)
    due = json.dumps([[vmid, f"local/{target}"] for vmid, target in plan])
    lab.exec("pve1", [lab.config.python, "-c", MAKE_DUE, due], check=True)
    before = recovery_points(lab, plan)
    wall = run_pass(lab, workers, multiplex, serve, serve_import)
    after = recovery_points(lab, plan)
    if any(a <= b for a, b in zip(after, before, strict=True)):
        raise SystemExit("a guest got no new recovery point in the pass")
    return {"wall": wall, "spread": max(after) - min(after)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--guests", type=int, default=50)
    ap.add_argument("--workers", default="2,4,8", help="parallel modes to measure")
    ap.add_argument("--keep-lab", action="store_true", help="leave the lab up afterwards")
    args = ap.parse_args()
    if os.environ.get("PVEREP_LAB_SKIP") == "1":
        print("compare_cycle: skipped (PVEREP_LAB_SKIP=1)")
        return 0
    lab = Lab(LAB_DIR)
    print(f"compare_cycle: lab up in {lab.up(3):.1f}s", flush=True)
    try:
        plan = []
        for i in range(args.guests):
            vmid, target = FIRST_VMID + i, ("pve2", "pve3")[i % 2]
            guests.create(lab, vmid, "pve1", "lxc", ["16M"])
            guests.write(lab, vmid, CHANGE)
            res = lab.exec("pve1", ["pverep", "create-local-job", f"{vmid}-0", target,
                                    "--schedule", "*/1"])  # fmt: skip
            if res.returncode != 0:
                raise SystemExit(res.stderr)
            plan.append((vmid, target))
        t0 = time.monotonic()
        run_pass(lab, 8, True)
        print(f"compare_cycle: {args.guests} guests, first full sync in "
              f"{time.monotonic() - t0:.1f}s", flush=True)  # fmt: skip
        modes: list[tuple[str, int | None, bool, bool, bool]] = [
            ("pvesr", 1, False, False, False),
            ("serial", 1, True, True, True),
            ("per-verb", DEFAULT_MAX_WORKERS, True, False, False),
            ("verb-import", DEFAULT_MAX_WORKERS, True, True, False),
        ]
        modes += [(f"workers={n}", int(n), True, True, True) for n in args.workers.split(",")]
        if not any(w == DEFAULT_MAX_WORKERS and s and i for _, w, _, s, i in modes):
            modes.append((f"workers={DEFAULT_MAX_WORKERS}", DEFAULT_MAX_WORKERS, True, True, True))
        results = {}
        for name, workers, multiplex, serve, serve_import in modes:
            results[name] = cycle(lab, plan, workers, multiplex, serve, serve_import)
            r = results[name]
            print(f"  {name:<11} {r['wall']:7.1f}s  spread {r['spread']:4d}s", flush=True)
        anchor = results["pvesr"]["wall"]
        print(f"compare_cycle: one cycle of {args.guests} guests (~100 KB each), "
              "ratios against pvesr's pattern (same run):")  # fmt: skip
        for name, r in results.items():
            tag = " (default)" if name == f"workers={DEFAULT_MAX_WORKERS}" else ""
            print(f"  {name:<11}{tag:<10} {r['wall']:7.1f}s  x{anchor / r['wall']:5.2f} "
                  f"faster  recovery-point spread {r['spread']}s")  # fmt: skip
        best = anchor / results[f"workers={DEFAULT_MAX_WORKERS}"]["wall"]
        verdict = "PASS" if best >= 5 else "MISS"
        print(f"compare_cycle: default vs pvesr's pattern x{best:.2f} (goal >= 5): {verdict}")
        return 0
    finally:
        if not args.keep_lab:
            lab.down()


if __name__ == "__main__":
    sys.exit(main())
