"""The lab as one object: ``Lab(dir).up(3)``, ``exec``, ``cut``/``heal``, ``shape``, ``freeze``.

This is the Python API the CLI and the tests use. A node is reached by entering the
namespaces of its init process (recorded PID, verified by start time) with ``nsenter``.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pverep.lab import clusterfs, freezer, hostdirs, network, runpaths, sshsetup, zfs_compat
from pverep.lab.config import (
    ARC_MB,
    ENGINES,
    MAX_NODES,
    POOL,
    POOL_SIZE,
    LabConfig,
    LabError,
    default_dir,
    node_name,
)
from pverep.lab.openzfs import engine as openzfs_engine
from pverep.lab.openzfs import image as openzfs_image
from pverep.lab.openzfs import vm as openzfs_vm
from pverep.lab.procs import ProcRecord, load_records

#: Marks a directory as a lab dir; ``down`` deletes nothing that lacks it.
MARKER = ".pverep-lab"
UP_TIMEOUT = 60.0
NSENTER = ["nsenter", "--mount", "--uts", "--ipc", "--net", "--pid"]
REQUIRED_TOOLS = (
    *("zfs-fuse", "zpool", "zfs", "sshd", "ssh", "ssh-keygen"),
    *("unshare", "nsenter", "setsid", "ip", "tc", "mount"),
)
#: Runs the command in the caller's cwd if the node has it, else in / (fixed script, data as args).
CD_THEN_EXEC = 'cd -- "$1" 2>/dev/null || cd /; shift; exec "$@"'


@dataclass(frozen=True)
class NodeStatus:
    node: str
    running: bool
    pid: int | None
    ip: str
    flags: tuple[str, ...]


class Lab:
    """One lab cluster, identified by its directory (default: ``$PVEREP_LAB_DIR`` or
    ``/var/tmp/pverep-lab``)."""

    def __init__(self, lab_dir: str | os.PathLike[str] | None = None) -> None:
        self.dir = default_dir(lab_dir)

    # ------------------------------------------------------------------ state
    @property
    def config(self) -> LabConfig:
        return LabConfig.load(self.dir)

    @property
    def nodes(self) -> tuple[str, ...]:
        return self.config.nodes

    def node_ip(self, node: str) -> str:
        return self.config.node_ip(node)

    def is_up(self) -> bool:
        try:
            cfg = self.config
        except LabError:
            return False
        return all(self._node_running(cfg, n) for n in cfg.nodes)

    def _node_running(self, cfg: LabConfig, node: str) -> bool:
        if cfg.engine == "openzfs":
            return openzfs_vm.running(openzfs_engine.vm_dir(cfg, node))
        return self._init_record(cfg, node) is not None

    @property
    def python_argv(self) -> list[str]:
        """How to run this checkout's Python on a node (``[*python_argv, "-m", ...]``)."""
        cfg = self.config
        if cfg.engine == "openzfs":
            return [f"{clusterfs.NODE_RUN}/bin/python"]
        return [cfg.python]

    def _init_record(self, cfg: LabConfig, node: str) -> ProcRecord | None:
        rec = load_records(cfg.node_dir(node) / "procs.json").get("init")
        return rec if rec is not None and rec.is_running() else None

    def init_pid(self, node: str) -> int:
        """Host PID of the node's init, verified against its recorded start time."""
        cfg = self.config
        cfg.check_node(node)
        rec = self._init_record(cfg, node)
        if rec is None:
            raise LabError(f"node {node} is not running (lab {self.dir})")
        return rec.pid

    def status(self) -> list[NodeStatus]:
        cfg = self.config
        cut = cfg.cut_nodes()
        out = []
        for node in cfg.nodes:
            rec = self._init_record(cfg, node)
            if cfg.engine == "openzfs":
                rec = openzfs_vm.processes(openzfs_engine.vm_dir(cfg, node)).get("qemu")
                rec = rec if rec is not None and rec.is_running() else None
            nd = cfg.node_dir(node)
            flags = []
            if node in cut:
                flags.append("cut")
            if (nd / "frozen").exists():
                flags.append("frozen")
            if (nd / "shaped").exists():
                flags.append(f"shaped={(nd / 'shaped').read_text().strip()}")
            out.append(
                NodeStatus(
                    node, rec is not None, rec.pid if rec else None, cfg.node_ip(node), tuple(flags)
                )
            )
        return out

    # ------------------------------------------------------------------ exec
    def exec_argv(
        self,
        node: str,
        argv: Sequence[str],
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> list[str]:
        """The host argv that runs ``argv`` on ``node`` (for Popen pipelines). ``env``: extra
        variables for the command (the namespace engine passes the whole environment)."""
        if not argv:
            raise LabError("no command given")
        cfg = self.config
        if cfg.engine == "openzfs":
            cfg.check_node(node)
            return openzfs_engine.ssh_argv(cfg, node, argv, cwd, _env_delta(env))
        pid = self.init_pid(node)
        base = [*NSENTER, "--target", str(pid), "--"]
        if cwd is None:  # entering the mount namespace leaves us in its /
            return [*base, *argv]
        return [*base, "/bin/sh", "-c", CD_THEN_EXEC, "sh", cwd, *argv]

    def node_env(self, node: str, env: Mapping[str, str] | None = None) -> dict[str, str]:
        """Environment for a command on ``node``: real paths (no PVEREP_ROOT), node PATH."""
        out = dict(os.environ if env is None else env)
        out.pop("PVEREP_ROOT", None)
        out.pop("VIRTUAL_ENV", None)
        out["PATH"] = sshsetup.NODE_PATH
        out["HOME"] = "/root"
        out["PVELAB_NODE"] = node
        return out

    def popen(
        self, node: str, argv: Sequence[str], cwd: str | None = None, **kwargs: Any
    ) -> subprocess.Popen[Any]:
        given = kwargs.pop("env", None)
        env = self.node_env(node, given)
        return subprocess.Popen(self.exec_argv(node, argv, cwd, given), env=env, **kwargs)

    def exec(
        self,
        node: str,
        argv: Sequence[str],
        *,
        input: str | bytes | None = None,
        check: bool = False,
        capture: bool = True,
        text: bool = True,
        timeout: float | None = None,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[Any]:
        """Run ``argv`` on ``node``; stdout/stderr captured unless ``capture=False``."""
        if input is not None and text and isinstance(input, bytes):
            text = False
        return subprocess.run(
            self.exec_argv(node, argv, cwd, env),
            input=input,
            check=check,
            capture_output=capture,
            text=text,
            timeout=timeout,
            env=self.node_env(node, env),
            stdin=subprocess.DEVNULL if input is None and capture else None,
        )

    # ------------------------------------------------------------------ up
    def up(self, count: int = 3, engine: str = "fuse") -> float:
        """(Re)create a fresh lab with ``count`` nodes; returns the seconds it took.
        ``engine``: "fuse" (namespaces, zfs-fuse) or "openzfs" (QEMU guests, real OpenZFS)."""
        if not 1 <= count <= MAX_NODES:
            raise LabError(f"node count must be 1..{MAX_NODES}")
        if engine not in ENGINES:
            raise LabError(f"bad lab engine {engine!r} ({' or '.join(ENGINES)})")
        start = time.monotonic()
        if engine == "openzfs":
            openzfs_engine.check_host()
            # before the machine lock: a first build takes minutes
            image = openzfs_image.ensure_image()
        else:
            _check_host()
        with hostdirs.machine_lock():
            self._teardown()
            self._refuse_foreign_dir()
            self.dir.mkdir(parents=True, exist_ok=True)
            (self.dir / MARKER).touch()
            cfg = LabConfig(
                self.dir,
                tuple(node_name(i) for i in range(1, count + 1)),
                network.free_net_index(),
                engine=engine,
            )
            cfg.save()
            hostdirs.register(self.dir)
            try:
                network.create_bridge(cfg.bridge, cfg.host_ip)
                if engine == "openzfs":
                    openzfs_engine.write_files(cfg)
                    openzfs_engine.start_nodes(cfg, image)
                else:
                    hostdirs.ensure_mount_points()
                    self._write_files(cfg)
                    self._start_nodes(cfg)
            except BaseException:
                _print_logs(cfg)
                self._teardown()
                raise
        return time.monotonic() - start

    def _refuse_foreign_dir(self) -> None:
        if self.dir.exists() and any(self.dir.iterdir()):
            raise LabError(f"{self.dir} exists and is not a lab dir; refusing to use it")

    def _write_files(self, cfg: LabConfig) -> None:
        cfg.bin_dir.mkdir()
        python = shlex.quote(cfg.python)
        shim = shlex.quote(str(Path(zfs_compat.__file__).resolve()))
        scripts = {
            # the pverep of the environment that started the lab (e.g. the checkout's .venv)
            "pverep": f'#!/bin/sh\nexec {python} -m pverep "$@"\n',
            # a FAKE pvesh (FakePveApi on this node's files) for proxmoxer's CLI backends;
            # like the real one it asks other nodes through `ssh <node> pvesh …`
            "pvesh": (
                f"#!/bin/sh\n# fake pvesh (pverep.lab.fakepvesh)\n"
                f'PVEREP_FAKEPVESH_SSH=1 exec {python} -m pverep.lab.fakepvesh "$@"\n'
            ),
            # stdlib-only shim: -I -S skip site-packages for a fast start on every zfs call
            "zfs": f'#!/bin/sh\nexec {python} -I -S {shim} "$@"\n',
            "bashrc": f"# pverep lab node shell\nexport PATH={sshsetup.NODE_PATH}\n",
        }
        for name, body in scripts.items():
            (cfg.bin_dir / name).write_text(body)
            (cfg.bin_dir / name).chmod(0o755)
        clusterfs.write_hosts(cfg)
        clusterfs.write_etc_pve(cfg)
        for node in cfg.nodes:
            _prepare_node_dir(cfg, node)
            sshsetup.prepare_node(cfg, node)
        sshsetup.write_cluster_keys(cfg)
        clusterfs.write_members(cfg)
        freezer.create(cfg)

    def _start_nodes(self, cfg: LabConfig) -> None:
        env = {"PATH": sshsetup.NODE_PATH, "HOME": "/root", "LANG": "C.UTF-8"}
        for node in cfg.nodes:
            with (cfg.node_dir(node) / "log" / "init.log").open("ab") as log:
                # setsid --fork: the node leaves our session and we need not wait for it;
                # --kill-child: if the unshare wrapper dies, the node dies with it.
                subprocess.run(
                    ["setsid", "--fork", "unshare", "--mount", "--uts", "--ipc", "--net",
                     "--pid", "--fork", "--kill-child", "--propagation", "private", "--",
                     cfg.python, "-m", "pverep.lab.nodeinit", "_node_init", str(cfg.dir), node],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, check=True,
                )  # fmt: skip
        deadline = time.monotonic() + UP_TIMEOUT
        for node in cfg.nodes:  # plug each netns into the bridge as soon as its PID is known
            rec = _wait(
                deadline, f"{node} to start", functools.partial(self._init_record, cfg, node)
            )
            network.plug_node(cfg.veth(node), cfg.bridge, rec.pid)
        for node in cfg.nodes:
            nd = cfg.node_dir(node)
            _wait(deadline, f"{node} to come up", functools.partial(_ready, nd))

    # ------------------------------------------------------------------ down
    def down(self) -> float:
        """Stop everything this lab started, by recorded PIDs; idempotent."""
        start = time.monotonic()
        with hostdirs.machine_lock():
            self._teardown()
        return time.monotonic() - start

    def _teardown(self) -> None:
        if not self.dir.exists():
            return
        if not (self.dir / MARKER).exists():
            if any(self.dir.iterdir()):
                raise LabError(f"{self.dir} is not a lab dir; not touching it")
            self.dir.rmdir()
            return
        try:
            cfg: LabConfig | None = self.config
        except LabError:
            cfg = None
        if cfg is not None and cfg.engine == "openzfs":
            openzfs_engine.stop_nodes(cfg)
        elif cfg is not None:
            freezer.thaw_all(cfg)
        records = [
            rec
            for pattern in ("nodes/*/procs.json", "nodes/*/vm/procs.json")
            for procs in sorted(self.dir.glob(pattern))
            for rec in load_records(procs).values()
        ]
        for rec in records:
            rec.kill()
        for rec in records:
            if not rec.wait_gone(10.0):
                raise LabError(f"process {rec.pid} of the lab did not die")
        if cfg is not None:
            for node in cfg.nodes:  # veths normally vanish with their netns
                network.delete_link(cfg.veth(node))
            network.delete_link(cfg.bridge)
            freezer.remove(cfg)
        _unmount_below(self.dir)
        hostdirs.unregister(self.dir)
        hostdirs.remove_created_dirs(self.dir)
        shutil.rmtree(self.dir)

    # ------------------------------------------------------------------ faults
    @contextlib.contextmanager
    def _locked(self) -> Iterator[LabConfig]:
        try:
            fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise LabError(f"lab {self.dir} is down (run: pverep lab up)") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield self.config
        finally:
            os.close(fd)

    def cut(self, node: str) -> None:
        """Link down, and pmxcfs-like quorum: /etc/pve goes read-only where quorum is lost."""
        with self._locked() as cfg:
            cfg.check_node(node)
            cut = cfg.cut_nodes() | {node}
            if cfg.engine == "openzfs":
                openzfs_engine.set_cut(cfg, cut)
            else:
                network.set_link(cfg.veth(node), up=False)
            cfg.cut_file.write_text("".join(f"{n}\n" for n in sorted(cut)))
            self._apply_quorum(cfg)

    def heal(self, node: str) -> None:
        with self._locked() as cfg:
            cfg.check_node(node)
            cut = cfg.cut_nodes() - {node}
            if cfg.engine == "openzfs":
                openzfs_engine.set_cut(cfg, cut)
            else:
                network.set_link(cfg.veth(node), up=True)
            cfg.cut_file.write_text("".join(f"{n}\n" for n in sorted(cut)))
            self._apply_quorum(cfg)
            self._flush_neighbours(cfg)

    def _flush_neighbours(self, cfg: LabConfig) -> None:
        # ARP entries that failed while the link was down would make the first connections
        # after `heal` fail with "No route to host" for a few seconds.
        if cfg.engine == "openzfs":
            openzfs_engine.flush_neighbours(cfg)
            return
        for node in cfg.nodes:
            rec = self._init_record(cfg, node)
            if rec is not None:
                subprocess.run(
                    ["nsenter", "--target", str(rec.pid), "--net", "--",
                     "ip", "neigh", "flush", "all"],
                    capture_output=True, check=False,
                )  # fmt: skip

    def _apply_quorum(self, cfg: LabConfig) -> None:
        if cfg.engine == "openzfs":
            openzfs_engine.apply_quorum(cfg)
            return
        clusterfs.write_members(cfg)
        for node, quorate in clusterfs.quorate_nodes(cfg).items():
            rec = self._init_record(cfg, node)
            if rec is None:
                continue
            mode = "remount,bind,rw" if quorate else "remount,bind,ro"
            result = subprocess.run(
                ["nsenter", "--target", str(rec.pid), "--mount", "--",
                 "mount", "-o", mode, "/etc/pve"],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            if result.returncode != 0:
                raise LabError(f"{node}: remount /etc/pve: {result.stderr.strip()}")

    def shape(self, node: str, rate: str | None) -> None:
        """Limit the node's link to ``rate`` (tc syntax, e.g. ``8mbit``); None removes it."""
        cfg = self.config
        cfg.check_node(node)
        if cfg.engine == "openzfs":
            openzfs_engine.shape(cfg, node, rate)
        else:
            network.shape(cfg.veth(node), self.init_pid(node), rate)
        marker = cfg.node_dir(node) / "shaped"
        if rate is None:
            marker.unlink(missing_ok=True)
        else:
            marker.write_text(f"{rate}\n")

    def freeze(self, node: str) -> None:
        self._set_frozen(node, True)

    def thaw(self, node: str) -> None:
        self._set_frozen(node, False)

    def _set_frozen(self, node: str, frozen: bool) -> None:
        cfg = self.config
        cfg.check_node(node)
        if cfg.engine == "openzfs":
            openzfs_engine.set_frozen(cfg, node, frozen)
        else:
            freezer.set_frozen(cfg, node, frozen, self.init_pid(node))
        marker = cfg.node_dir(node) / "frozen"
        if frozen:
            marker.touch()
        else:
            marker.unlink(missing_ok=True)

    def refresh_vmlist(self) -> None:
        clusterfs.write_vmlist(self.config)


# ---------------------------------------------------------------------- helpers
def _check_host() -> None:
    if os.geteuid() != 0:
        raise LabError("the lab needs root (namespaces, mounts, bridges)")
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool, path=_host_path()) is None]
    if missing:
        raise LabError(f"missing tools: {' '.join(missing)} (run: make sysdeps)")
    if not Path("/dev/fuse").exists():
        raise LabError("/dev/fuse is missing (zfs-fuse needs FUSE)")
    runpaths.hidden_paths(runpaths.needed_paths())  # fail here, in one line, if uncarriable


def _env_delta(env: Mapping[str, str] | None) -> dict[str, str]:
    """The variables of an explicit ``env`` that differ from ours: what a command reached by
    ssh must be given (ssh does not carry the environment)."""
    if env is None:
        return {}
    skip = {"PATH", "HOME", "PWD", "OLDPWD", "SHLVL", "_"}
    return {k: v for k, v in env.items() if k not in skip and os.environ.get(k) != v}


def _host_path() -> str:
    return os.environ.get("PATH", "") + ":/usr/local/sbin:/usr/sbin:/sbin"


def _prepare_node_dir(cfg: LabConfig, node: str) -> None:
    nd = cfg.node_dir(node)
    for sub in ("log", "var-lib-zfs", "var-lib-pve-manager", "var-log-pve", "var-lib-vz",
                "tmp", "pool-mnt"):  # fmt: skip
        (nd / sub).mkdir(parents=True)
    (nd / "tmp").chmod(0o1777)
    (nd / "hostname").write_text(f"{node}\n")
    shutil.copytree("/etc/zfs", nd / "etc-zfs", symlinks=True)
    zfsrc = nd / "etc-zfs" / "zfsrc"
    lines = zfsrc.read_text().splitlines() if zfsrc.exists() else []
    # The kernel must not trust cached attributes: zfs-fuse changes files behind its back on
    # `zfs recv`/`rollback` into a mounted filesystem (OpenZFS remounts, zfs-fuse does not).
    ours = {"max-arc-size": ARC_MB, "fuse-attr-timeout": 0, "fuse-entry-timeout": 0}
    lines = [ln for ln in lines if ln.split("=")[0].strip() not in ours]
    zfsrc.write_text("\n".join([*lines, *(f"{k} = {v}" for k, v in ours.items())]) + "\n")
    with (nd / f"{POOL}.img").open("wb") as img:
        img.truncate(POOL_SIZE)


def _ready(node_dir: Path) -> bool:
    if (node_dir / "failed").exists():
        reason = (node_dir / "failed").read_text().strip()
        raise LabError(f"{node_dir.name} failed to come up: {reason}")
    return (node_dir / "ready").exists()


def _wait(deadline: float, what: str, probe: Callable[[], Any]) -> Any:
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise LabError(f"timed out waiting for {what}")
        time.sleep(0.01)


def _unmount_below(lab_dir: Path) -> None:
    """Mounts under the lab dir in the host namespace (none are expected; be thorough)."""
    prefix = f"{lab_dir}/"
    targets = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        target = line.split()[1].encode().decode("unicode_escape")
        if target.startswith(prefix):
            targets.append(target)
    for target in sorted(targets, reverse=True):
        subprocess.run(["umount", "-l", target], capture_output=True, check=False)


def _print_logs(cfg: LabConfig) -> None:
    for log in sorted(cfg.dir.glob("nodes/*/log/*.log")):
        with contextlib.suppress(OSError):
            text = log.read_text(errors="replace").strip()
            if text:
                tail = "\n".join(text.splitlines()[-20:])
                os.write(2, f"--- {log}\n{tail}\n".encode())
