"""The OpenZFS lab engine (``pverep lab up N --zfs openzfs``): nodes are QEMU/TCG guests.

Same cluster as the namespace engine (same names, subnet, bridge, /etc/pve layout, ssh keys),
different node: a guest booted from the cached image (``image``), its own ``rpool`` on a
virtual disk, real OpenZFS 2.3 in its kernel and no compat shim. The host reaches a node by
ssh on the bridge with the image's management key (``exec``), over a per-node ControlMaster.

virtiofs exports (one virtiofsd per export and guest):

* ``pvelab-node``: the node's dir in the lab dir, read-only; ``node-setup.sh`` runs from it at
  boot and makes the guest the node (hostname, address, ssh identity, /run/pvelab, pool).
* ``pvelab-pve``: the lab's etc-pve, mounted at /etc/pve on every node (``--cache=never``, so
  a file one node writes is what the next node reads; node-local state stays in the guest).
* ``pvelab-checkout``: the checkout pverep runs from, read-only at the same path.

Faults: ``cut`` drops the node's frames in the bridge (nftables, bridge family, forward
hook), so the node is alone but the host still reaches it; ``shape`` is tbf on the tap and
on the guest's eth0; ``freeze`` stops the guest's vCPU (QMP ``stop``), a hung node indeed.
"""

from __future__ import annotations

import compileall
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import time
from collections.abc import Sequence
from pathlib import Path

from pverep.lab import clusterfs, network, sshsetup
from pverep.lab.config import DOMAIN, LabConfig, LabError
from pverep.lab.openzfs import image as images
from pverep.lab.openzfs import vm
from pverep.transport.ssh import quote_remote

ENGINE = "openzfs"
BOOT_TIMEOUT = float(os.environ.get("PVEREP_OPENZFS_BOOT_TIMEOUT", "600"))
NODE_SETUP = Path(__file__).resolve().parent / "files" / "node-setup.sh"
CHECKOUT = Path(__file__).resolve().parents[4]
#: Runs the command in the caller's cwd if the node has it, else in / (fixed script, data as args).
CD_THEN_EXEC = 'cd -- "$1" 2>/dev/null || cd /; shift; exec "$@"'
GUEST_PYTHON = "/usr/bin/python3"
HOST_TOOLS = ("qemu-system-x86_64", "qemu-img", "ssh", "ssh-keygen", "nft", "ip", "tc")


def vm_dir(cfg: LabConfig, node: str) -> Path:
    return cfg.node_dir(node) / "vm"


def check_host() -> None:
    if os.geteuid() != 0:
        raise LabError("the OpenZFS lab needs root (taps, bridge, QEMU)")
    missing = [t for t in HOST_TOOLS if shutil.which(t) is None]
    if missing:
        raise LabError(f"missing tools: {' '.join(missing)} (run: make sysdeps-openzfs)")
    vm.virtiofsd_path()
    if sys.version_info[:2] != (3, 11):
        raise LabError(
            "the OpenZFS lab runs pverep with the guests' Python 3.11: start it from one"
        )
    site = Path(sysconfig.get_path("purelib"))
    if CHECKOUT not in site.parents:
        raise LabError(f"the OpenZFS lab needs pverep's venv inside the checkout ({site})")


#: pverep's runtime dependencies (top-level names in site-packages) the guests import.
RUNTIME_PACKAGES = (
    "click", "proxmoxer", "requests", "urllib3", "idna", "certifi", "charset_normalizer",
    "openssh_wrapper.py",
)  # fmt: skip


def precompile() -> None:
    """Write the .pyc files the guests will use: the checkout is read-only for them, and a
    module compiled at every start costs seconds under TCG (a pverep start ~5 s instead of
    ~1.5 s). Same CPython minor version, so the host's bytecode is valid in the guests."""
    site = Path(sysconfig.get_path("purelib"))
    targets = [CHECKOUT / "python" / "pverep", *(site / name for name in RUNTIME_PACKAGES)]
    for target in targets:
        if target.is_dir():
            compileall.compile_dir(target, quiet=1, workers=1)
        elif target.is_file():
            compileall.compile_file(target, quiet=1)


def _python_path() -> str:
    return f"{CHECKOUT / 'python'}:{sysconfig.get_path('purelib')}"


