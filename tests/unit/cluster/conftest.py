"""A temp /etc/pve tree served by FakePveApi over HTTPS on 127.0.0.1, and clients for it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pverep.apiconfig import ApiSettings
from pverep.cluster.api import ApiCluster
from pverep.cluster.files import FilesCluster
from pverep.lab import fakeapi, gentree
from pverep.paths import Paths

TOKEN_ID = "root@pam!pverep"
TOKEN_SECRET = "0d3b5a6e-6f5c-4b71-9c2e-2f5a3d1e9b10"
PASSWORD = "correct horse"


@dataclass
class FakeCluster:
    paths: Paths
    server: fakeapi.FakePveApiServer
    ca_file: Path
    token_file: Path
    password_file: Path

    @property
    def api(self) -> fakeapi.FakePveApi:
        return self.server.api

    def settings(self, **kw: object) -> ApiSettings:
        base: dict[str, object] = {
            "backend": "https",
            "host": self.server.endpoint,
            "token": TOKEN_ID,
            "secret_file": str(self.token_file),
            "ca_file": str(self.ca_file),
            "timeout": 10.0,
        }
        base.update(kw)
        return ApiSettings(**base).validate()  # type: ignore[arg-type]

    def api_cluster(self, **kw: object) -> ApiCluster:
        return ApiCluster(self.settings(**kw))

    def files_cluster(self) -> FilesCluster:
        return FilesCluster(self.paths, "pve1")


def secret_file(path: Path, text: str) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")
    return path


NODES = ("pve1", "pve2", "pve3")


def node_paths(tmp_path: Path, node: str) -> Paths:
    """Each node has its own root (node-local state) sharing one /etc/pve, as in the lab."""
    root = tmp_path / "nodes" / node
    (root / "etc").mkdir(parents=True, exist_ok=True)
    link = root / "etc" / "pve"
    if not link.exists():
        link.symlink_to(tmp_path / "etc-pve")
    return Paths(root)


@pytest.fixture
def fake_cluster(tmp_path: Path) -> Iterator[FakeCluster]:
    (tmp_path / "etc-pve").mkdir()
    paths = node_paths(tmp_path, "pve1")
    gentree.generate(paths, NODES, guests=12)
    auth: dict[str, object] = {"tokens": {TOKEN_ID: TOKEN_SECRET}, "users": {"root@pam": PASSWORD}}
    peers = {
        n: fakeapi.FakePveApi(node_paths(tmp_path, n), n, **auth).handle  # type: ignore[arg-type]
        for n in NODES[1:]
    }
    server = fakeapi.serve(paths, "pve1", peers=peers, **auth)
    try:
        yield FakeCluster(
            paths=paths,
            server=server,
            ca_file=paths.etc_pve / "pve-root-ca.pem",
            token_file=secret_file(tmp_path / "token", TOKEN_SECRET),
            password_file=secret_file(tmp_path / "password", PASSWORD),
        )
    finally:
        server.stop()


def files_on(fake: FakeCluster, node: str) -> FilesCluster:
    """The files backend as ``node`` runs it (its own state, the shared /etc/pve)."""
    return FilesCluster(node_paths(fake.paths.root.parent.parent, node), node)
