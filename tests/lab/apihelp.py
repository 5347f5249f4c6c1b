"""The lab's fake Proxmox API (FakePveApi on every node's :8006) seen from the host: a token,
the cluster CA, and ``pverep --api <node> …`` run off the cluster (an empty --root, so nothing
local can stand in for the API). The ``api`` fixture (tests/lab/conftest.py) starts the servers
for a test module and stops them by their recorded PIDs."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pverep.lab import apiserver
from pverep.lab.control import Lab

TOKEN_ID = "root@pam!pverep-lab"


@dataclass
class LabApi:
    lab: Lab
    token_file: Path
    client_root: Path

    def args(self, node: str = "pve1") -> list[str]:
        return [
            "--root", str(self.client_root),
            "--api", f"{self.lab.node_ip(node)}:{apiserver.PORT}",
            "--api-token", TOKEN_ID,
            "--api-secret-file", str(self.token_file),
            "--api-ca-file", str(self.lab.config.etc_pve / "pve-root-ca.pem"),
        ]  # fmt: skip

    def remote(self, argv: list[str], node: str = "pve1") -> subprocess.CompletedProcess[str]:
        """``pverep --api <node> …`` from the host (off the cluster)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PVEREP_")}
        return subprocess.run(
            [sys.executable, "-m", "pverep", *self.args(node), *argv],
            capture_output=True, text=True, env=env, timeout=120,
        )  # fmt: skip

    def on_node(self, node: str, argv: list[str]) -> subprocess.CompletedProcess[str]:
        """``pverep …`` on the node itself: the files backend."""
        return self.lab.exec(node, ["pverep", *argv], timeout=120)


@contextmanager
def serving(lab: Lab, tmp: Path) -> Iterator[LabApi]:
    secret = secrets.token_hex(16)
    token_file = tmp / "token"
    token_file.write_text(secret + "\n")
    token_file.chmod(0o600)
    apiserver.write_token(lab, TOKEN_ID, secret)
    servers = apiserver.start_all(lab)
    try:
        yield LabApi(lab, token_file, tmp / "client")
    finally:
        apiserver.stop(servers)
