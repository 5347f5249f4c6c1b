"""FAKE ``pvesr``/``pvesm``/``pvecm`` for a stock-like lab node (no real Proxmox VE here).

``stock_node(lab, node)`` turns a lab node into what a stock Proxmox VE node looks like to a
replication source: ``pverep`` leaves its PATH, ``pvesr``, ``pvesm`` and ``pvecm`` appear. Each
call of these fakes appends its argv as one JSON line to ``RECORD`` on that node (so a test can
compare it with pvesr's exact argv), then does the real work with pverep's target-side verbs
(real ``zfs recv``, real snapshots) through ``python -m pverep.lab.fakepve``, an entry point
that is not ``pverep`` on the PATH. Only the verbs a replication source sends are faked.
"""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from pverep.lab.clusterfs import NODE_RUN

if TYPE_CHECKING:
    from pverep.lab.control import Lab

#: Where each fake call's argv is recorded, one JSON list per line (node-private /run).
RECORD = f"{NODE_RUN}/fake-pve-argv.jsonl"
#: The verbs a replication source sends to a stock node, per tool.
FAKED_VERBS = {
    "pvesr": ("prepare-local-job", "finalize-local-job"),
    "pvesm": ("import", "export"),
    "pvecm": ("mtunnel",),  # only its -get_migration_ip lookup
}
_NODE_BIN = f"{NODE_RUN}/bin"


def main(argv: list[str]) -> None:
    """``python -m pverep.lab.fakepve <pvesr|pvesm> <verb> …``: record, then do the work."""
    tool, args = argv[0], argv[1:]
    with open(RECORD, "a", encoding="utf-8") as record:
        record.write(json.dumps([tool, *args]) + "\n")
    if not args or args[0] not in FAKED_VERBS.get(tool, ()):
        print(f"fake {tool}: verb not faked: {' '.join(args[:1])}", file=sys.stderr)
        sys.exit(2)
    from pverep.cli import main as pverep_main

    pverep_main(args)


@contextmanager
def stock_node(lab: Lab, node: str) -> Iterator[None]:
    """Make ``node`` stock-like while the context lasts; its ``pverep`` comes back after."""
    cfg = lab.config
    for tool in FAKED_VERBS:
        script = cfg.bin_dir / f"fake-{tool}"
        script.write_text(
            f"#!/bin/sh\n# FAKE {tool} (pverep.lab.fakepve): records argv, pverep works\n"
            f'exec {shlex.quote(cfg.python)} -m pverep.lab.fakepve {tool} "$@"\n'
        )
        script.chmod(0o755)
    lab.exec(node, ["rm", "-f", f"{_NODE_BIN}/pverep", RECORD], check=True)
    for tool in FAKED_VERBS:
        lab.exec(node, ["ln", "-sf", str(cfg.bin_dir / f"fake-{tool}"), f"{_NODE_BIN}/{tool}"])
    try:
        yield
    finally:
        lab.exec(node, ["rm", "-f", *(f"{_NODE_BIN}/{tool}" for tool in FAKED_VERBS)])
        lab.exec(node, ["ln", "-sf", str(cfg.bin_dir / "pverep"), f"{_NODE_BIN}/pverep"])


def recorded(lab: Lab, node: str) -> list[list[str]]:
    """Every argv the node's fakes received, in order."""
    res = lab.exec(node, ["cat", RECORD])
    return [json.loads(line) for line in res.stdout.splitlines() if line.strip()]


if __name__ == "__main__":
    main(sys.argv[1:])
