"""Discovering 200 guests on the lab: files backend on the node vs the API from off the node.

A 3-node lab gets 200 generated guest configs (and 100 jobs); FakePveApi runs inside each node
on <ip>:8006. Measured, in the same run:

* ``files``  — ``discover_guests(FilesCluster)`` inside pve1 (``pverep`` on the node);
* ``https``  — ``discover_guests(ApiCluster)`` on the host through proxmoxer's https backend to
               pve1, which forwards per-node config requests to pve2/pve3 over HTTPS.

Both are timed inside one Python process each (start-up excluded), and must agree. Needs root
and the lab's prerequisites (``make bench`` runs it; PVEREP_LAB_SKIP=1 skips it).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from pverep.apiconfig import ApiSettings
from pverep.cluster.api import ApiCluster
from pverep.discovery import discover_guests
from pverep.lab import apiserver, gentree
from pverep.lab.control import Lab

GUESTS = 200
FIRST = 20000
TOKEN_ID = "root@pam!bench"
LAB_DIR = Path(
    "/var/tmp/pverep-lab-bench-"
    + hashlib.sha256(str(Path(__file__).resolve().parents[1]).encode()).hexdigest()[:10]
)
ON_NODE = """
import json, time
from pverep.cluster.files import FilesCluster
from pverep.discovery import discover_guests
from pverep.paths import Paths
times = []
for _ in range({rounds}):
    t = time.perf_counter()
    found = discover_guests(FilesCluster(Paths()))
    times.append(time.perf_counter() - t)
print(json.dumps({{"times": times, "result": [g.to_api() for g in found]}}))
"""


@pytest.fixture(scope="module")
def lab_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Lab, ApiSettings]]:
    if os.environ.get("PVEREP_LAB_SKIP") == "1":
        pytest.skip("PVEREP_LAB_SKIP=1")
    lab = Lab(LAB_DIR)
    lab.up(3)
    try:
        etc = lab.config.etc_pve
        jobs = []
        for i in range(GUESTS):
            vmid, node = FIRST + i, lab.nodes[i % 3]
            vmtype = "lxc" if i % 4 == 3 else "qemu"
            text = gentree.lxc_config(vmid, i) if vmtype == "lxc" else gentree.qemu_config(vmid, i)
            sub = "lxc" if vmtype == "lxc" else "qemu-server"
            (etc / "nodes" / node / sub / f"{vmid}.conf").write_text(text)
            if i % 2 == 0:
                jobs.append(
                    f"local: {vmid}-0\n\ttarget {lab.nodes[(i + 1) % 3]}\n\tsource {node}\n"
                )
        (etc / "replication.cfg").write_text("\n".join(jobs) + "\n")
        lab.refresh_vmlist()
        secret = secrets.token_hex(16)
        apiserver.write_token(lab, TOKEN_ID, secret)
        token = tmp_path_factory.mktemp("bench") / "token"
        token.write_text(secret + "\n")
        token.chmod(0o600)
        servers = apiserver.start_all(lab)
        settings = ApiSettings(
            backend="https",
            host=f"{lab.node_ip('pve1')}:{apiserver.PORT}",
            token=TOKEN_ID,
            secret_file=str(token),
            ca_file=str(etc / "pve-root-ca.pem"),
        ).validate()
        try:
            yield lab, settings
        finally:
            apiserver.stop(servers)
    finally:
        lab.down()


def test_discovery_200_guests_lab(lab_api: tuple[Lab, ApiSettings], benchmark) -> None:  # type: ignore[no-untyped-def]
    lab, settings = lab_api
    done = lab.exec(
        "pve1", [lab.config.python, "-c", ON_NODE.format(rounds=5)], check=True, timeout=300
    )
    on_node = json.loads(done.stdout)
    files_s = min(on_node["times"])
    result = benchmark.pedantic(lambda: discover_guests(ApiCluster(settings)), rounds=3)
    assert [g.to_api() for g in result] == on_node["result"]
    assert len(result) >= GUESTS
    https_s = benchmark.stats.stats.min
    benchmark.extra_info.update(
        files_on_node_s=round(files_s, 4),
        https_s=round(https_s, 4),
        https_over_files=round(https_s / files_s, 1),
    )
    print(f"\n200 guests: files on node {files_s:.3f} s, https API {https_s:.3f} s "
          f"({https_s / files_s:.0f}x)")  # fmt: skip
