"""PID 1 of a lab node: builds the node's private world, starts its daemons, reaps orphans.

Started by ``up`` as ``setsid --fork unshare --mount --uts --ipc --net --pid --fork --kill-child
--propagation private -- PYTHON -m pverep.lab.nodeinit _node_init LAB_DIR NODE`` (the
``_node_init`` argument is the marker lab.sh also uses to spot running labs). Everything here
happens inside the node's new namespaces. Killing this process (SIGKILL) takes the whole node
with it: the kernel kills every process of the PID namespace, and the mount and network
namespaces vanish with their FUSE mounts and veth.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from pverep.lab import freezer, runpaths
from pverep.lab.clusterfs import NODE_RUN
from pverep.lab.config import POOL, LabConfig, LabError
from pverep.lab.procs import ProcRecord, read_stat, save_records

#: The real zfs binary stays reachable here once the compat shim covers /usr/sbin/zfs.
ZFS_REAL = f"{NODE_RUN}/zfs.real"
ZFS_BIN = "/usr/sbin/zfs"
#: Node dir entry -> the host path it covers in the node (config.NODE_PRIVATE_DIRS lists them).
NODE_BINDS = {
    "var-lib-zfs": "/var/lib/zfs",
    "etc-zfs": "/etc/zfs",
    "etc-ssh": "/etc/ssh",
    "root-ssh": "/root/.ssh",
    "var-lib-pve-manager": "/var/lib/pve-manager",
    "var-log-pve": "/var/log/pve",
    "var-lib-vz": "/var/lib/vz",
    "hostname": "/etc/hostname",
    "tmp": "/tmp",
    # The pool's top mountpoint must be a per-node inode: `zpool create` does
    # rmdir("/rpool"); mkdir("/rpool"), and an rmdir detaches the mounts on that dir in
    # ALL other mount namespaces. On a bind mount the rmdir fails (EBUSY), harmlessly.
    "pool-mnt": f"/{POOL}",
}


def _run(argv: list[str]) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise LabError(f"{' '.join(argv)}: {result.stderr.strip() or result.returncode}")


def _bind(src: Path | str, dst: str) -> None:
    _run(["mount", "--bind", str(src), dst])


def _wait_for(what: str, test: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not test():
        if time.monotonic() > deadline:
            raise LabError(f"timed out waiting for {what}")
        time.sleep(0.01)


def record_self(cfg: LabConfig, node: str) -> None:
    """Save host PIDs of this init and its unshare wrapper (/proc is still the host's here)."""
    pid = int(os.readlink("/proc/self"))
    mine = read_stat(pid)
    if mine is None:
        raise LabError("cannot read own /proc entry")
    records = {"init": ProcRecord(pid, mine[1])}
    parent = read_stat(mine[2])
    if parent is not None:
        records["wrapper"] = ProcRecord(mine[2], parent[1])
    save_records(cfg.node_dir(node) / "procs.json", records)


def drop_foreign_fuse_mounts() -> None:
    """The new mount ns copied the host's FUSE mounts (another zfs-fuse's pools); let them go,
    or this node would pin that daemon's filesystems."""
    targets = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if fields[2].startswith("fuse") or fields[2] == "fusectl":
            targets.append(fields[1].encode().decode("unicode_escape"))
    for target in sorted(targets, reverse=True):
        subprocess.run(["umount", "-l", target], capture_output=True, check=False)


def build_mounts(cfg: LabConfig, node: str) -> None:
    nd = cfg.node_dir(node)
    _run(["mount", "-t", "proc", "-o", "nosuid,nodev,noexec", "proc", "/proc"])
    subprocess.run(["umount", "-l", "/sys"], capture_output=True, check=False)
    _run(["mount", "-t", "sysfs", "-o", "nosuid,nodev,noexec", "sysfs", "/sys"])
    _run(["mount", "-t", "tmpfs", "-o", "mode=0755,nosuid,nodev,size=64m", "tmpfs", "/run"])
    for sub in ("lock", "sshd", "pvelab/bin"):
        Path("/run", sub).mkdir(parents=True, exist_ok=True)
    Path("/run/lock").chmod(0o1777)
    for src, dst in NODE_BINDS.items():
        _bind(nd / src, dst)
    _bind(cfg.dir / "hosts", "/etc/hosts")
    _bind(cfg.etc_pve, "/etc/pve")
    # A minimal root shell profile: the host's may put other Pythons or tools first on PATH.
    for rc in ("/root/.bashrc", "/root/.profile"):
        if Path(rc).is_file():
            _bind(cfg.bin_dir / "bashrc", rc)
    # pmxcfs' node-relative entries, and `pverep` of the environment that started the lab
    run = Path(NODE_RUN)
    (run / "local").symlink_to(f"/etc/pve/nodes/{node}")
    (run / "qemu-server").symlink_to(f"/etc/pve/nodes/{node}/qemu-server")
    (run / "lxc").symlink_to(f"/etc/pve/nodes/{node}/lxc")
    (run / "members").symlink_to(nd / "members")
    (run / "bin" / "pverep").symlink_to(cfg.bin_dir / "pverep")
    (run / "bin" / "pvesh").symlink_to(cfg.bin_dir / "pvesh")  # the FAKE pvesh
    # zfs compat shim over the real binary (this node only)
    Path(ZFS_REAL).touch()
    _bind(ZFS_BIN, ZFS_REAL)
    _bind(cfg.bin_dir / "zfs", ZFS_BIN)


def build_network(cfg: LabConfig, node: str) -> None:
    _run(["hostname", node])
    _run(["ip", "link", "set", "lo", "up"])
    # `up` creates eth0 (the veth peer) right inside this netns once it knows our PID
    _wait_for("eth0", Path("/sys/class/net/eth0").exists)
    _run(["ip", "addr", "add", f"{cfg.node_ip(node)}/24", "dev", "eth0"])
    _run(["ip", "link", "set", "eth0", "up"])


def start_zfs(cfg: LabConfig, node: str) -> None:
    nd = cfg.node_dir(node)
    log = (nd / "log" / "zfs-fuse.log").open("ab")
    # --no-daemon is required: as a child of PID 1 zfs-fuse believes it is a daemon already
    # (getppid() == 1) and would never return from daemonising.
    proc = subprocess.Popen(
        ["zfs-fuse", "--no-daemon", "--no-kstat-mount"],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    Path("/run/zfs-fuse.pid").write_text(f"{proc.pid}\n")

    def pool_daemon_ready() -> bool:
        probe = subprocess.run(["zpool", "list"], capture_output=True, check=False)
        return probe.returncode == 0

    _wait_for("zfs-fuse", pool_daemon_ready)
    _run(["zpool", "create", "-f", "-m", f"/{POOL}", POOL, str(nd / f"{POOL}.img")])
    _run([ZFS_REAL, "set", "compression=on", POOL])
    _run([ZFS_REAL, "create", f"{POOL}/data"])
    # a second zfspool storage (local-zfs2) for guests with disks on two storages
    _run([ZFS_REAL, "create", f"{POOL}/data2"])


def start_sshd(cfg: LabConfig, node: str) -> None:
    nd = cfg.node_dir(node)
    subprocess.Popen(
        ["/usr/sbin/sshd", "-D", "-E", str(nd / "log" / "sshd.log")],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    address = (cfg.node_ip(node), 22)

    def listening() -> bool:
        try:
            socket.create_connection(address, timeout=0.2).close()
        except OSError:
            return False
        return True

    _wait_for("sshd", listening)


def _reap(_sig: int, _frame: FrameType | None) -> None:
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def serve() -> None:
    """Stay alive as PID 1 and reap orphans until killed."""
    signal.signal(signal.SIGCHLD, _reap)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    _reap(signal.SIGCHLD, None)
    while True:
        signal.pause()


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] != "_node_init":
        print("usage: python -m pverep.lab.nodeinit _node_init LAB_DIR NODE", file=sys.stderr)
        return 2
    lab_dir, node = Path(argv[1]), argv[2]
    os.closerange(3, 1 << 16)  # an inherited pipe would hang whoever captures `up`'s output
    cfg = LabConfig.load(lab_dir)
    nd = cfg.node_dir(node)
    try:
        record_self(cfg, node)
        freezer.join(cfg, node)
        drop_foreign_fuse_mounts()
        # This Python (venv, interpreter, checkout) may live under a dir the mounts below
        # make node-private (a clone under /tmp): carry it past them (pverep.lab.runpaths).
        staged = runpaths.stage(runpaths.hidden_paths(runpaths.needed_paths()), nd / "carry")
        build_mounts(cfg, node)
        runpaths.restore(staged)
        build_network(cfg, node)
        start_zfs(cfg, node)
        start_sshd(cfg, node)
    except Exception as err:
        traceback.print_exc()
        with contextlib.suppress(OSError):
            (nd / "failed").write_text(f"{err}\n")
        return 1
    (nd / "ready").touch()
    serve()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
