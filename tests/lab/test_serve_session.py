"""One ``pverep serve`` session per pverep target and run (issue 13.3): a parallel run of
several jobs to one target starts exactly one session there and no per-verb prepare, import
or finalize (the streams come over the session's data channels, ``ssh -W`` to its loopback
port), and the replicas equal the source (checksum, snapshot guids). A target whose
pverep has no ``serve`` (an older pverep) gets the per-verb calls and the same result.
The target's pverep verbs are counted by a recording wrapper on its PATH (test harness only).
"""

from __future__ import annotations

import shlex
from collections import Counter
from collections.abc import Callable, Iterator

import pytest

from pverep.lab import guests
from pverep.lab.control import Lab
from pverep.lab.fakepve import NODE_RUN

from .replhelp import align, delete_jobs_of, job_log, pverep, snapshots

TARGET = "pve2"
VERBS = f"{NODE_RUN}/pverep-verbs.log"
OLD = f"{NODE_RUN}/pverep-without-serve"


@pytest.fixture
def counted(lab: Lab) -> Iterator[Callable[[], Counter[str]]]:
    """TARGET's pverep records its verb; ``OLD`` present: it refuses ``serve`` like a pverep
    from before the verb (click's one-line usage error, exit 255)."""
    cfg = lab.config
    script = cfg.bin_dir / "recording-pverep"
    real = shlex.quote(str(cfg.bin_dir / "pverep"))
    script.write_text(
        "#!/bin/sh\n"
        f"printf '%s\\n' \"$1\" >> {VERBS}\n"
        f'if [ "$1" = serve ] && [ -e {OLD} ]; then\n'
        "  echo \"pverep: No such command 'serve'.\" >&2; exit 255\nfi\n"
        f'exec {real} "$@"\n'
    )
    script.chmod(0o755)
    lab.exec(TARGET, ["ln", "-sf", str(script), f"{NODE_RUN}/bin/pverep"], check=True)

    def verbs() -> Counter[str]:
        res = lab.exec(TARGET, ["cat", VERBS])
        return Counter(line for line in res.stdout.splitlines() if line.strip())

    try:
        yield verbs
    finally:
        lab.exec(TARGET, ["rm", "-f", VERBS, OLD])
        lab.exec(TARGET, ["ln", "-sf", str(cfg.bin_dir / "pverep"), f"{NODE_RUN}/bin/pverep"])


@pytest.fixture
def four_guests(lab: Lab, vmids: Callable[[], int]) -> Iterator[list[int]]:
    made = []
    for _ in range(4):
        vmid = vmids()
        guests.create(lab, vmid, "pve1", "lxc", ["32M"])
        guests.write(lab, vmid, 200_000)
        pverep(lab, "pve1", "create-local-job", f"{vmid}-0", TARGET)
        made.append(vmid)
    yield made
    for vmid in made:
        delete_jobs_of(lab, vmid)


def _cycle(lab: Lab, vmids: list[int]) -> None:
    for vmid in vmids:
        guests.write(lab, vmid, 150_000)
        pverep(lab, "pve1", "schedule-now", f"{vmid}-0")
    align()
    pverep(lab, "pve1", "run", "--max-workers", "4")


def _replicated(lab: Lab, vmids: list[int]) -> None:
    for vmid in vmids:
        lines = job_log(lab, "pve1", f"{vmid}-0")
        assert lines[-1] == f"{vmid}-0: end replication job", lines
        assert any(" incremental sync " in ln for ln in lines)
        assert guests.checksum(lab, vmid, TARGET) == guests.checksum(lab, vmid, "pve1")
        source = snapshots(lab, "pve1", vmid)
        assert source and snapshots(lab, TARGET, vmid) == source  # names and guids


def test_a_parallel_run_uses_one_session_per_target(
    lab: Lab, counted: Callable[[], Counter[str]], four_guests: list[int]
) -> None:
    _cycle(lab, four_guests)  # first syncs (full)
    lab.exec(TARGET, ["rm", "-f", VERBS], check=True)
    _cycle(lab, four_guests)
    verbs = counted()
    assert verbs == Counter({"peer-info": 1, "serve": 1}), verbs
    _replicated(lab, four_guests)
    # the session is gone with the run
    left = lab.exec(TARGET, ["pgrep", "-f", "pverep serve"])
    assert left.stdout.strip() == "", left.stdout


def test_a_target_without_serve_gets_the_per_verb_calls(
    lab: Lab, counted: Callable[[], Counter[str]], four_guests: list[int]
) -> None:
    lab.exec(TARGET, ["touch", OLD], check=True)
    _cycle(lab, four_guests)
    lab.exec(TARGET, ["rm", "-f", VERBS], check=True)
    _cycle(lab, four_guests)
    verbs = counted()
    assert verbs == Counter(
        {"peer-info": 1, "serve": 1, "prepare-local-job": 4, "import": 4,
         "finalize-local-job": 4}
    ), verbs  # fmt: skip
    _replicated(lab, four_guests)
