"""Relocated guests on the lab (issue 5): HA-style recovery, a move to a third node, the seed
(removal of a stateless job incl. a disk on a second storage), removal while the target is
offline, fail-back, and the hookscript. Real zfs-fuse, real sshd; data verified by checksum
and guid; every real reconcile is preceded by a dry run whose plan must be what it then does.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pverep.lab import guests
from pverep.lab.control import Lab
from pverep.lab.procs import only_child, record

from .apihelp import LabApi

REPO = Path(__file__).resolve().parents[2]
HOOK = REPO / "hooks" / "pverep-hookscript"


def pv(lab: Lab, node: str, *args: str, check: bool = True) -> Any:
    res = lab.exec(node, ["pverep", *args])
    if check:
        assert res.returncode == 0, f"pverep {' '.join(args)} on {node}: {res.stderr}"
    return res


def reconcile(lab: Lab, node: str, *extra: str) -> dict[str, Any]:
    """A dry run, then the real run: the real run does exactly the planned steps."""
    dry = json.loads(
        pv(lab, node, "reconcile", "--dry-run", "--output-format", "json", *extra).stdout
    )
    real = json.loads(pv(lab, node, "reconcile", "--output-format", "json", *extra).stdout)
    planned = [s["text"] for s in dry["steps"]]
    assert [s["text"] for s in real["steps"]] == planned
    if planned:
        assert real["done"] == planned, real
        assert real["failed"] == [] and real["skipped"] == []
    again = json.loads(
        pv(lab, node, "reconcile", "--dry-run", "--output-format", "json", *extra).stdout
    )
    if not any(f["level"] == "warn" and "not reachable" in f["text"] for f in real["findings"]):
        assert again["steps"] == [], again  # idempotent: a second run finds nothing to do
    return real


def job_cfg(lab: Lab, jobid: str) -> dict[str, Any]:
    out = pv(lab, "pve1", "read", jobid, "--output-format", "json").stdout
    return dict(json.loads(out))


def run_job(lab: Lab, node: str, jobid: str) -> str:
    time.sleep(1.1)  # start_time must be after the previous sync's second
    pv(lab, node, "run", "--id", jobid)
    return str(lab.exec(node, ["cat", f"/var/log/pve/replicate/{jobid}"]).stdout)


def datasets(lab: Lab, node: str, vmid: int) -> list[str]:
    out = lab.exec(node, ["zfs", "list", "-H", "-o", "name", "-r", "rpool"]).stdout
    return sorted(n for n in out.split() if f"-{vmid}-disk-" in n)


def guids(lab: Lab, node: str, ds: str) -> dict[str, str]:
    out = lab.exec(node, ["zfs", "list", "-Hp", "-t", "snapshot", "-o", "name,guid", "-r", ds])
    return {
        ln.split("\t")[0].split("@")[1]: ln.split("\t")[1] for ln in out.stdout.splitlines() if ln
    }


def set_ha(lab: Lab, vmid: int, state: str, node: str) -> None:
    path = lab.config.etc_pve / "ha" / "manager_status"
    path.parent.mkdir(exist_ok=True)
    doc = {"master_node": "pve3", "service_status": {f"vm:{vmid}": {"state": state, "node": node}}}
    path.write_text(json.dumps(doc))


@pytest.fixture
def clean(lab: Lab, vmid: int) -> Iterator[int]:
    """Also drop this vmid's jobs, states, HA status and second-storage disks afterwards."""
    yield vmid
    for node in lab.nodes:
        lab.heal(node) if node in lab.config.cut_nodes() else None
    cfg = lab.config.etc_pve / "replication.cfg"
    kept = [s for s in cfg.read_text().split("\n\n") if s.strip() and f": {vmid}-" not in s]
    cfg.write_text("".join(s.strip("\n") + "\n\n" for s in kept))
    (lab.config.etc_pve / "ha" / "manager_status").unlink(missing_ok=True)
    for node in lab.nodes:
        for ds in datasets(lab, node, vmid):
            if ds.startswith("rpool/data2/"):
                lab.exec(node, ["zfs", "destroy", "-r", ds])


