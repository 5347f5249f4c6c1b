"""The lab's private L2 network: one host bridge per lab, one veth pair per node.

No forwarding and no NAT: the nodes have no default route, so nothing leaves the machine.
The host keeps ``.1`` on the bridge so that it can reach the nodes too.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess

from pverep.lab.config import NET_PREFIX, NET_RANGE, LabError


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise LabError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result


def link_exists(name: str) -> bool:
    return _ip("link", "show", "dev", name, check=False).returncode == 0


def free_net_index() -> int:
    """First X with no host link named ``pvelabX`` and no host address in 10.213.X.0/24.

    Call under the machine lock, and create the bridge before releasing it: the bridge and
    its address are what tell the next lab that X is taken.
    """
    links = json.loads(_ip("-j", "addr", "show").stdout or "[]")
    names = {link.get("ifname", "") for link in links}
    used_nets = set()
    for link in links:
        for addr in link.get("addr_info", []):
            if addr.get("family") == "inet":
                used_nets.add(ipaddress.ip_network(f"{addr['local']}/24", strict=False))
    for index in NET_RANGE:
        net = ipaddress.ip_network(f"{NET_PREFIX}.{index}.0/24")
        if f"pvelab{index}" not in names and net not in used_nets:
            return index
    raise LabError("no free lab subnet left in 10.213.16-249.0/24")


def create_bridge(name: str, address: str) -> None:
    _ip("link", "add", name, "type", "bridge")
    _ip("addr", "add", f"{address}/24", "dev", name)
    _ip("link", "set", name, "up")


def delete_link(name: str) -> None:
    if link_exists(name):
        _ip("link", "del", name, check=False)


def plug_node(host_veth: str, bridge: str, init_pid: int) -> None:
    """Create the node's eth0 directly inside its network namespace, host end on the bridge."""
    _ip("link", "add", host_veth, "type", "veth", "peer", "name", "eth0", "netns", str(init_pid))
    _ip("link", "set", host_veth, "master", bridge, "up")


def set_link(host_veth: str, up: bool) -> None:
    _ip("link", "set", host_veth, "up" if up else "down")


def _in_node(init_pid: int, argv: list[str]) -> list[str]:
    return ["nsenter", "--target", str(init_pid), "--net", "--", *argv]


def shape(host_veth: str, init_pid: int, rate: str | None) -> None:
    """tbf on both ends of a node's link (towards and from the node); None removes it."""
    ends = [["tc", "qdisc"], _in_node(init_pid, ["tc", "qdisc"])]
    devs = [host_veth, "eth0"]
    for base, dev in zip(ends, devs, strict=True):
        if rate is None:
            subprocess.run(
                [*base, "del", "dev", dev, "root"], capture_output=True, text=True, check=False
            )
            continue
        tbf = ["tbf", "rate", rate, "burst", "64kb", "latency", "1s"]
        result = subprocess.run(
            [*base, "replace", "dev", dev, "root", *tbf], capture_output=True, text=True
        )
        if result.returncode != 0:
            raise LabError(f"tc on {dev}: {result.stderr.strip()}")
