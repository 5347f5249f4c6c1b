"""Runs ON a lab node (``python -c <this file's text> <seconds> <period>``): a stock-like
pvescheduler replication loop driving pverep's code.

Like pvescheduler, every ``period`` seconds it forks a child unless the previous child is still
running; the child takes pvesr's node-wide run lock ``/var/lock/pvesr.lck`` the way PVE's
``lock_file`` does (open O_RDWR|O_CREAT, flock LOCK_EX, 60 s) and then does run_jobs' pass with
pverep's scheduler (the lock is already held, so the scheduler's own is a no-op here).
Every event is one JSON line on stdout (one write each, shorter than PIPE_BUF, so lines from
several children never mix): pass begin/end (lock held), each job log line with a
sub-second timestamp, and each job's outcome.
"""

import contextlib
import dataclasses
import fcntl
import json
import os
import signal
import sys
import time

from pverep.engine.wiring import build_scheduler
from pverep.paths import Paths

RUN_LOCK = "/var/lock/pvesr.lck"


def emit(kind, **fields):
    line = json.dumps(
        {"who": "stock", "pid": os.getpid(), "t": time.time(), "kind": kind, **fields}
    )[:3000]
    os.write(1, (line + "\n").encode())


class Recording:
    """Wraps the job runner: every log line and the outcome become events."""

    def __init__(self, inner):
        self.inner = inner

    def run_replication(self, job, iteration, start_time, logfunc=None, verbose=False):
        def log(msg):
            emit("log", job=job.id, msg=msg)

        try:
            result = self.inner.run_replication(job, iteration, start_time, log, False)
        except Exception as err:
            emit("outcome", job=job.id, ok=False, error=str(err))
            raise
        emit("outcome", job=job.id, ok=True, start_time=start_time)
        return result


def one_pass():
    fd = os.open(RUN_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    signal.alarm(60)  # lock_file's timeout
    fcntl.flock(fd, fcntl.LOCK_EX)
    signal.alarm(0)
    emit("pass-begin")
    try:
        scheduler = build_scheduler(Paths.from_env())
        scheduler = dataclasses.replace(
            scheduler,
            runner=Recording(scheduler.runner),
            run_lock=lambda timeout: contextlib.nullcontext(),
            warn=lambda msg: emit("warn", msg=msg),
        )
        scheduler.run_jobs(None, None, False, True)
    finally:
        emit("pass-end")
        os.close(fd)


def main():
    seconds, period = float(sys.argv[1]), float(sys.argv[2])
    deadline = time.monotonic() + seconds
    child = None
    while time.monotonic() < deadline:
        if child is not None and os.waitpid(child, os.WNOHANG)[0] != 0:
            child = None
        if child is None:
            child = os.fork()
            if child == 0:
                code = 0
                try:
                    one_pass()
                except BaseException as err:
                    emit("error", msg=f"{type(err).__name__}: {err}")
                    code = 1
                os._exit(code)
        time.sleep(period)
    if child is not None:
        os.waitpid(child, 0)


main()