def write_files(cfg: LabConfig) -> None:
    """Everything the nodes read at boot, in the lab dir (the node dirs are exported)."""
    clusterfs.write_hosts(cfg)
    clusterfs.write_etc_pve(cfg)
    precompile()
    pypath = shlex.quote(_python_path())
    scripts = {
        "pverep": f'#!/bin/sh\nPYTHONPATH={pypath} exec {GUEST_PYTHON} -m pverep "$@"\n',
        "pvesh": (
            "#!/bin/sh\n# fake pvesh (pverep.lab.fakepvesh)\n"
            f"PVEREP_FAKEPVESH_SSH=1 PYTHONPATH={pypath} "
            f'exec {GUEST_PYTHON} -m pverep.lab.fakepvesh "$@"\n'
        ),
        "python": f'#!/bin/sh\nPYTHONPATH={pypath} exec {GUEST_PYTHON} "$@"\n',
        "bashrc": f"# pverep lab node shell\nexport PATH={sshsetup.NODE_PATH}\n",
    }
    for node in cfg.nodes:
        nd = cfg.node_dir(node)
        guest = nd / "guest"
        (nd / "log").mkdir(parents=True)
        guest.mkdir()
        (nd / "hostname").write_text(f"{node}\n")
        shutil.copy(cfg.dir / "hosts", guest / "hosts")
        (guest / "cidr").write_text(f"{cfg.node_ip(node)}/24\n")
        (guest / "checkout").write_text(f"{CHECKOUT}\n")
        for name, body in scripts.items():
            (guest / name).write_text(body)
            (guest / name).chmod(0o755)
        shutil.copy(NODE_SETUP, nd / "setup")
        sshsetup.prepare_node(cfg, node)
        kind, key = (nd / "etc-ssh" / "ssh_host_ed25519_key.pub").read_text().split()[:2]
        (nd / "known_hosts").write_text(
            f"{cfg.node_ip(node)},{node}.{DOMAIN},{node} {kind} {key}\n"
        )
    sshsetup.write_cluster_keys(cfg)
    clusterfs.write_members(cfg)


def _mac(cfg: LabConfig, node: str) -> str:
    index = cfg.nodes.index(node) + 1
    return f"52:54:00:d5:{cfg.net_index:02x}:{index:02x}"


def _spec(cfg: LabConfig, node: str) -> vm.VmSpec:
    shares = (
        vm.Share("pvelab-node", cfg.node_dir(node), "never", readonly=True),
        vm.Share("pvelab-pve", cfg.etc_pve, "never", readonly=False),
        vm.Share("pvelab-checkout", CHECKOUT, "auto", readonly=True),
    )
    return vm.VmSpec(node, vm_dir(cfg, node), cfg.veth(node), _mac(cfg, node), shares)


def start_nodes(cfg: LabConfig, image: images.Image) -> None:
    (cfg.dir / "manage_key").write_bytes(image.ssh_key.read_bytes())
    (cfg.dir / "manage_key").chmod(0o600)
    for node in cfg.nodes:
        tap = cfg.veth(node)
        network.delete_link(tap)
        subprocess.run(["ip", "tuntap", "add", "dev", tap, "mode", "tap"], check=True)
        subprocess.run(["ip", "link", "set", tap, "master", cfg.bridge, "up"], check=True)
    t0 = time.monotonic()
    for node in cfg.nodes:
        _progress(f"{node}: booting (QEMU/TCG)")
        vm.start(_spec(cfg, node), image)
    deadline = t0 + BOOT_TIMEOUT
    for node in cfg.nodes:
        _wait_ssh(cfg, node, deadline)
        _progress(f"{node}: up after {time.monotonic() - t0:.0f} s")


def _progress(msg: str) -> None:
    print(f"openzfs lab: {msg}", file=sys.stderr, flush=True)


def _console_tail(cfg: LabConfig, node: str) -> str:
    try:
        lines = (vm_dir(cfg, node) / "console.log").read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-15:])


def _wait_ssh(cfg: LabConfig, node: str, deadline: float) -> None:
    console = vm_dir(cfg, node) / "console.log"
    while True:
        if not vm.running(vm_dir(cfg, node)):
            raise LabError(f"{node}: the VM died while booting\n{_console_tail(cfg, node)}")
        text = console.read_text(errors="replace") if console.exists() else ""
        if "NODE SETUP FAILED" in text:
            raise LabError(f"{node}: node setup failed in the guest\n{_console_tail(cfg, node)}")
        if "PVELAB-READY" in text:
            probe = subprocess.run(
                ssh_argv(cfg, node, ["true"], connect_timeout=5),
                capture_output=True, stdin=subprocess.DEVNULL, check=False,
            )  # fmt: skip
            if probe.returncode == 0:
                return
        if time.monotonic() > deadline:
            raise LabError(f"{node}: no ssh after {BOOT_TIMEOUT:.0f} s\n{_console_tail(cfg, node)}")
        time.sleep(1)


