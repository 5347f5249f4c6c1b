"""Issue 10 item 4: with a replication network in datacenter.cfg, the source asks each target
for its address in that network (``mtunnel -get_migration_ip`` over the cluster IP, pvecm's on
a stock node) and then runs ssh to that address, as pvesr does. The lab gives pve1..pve3 a
second address in 10.77.0.0/24 on the same link; sshd's log shows where connections came from.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from pverep.lab import fakepve, guests
from pverep.lab.control import Lab

from .replhelp import delete_jobs_of, job_log, pverep, run_job, snapshots
from .test_insecure import transport  # noqa: F401  (fixture: replication: <value>)

NET = "10.77.0.0/24"
REPL_IP = {"pve1": "10.77.0.1", "pve2": "10.77.0.2", "pve3": "10.77.0.3"}


@pytest.fixture
def network(lab: Lab) -> Iterator[None]:
    for node, ip in REPL_IP.items():
        lab.exec(node, ["ip", "address", "add", f"{ip}/24", "dev", "eth0"], check=True)
    try:
        yield
    finally:
        for node, ip in REPL_IP.items():
            lab.exec(node, ["ip", "address", "del", f"{ip}/24", "dev", "eth0"])


def _accepted_from(lab: Lab, node: str, ip: str) -> int:
    log = lab.config.node_dir(node) / "log" / "sshd.log"
    return log.read_text(errors="replace").count(f"Accepted publickey for root from {ip} port ")


def test_secure_mode_runs_ssh_to_the_targets_address_in_the_replication_network(
    lab: Lab,
    vmid: int,
    network: None,
    transport: Callable[[str], None],  # noqa: F811
) -> None:
    guests.create(lab, vmid, "pve1", "lxc", ["32M"])
    guests.write(lab, vmid, 400_000)
    transport(f"secure,network={NET}")
    jobs = {"pve2": f"{vmid}-0", "pve3": f"{vmid}-1"}  # pve2 runs pverep, pve3 is stock-like
    try:
        with fakepve.stock_node(lab, "pve3"):
            for target, job in jobs.items():
                pverep(lab, "pve1", "create-local-job", job, target)
            before = {n: _accepted_from(lab, n, REPL_IP["pve1"]) for n in jobs}
            for target, job in jobs.items():
                run_job(lab, "pve1", job)
                log = job_log(lab, "pve1", job)
                assert f"{job}: using secure transmission over {NET}, rate limit: none" in log
                assert log[-1] == f"{job}: end replication job", log
                # the run's ssh to the data came from pve1's address in the network
                assert _accepted_from(lab, target, REPL_IP["pve1"]) == before[target] + 1
                assert guests.checksum(lab, vmid, target) == guests.checksum(lab, vmid, "pve1")
                sync = next(s for s in snapshots(lab, "pve1", vmid)[f"subvol-{vmid}-disk-0"]
                            if s.startswith(f"__replicate_{job}_"))  # fmt: skip
                assert (
                    snapshots(lab, target, vmid)[f"subvol-{vmid}-disk-0"][sync]
                    == snapshots(lab, "pve1", vmid)[f"subvol-{vmid}-disk-0"][sync]
                )
            calls = fakepve.recorded(lab, "pve3")
    finally:
        delete_jobs_of(lab, vmid)
    assert calls[0] == ["pvecm", "mtunnel", "-migration_network", NET, "-get_migration_ip"]
    assert [c[:2] for c in calls[1:]] == [
        ["pvesr", "prepare-local-job"], ["pvesm", "import"], ["pvesr", "finalize-local-job"],
    ]  # fmt: skip
