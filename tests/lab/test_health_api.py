"""``pverep --api HOST health`` from off the cluster (the lab's fake Proxmox API on :8006,
which serves each node's real config and state): verdicts, thresholds, Nagios exit codes,
and a node that cannot answer."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from pverep.lab import guests
from pverep.lab.control import Lab

from .apihelp import LabApi
from .replhelp import delete_jobs_of, pverep, run_job

CODES = {"OK": 0, "WARNING": 1, "CRITICAL": 2, "UNKNOWN": 3}


@pytest.fixture
def guest(lab: Lab, vmid: int) -> Iterator[int]:
    guests.create(lab, vmid, "pve1", "lxc", ["32M"])
    yield vmid
    delete_jobs_of(lab, vmid)


def _health(api: LabApi, node: str, *args: str) -> tuple[int, dict[str, object], dict]:
    done = api.remote(["health", "--output-format", "json", *args], node)
    assert "Traceback" not in done.stderr
    data = json.loads(done.stdout)
    assert done.returncode == CODES[str(data["status"])]  # the exit code is the verdict
    mine = {g["guest"]: g for g in data["guests"]}  # type: ignore[union-attr]
    return done.returncode, data, mine


def test_health_over_the_api(lab: Lab, api: LabApi, guest: int) -> None:
    vmid, job = guest, f"{guest}-0"
    pverep(lab, "pve1", "create-local-job", job, "pve2", "--schedule", "*/30")
    run_job(lab, "pve1", job)

    _, _, mine = _health(api, "pve2")
    entry = mine[vmid]
    assert (entry["node"], entry["status"]) == ("pve1", "OK")
    [jobh] = entry["jobs"]
    assert (jobh["jobid"], jobh["target"], jobh["interval"], jobh["state"]) == (
        job,
        "pve2",
        1800,
        "ok",
    )
    assert 0 <= jobh["rpo"] < 120

    time.sleep(2)  # an RPO of at least 2 s, whatever the load: "passes 0" is then certain
    _, _, mine = _health(api, "pve2", "--warn", "0", "--crit", "2h")
    assert mine[vmid]["status"] == "WARNING"
    code, _, mine = _health(api, "pve3", "--warn", "0", "--crit", "0")
    assert mine[vmid]["status"] == "CRITICAL" and code == 2

    lab.cut("pve1")
    try:
        code, _, mine = _health(api, "pve2")
        assert mine[vmid]["status"] == "UNKNOWN" and code in (2, 3)
        assert mine[vmid]["reason"] == "node 'pve1' is offline"
        text = api.remote(["health"], "pve2")
        assert f"UNKNOWN  guest {vmid} on pve1: node 'pve1' is offline" in text.stdout
    finally:
        lab.heal("pve1")
