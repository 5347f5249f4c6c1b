"""Freeze a whole node ("hung node" tests) with the cgroup freezer.

Each node's init joins its own cgroup before it starts anything, so every process of the node
is in it. cgroup v1 (``freezer.state``) and v2 (``cgroup.freeze``) are supported; without
either, SIGSTOP/SIGCONT of every process in the node's PID namespace stands in.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from pverep.lab.config import LabConfig

CGROUP_ROOT = Path("/sys/fs/cgroup")


def _base(cfg: LabConfig) -> tuple[Path, str] | None:
    """(parent cgroup dir of this lab, version) or None when no freezer is available."""
    if (CGROUP_ROOT / "freezer").is_dir() and not (CGROUP_ROOT / "cgroup.controllers").exists():
        return CGROUP_ROOT / "freezer" / cfg.cgroup_name, "v1"
    if (CGROUP_ROOT / "cgroup.controllers").exists():
        return CGROUP_ROOT / cfg.cgroup_name, "v2"
    return None


def node_cgroup(cfg: LabConfig, node: str) -> Path | None:
    base = _base(cfg)
    return None if base is None else base[0] / node


def create(cfg: LabConfig) -> None:
    for node in cfg.nodes:
        path = node_cgroup(cfg, node)
        if path is not None:
            with contextlib.suppress(OSError):
                path.mkdir(parents=True, exist_ok=True)


def join(cfg: LabConfig, node: str) -> None:
    """Called by the node init (as the node's first process); children inherit the cgroup."""
    path = node_cgroup(cfg, node)
    if path is not None and (path / "cgroup.procs").exists():
        # "0" means "the writer": a PID written from inside a PID namespace would be
        # interpreted in the cgroup fs's namespace, i.e. the wrong process.
        (path / "cgroup.procs").write_text("0\n")


def set_frozen(cfg: LabConfig, node: str, frozen: bool, init_pid: int) -> None:
    base = _base(cfg)
    path = node_cgroup(cfg, node)
    if base is not None and path is not None:
        if base[1] == "v1" and (path / "freezer.state").exists():
            (path / "freezer.state").write_text("FROZEN\n" if frozen else "THAWED\n")
            return
        if base[1] == "v2" and (path / "cgroup.freeze").exists():
            (path / "cgroup.freeze").write_text("1\n" if frozen else "0\n")
            return
    _signal_namespace(init_pid, signal.SIGSTOP if frozen else signal.SIGCONT)


def _signal_namespace(init_pid: int, sig: int) -> None:
    try:
        target_ns = os.readlink(f"/proc/{init_pid}/ns/pid")
    except OSError:
        return
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == init_pid:
            continue
        with contextlib.suppress(OSError):
            if os.readlink(entry / "ns" / "pid") == target_ns:
                os.kill(int(entry.name), sig)


def thaw_all(cfg: LabConfig) -> None:
    """A frozen process cannot die: thaw before killing."""
    base = _base(cfg)
    if base is None:
        return
    for node in cfg.nodes:
        path = base[0] / node
        with contextlib.suppress(OSError):
            if base[1] == "v1" and (path / "freezer.state").exists():
                (path / "freezer.state").write_text("THAWED\n")
            elif base[1] == "v2" and (path / "cgroup.freeze").exists():
                (path / "cgroup.freeze").write_text("0\n")


def _v2_root() -> Path | None:
    """The cgroup v2 hierarchy: the root on a v2 host, ``unified`` on a hybrid one."""
    for root in (CGROUP_ROOT, CGROUP_ROOT / "unified"):
        if (root / "cgroup.controllers").exists():
            return root
    return None


def remove_container_views(cfg: LabConfig) -> None:
    """The per-node cgroup v2 views lab/containers.py made (``<v2 root>/<lab cgroup>/…``),
    deepest first; containers.stop normally removes them, this is for a crashed test."""
    root = _v2_root()
    top = None if root is None else root / cfg.cgroup_name
    if top is None or not top.is_dir():
        return
    dirs = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
    for path in [*dirs, top]:
        with contextlib.suppress(OSError):
            path.rmdir()


def remove(cfg: LabConfig) -> None:
    remove_container_views(cfg)
    base = _base(cfg)
    if base is None or not base[0].is_dir():
        return
    for path in [*base[0].iterdir(), base[0]]:
        if not path.is_dir():
            continue
        for _ in range(100):  # emptied cgroups can stay busy for a moment after a kill
            try:
                path.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.01)
