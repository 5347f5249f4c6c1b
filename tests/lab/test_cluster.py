"""The lab looks like a PVE cluster from inside its nodes."""

from __future__ import annotations

import json
import sys

from pverep.lab.control import Lab


def run(lab: Lab, node: str, *argv: str) -> str:
    return str(lab.exec(node, list(argv), check=True).stdout)


def test_each_node_has_its_own_name_and_address(lab: Lab) -> None:
    for node in lab.nodes:
        assert run(lab, node, "hostname").strip() == node
        assert run(lab, node, "cat", "/etc/hostname").strip() == node
        addr = run(lab, node, "ip", "-4", "-o", "addr", "show", "dev", "eth0").split()[3]
        assert addr == f"{lab.node_ip(node)}/24"


def test_each_node_runs_its_own_pool(lab: Lab) -> None:
    guids = {
        run(lab, n, "zfs", "get", "-Hp", "-o", "value", "guid", "rpool").strip() for n in lab.nodes
    }
    assert len(guids) == len(lab.nodes)
    assert run(lab, "pve2", "zfs", "list", "-H", "-o", "name", "rpool/data").strip() == "rpool/data"


def test_ssh_reaches_the_other_node_and_its_pool(lab: Lab) -> None:
    own = run(lab, "pve2", "zfs", "get", "-Hp", "-o", "value", "guid", "rpool").strip()
    remote = run(
        lab, "pve1", "ssh", "root@pve2", "--", "zfs", "list", "-Hp", "-o", "name,guid", "rpool"
    )
    assert remote.split() == ["rpool", own]
    assert "rpool/data" in run(lab, "pve1", "ssh", "root@pve2", "--", "zfs", "list")


def test_etc_pve_is_shared_and_magic_links_are_per_node(lab: Lab) -> None:
    lab.exec("pve1", ["sh", "-c", "echo hello > /etc/pve/lab-test.txt"], check=True)
    try:
        assert run(lab, "pve3", "cat", "/etc/pve/lab-test.txt") == "hello\n"
    finally:
        lab.exec("pve2", ["rm", "/etc/pve/lab-test.txt"], check=True)
    for node in lab.nodes:
        assert (
            run(lab, node, "readlink", "-f", "/etc/pve/local").strip() == f"/etc/pve/nodes/{node}"
        )
        assert (
            run(lab, node, "readlink", "-f", "/etc/pve/lxc").strip() == f"/etc/pve/nodes/{node}/lxc"
        )
        members = json.loads(run(lab, node, "cat", "/etc/pve/.members"))
        assert members["nodename"] == node
        assert members["cluster"]["quorate"] == 1
    storage = run(lab, "pve1", "cat", "/etc/pve/storage.cfg")
    assert "zfspool: local-zfs\n\tpool rpool/data\n" in storage
    for name in ("datacenter.cfg", "replication.cfg", ".vmlist", "nodes/pve3/qemu-server"):
        lab.exec("pve2", ["test", "-e", f"/etc/pve/{name}"], check=True)


def test_node_local_state_is_private(lab: Lab) -> None:
    paths = [
        "/var/lib/pve-manager/lab-test",
        "/var/log/pve/lab-test",
        "/var/lock/lab-test",
        "/tmp/lab-test",
    ]
    lab.exec("pve1", ["touch", *paths], check=True)
    try:
        for path in paths:
            assert lab.exec("pve2", ["test", "-e", path]).returncode == 1, path
    finally:
        lab.exec("pve1", ["rm", "-f", *paths], check=True)


def test_pverep_of_this_checkout_runs_on_nodes_also_over_ssh(lab: Lab) -> None:
    wrapper = run(lab, "pve2", "sh", "-c", 'cat "$(command -v pverep)"')
    assert sys.executable in wrapper
    out = lab.exec("pve1", ["ssh", "root@pve2", "--", "pverep", "--help"], check=True).stdout
    assert "pvesr-compatible" in out
    env = {"PVEREP_ROOT": "/somewhere", "PATH": "/nonexistent"}
    seen = run(lab, "pve3", "sh", "-c", 'echo "${PVEREP_ROOT-unset}"; command -v zfs')
    assert seen.split()[0] == "unset"
    seen = str(
        lab.exec("pve3", ["sh", "-c", 'echo "${PVEREP_ROOT-unset}"'], env=env, check=True).stdout
    )
    assert seen.strip() == "unset"


def test_exec_passes_stdin_stdout_and_exit_status(lab: Lab) -> None:
    result = lab.exec("pve3", ["sh", "-c", "cat; echo err >&2; exit 7"], input="data\n")
    assert (result.returncode, result.stdout, result.stderr) == (7, "data\n", "err\n")
