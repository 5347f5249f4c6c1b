"""A stand-in for ``pvesh`` backed by FakePveApi, for proxmoxer's local/openssh backends.

Installed as ``pvesh`` on the PATH of a test or lab node. Like the real one it takes
``pvesh get|create|set|delete <path> [-key value]… --output-format json``, prints the bare
JSON result (nothing for ``null``), and on failure prints the error on stderr (``NNN text``
only for 4xx/5xx codes other than 500, as PVE's CLIHandler does) and exits non-zero.
``PVEREP_FAKEPVESH_FAULT=<path regex>=<fault>`` injects a FakePveApi fault;
``PVEREP_FAKEPVESH_WARN`` makes it print that warning on stderr and still succeed (the
storage-plugin warnings behind proxmoxer issue #222). Node name: ``$PVEREP_FAKEPVESH_NODE``
(this fake's own setting, for tests outside the lab) or the host name; root: ``$PVEREP_ROOT``;
other nodes: ``PVEREP_FAKEPVESH_PEERS=node=root,…`` (in process), or
with ``PVEREP_FAKEPVESH_SSH=1`` (on a lab node) ``ssh <node> pvesh …`` as the real pvesh proxies.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace

from pverep.cluster.files import FilesCluster
from pverep.lab.fakeapi import FakePveApi, Peer, Reply, Request
from pverep.paths import Paths

VERBS = {"get": "GET", "create": "POST", "set": "PUT", "delete": "DELETE"}
CLI_VERBS = {method: verb for verb, method in VERBS.items()}
SSH_TIMEOUT = 60


def _ssh_peer(node: str) -> Peer:
    """Ask ``node``'s pvesh over ssh (what pvesh does for a path on another node)."""

    def ask(req: Request) -> Reply:
        argv = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", node, "pvesh",
                CLI_VERBS[req.method], req.path]  # fmt: skip
        for key, value in req.params.items():
            argv += [f"-{key}", value]
        argv += ["--output-format", "json"]
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=SSH_TIMEOUT,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            return Reply.error(595, f"node {node} did not answer")
        if done.returncode == 0:
            return Reply.ok(json.loads(done.stdout) if done.stdout.strip() else None)
        first = (done.stderr.strip().splitlines() or [""])[0]
        code, _, text = first.partition(" ")
        if done.returncode == 255 and not code.isdigit() and first.startswith("ssh:"):
            return Reply.error(595, first)
        if code.isdigit() and len(code) == 3:
            return Reply.error(int(code), text)
        return Reply.error(500, first)

    return ask


def _trusted(api: FakePveApi) -> Peer:
    return lambda req: api.handle(replace(req, trusted=True))


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 2 or args[0] not in VERBS:
        print("400 wrong number of arguments", file=sys.stderr)
        return 255
    method, path = VERBS[args[0]], "/" + args[1].strip("/")
    params: dict[str, str] = {}
    rest = args[2:]
    while rest:
        key = rest.pop(0).lstrip("-")
        value = rest.pop(0) if rest else "1"
        if key != "output-format":
            params[key] = value
    paths = Paths.from_env()
    node = FilesCluster(paths, os.environ.get("PVEREP_FAKEPVESH_NODE")).local_node()
    # pvesh reaches other nodes over ssh; the stand-in reads their roots in-process.
    peers = {}
    if os.environ.get("PVEREP_FAKEPVESH_SSH") == "1":
        peers = {name: _ssh_peer(name) for name in FilesCluster(paths).members() if name != node}
    for item in os.environ.get("PVEREP_FAKEPVESH_PEERS", "").split(","):
        name, sep, root = item.partition("=")
        if sep:
            peers[name] = _trusted(FakePveApi(Paths.from_env(root), name))
    api = FakePveApi(paths, node, peers=peers)
    fault = os.environ.get("PVEREP_FAKEPVESH_FAULT")  # "<path regex>=<fault>"
    if fault:
        pattern, _, kind = fault.rpartition("=")
        api.faults[pattern] = kind
    reply = api.handle(Request(method, path, params, {}, trusted=True))
    warning = os.environ.get("PVEREP_FAKEPVESH_WARN")
    if warning:
        print(warning, file=sys.stderr)
    if reply.raw is not None and reply.status < 400:
        sys.stdout.write(reply.raw.decode("utf-8", "replace") + "\n")
        return 0
    if reply.status >= 400:
        text = reply.reason if reply.raw is None else reply.raw.decode("utf-8", "replace")
        prefix = f"{reply.status} " if reply.status != 500 else ""
        print(prefix + text, file=sys.stderr)
        errors = (reply.body or {}).get("errors") if isinstance(reply.body, dict) else None
        for key, msg in (errors or {}).items():
            print(f"{key}: {msg}", file=sys.stderr)
        return 255
    data = reply.body.get("data") if isinstance(reply.body, dict) else None
    if data is not None:
        print(json.dumps(data, sort_keys=True, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
