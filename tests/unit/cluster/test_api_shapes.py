"""The API backend against expectations written independently of FakePveApi.

FakePveApi builds its answers from FilesCluster, so "API == files" alone is circular: a bug
shared by both would pass. Here (1) the raw answers are checked against the shapes the PVE API
documents (spec api-hooks.md §2: field names and JSON types), and (2) what ApiCluster makes of
them is compared with the tree gentree.generate() writes, spelled out by hand below.
"""

from __future__ import annotations

import re
from typing import Any

from pverep.lab.fakeapi import Request

from .conftest import FakeCluster

# gentree.generate(NODES, guests=12): guest 100+i on NODES[i % 3], every 4th one a container;
# job <vmid>-0 for even i to the next node, and <vmid>-1 (disabled, rate 12.5) for i % 6 == 0.
GUESTS = {
    100: ("pve1", "qemu"), 101: ("pve2", "qemu"), 102: ("pve3", "qemu"), 103: ("pve1", "lxc"),
    104: ("pve2", "qemu"), 105: ("pve3", "qemu"), 106: ("pve1", "qemu"), 107: ("pve2", "lxc"),
    108: ("pve3", "qemu"), 109: ("pve1", "qemu"), 110: ("pve2", "qemu"), 111: ("pve3", "lxc"),
}  # fmt: skip
JOBS = {  # id: (target, source, disabled, rate)
    "100-0": ("pve2", "pve1", False, None), "100-1": ("pve3", "pve1", True, "12.5"),
    "102-0": ("pve1", "pve3", False, None), "104-0": ("pve3", "pve2", False, None),
    "106-0": ("pve2", "pve1", False, None), "106-1": ("pve3", "pve1", True, "12.5"),
    "108-0": ("pve1", "pve3", False, None), "110-0": ("pve3", "pve2", False, None),
}  # fmt: skip


def get(fake: FakeCluster, path: str, **params: str) -> Any:
    reply = fake.api.handle(Request("GET", path, dict(params), {}, trusted=True))
    assert reply.status == 200, (path, reply.body)
    assert isinstance(reply.body, dict) and set(reply.body) >= {"data"}
    return reply.body["data"]


def has(item: dict[str, Any], **types: type | tuple[type, ...]) -> None:
    """``item`` has at least these keys, each of the documented JSON type."""
    for key, kind in types.items():
        assert key in item, (key, item)
        assert isinstance(item[key], kind), (key, item[key])
        assert not isinstance(item[key], bool) or kind is bool, (key, item[key])


def test_cluster_resources_vm_shape(fake_cluster: FakeCluster) -> None:
    items = get(fake_cluster, "/cluster/resources", type="vm")
    for item in items:
        has(item, id=str, vmid=int, node=str, type=str, status=str)
        assert item["id"] == f"{item['type']}/{item['vmid']}"
    assert {i["vmid"]: (i["node"], i["type"]) for i in items} == GUESTS


def test_cluster_status_and_nodes_shape(fake_cluster: FakeCluster) -> None:
    status = get(fake_cluster, "/cluster/status")
    clusters = [s for s in status if s["type"] == "cluster"]
    assert len(clusters) == 1
    has(clusters[0], id=str, name=str, nodes=int, quorate=int, version=int)
    assert (clusters[0]["id"], clusters[0]["nodes"], clusters[0]["quorate"]) == ("cluster", 3, 1)
    nodes = [s for s in status if s["type"] == "node"]
    for item in nodes:
        has(item, id=str, name=str, nodeid=int, ip=str, local=int, online=int)
        assert item["id"] == f"node/{item['name']}"
    assert {n["name"]: (n["local"], n["online"]) for n in nodes} == {
        "pve1": (1, 1), "pve2": (0, 1), "pve3": (0, 1),
    }  # fmt: skip
    for item in get(fake_cluster, "/nodes"):
        has(item, node=str, status=str)
        assert item["status"] in ("online", "offline", "unknown")


def test_replication_config_shape(fake_cluster: FakeCluster) -> None:
    items = get(fake_cluster, "/cluster/replication")
    for item in items:
        has(item, id=str, type=str, target=str, guest=int, jobnum=int, source=str)
        assert item["type"] == "local"
        assert item["id"] == f"{item['guest']}-{item['jobnum']}"
        assert "digest" not in item  # only a single read carries the digest
        if "rate" in item:  # a JSON number (the file holds the text "12.5")
            has(item, rate=(int, float))
        if "disable" in item:  # PVE booleans are the integers 0/1
            assert item["disable"] in (0, 1) and not isinstance(item["disable"], bool)
    seen = {
        i["id"]: (i["target"], i["source"], bool(i.get("disable")), i.get("rate")) for i in items
    }
    assert seen == {k: (*v[:3], None if v[3] is None else float(v[3])) for k, v in JOBS.items()}
    one = get(fake_cluster, "/cluster/replication/100-1")
    has(one, id=str, digest=str, comment=str)
    assert re.fullmatch(r"[0-9a-f]{40}", one["digest"])
    assert one["comment"] == "nightly: db"  # decoded, not the file's "nightly%3A db"


def test_replication_status_shape(fake_cluster: FakeCluster) -> None:
    items = get(fake_cluster, "/nodes/pve1/replication")
    for item in items:
        has(item, id=str, guest=int, jobnum=int, type=str, target=str, vmtype=str,
            next_sync=int, last_sync=int, last_try=int, fail_count=int)  # fmt: skip
        assert item["vmtype"] in ("qemu", "lxc")
        assert "pid" not in item  # no sync process is running
    # only the jobs of guests living on pve1
    assert sorted(i["id"] for i in items) == ["100-0", "100-1", "106-0", "106-1"]
    assert sorted(i["id"] for i in get(fake_cluster, "/nodes/pve1/replication", guest="106")) == [
        "106-0",
        "106-1",
    ]


def test_api_cluster_reads_what_the_tree_holds(fake_cluster: FakeCluster) -> None:
    api = fake_cluster.api_cluster()
    assert api.local_node() == "pve1"
    assert sorted(api.members()) == ["pve1", "pve2", "pve3"]
    assert {v: (g.node, g.type) for v, g in api.vmlist().items()} == GUESTS
    jobs = {j.id: j for j in api.jobs()}
    assert {i: (j.target, j.source, j.disable) for i, j in jobs.items()} == {
        i: v[:3] for i, v in JOBS.items()
    }
    assert {i: j.schedule for i, j in jobs.items() if i.endswith("-0")} == dict.fromkeys(
        [i for i in JOBS if i.endswith("-0")], "*/5"
    )
    assert jobs["100-1"].comment == "nightly: db"
    storages = api.storages()
    assert storages.get("local-zfs").type == "zfspool"
    assert storages.get("shared-nfs").shared
    assert not storages.get("local-zfs").shared
    config = api.guest_config(101).config
    assert config.pending["delete"] == "cores"
    assert api.guest_config(103).guest.type == "lxc"