def add_second_disk(lab: Lab, vmid: int, node: str) -> str:
    lab.exec(
        node, ["zfs", "create", "-o", "refquota=16M", f"rpool/data2/vm-{vmid}-disk-1"], check=True
    )
    conf = guests.find(lab, vmid).config
    conf.write_text(conf.read_text() + f"scsi1: local-zfs2:vm-{vmid}-disk-1,size=16M\n")
    return f"local-zfs2:vm-{vmid}-disk-1"


def steps_of(result: dict[str, Any]) -> list[str]:
    return [s["kind"] for s in result["steps"]]


def test_ha_recovery_to_target(lab: Lab, clean: int) -> None:
    vmid, job = clean, f"{clean}-0"
    t0 = time.monotonic()
    guests.create(lab, vmid, "pve1", "qemu", ["32M"])
    guests.write(lab, vmid)
    pv(lab, "pve1", "create-local-job", job, "pve2", "--schedule", "*/15")
    assert "full sync" in run_job(lab, "pve1", job)
    guests.write(lab, vmid)
    assert "incremental sync" in run_job(lab, "pve1", job)
    synced = guests.checksum(lab, vmid, "pve2")
    guests.write(lab, vmid)  # written on pve1 after the last sync: lost by the failover
    try:
        lab.cut("pve1")
        set_ha(lab, vmid, "recovery", "pve1")
        guests.move(lab, vmid, "pve2")  # steal_service
        waiting = reconcile(lab, "pve2")
        assert waiting["steps"] == []  # HA is still recovering: wait
        set_ha(lab, vmid, "started", "pve2")
        first = reconcile(lab, "pve2")
        assert steps_of(first) == ["repoint"]  # pve1 is offline: state waits
        cfg = job_cfg(lab, job)
        assert (cfg["source"], cfg["target"]) == ("pve2", "pve1")
        assert guests.checksum(lab, vmid, "pve2") == synced
        guests.write(lab, vmid)  # the guest runs on pve2 now
    finally:
        lab.heal("pve1")
    second = reconcile(lab, "pve2")
    assert steps_of(second)[0] == "adopt-state"
    log = run_job(lab, "pve2", job)
    assert "incremental sync" in log and "full sync" not in log, log
    assert guests.checksum(lab, vmid, "pve1") == guests.checksum(lab, vmid, "pve2")
    ds = f"rpool/data/vm-{vmid}-disk-0"
    assert guids(lab, "pve1", ds) == guids(lab, "pve2", ds)
    status = pv(lab, "pve2", "status", "--output-format", "json").stdout
    entry = next(e for e in json.loads(status) if e["id"] == job)
    assert "repaired" in entry.get("reconcile", ""), entry
    print(f"wall time {time.monotonic() - t0:.1f}s")


