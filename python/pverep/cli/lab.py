"""``pverep lab``: the embedded multi-node sandbox cluster (see pverep.lab)."""

from __future__ import annotations

from pverep.cli import cli


@cli.group()
def lab() -> None:
    """Manage the lab: a Proxmox-like cluster in namespaces on this machine."""
