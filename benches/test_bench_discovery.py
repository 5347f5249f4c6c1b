"""Discovering 200 guests (configs, replicatable volumes, jobs) through each Cluster backend.

A generated /etc/pve tree (3 nodes, 200 guests with snapshots, pending changes, CD-ROMs,
unreplicated disks; 150 jobs) is discovered with ``discovery.discover_guests``:

* files  — FilesCluster reading /etc/pve (what pverep does on a node);
* https  — ApiCluster through proxmoxer's https backend against FakePveApi on 127.0.0.1
           (TLS, token auth, keep-alive; 3 + snapshots requests per guest, proxied in-process
           to the owning node's fake);
* local  — ApiCluster through proxmoxer's local backend: one ``pvesh`` process per request
           (here the fakepvesh stand-in, a Python start-up per call — an upper bound).

The ratios against ``files`` in the same run are the figures to read; absolute times depend on
the machine. Every run asserts the backends agree on the result.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pverep.apiconfig import ApiSettings
from pverep.cluster.api import ApiCluster
from pverep.cluster.files import FilesCluster
from pverep.discovery import GuestInfo, discover_guests
from pverep.lab import fakeapi, gentree
from pverep.paths import Paths

GUESTS = 200
NODES = ("pve1", "pve2", "pve3")
TOKEN_ID, TOKEN = "root@pam!bench", "bench-secret"


def _node_paths(base: Path, node: str) -> Paths:
    root = base / "nodes" / node
    (root / "etc").mkdir(parents=True, exist_ok=True)
    if not (root / "etc/pve").exists():
        (root / "etc/pve").symlink_to(base / "etc-pve")
    return Paths(root)


@pytest.fixture(scope="module")
def tree(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Path, fakeapi.FakePveApiServer]]:
    base = tmp_path_factory.mktemp("discovery")
    (base / "etc-pve").mkdir()
    paths = _node_paths(base, "pve1")
    gentree.generate(paths, NODES, guests=GUESTS)
    tokens = {TOKEN_ID: TOKEN}
    peers = {
        n: fakeapi.FakePveApi(_node_paths(base, n), n, tokens=tokens).handle for n in NODES[1:]
    }
    server = fakeapi.serve(paths, "pve1", tokens=tokens, peers=peers)
    secret = base / "token"
    secret.write_text(TOKEN + "\n")
    secret.chmod(0o600)
    yield base, server
    server.stop()


@pytest.fixture(scope="module")
def reference(tree: tuple[Path, fakeapi.FakePveApiServer]) -> list[GuestInfo]:
    base, _ = tree
    return discover_guests(FilesCluster(_node_paths(base, "pve1"), "pve1"))


def test_discovery_files(benchmark, tree, reference) -> None:  # type: ignore[no-untyped-def]
    base, _ = tree
    result = benchmark(lambda: discover_guests(FilesCluster(_node_paths(base, "pve1"), "pve1")))
    assert result == reference and len(result) == GUESTS


def test_discovery_https(benchmark, tree, reference) -> None:  # type: ignore[no-untyped-def]
    base, server = tree
    settings = ApiSettings(
        backend="https",
        host=server.endpoint,
        token=TOKEN_ID,
        secret_file=str(base / "token"),
        ca_file=str(base / "etc-pve" / "pve-root-ca.pem"),
    ).validate()
    # a new client per round: connection set-up and TLS handshake are part of the cost
    result = benchmark.pedantic(lambda: discover_guests(ApiCluster(settings)), rounds=3)
    assert result == reference


def test_discovery_local_pvesh(benchmark, tree, reference, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    base, _ = tree
    bindir = base / "bin"
    bindir.mkdir(exist_ok=True)
    pvesh = bindir / "pvesh"
    pvesh.write_text(
        f"#!{sys.executable}\nfrom pverep.lab.fakepvesh import main\nraise SystemExit(main())\n"
    )
    pvesh.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PVEREP_ROOT", str(base / "nodes/pve1"))
    monkeypatch.setattr(socket, "gethostname", lambda: "pve1")
    monkeypatch.setenv("PVEREP_FAKEPVESH_NODE", "pve1")  # the pvesh fake runs as a process
    monkeypatch.setenv(
        "PVEREP_FAKEPVESH_PEERS", ",".join(f"{n}={base / 'nodes' / n}" for n in NODES[1:])
    )
    settings = ApiSettings(backend="local", timeout=60).validate()
    result = benchmark.pedantic(lambda: discover_guests(ApiCluster(settings)), rounds=1)
    assert result == reference
