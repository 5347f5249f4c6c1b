"""Freezing a running container with the cgroup v2 freezer, as pve-container does through LXC.

Freeze: ``1`` into ``<cgroup>/cgroup.freeze`` and wait (30 s, LXC's freeze timeout in
pve-container) until ``cgroup.events`` says ``frozen 1``: then no process of the container
runs. Then every filesystem mounted in the container's mount namespace is synced (``syncfs``,
pve-container's sync_container_namespace), so the snapshot holds what the processes wrote.
Thaw: ``0`` and wait for ``frozen 0``. (FIFREEZE of mountpoints is only for storages whose
snapshots need it; zfspool's do not.)
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from pverep.errors import PverepError

Say = Callable[[str], None]

#: LXC's freeze/unfreeze timeout as pve-container passes it.
FREEZE_TIMEOUT = 30.0
#: The kernel's process view (not a file pverep owns, so not under Paths' root).
PROC = Path("/proc")
_POLL = 0.01


class ContainerFreezer:
    """The freezer of one container's cgroup directory."""

    def __init__(
        self,
        vmid: int,
        cgroup: Path,
        *,
        proc: Path = PROC,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.vmid = vmid
        self.cgroup = cgroup
        self.proc = proc
        self._clock = clock
        self._sleep = sleep

    def frozen(self) -> bool:
        """The kernel's word (``cgroup.events``): every process of the cgroup is frozen."""
        try:
            text = (self.cgroup / "cgroup.events").read_text()
        except OSError:
            return False
        return "frozen 1" in text.splitlines()

    def _set(self, frozen: bool, timeout: float) -> None:
        verb = "freeze" if frozen else "thaw"
        try:
            (self.cgroup / "cgroup.freeze").write_text("1\n" if frozen else "0\n")
        except OSError as err:
            raise PverepError(
                f"unable to {verb} container {self.vmid} - {err.strerror or err}"
            ) from None
        deadline = self._clock() + timeout
        while self.frozen() != frozen:
            if self._clock() >= deadline:
                raise PverepError(
                    f"unable to {verb} container {self.vmid} - timeout after {timeout:g} s"
                )
            self._sleep(_POLL)

    def freeze(self, timeout: float = FREEZE_TIMEOUT) -> None:
        self._set(True, timeout)

    def thaw(self, timeout: float = FREEZE_TIMEOUT) -> None:
        self._set(False, timeout)

    def pids(self) -> Iterator[int]:
        """Processes of the container (its cgroup and every child cgroup), parents first."""
        for procs in sorted(self.cgroup.rglob("cgroup.procs"), key=lambda p: len(p.parts)):
            with contextlib.suppress(OSError):
                for line in procs.read_text().split():
                    if line.isdigit() and int(line) > 0:
                        yield int(line)

    def sync_filesystems(self, warn: Say) -> None:
        """``syncfs`` of every mount in the container's mount namespace, reached through
        ``/proc/<pid>/root`` of one of its processes (so nothing has to enter the namespace)."""
        pid = next(self.pids(), None)
        if pid is None:
            warn(f"failed to sync container namespace - no process in container {self.vmid}")
            return
        root = self.proc / str(pid) / "root"
        try:
            mounts = (self.proc / str(pid) / "mountinfo").read_text()
        except OSError as err:
            warn(f"failed to sync container namespace - {err.strerror or err}")
            return
        libc = ctypes.CDLL(None, use_errno=True)
        for line in mounts.splitlines():
            fields = line.split()
            if len(fields) < 5:
                continue
            mountpoint = _unescape(fields[4])
            flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
            try:
                fd = os.open(f"{root}{mountpoint}", flags)
            except OSError:
                continue  # a mount shadowed or gone: nothing to sync there
            try:
                if libc.syncfs(fd) != 0:
                    errno = ctypes.get_errno()
                    warn(f"failed to sync '{mountpoint}' of container {self.vmid} - "
                         f"{os.strerror(errno)}")  # fmt: skip
            finally:
                os.close(fd)


def _unescape(field: str) -> str:
    """mountinfo escapes blanks, tabs, newlines and backslashes as octal ``\\ooo``."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)