def test_third_node_seed_and_failback(lab: Lab, clean: int) -> None:
    vmid = clean
    j0, j1 = f"{vmid}-0", f"{vmid}-1"
    t0 = time.monotonic()
    guests.create(lab, vmid, "pve1", "qemu", ["32M"])
    vol2 = add_second_disk(lab, vmid, "pve1")
    guests.write(lab, vmid)
    pv(lab, "pve1", "create-local-job", j0, "pve2")
    pv(lab, "pve1", "create-local-job", j1, "pve3")
    run_job(lab, "pve1", j0)
    run_job(lab, "pve1", j1)
    guests.write(lab, vmid)
    run_job(lab, "pve1", j0)
    run_job(lab, "pve1", j1)
    pve1_before = datasets(lab, "pve1", vmid)

    # -- move to a third node: pve3 has the disks (job -1), job -0 still targets pve2
    guests.move(lab, vmid, "pve3")
    moved = reconcile(lab, "pve3")
    assert steps_of(moved).count("repoint") == 2 and "adopt-state" in steps_of(moved)
    assert (job_cfg(lab, j0)["source"], job_cfg(lab, j0)["target"]) == ("pve3", "pve2")
    assert (job_cfg(lab, j1)["source"], job_cfg(lab, j1)["target"]) == ("pve3", "pve1")
    guests.write(lab, vmid)
    log = run_job(lab, "pve3", j0)
    assert "incremental sync" in log and "full sync" not in log, log
    assert guests.checksum(lab, vmid, "pve2") == guests.checksum(lab, vmid, "pve3")
    assert datasets(lab, "pve1", vmid) == pve1_before  # nothing on pve1 lost
    t_third = time.monotonic() - t0

    # -- the seed: disk 2 leaves the config, then job -0 is deleted on the stateless side
    conf = guests.find(lab, vmid).config
    conf.write_text("".join(ln for ln in conf.read_text().splitlines(True) if vol2 not in ln))
    lab.exec("pve3", ["sh", "-c", "rm -f /var/lib/pve-manager/pve-replication-state.json"])
    pv(lab, "pve3", "delete", j0)
    removal = reconcile(lab, "pve3")
    assert "extend-removal-scan" in steps_of(removal)
    log = run_job(lab, "pve3", j0)
    assert "job removed" in log, log
    assert datasets(lab, "pve2", vmid) == [], "every replica of the guest on pve2 is gone"
    pv(lab, "pve3", "create-local-job", j0, "pve2")
    log = run_job(lab, "pve3", j0)
    assert "full sync" in log and "already exists" not in log, log
    assert guests.checksum(lab, vmid, "pve2") == guests.checksum(lab, vmid, "pve3")
    t_seed = time.monotonic() - t0 - t_third

    # -- fail-back to pve1: nothing loops, no "already exists"
    run_job(lab, "pve3", j1)
    guests.move(lab, vmid, "pve1")
    back = reconcile(lab, "pve1")
    assert "repoint" in steps_of(back)
    for _ in range(2):
        guests.write(lab, vmid)
        for jobid in (j0, j1):
            log = run_job(lab, "pve1", jobid)
            assert "already exists" not in log and "end replication job with error" not in log, log
    assert reconcile(lab, "pve1")["steps"] == []
    target3 = job_cfg(lab, j1)["target"]
    assert guests.checksum(lab, vmid, target3) == guests.checksum(lab, vmid, "pve1")
    assert guests.checksum(lab, vmid, "pve2") == guests.checksum(lab, vmid, "pve1")
    print(f"wall times: third node {t_third:.1f}s, seed {t_seed:.1f}s, "
          f"fail-back {time.monotonic() - t0 - t_third - t_seed:.1f}s")  # fmt: skip


def test_removal_while_target_offline_completes_after_heal(lab: Lab, clean: int) -> None:
    vmid, job = clean, f"{clean}-0"
    t0 = time.monotonic()
    guests.create(lab, vmid, "pve1", "qemu", ["16M"])
    pv(lab, "pve1", "create-local-job", job, "pve2")
    run_job(lab, "pve1", job)
    assert datasets(lab, "pve2", vmid)
    try:
        lab.cut("pve2")
        pv(lab, "pve1", "delete", job)
        pv(lab, "pve1", "run", check=False)  # the timer's pass: removal fails (pve2 offline)
        state = json.loads(pv(lab, "pve1", "status", "--output-format", "json").stdout)
        mine = next(e for e in state if e["id"] == job)
        assert mine["fail_count"] == 1
        pv(lab, "pve1", "run", check=False)  # not retried every minute while pve2 is away
        state = json.loads(pv(lab, "pve1", "status", "--output-format", "json").stdout)
        assert next(e for e in state if e["id"] == job)["fail_count"] == 1
    finally:
        lab.heal("pve2")
    back = reconcile(lab, "pve1")
    assert "retry-removal" in steps_of(back)
    pv(lab, "pve1", "run")  # the next timer pass
    assert datasets(lab, "pve2", vmid) == []
    assert job not in pv(lab, "pve1", "list").stdout
    print(f"wall time {time.monotonic() - t0:.1f}s")


