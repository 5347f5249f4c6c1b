"""A "running" container in a lab node: a real cgroup v2 ``lxc/<vmid>`` with a real process.

No LXC runs here; what pverep looks at is what LXC leaves on PVE: the cgroup
``/sys/fs/cgroup/lxc/<vmid>`` (with the payload in ``ns``) holding the container's processes.
Each node gets its own view of the cgroup v2 hierarchy: its ``/sys/fs/cgroup`` is a bind of
``<v2 root>/<lab cgroup>/<node>``, so two labs (or nodes) never share a container cgroup.

The process put there is a heartbeat (``python -m pverep.lab.containers beat``): it bumps a
counter in a file every few milliseconds, so a test can tell whether it ran during a moment.
Stopping uses ``cgroup.kill`` (every process of the container cgroup, nothing else).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from pverep.lab.config import LabError
from pverep.lab.control import Lab

CGROUP = "/sys/fs/cgroup"
_ENSURE_VIEW = """
import os, subprocess, sys
root, sub = sys.argv[1], sys.argv[2]
if not os.path.exists(os.path.join(root, "cgroup.freeze")) and not os.path.exists(
        os.path.join(root, "cgroup.subtree_control")):
    subprocess.run(["mount", "-t", "cgroup2", "cgroup2", root], check=True)
    os.makedirs(os.path.join(root, sub), exist_ok=True)
    subprocess.run(["mount", "--bind", os.path.join(root, sub), root], check=True)
"""


def cgroup(vmid: int) -> str:
    """The container's cgroup as the node sees it (pverep's ``Paths.ct_cgroup``)."""
    return f"{CGROUP}/lxc/{vmid}"


def beat_file(vmid: int) -> str:
    return f"/run/pvelab-ct-{vmid}.beat"


def ensure_view(lab: Lab, node: str) -> None:
    """Mount the node's own part of the cgroup v2 hierarchy on its /sys/fs/cgroup (once)."""
    sub = f"{lab.config.cgroup_name}/{node}"
    lab.exec(node, [lab.config.python, "-c", _ENSURE_VIEW, CGROUP, sub], check=True)


def start(lab: Lab, node: str, vmid: int) -> subprocess.Popen[bytes]:
    """Create the container's cgroup and start its heartbeat process in ``ns``; pass the
    returned handle to ``stop``."""
    ensure_view(lab, node)
    lab.exec(node, ["mkdir", "-p", f"{cgroup(vmid)}/ns"], check=True)
    proc = lab.popen(
        node,
        [lab.config.python, "-m", "pverep.lab.containers", "beat",
         f"{cgroup(vmid)}/ns/cgroup.procs", beat_file(vmid)],
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while beats(lab, node, vmid) < 2:
        if time.monotonic() > deadline:
            stop(lab, node, vmid, proc)
            raise LabError(f"container {vmid} on {node}: heartbeat did not start")
        time.sleep(0.05)
    return proc


def beats(lab: Lab, node: str, vmid: int) -> int:
    got = lab.exec(node, ["cat", beat_file(vmid)])
    text = got.stdout.strip() if got.returncode == 0 else ""
    return int(text) if text.isdigit() else 0


def frozen(lab: Lab, node: str, vmid: int) -> bool:
    got = lab.exec(node, ["cat", f"{cgroup(vmid)}/cgroup.events"], check=True)
    return "frozen 1" in got.stdout.splitlines()


def stop(lab: Lab, node: str, vmid: int, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Thaw, kill every process of the container cgroup, remove its cgroups, and take the
    node's cgroup view down again (removing the view's cgroups where nothing else uses them)."""
    sub = f"{lab.config.cgroup_name}/{node}"
    lab.exec(node, [lab.config.python, "-c", _STOP, CGROUP, f"lxc/{vmid}", sub], check=True)
    if proc is not None:
        proc.wait(timeout=10)


_STOP = """
import os, subprocess, sys, time
root, ct, sub = sys.argv[1], sys.argv[2], sys.argv[3]
path = os.path.join(root, ct)
def rmdir(p, tries=500):
    for _ in range(tries):  # a killed cgroup's processes take a moment to leave it
        try:
            os.rmdir(p)
            return True
        except FileNotFoundError:
            return True
        except OSError:
            time.sleep(0.01)
    return False
if os.path.isdir(path):
    with open(os.path.join(path, "cgroup.freeze"), "w") as f:
        f.write("0")
    with open(os.path.join(path, "cgroup.kill"), "w") as f:
        f.write("1")
    rmdir(os.path.join(path, "ns"))
    rmdir(path)
if os.path.exists(os.path.join(root, "cgroup.subtree_control")):
    others = [d for d in os.listdir(os.path.join(root, "lxc")) if d.isdigit()]
    if not others and rmdir(os.path.join(root, "lxc"), 100):  # else: another container runs
        subprocess.run(["umount", root], check=True)  # the bind of the node's view
        for p in (os.path.join(root, sub), os.path.dirname(os.path.join(root, sub))):
            rmdir(p, 1)  # on a pure v2 host this is the node's own (busy) cgroup: stays
        subprocess.run(["umount", root], check=True)  # the cgroup2 mount below it
"""


def _beat(procs: str, beat: str) -> None:
    with open(procs, "w") as f:  # "0": the writer itself joins the container cgroup
        f.write("0")
    fd = os.open(beat, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    n = 0
    while True:
        n += 1
        os.pwrite(fd, f"{n:020d}".encode(), 0)
        time.sleep(0.002)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "beat":
        _beat(sys.argv[2], sys.argv[3])
    raise SystemExit("usage: python -m pverep.lab.containers beat CGROUP_PROCS BEAT_FILE")
