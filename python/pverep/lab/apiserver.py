"""Run FakePveApi inside lab nodes, on ``<node ip>:8006`` as pveproxy listens on PVE.

Each server runs in its node's namespaces (its own /var/lib/pve-manager state, the shared
/etc/pve), forwards requests for other nodes to their servers over HTTPS, and trusts the lab's
cluster CA (``/etc/pve/pve-root-ca.pem``). Started one node at a time (the first start creates
the CA), remembered as (pid, start time) records and stopped only through them; a node going
down takes its server with it anyway (PID namespace).
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from dataclasses import dataclass

from pverep.lab.control import Lab
from pverep.lab.procs import ProcRecord, only_child, record

PORT = 8006
START_TIMEOUT = 20.0


def write_token(lab: Lab, tokenid: str, secret: str) -> None:
    """Register an API token as PVE keeps it (``/etc/pve/priv/token.cfg``)."""
    path = lab.config.etc_pve / "priv" / "token.cfg"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        line
        for line in (path.read_text().splitlines() if path.exists() else [])
        if line.split()[:1] != [tokenid]
    ]
    path.write_text("\n".join([*lines, f"{tokenid} {secret}"]) + "\n")
    path.chmod(0o600)


def _listening(ip: str, port: int) -> bool:
    try:
        with socket.create_connection((ip, port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class Server:
    node: str
    record: ProcRecord  # the server inside the node: what stop() signals
    nsenter: subprocess.Popen[bytes]  # its host-side parent, reaped after the stop


def start(lab: Lab, node: str, port: int = PORT) -> Server:
    """Start the fake API in ``node`` and wait until it accepts connections."""
    ip = lab.node_ip(node)
    log = lab.config.node_dir(node) / "log" / "fakeapi.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(  # lab.popen with our log; nsenter forks the server inside
            lab.exec_argv(
                node,
                [*lab.python_argv, "-m", "pverep.lab.fakeapi", "--node", node,
                 "--listen", f"{ip}:{port}"],
            ),
            env=lab.node_env(node),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )  # fmt: skip
    deadline = time.monotonic() + START_TIMEOUT
    while not _listening(ip, port):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"fake API on {node} did not start; see {log}")
        time.sleep(0.1)
    child = only_child(proc.pid)
    rec = record(child) if child is not None else None
    if rec is None:
        raise RuntimeError(f"fake API on {node}: cannot find its process")
    return Server(node, rec, proc)


def stop(servers: list[Server]) -> None:
    """Stop the servers by their recorded (pid, start time), never by name."""
    for srv in servers:
        if srv.record.kill():
            srv.record.wait_gone(5)
        # its child is gone, so nsenter follows; if not, the lab's down takes it
        with contextlib.suppress(subprocess.TimeoutExpired):
            srv.nsenter.wait(timeout=5)


def start_all(lab: Lab, port: int = PORT) -> list[Server]:
    servers: list[Server] = []
    try:
        for node in lab.nodes:
            servers.append(start(lab, node, port))
    except BaseException:
        stop(servers)
        raise
    return servers