def test_hookscript_time_bound_and_opt_in(lab: Lab, clean: int) -> None:
    vmid, job = clean, f"{clean}-0"
    guests.create(lab, vmid, "pve1", "qemu", ["16M"])
    pv(lab, "pve1", "create-local-job", job, "pve2")
    run_job(lab, "pve1", job)
    lab.exec("pve1", ["sh", "-c", "rm -f /var/lib/pve-manager/pve-replication-state.json"])
    env = ["env", "PVEREP_HOOK_TIMEOUT=4"]
    try:
        lab.cut("pve2")
        t = time.monotonic()
        res = lab.exec("pve1", [*env, str(HOOK), str(vmid), "pre-start"])
        took = time.monotonic() - t
        assert res.returncode == 0, res.stderr
        assert took < 4 + 3, took  # the bound plus process start-up
        unknown = lab.exec("pve1", [*env, str(HOOK), str(vmid), "some-future-phase"])
        assert unknown.returncode == 0
    finally:
        lab.heal("pve2")
    # opt-in: a node without any replica of the guest refuses the start
    guests.move(lab, vmid, "pve3")
    strict = lab.exec(
        "pve3", [*env, "PVEREP_HOOK_REQUIRE_REPLICA=1", str(HOOK), str(vmid), "pre-start"]
    )
    assert strict.returncode != 0
    assert "no replica" in strict.stdout + strict.stderr
    relaxed = lab.exec("pve3", [*env, str(HOOK), str(vmid), "pre-start"])
    assert relaxed.returncode == 0
    assert os.access(HOOK, os.X_OK)


def test_cluster_wide_reconcile_through_the_api(lab: Lab, api: LabApi, clean: int) -> None:
    """``pverep --api … reconcile`` from off the cluster, right after HA moved a guest's config:
    it waits for HA, re-points both jobs (the target switch through the owning node), leaves
    state and disks to that node (deferred), and that node's own reconcile then finishes."""
    vmid = clean
    j0, j1 = f"{vmid}-0", f"{vmid}-1"
    t0 = time.monotonic()
    guests.create(lab, vmid, "pve1", "qemu", ["16M"])
    guests.write(lab, vmid)
    pv(lab, "pve1", "create-local-job", j0, "pve2")
    pv(lab, "pve1", "create-local-job", j1, "pve3")
    run_job(lab, "pve1", j0)
    run_job(lab, "pve1", j1)
    refused = pv(lab, "pve1", "reconcile", "--node", "pve2", check=False)
    assert refused.returncode == 255 and refused.stdout == ""
    assert refused.stderr.count("\n") == 1 and "runs on that node" in refused.stderr

    def remote(*args: str, node: str = "pve3") -> dict[str, Any]:
        done = api.remote(["reconcile", "--output-format", "json", *args], node)
        assert done.returncode == 0, done.stderr
        return dict(json.loads(done.stdout))

    set_ha(lab, vmid, "recovery", "pve1")
    guests.move(lab, vmid, "pve2")  # steal_service, just now
    waiting = remote("--dry-run", "--guest", str(vmid))
    assert (
        waiting["steps"] == [] and "waiting until it is started" in waiting["findings"][0]["text"]
    )
    set_ha(lab, vmid, "started", "pve2")
    dry = remote("--dry-run")  # the whole cluster, asked through pve3's API
    mine = [s["text"] for s in dry["steps"] if s["vmid"] == vmid]
    assert mine == [
        f"job {j0}: source pve1 -> pve2, target pve2 -> pve1",
        f"job {j1}: source pve1 -> pve2",
    ]
    deferred = [(d["jobid"], d["node"]) for d in dry["deferred"] if d["vmid"] == vmid]
    assert deferred == [(j0, "pve2"), (j1, "pve2")]
    assert [s for s in remote("--dry-run", "--node", "pve1")["steps"] if s["vmid"] == vmid] == []
    assert (job_cfg(lab, j0)["source"], job_cfg(lab, j0)["target"]) == ("pve1", "pve2")  # dry

    real = remote("--guest", str(vmid), node="pve1")
    assert real["done"] == mine and real["failed"] == [] and real["skipped"] == []
    assert (job_cfg(lab, j0)["source"], job_cfg(lab, j0)["target"]) == ("pve2", "pve1")
    assert (job_cfg(lab, j1)["source"], job_cfg(lab, j1)["target"]) == ("pve2", "pve3")
    assert remote("--dry-run", "--guest", str(vmid))["steps"] == []  # idempotent
    assert not api.client_root.exists() or not any(api.client_root.rglob("*"))  # no local write
    text = api.remote(["reconcile", "--dry-run", "--guest", str(vmid)], "pve2")
    assert text.returncode == 0 and "cluster: nothing to do" in text.stdout, text.stdout

    # the deferred part, on the guest's node. pve2 shares only job -0's snapshot with pve3, so
    # it records no state for -0 (its run would delete job -1's base) and both jobs go on
    # from the newest common snapshot, job -0 first as the scheduler orders them
    local = reconcile(lab, "pve2")
    assert steps_of(local) == [], local
    assert any(f"also the base of job(s) {j1}" in f["text"] for f in local["findings"]), local
    guests.write(lab, vmid)
    for jobid in (j0, j1):
        log = run_job(lab, "pve2", jobid)
        assert "incremental sync" in log and "full sync" not in log, log
    for node in ("pve1", "pve3"):
        assert guests.checksum(lab, vmid, node) == guests.checksum(lab, vmid, "pve2")
    print(f"wall time {time.monotonic() - t0:.1f}s")