def ssh_argv(
    cfg: LabConfig,
    node: str,
    argv: Sequence[str],
    cwd: str | None = None,
    env: dict[str, str] | None = None,
    connect_timeout: int = 20,
) -> list[str]:
    """Host argv running ``argv`` on the guest ``node`` (management key, node's host key)."""
    nd = cfg.node_dir(node)
    words = list(argv)
    if env:
        words = ["env", *(f"{k}={v}" for k, v in sorted(env.items())), *words]
    if cwd is not None:
        words = ["sh", "-c", CD_THEN_EXEC, "sh", cwd, *words]
    return [
        "ssh", "-F", "/dev/null", "-i", str(cfg.dir / "manage_key"),
        "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
        "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={nd / 'known_hosts'}",
        "-o", f"ConnectTimeout={connect_timeout}",
        "-o", "ControlMaster=auto", "-o", f"ControlPath={vm_dir(cfg, node) / 'ssh.ctl'}",
        "-o", "ControlPersist=120", "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=6",
        f"root@{cfg.node_ip(node)}", "--", *quote_remote(words),
    ]  # fmt: skip


def run(cfg: LabConfig, node: str, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ssh_argv(cfg, node, argv),
        capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip


def stop_nodes(cfg: LabConfig) -> None:
    """End the ssh masters, kill QEMU and virtiofsd by their records, remove taps and rules."""
    for node in cfg.nodes:
        ctl = vm_dir(cfg, node) / "ssh.ctl"
        if ctl.exists():
            subprocess.run(
                ["ssh", "-F", "/dev/null", "-o", f"ControlPath={ctl}", "-O", "exit", "x"],
                capture_output=True, stdin=subprocess.DEVNULL, check=False, timeout=10,
            )  # fmt: skip
    recs = [rec for node in cfg.nodes for rec in vm.kill_all(vm_dir(cfg, node))]
    for rec in recs:
        if not rec.wait_gone(15.0):
            raise LabError(f"process {rec.pid} of the lab did not die")
    for node in cfg.nodes:
        network.delete_link(cfg.veth(node))
    set_cut(cfg, set())


# ---------------------------------------------------------------------- faults
def _nft_table(cfg: LabConfig) -> str:
    return f"pverep_lab_{cfg.net_index}"


def set_cut(cfg: LabConfig, cut: set[str]) -> None:
    """Drop bridged frames from and to the cut nodes' taps (the host still reaches them)."""
    table = _nft_table(cfg)
    subprocess.run(["nft", "delete", "table", "bridge", table], capture_output=True, check=False)
    if not cut:
        return
    taps = ", ".join(cfg.veth(n) for n in sorted(cut))
    rules = (
        f"table bridge {table} {{\n chain forward {{\n"
        "  type filter hook forward priority 0; policy accept;\n"
        f"  iifname {{ {taps} }} drop\n  oifname {{ {taps} }} drop\n }}\n}}\n"
    )
    result = subprocess.run(["nft", "-f", "-"], input=rules, capture_output=True, text=True)
    if result.returncode != 0:
        raise LabError(f"nft: {result.stderr.strip()}")


def apply_quorum(cfg: LabConfig) -> None:
    clusterfs.write_members(cfg)
    for node, quorate in clusterfs.quorate_nodes(cfg).items():
        mode = "remount,rw" if quorate else "remount,ro"
        got = run(cfg, node, ["mount", "-o", mode, "/etc/pve"])
        if got.returncode != 0:
            raise LabError(f"{node}: remount /etc/pve: {got.stderr.strip()}")


def flush_neighbours(cfg: LabConfig) -> None:
    for node in cfg.nodes:
        run(cfg, node, ["ip", "neigh", "flush", "all"])


def shape(cfg: LabConfig, node: str, rate: str | None) -> None:
    tap = cfg.veth(node)
    tbf = ["tbf", "rate", rate or "", "burst", "64kb", "latency", "1s"]
    for where, dev in (("host", tap), ("guest", "eth0")):
        tc = ["tc", "qdisc", "del", "dev", dev, "root"] if rate is None else [
            "tc", "qdisc", "replace", "dev", dev, "root", *tbf]  # fmt: skip
        if where == "host":
            result = subprocess.run(tc, capture_output=True, text=True, check=False)
        else:
            result = run(cfg, node, tc)
        if rate is not None and result.returncode != 0:
            raise LabError(f"tc on {node} ({where}): {result.stderr.strip()}")


def set_frozen(cfg: LabConfig, node: str, frozen: bool) -> None:
    vm.qmp(vm_dir(cfg, node), "stop" if frozen else "cont")
