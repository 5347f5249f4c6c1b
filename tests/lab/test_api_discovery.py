"""Discovery and control through the Proxmox API agree with /etc/pve on the lab.

FakePveApi (the stand-in for pveproxy) runs inside every lab node on <ip>:8006 from that node's
own /etc/pve and state; the host talks to it with proxmoxer's real https backend (token auth,
the lab's cluster CA). The files backend runs on the node itself (``pverep`` there).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from pverep.lab import gentree
from pverep.lab.control import Lab

from .apihelp import LabApi

FIRST = 9600
COUNT = 12


@pytest.fixture(scope="module")
def guests(lab: Lab, api: LabApi) -> Iterator[dict[int, tuple[str, str]]]:
    """COUNT generated guests spread over the nodes, with jobs created through the API."""
    etc = lab.config.etc_pve
    placed: dict[int, tuple[str, str]] = {}
    for i in range(COUNT):
        vmid, node = FIRST + i, lab.nodes[i % len(lab.nodes)]
        vmtype = "lxc" if i % 4 == 3 else "qemu"
        text = gentree.lxc_config(vmid, i) if vmtype == "lxc" else gentree.qemu_config(vmid, i)
        sub = "lxc" if vmtype == "lxc" else "qemu-server"
        (etc / "nodes" / node / sub / f"{vmid}.conf").write_text(text)
        placed[vmid] = (node, vmtype)
    lab.refresh_vmlist()
    for vmid, (node, _) in placed.items():
        if vmid % 2 == 0:
            target = lab.nodes[(lab.nodes.index(node) + 1) % len(lab.nodes)]
            done = api.remote(["create-local-job", f"{vmid}-0", target, "--schedule", "*/5"])
            assert done.returncode == 0, done.stderr
    try:
        yield placed
    finally:
        for vmid in placed:
            api.on_node("pve1", ["delete", f"{vmid}-0", "--force"])
            for conf in etc.glob(f"nodes/*/*/{vmid}.conf"):
                conf.unlink()
        lab.refresh_vmlist()


def _json(done: subprocess.CompletedProcess[str]) -> object:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _mine(items: object) -> list[dict[str, object]]:
    assert isinstance(items, list)
    return [i for i in items if FIRST <= int(i.get("vmid", i.get("guest", 0))) < FIRST + COUNT]


def test_guests_volumes_and_jobs_agree(api: LabApi, guests: dict[int, tuple[str, str]]) -> None:
    local = _json(api.on_node("pve2", ["guests", "--output-format", "json"]))
    for node in api.lab.nodes:  # asking any node's API gives the cluster-wide answer
        assert _json(api.remote(["guests", "--output-format", "json"], node)) == local
    mine = _mine(local)
    assert {g["vmid"]: (g["node"], g["type"]) for g in mine} == guests
    by_id = {g["vmid"]: g for g in mine}
    assert by_id[FIRST]["jobs"] == [f"{FIRST}-0"]
    assert by_id[FIRST + 1]["volumes"] == [
        f"local-zfs:vm-{FIRST + 1}-disk-0",
        f"local-zfs:vm-{FIRST + 1}-disk-3",
    ]  # pending disk


def test_jobs_list_read_agree(api: LabApi, guests: dict[int, tuple[str, str]]) -> None:
    for verb in (["list"], ["read", f"{FIRST}-0"], ["list", "--output-format", "json"]):
        local = api.on_node("pve3", verb)
        remote = api.remote(verb, "pve2")
        assert (remote.returncode, remote.stdout) == (local.returncode, local.stdout), verb


def test_status_table_is_the_nodes(api: LabApi, guests: dict[int, tuple[str, str]]) -> None:
    for node in api.lab.nodes:
        local = api.on_node(node, ["status"])
        remote = api.remote(["status"], node)
        assert local.returncode == remote.returncode == 0, remote.stderr
        assert remote.stdout == local.stdout
        ours = {f"{v}-0" for v, (n, _) in guests.items() if n == node and v % 2 == 0}
        shown = {line.split()[0] for line in local.stdout.splitlines()[1:]}
        assert ours and ours <= shown, node


def test_moved_guest_agrees(api: LabApi, guests: dict[int, tuple[str, str]]) -> None:
    """HA recovery renames the config into another node: both backends follow at once."""
    etc = api.lab.config.etc_pve
    vmid = FIRST  # on pve1, job to pve2
    os.rename(
        etc / f"nodes/pve1/qemu-server/{vmid}.conf", etc / f"nodes/pve2/qemu-server/{vmid}.conf"
    )
    api.lab.refresh_vmlist()
    try:
        remote = api.remote(["status", "--output-format", "json"], "pve2")
        local = api.on_node("pve2", ["status", "--output-format", "json"])
        assert _json(remote) == _json(local)
        moved = [s for s in _mine(_json(local)) if s["guest"] == vmid]
        assert [(s["target"], s["source"]) for s in moved] == [("pve1", "pve2")]
        guests_remote = _mine(_json(api.remote(["guests", "--output-format", "json"], "pve3")))
        assert {g["vmid"]: g["node"] for g in guests_remote}[vmid] == "pve2"
        assert _json(api.remote(["guests", "--output-format", "json"], "pve1")) == _json(
            api.on_node("pve1", ["guests", "--output-format", "json"])
        )
    finally:
        os.rename(
            etc / f"nodes/pve2/qemu-server/{vmid}.conf", etc / f"nodes/pve1/qemu-server/{vmid}.conf"
        )
        api.lab.refresh_vmlist()


def test_offline_node_is_one_line(api: LabApi, guests: dict[int, tuple[str, str]]) -> None:
    api.lab.cut("pve3")
    try:
        done = api.remote(["guests"], "pve1")
        assert done.returncode == 255 and done.stdout == ""
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
        assert "node 'pve3' is offline or unreachable (595" in done.stderr
    finally:
        api.lab.heal("pve3")


def test_unreachable_and_tls_mismatch_are_one_line(
    api: LabApi, guests: dict[int, tuple[str, str]]
) -> None:
    # pve2's certificate presented for pve1's name/address? Pin pve1's fingerprint, ask pve2.
    from pverep.lab import tlscerts

    pin = tlscerts.fingerprint(api.lab.config.etc_pve / "nodes/pve1/pve-ssl.pem")
    args = api.args("pve2")
    i = args.index("--api-ca-file")
    argv = [*args[:i], *args[i + 2 :], "--api-fingerprint", pin, "list"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PVEREP_")}
    done = subprocess.run(
        [sys.executable, "-m", "pverep", *argv], capture_output=True, text=True, env=env
    )
    assert done.returncode == 255 and "does not match the pinned fingerprint" in done.stderr
    assert done.stderr.count("\n") == 1
