"""LocalShell: run an argv on this node."""

from __future__ import annotations

from collections.abc import Sequence

from pverep.transport.base import CommandShell


class LocalShell(CommandShell):
    """Runs commands on this machine, argv as given (no shell)."""

    def __init__(self, node: str = "localhost") -> None:
        self._node = node

    @property
    def node(self) -> str:
        return self._node

    def command(self, argv: Sequence[str]) -> list[str]:
        return list(argv)
