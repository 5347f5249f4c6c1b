"""What all labs on this machine share: one lock, a registry of labs, host mount-point dirs.

Node mount namespaces bind private directories over host paths such as ``/etc/pve`` or
``/rpool``; those mount points must exist on the host. ``up`` creates the missing ones and
lists them in a machine-wide file, and the last lab to go down removes them again. Never
earlier: since Linux 3.18 an ``rmdir`` on the host detaches every mount on that directory in
*all other* mount namespaces, i.e. it would silently unmount another running lab's /etc/pve.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

from pverep.lab.config import LabError
from pverep.lab.procs import load_records

STATE_DIR = Path("/run/pverep-lab")
LOCK_TIMEOUT = 120.0

#: Host paths that nodes mount over (the pool's /rpool included).
MOUNT_POINTS = (
    "/etc/pve",
    "/etc/zfs",
    "/var/lib/zfs",
    "/var/lib/pve-manager",
    "/var/log/pve",
    "/var/lib/vz",
    "/root/.ssh",
    "/rpool",
)


@contextlib.contextmanager
def machine_lock(timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """Serialise the parts of up/down that allocate or free machine-wide things."""
    STATE_DIR.mkdir(mode=0o755, exist_ok=True)
    fd = os.open(STATE_DIR / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LabError("another lab is starting or stopping; gave up waiting") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)


def _entry(lab_dir: Path) -> Path:
    digest = hashlib.sha256(str(lab_dir).encode()).hexdigest()[:16]
    return STATE_DIR / "labs" / digest


def register(lab_dir: Path) -> None:
    (STATE_DIR / "labs").mkdir(parents=True, exist_ok=True)
    _entry(lab_dir).write_text(f"{lab_dir}\n")


def unregister(lab_dir: Path) -> None:
    _entry(lab_dir).unlink(missing_ok=True)


def lab_is_running(lab_dir: Path) -> bool:
    """Does any process recorded by that lab still run?"""
    nodes = lab_dir / "nodes"
    if not nodes.is_dir():
        return False
    for procs in nodes.glob("*/procs.json"):
        if any(rec.is_running() for rec in load_records(procs).values()):
            return True
    return False


def other_labs(lab_dir: Path) -> list[Path]:
    """Registered labs other than ``lab_dir`` that still run; stale entries are pruned."""
    running = []
    for entry in sorted((STATE_DIR / "labs").glob("*")):
        other = Path(entry.read_text().strip())
        if other == lab_dir:
            continue
        if lab_is_running(other):
            running.append(other)
        else:
            entry.unlink(missing_ok=True)
    return running


def ensure_mount_points() -> None:
    """Create missing host mount-point dirs, remembering which ones this machine's labs made."""
    created = STATE_DIR / "created-dirs"
    for target in MOUNT_POINTS:
        missing: list[Path] = []
        path = Path(target)
        while not path.exists():
            missing.insert(0, path)
            path = path.parent
        for path in missing:
            path.mkdir()
            with created.open("a") as out:
                out.write(f"{path}\n")


def remove_created_dirs(lab_dir: Path) -> None:
    """Remove the mount-point dirs labs created, unless another lab still runs."""
    if other_labs(lab_dir):
        return
    created = STATE_DIR / "created-dirs"
    try:
        paths = created.read_text().split("\n")
    except FileNotFoundError:
        return
    for raw in reversed(paths):
        if not raw:
            continue
        path = Path(raw)
        if path.is_dir() and not os.path.ismount(path):
            with contextlib.suppress(OSError):  # not empty: someone else put files there
                path.rmdir()
    created.unlink(missing_ok=True)