def test_ha_watcher_reacts_within_seconds(lab: Lab, clean: int, tmp_path: Path) -> None:
    """``pverep reconcile --watch`` in the background on pve2 while HA recovers a guest from
    pve1: nothing while the service is in 'recovery', the repair right after 'started'."""
    vmid, job = clean, f"{clean}-0"
    guests.create(lab, vmid, "pve1", "qemu", ["16M"])
    pv(lab, "pve1", "create-local-job", job, "pve2")
    run_job(lab, "pve1", job)
    set_ha(lab, vmid, "started", "pve1")
    log = tmp_path / "watch.log"
    argv = ["pverep", "reconcile", "--watch", "--interval", "0.5", "--watch-duration", "60"]
    with log.open("wb") as out:
        proc = lab.popen("pve2", argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    watcher = None
    try:
        deadline = time.monotonic() + 20
        while "watching" not in log.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            time.sleep(0.1)
        assert "watching /etc/pve/ha/manager_status on pve2" in log.read_text(), log.read_text()
        child = only_child(proc.pid)
        watcher = record(child) if child is not None else None
        assert watcher is not None

        set_ha(lab, vmid, "recovery", "pve1")  # pve1 fenced; the CRM recovers the guest
        guests.move(lab, vmid, "pve2")  # steal_service
        time.sleep(2)  # four polls: HA is still recovering, the watcher must wait
        assert job_cfg(lab, job)["source"] == "pve1", log.read_text()
        set_ha(lab, vmid, "started", "pve2")
        t0 = time.monotonic()
        while job_cfg(lab, job)["source"] != "pve2" and time.monotonic() - t0 < 10:
            time.sleep(0.1)
        reacted = time.monotonic() - t0
        assert (job_cfg(lab, job)["source"], job_cfg(lab, job)["target"]) == ("pve2", "pve1")
        assert reacted < 5, (reacted, log.read_text())
        deadline = time.monotonic() + 10  # the pass goes on with the state (pve1 is online)
        while "record state" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        assert f"HA: guest {vmid} started on pve2 after 'recovery'" in log.read_text()
        journal = lab.exec("pve2", ["cat", "/var/log/pve/replicate/reconcile"]).stdout
        assert f"done: job {job}: source pve1 -> pve2, target pve2 -> pve1" in journal
        status = json.loads(pv(lab, "pve2", "status", "--output-format", "json").stdout)
        entry = next(e for e in status if e["id"] == job)
        assert "source pve1 -> pve2" in entry.get("reconcile", ""), entry

        assert watcher.kill(signal.SIGTERM)  # as systemd stops it
        assert proc.wait(timeout=10) == 0, log.read_text()
        text = log.read_text()
        assert "stopping on signal 15" in text and "watcher stopped" in text
        assert "Traceback" not in text
    finally:
        if watcher is not None and watcher.is_running():
            watcher.kill()
        proc.wait(timeout=70)
    print(f"watcher reacted in {reacted:.2f}s")
