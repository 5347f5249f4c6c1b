"""One lab node as a QEMU/TCG guest: its disks, virtiofs daemons, QEMU process and QMP.

Files live in ``NODE_DIR/vm/``: ``root.qcow2`` (copy-on-write over the cached ``base.img``),
``rpool.raw`` (sparse; the guest's pool, serial ``pvelab-rpool``), ``console.log``, the QMP and
vhost-user sockets, and ``procs.json`` with every process started here as (pid, start time),
which is all ``down`` ever signals.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from pverep.lab.config import LabError
from pverep.lab.openzfs.image import Image
from pverep.lab.procs import ProcRecord, load_records, record, save_records

MEM_MB = int(os.environ.get("PVEREP_OPENZFS_MEM_MB", "1280"))
POOL_DISK_SIZE = 4 << 30  # sparse: only what the guest writes is allocated
QEMU = "qemu-system-x86_64"
VIRTIOFSD_CANDIDATES = (
    "/var/cache/pverep/virtiofsd/bin/virtiofsd",
    "/usr/libexec/virtiofsd",
    "/usr/lib/qemu/virtiofsd",
)


def virtiofsd_path() -> str:
    for cand in (os.environ.get("PVEREP_VIRTIOFSD", ""), *VIRTIOFSD_CANDIDATES):
        if cand and os.access(cand, os.X_OK):
            return cand
    found = shutil.which("virtiofsd")
    if found is None:
        raise LabError("virtiofsd not found (make sysdeps-openzfs builds it)")
    return found


@dataclass(frozen=True)
class Share:
    """A host directory exported to the guest under a virtiofs tag."""

    tag: str
    source: Path
    cache: str  # virtiofsd --cache: "never" where several guests write the same files
    readonly: bool


@dataclass(frozen=True)
class VmSpec:
    name: str
    vm_dir: Path
    tap: str
    mac: str
    shares: tuple[Share, ...]


#: Records its own PID, then becomes the daemon (fixed script; paths and argv are arguments).
PIDFILE_THEN_EXEC = 'echo $$ > "$0"; exec "$@"'


def _spawn_virtiofsd(spec: VmSpec, share: Share) -> ProcRecord:
    """Start one virtiofsd detached from us (``setsid --fork``: no child of ours is left to
    reap or to outlive its Popen), and record it by the PID it wrote itself."""
    sock = spec.vm_dir / f"vfs-{share.tag}.sock"
    pidfile = spec.vm_dir / f"virtiofsd-{share.tag}.pid"
    logname = spec.vm_dir / f"virtiofsd-{share.tag}.log"
    sock.unlink(missing_ok=True)
    pidfile.unlink(missing_ok=True)
    argv = [virtiofsd_path(), f"--socket-path={sock}", f"--shared-dir={share.source}",
            f"--cache={share.cache}", "--sandbox=chroot", "--log-level=error"]  # fmt: skip
    if share.readonly:
        argv.append("--readonly")
    with logname.open("ab") as log:
        subprocess.run(
            ["setsid", "--fork", "sh", "-c", PIDFILE_THEN_EXEC, str(pidfile), *argv],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, check=True,
        )  # fmt: skip
    rec: ProcRecord | None = None
    for _ in range(200):
        if rec is None and pidfile.exists() and pidfile.read_text().strip():
            rec = record(int(pidfile.read_text()))
            if rec is None:
                break
        if rec is not None and sock.exists():
            return rec
        if rec is not None and not rec.is_running():
            break
        time.sleep(0.05)
    raise LabError(f"{spec.name}: virtiofsd for {share.tag} did not start (see {logname})")


def qemu_argv(spec: VmSpec, image: Image) -> list[str]:
    d = spec.vm_dir
    argv = [
        QEMU, "-name", spec.name, "-accel", "tcg", "-cpu", "max", "-smp", "1",
        "-m", str(MEM_MB), "-nodefaults", "-no-user-config", "-display", "none",
        "-no-reboot", "-rtc", "base=utc", "-daemonize", "-pidfile", str(d / "qemu.pid"),
        "-chardev", f"file,id=con,path={d / 'console.log'}", "-serial", "chardev:con",
        "-qmp", f"unix:{d / 'qmp.sock'},server=on,wait=off",
        "-object", "rng-random,id=rng0,filename=/dev/urandom",
        "-device", "virtio-rng-pci,rng=rng0",
        "-kernel", str(image.kernel), "-initrd", str(image.initrd),
        "-append", "console=ttyS0 root=/dev/vda rw noresume net.ifnames=0 panic=-1",
        "-drive", f"file={d / 'root.qcow2'},if=none,id=root,format=qcow2,cache=unsafe",
        "-device", "virtio-blk-pci,drive=root,serial=pvelab-root",
        "-drive",
        f"file={d / 'rpool.raw'},if=none,id=rpool,format=raw,cache=unsafe,discard=unmap",
        "-device", "virtio-blk-pci,drive=rpool,serial=pvelab-rpool",
        "-netdev", f"tap,id=n0,ifname={spec.tap},script=no,downscript=no",
        "-device", f"virtio-net-pci,netdev=n0,mac={spec.mac}",
        # vhost-user (virtiofs) needs the guest RAM in shared memory; works with TCG
        "-object", f"memory-backend-memfd,id=mem,size={MEM_MB}M,share=on",
        "-numa", "node,memdev=mem",
    ]  # fmt: skip
    for share in spec.shares:
        sock = d / f"vfs-{share.tag}.sock"
        chardev = f"vfs-{share.tag}"
        argv += ["-chardev", f"socket,id={chardev},path={sock}",
                 "-device", f"vhost-user-fs-pci,chardev={chardev},tag={share.tag}"]  # fmt: skip
    return argv


def start(spec: VmSpec, image: Image) -> None:
    """Disks (kept if present), virtiofs daemons, then QEMU (daemonized); all recorded."""
    d = spec.vm_dir
    d.mkdir(parents=True, exist_ok=True)
    if not (d / "root.qcow2").exists():
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(image.base),
             str(d / "root.qcow2")],
            check=True, capture_output=True,
        )  # fmt: skip
    if not (d / "rpool.raw").exists():
        with (d / "rpool.raw").open("wb") as fh:
            fh.truncate(POOL_DISK_SIZE)
    records: dict[str, ProcRecord] = {}
    procs = d / "procs.json"
    try:
        for share in spec.shares:
            records[f"virtiofsd-{share.tag}"] = _spawn_virtiofsd(spec, share)
            save_records(procs, records)
        (d / "console.log").unlink(missing_ok=True)
        result = subprocess.run(
            qemu_argv(spec, image), capture_output=True, text=True, stdin=subprocess.DEVNULL
        )
        if result.returncode != 0:
            raise LabError(f"{spec.name}: qemu failed: {result.stderr.strip()}")
        qemu = record(int((d / "qemu.pid").read_text()))
        if qemu is None:
            raise LabError(f"{spec.name}: qemu exited at once (see {d / 'console.log'})")
        records["qemu"] = qemu
    finally:
        save_records(procs, records)


def processes(vm_dir: Path) -> dict[str, ProcRecord]:
    return load_records(vm_dir / "procs.json")


def running(vm_dir: Path) -> bool:
    rec = processes(vm_dir).get("qemu")
    return rec is not None and rec.is_running()


def qmp(vm_dir: Path, command: str) -> dict[str, object]:
    """Run one QMP command (``stop``, ``cont``, ``query-status``) and return its answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        try:
            sock.connect(str(vm_dir / "qmp.sock"))
        except OSError as err:
            raise LabError(f"QMP of {vm_dir.parent.name}: {err}") from None
        stream = sock.makefile("rwb")
        stream.readline()  # greeting
        answer: dict[str, object] = {}
        for cmd in ("qmp_capabilities", command):
            stream.write(json.dumps({"execute": cmd}).encode() + b"\n")
            stream.flush()
            while True:  # skip asynchronous events
                answer = json.loads(stream.readline() or b"{}")
                if "event" not in answer:
                    break
            if "error" in answer:
                raise LabError(f"QMP {cmd}: {answer['error']}")
        return answer


def kill_all(vm_dir: Path) -> list[ProcRecord]:
    """SIGKILL QEMU and its virtiofs daemons (recorded ones only); returns what was signalled."""
    recs = list(processes(vm_dir).values())
    for rec in sorted(recs, key=lambda r: r.pid):
        rec.kill()
    return recs
