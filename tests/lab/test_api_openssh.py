"""proxmoxer's openssh backend end to end on the lab: ``pverep --api-backend openssh --api
<node>`` on pve1 runs ``pvesh`` on that node through the real sshd (the lab's FAKE pvesh,
FakePveApi on the node's files, which asks other nodes over ssh as pvesh does), and must see
what the files backend sees on that node.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest

from pverep.lab import gentree
from pverep.lab.control import Lab

pytestmark = pytest.mark.lab
FIRST = 9700
PLACED = {FIRST: ("pve1", "qemu"), FIRST + 1: ("pve2", "lxc"), FIRST + 2: ("pve3", "qemu")}


def _openssh(lab: Lab, argv: list[str], host: str = "pve2") -> subprocess.CompletedProcess[str]:
    return lab.exec(
        "pve1", ["pverep", "--api-backend", "openssh", "--api", host, *argv], timeout=120
    )


def _files(lab: Lab, node: str, argv: list[str]) -> subprocess.CompletedProcess[str]:
    return lab.exec(node, ["pverep", *argv], timeout=120)


@pytest.fixture(scope="module")
def placed(lab: Lab) -> Iterator[dict[int, tuple[str, str]]]:
    etc = lab.config.etc_pve
    for i, (vmid, (node, vmtype)) in enumerate(PLACED.items()):
        text = gentree.lxc_config(vmid, i) if vmtype == "lxc" else gentree.qemu_config(vmid, i)
        sub = "lxc" if vmtype == "lxc" else "qemu-server"
        (etc / "nodes" / node / sub / f"{vmid}.conf").write_text(text)
    lab.refresh_vmlist()
    made = _files(lab, "pve1", ["create-local-job", f"{FIRST}-0", "pve2", "--schedule", "*/5"])
    assert made.returncode == 0, made.stderr
    try:
        yield PLACED
    finally:
        _files(lab, "pve1", ["delete", f"{FIRST}-0", "--force"])
        for vmid in PLACED:
            for conf in etc.glob(f"nodes/*/*/{vmid}.conf"):
                conf.unlink()
        lab.refresh_vmlist()


def _json(done: subprocess.CompletedProcess[str]) -> object:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_openssh_backend_agrees_with_files(lab: Lab, placed: dict[int, tuple[str, str]]) -> None:
    guests = _json(_openssh(lab, ["guests", "--output-format", "json"]))
    assert guests == _json(_files(lab, "pve2", ["guests", "--output-format", "json"]))
    assert isinstance(guests, list)
    mine = {g["vmid"]: (g["node"], g["type"]) for g in guests if g["vmid"] in placed}
    assert mine == placed  # guests of all three nodes, configs read through ssh hops
    for verb in (["list"], ["read", f"{FIRST}-0"], ["status"]):
        over_ssh, local = _openssh(lab, verb), _files(lab, "pve2", verb)
        assert (over_ssh.returncode, over_ssh.stdout) == (local.returncode, local.stdout), verb
    assert f"{FIRST}-0" in _openssh(lab, ["list"]).stdout


def test_openssh_backend_errors_are_one_line(lab: Lab, placed: dict[int, tuple[str, str]]) -> None:
    # pvesh's own error (exit 255, like an ssh failure) is told apart and mapped
    missing = _openssh(lab, ["read", "9799-0"])
    local = _files(lab, "pve2", ["read", "9799-0"])
    assert (missing.returncode, missing.stderr) == (local.returncode, local.stderr)
    # ssh itself failing: one line naming the host, no traceback
    lab.cut("pve3")
    try:
        down = _openssh(lab, ["guests"], host="pve3")
    finally:
        lab.heal("pve3")
    assert down.returncode == 255 and down.stdout == ""
    assert down.stderr.count("\n") == 1 and "Traceback" not in down.stderr
    # ssh's own connect timeout or the call's bound may fire first (a cut node answers nothing);
    # either way the line names the node and the cause
    assert down.stderr.startswith(
        ("cannot reach pve3 over ssh: ", "pvesh on pve3 did not answer GET ")
    ), down.stderr
