"""pverep beside pvescheduler on one node (issue 16): a stock-like scheduler loop
(tests/lab/stockloop.py: forks a pass every few seconds under pvesr's run lock, like
pvescheduler) and ``pverep run`` (what pverep-replicate.timer starts) run the same jobs of
several guests for a few minutes while the guests' data changes and jobs are made due again
and again. Then:

* no two job runs overlap, across the two programs (the run lock) and within each;
* no state write is lost: whenever the node is quiet (the test holds the run lock), every
  job's state ``last_sync`` names the newest replication snapshot on source and target, with
  equal guids, and its fail_count is 0; every run after the first is incremental;
* every run's data verifies: guid equality at each quiet point, and at the end the replica's
  content checksum equals the source's.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pverep.lab import guests
from pverep.lab.control import Lab

from .replhelp import delete_jobs_of, pverep, run_job, snapshots, state

SNAPSHOT_JOB_RE = re.compile(r"__replicate_(\d+-\d+)_\d+__")
STOCK_LOOP = (Path(__file__).parent / "stockloop.py").read_text()
GUESTS = 3
PHASE_SECONDS = 150.0
PERIOD = 3.0  # the stock loop forks a pass this often (pvescheduler: every 60 s)
#: ``pverep run`` starts again this soon after the last one and its quiet check (it needs a
#: second or so to start, so this keeps both programs at the lock about equally often)
PVEREP_PAUSE = 0.5
TRIGGER_EVERY = 4.0  # one guest written to and its job made due again this often
#: pvesr's notice while it waits for a lock (here: the other program's pass).
LOCK_WAIT = "trying to acquire lock... OK\n"


@dataclass(frozen=True)
class Run:
    who: str
    job: str
    start: float
    end: float
    lines: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return bool(self.lines) and self.lines[-1] == "end replication job"


@dataclass
class Record:
    runs: list[Run] = field(default_factory=list)
    passes: list[tuple[float, float]] = field(default_factory=list)
    quiet_checks: int = 0
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


@contextlib.contextmanager
def run_lock_held(lab: Lab, node: str) -> Iterator[None]:
    """Hold pvesr's run lock on ``node`` with util-linux flock(1): no pass can run meanwhile."""
    argv = ["flock", "/var/lock/pvesr.lck", "sh", "-c", "echo locked; read x"]
    with lab.popen(node, argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as holder:
        assert holder.stdin is not None and holder.stdout is not None
        try:
            assert holder.stdout.readline() == "locked\n"
            yield
        finally:
            holder.stdin.close()
            holder.wait(timeout=30)


def check_quiet(lab: Lab, jobs: dict[str, int]) -> None:
    """Under the run lock: state and snapshots of every job agree, on both nodes."""
    with run_lock_held(lab, "pve1"):
        states = state(lab, "pve1")
        for jobid, vmid in jobs.items():
            entry = states[str(vmid)]["local/pve2"]
            assert entry["fail_count"] == 0, (jobid, entry)
            want = f"__replicate_{jobid}_{entry['last_sync']}__"
            source, target = snapshots(lab, "pve1", vmid), snapshots(lab, "pve2", vmid)
            assert source, jobid
            for disk, snaps in source.items():
                ours = sorted(s for s in snaps if s.startswith(f"__replicate_{jobid}_"))
                assert ours[-1] == want, (jobid, disk, ours, entry)  # no lost state write
                assert target[disk].get(want) == snaps[want], (jobid, disk)  # same data


def parse_verbose(who: str, stamped: list[tuple[float, str]]) -> list[Run]:
    """Runs from ``pverep run --verbose`` (pvesr's bare job log messages, stamped on arrival:
    the output is unbuffered); a run's job is the one its replication snapshot names."""
    runs: list[Run] = []
    block: list[str] | None = None
    start = 0.0
    for t, msg in stamped:
        if msg == "start replication job":
            assert block is None, (block, msg)  # the bare lines need one run at a time
            block, start = [msg], t
        elif block is not None:
            block.append(msg)
            if msg.startswith("end replication job"):
                named = [m.group(1) for line in block if (m := SNAPSHOT_JOB_RE.search(line))]
                assert named, block
                runs.append(Run(who, named[0], start, t, tuple(block)))
                block = None
    assert block is None, block
    return runs


def parse_stock(events: list[dict[str, object]]) -> tuple[list[Run], list[tuple[float, float]]]:
    runs, open_runs, passes, begun = [], {}, [], {}
    for ev in events:
        kind, t = ev["kind"], float(ev["t"])  # type: ignore[arg-type]
        if kind == "pass-begin":
            begun[ev["pid"]] = t
        elif kind == "pass-end":
            passes.append((begun.pop(ev["pid"]), t))
        elif kind == "log":
            job, msg = str(ev["job"]), str(ev["msg"])
            if msg == "start replication job":
                open_runs[job] = (t, [msg])
            elif job in open_runs:
                open_runs[job][1].append(msg)
                if msg.startswith("end replication job"):
                    start, lines = open_runs.pop(job)
                    runs.append(Run("stock", job, start, t, tuple(lines)))
    return runs, passes


def pverep_run_loop(lab: Lab, rec: Record, jobs: dict[str, int], stop: threading.Event) -> None:
    """What pverep-replicate.timer starts, again and again; a quiet check after each."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        while not stop.is_set():
            argv = ["pverep", "run", "--verbose", "--mail", "1"]
            pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
            with lab.popen("pve1", argv, env=env, text=True, **pipes) as proc:
                assert proc.stdout is not None and proc.stderr is not None
                stamped = [(time.time(), line.rstrip("\n")) for line in proc.stdout]
                err = proc.stderr.read()
            # waiting for the other program's pass is normal; anything else is not
            if proc.returncode != 0 or err.replace(LOCK_WAIT, ""):
                rec.errors.append(f"pverep run: rc={proc.returncode} {err}")
            with rec.lock:
                rec.runs += parse_verbose("pverep", stamped)
            check_quiet(lab, jobs)
            rec.quiet_checks += 1
            stop.wait(PVEREP_PAUSE)
    except BaseException as exc:  # reported by the test thread
        rec.errors.append(f"pverep loop: {type(exc).__name__}: {exc}")


def stock_reader(proc: subprocess.Popen[str], events: list[dict[str, object]]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        events.append(json.loads(line))


def test_pverep_run_beside_a_stock_scheduler_loop(lab: Lab, vmids: Callable[[], int]) -> None:
    ids = [vmids() for _ in range(GUESTS)]
    jobs = {f"{vmid}-0": vmid for vmid in ids}
    try:
        for vmid in ids:
            guests.create(lab, vmid, "pve1", "lxc", ["48M"])
            guests.write(lab, vmid)
            pverep(lab, "pve1", "create-local-job", f"{vmid}-0", "pve2", "--schedule", "*/15")
        for jobid in jobs:
            run_job(lab, "pve1", jobid)  # the full syncs, before the race begins
        check_quiet(lab, jobs)

        rec, stop, events = Record(), threading.Event(), []
        stock = lab.popen("pve1", [lab.config.python, "-c", STOCK_LOOP, str(PHASE_SECONDS),
                                   str(PERIOD)], stdout=subprocess.PIPE, text=True)  # fmt: skip
        reader = threading.Thread(target=stock_reader, args=(stock, events))
        looper = threading.Thread(target=pverep_run_loop, args=(lab, rec, jobs, stop))
        reader.start()
        looper.start()
        deadline = time.monotonic() + PHASE_SECONDS - 10
        n = 0
        try:
            while time.monotonic() < deadline and not rec.errors:
                vmid = ids[n % GUESTS]
                n += 1
                guests.write(lab, vmid)
                pverep(lab, "pve1", "schedule-now", f"{vmid}-0")
                time.sleep(TRIGGER_EVERY)
        finally:
            stop.set()
            looper.join(timeout=400)
            stock.wait(timeout=400)  # it stops by itself after PHASE_SECONDS
            reader.join(timeout=60)
            assert stock.stdout is not None
            stock.stdout.close()
        assert rec.errors == [], rec.errors
        stock_runs, passes = parse_stock(events)
        problems = [e for e in events if e["kind"] in ("error", "warn")]
        assert problems == [], problems
        runs = sorted(rec.runs + stock_runs, key=lambda r: r.start)

        # both programs did real work, and every run succeeded incrementally
        by_who = {who: [r for r in runs if r.who == who] for who in ("stock", "pverep")}
        assert len(by_who["stock"]) >= 3 and len(by_who["pverep"]) >= 3, {
            k: len(v) for k, v in by_who.items()
        }
        for run in runs:
            assert run.ok, run
            assert not any(line.startswith("full sync") for line in run.lines), run
            assert any(line.startswith("incremental sync") for line in run.lines), run
        # never two runs at once: across the programs (the run lock), and never one job twice.
        # Jobs of different guests inside one pverep pass are not compared with each other: a
        # pass may run them in parallel. (parse_verbose attributes pvesr's bare --verbose lines
        # to jobs only while a pass prints one run at a time; it fails loudly otherwise.)
        for ours in by_who["pverep"]:
            for theirs in by_who["stock"]:
                assert ours.end <= theirs.start or theirs.end <= ours.start, (ours, theirs)
            inside = [p for p in passes if p[0] < ours.start < p[1]]
            assert inside == [], (ours, inside)
        for jobid in jobs:
            mine = [r for r in runs if r.job == jobid]
            for before, after in itertools.pairwise(mine):
                assert after.start >= before.end, (before, after)
        assert rec.quiet_checks >= 5

        # the end: one more run each, then the replicas' content equals the sources'
        for jobid in jobs:
            run_job(lab, "pve1", jobid)
        check_quiet(lab, jobs)
        for vmid in ids:
            source = guests.checksum(lab, vmid, "pve1")
            assert None not in source.values()
            assert guests.checksum(lab, vmid, "pve2") == source
        print(
            f"runs: stock {len(by_who['stock'])}, pverep {len(by_who['pverep'])}, "
            f"quiet checks {rec.quiet_checks}, triggers {n}"
        )
    finally:
        for vmid in ids:
            delete_jobs_of(lab, vmid)
