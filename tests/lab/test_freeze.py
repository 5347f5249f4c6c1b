"""Guest filesystem freeze on the lab cluster: a running container's processes are frozen by the
real cgroup v2 freezer while each replication snapshot is taken (checked by a witness around the
real ``zfs snapshot``: the kernel's ``cgroup.events`` and a heartbeat process that makes no
progress), and thawed after; a "running" VM is frozen and thawed through the FAKE guest agent
(pverep.lab.fakeqga) in the order agent freeze → snapshots → agent thaw, and a hung agent only
costs the configured timeouts.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import time
from collections.abc import Iterator

import pytest

from pverep.lab import containers, guests, snapwitness
from pverep.lab.control import Lab

from .replhelp import delete_jobs_of, job_log, pverep, run_job

RECORD = "/run/pvelab-freeze-record"
PVEREP_ETC = "/etc/pverep"
SNAP_RE = re.compile(r"^zfs snapshot (\S+) frozen=([01]) beats=(\S+),(\S+)$")


@contextlib.contextmanager
def private_pverep_conf(lab: Lab, node: str, text: str) -> Iterator[None]:
    """``/etc/pverep/pverep.conf`` for ``node`` alone while the block runs: a node-private dir
    (under its own /run) bound over /etc/pverep in the node's mount namespace; the host's file
    is never written."""
    private = "/run/pvelab-etc-pverep"
    lab.exec(node, ["mkdir", "-p", PVEREP_ETC, private], check=True)
    lab.exec(node, ["mount", "--bind", private, PVEREP_ETC], check=True)
    try:
        lab.exec(node, ["tee", f"{PVEREP_ETC}/pverep.conf"], input=text, check=True)
        yield
    finally:
        lab.exec(node, ["umount", PVEREP_ETC], check=True)


@pytest.fixture
def witness(lab: Lab) -> Iterator[str]:
    lab.exec("pve1", ["rm", "-f", RECORD])
    try:
        yield RECORD
    finally:
        snapwitness.uninstall(lab, "pve1")
        lab.exec("pve1", ["rm", "-f", RECORD])


def catalogue(lines: list[str], job: str) -> list[str]:
    keep = ("guest =>", "freeze guest", "thaw guest", "create snapshot", "end replication")
    return [ln.removeprefix(f"{job}: ") for ln in lines if any(k in ln for k in keep)]


def test_running_container_is_frozen_while_the_snapshots_are_taken(
    lab: Lab, vmid: int, witness: str
) -> None:
    guests.create(lab, vmid, "pve1", "lxc", ["64M", "32M"])
    guests.write(lab, vmid, 200_000)
    job = f"{vmid}-0"
    ct = containers.start(lab, "pve1", vmid)
    try:
        snapwitness.install(
            lab, "pve1", witness, containers.cgroup(vmid), containers.beat_file(vmid)
        )
        pverep(lab, "pve1", "create-local-job", job, "pve2")
        run_job(lab, "pve1", job)
        log = job_log(lab, "pve1", job)
        sync = next(ln.split("'")[1] for ln in log if "create snapshot '" in ln)
        v0, v1 = (f"local-zfs:subvol-{vmid}-disk-{i}" for i in (0, 1))
        assert catalogue(log, job) == [
            f"guest => CT {vmid}, running => 1",
            "freeze guest filesystem",
            f"create snapshot '{sync}' on {v0}",
            f"create snapshot '{sync}' on {v1}",
            "thaw guest filesystem",
            "end replication job",
        ]
        seen = [SNAP_RE.match(line) for line in snapwitness.record(lab, "pve1", witness)]
        assert [m.group(1) for m in seen if m] == [
            f"{guests.dataset(f'subvol-{vmid}-disk-{i}')}@{sync}" for i in (0, 1)
        ]
        for m in seen:
            assert m is not None
            assert m.group(2) == "1", "the container was not frozen during the snapshot"
            assert m.group(3) == m.group(4), "a container process ran during the snapshot"
        # thawed afterwards: the heartbeat goes on
        assert not containers.frozen(lab, "pve1", vmid)
        before = containers.beats(lab, "pve1", vmid)
        time.sleep(0.3)
        assert containers.beats(lab, "pve1", vmid) > before
        assert guests.checksum(lab, vmid, "pve2") == guests.checksum(lab, vmid, "pve1")
    finally:
        containers.stop(lab, "pve1", vmid, ct)
        delete_jobs_of(lab, vmid)


def _start_fake_agent(lab: Lab, vmid: int, *flags: str) -> subprocess.Popen[bytes]:
    run = "/var/run/qemu-server"
    argv = [lab.config.python, "-m", "pverep.lab.fakeqga", f"{run}/{vmid}.qga",
            "--record", RECORD, "--pidfile", f"{run}/{vmid}.pid", *flags]  # fmt: skip
    proc = lab.popen("pve1", argv)
    deadline = time.monotonic() + 10
    while lab.exec("pve1", ["test", "-S", f"/var/run/qemu-server/{vmid}.qga"]).returncode:
        assert time.monotonic() < deadline, "fake guest agent did not start"
        time.sleep(0.05)
    return proc


def _stop_fake_agent(lab: Lab, vmid: int, proc: subprocess.Popen[bytes]) -> None:
    pid = lab.exec("pve1", ["cat", f"/var/run/qemu-server/{vmid}.pid"]).stdout.strip()
    if pid.isdigit():  # the pid it recorded, in the node's pid namespace
        lab.exec("pve1", ["kill", pid])
    proc.wait(timeout=10)
    lab.exec("pve1", ["rm", "-f", f"/var/run/qemu-server/{vmid}.pid",
                      f"/var/run/qemu-server/{vmid}.qga"])  # fmt: skip


@contextlib.contextmanager
def vm_with_fake_agent(lab: Lab, vmid: int, witness: str, agent: str, *flags: str) -> Iterator[str]:
    """A qemu guest with ``agent: <agent>``, "running" with the fake agent, the snapshot witness
    installed, and a job to pve2; yields the job id."""
    guest = guests.create(lab, vmid, "pve1", "qemu", ["32M"])
    guest.config.write_text(guest.config.read_text() + f"agent: {agent}\n")
    snapwitness.install(lab, "pve1", witness)
    proc = _start_fake_agent(lab, vmid, *flags)
    job = f"{vmid}-0"
    try:
        pverep(lab, "pve1", "create-local-job", job, "pve2")
        yield job
    finally:
        _stop_fake_agent(lab, vmid, proc)
        delete_jobs_of(lab, vmid)


def test_running_vm_is_frozen_through_the_fake_guest_agent(
    lab: Lab, vmid: int, witness: str
) -> None:
    with vm_with_fake_agent(lab, vmid, witness, "1") as job:
        run_job(lab, "pve1", job)
        log = job_log(lab, "pve1", job)
        sync = next(ln.split("'")[1] for ln in log if "create snapshot '" in ln)
        assert re.fullmatch(rf"guest => VM {vmid}, running => [1-9]\d*", catalogue(log, job)[0])
        assert catalogue(log, job)[1:] == [
            "freeze guest filesystem",
            f"create snapshot '{sync}' on local-zfs:vm-{vmid}-disk-0",
            "thaw guest filesystem",
            "end replication job",
        ]
        events = [ln.split(" frozen=")[0] for ln in snapwitness.record(lab, "pve1", witness)]
        assert events == [
            "guest-ping",
            "guest-fsfreeze-status",
            "guest-fsfreeze-freeze",
            f"zfs snapshot {guests.dataset(f'vm-{vmid}-disk-0')}@{sync}",
            "guest-fsfreeze-thaw",
        ]


def test_hung_guest_agent_costs_only_the_configured_timeouts(
    lab: Lab, vmid: int, witness: str
) -> None:
    hang = ("--hang", "guest-fsfreeze-freeze", "--hang", "guest-fsfreeze-thaw")
    timeouts = "[freeze]\nagent-freeze-timeout = 1\nagent-thaw-timeout = 1\n"
    with (
        vm_with_fake_agent(lab, vmid, witness, "1,freeze-fs=1", *hang) as job,
        private_pverep_conf(lab, "pve1", timeouts),
    ):
        started = time.monotonic()
        res = run_job(lab, "pve1", job)
        took = time.monotonic() - started
        log = job_log(lab, "pve1", job)
        assert "thaw guest filesystem" in catalogue(log, job)
        assert catalogue(log, job)[-1] == "end replication job"
        # freeze: 1 s without an answer, then the status answers "thawed" at once; thaw: 1 s
        assert "unable to freeze guest fs - unexpected status 'thawed'" in res.stderr
        assert "guest-fsfreeze-thaw problems - VM" in res.stderr
        assert "still waiting on guest fs freeze - timeout in 0.0833333 minutes" in res.stdout
        events = [ln.split(" frozen=")[0] for ln in snapwitness.record(lab, "pve1", witness)]
        assert events[2] == "guest-fsfreeze-freeze" and events[-1] == "guest-fsfreeze-thaw"
        print(f"\n[figures] hung agent (1 s timeouts): run took {took:.2f}s")
