"""LocalShell: run an argv on this node."""

from __future__ import annotations

from collections.abc import Sequence

from pverep.transport.base import (
    DEVNULL,
    PIPE,
    CommandResult,
    LineSink,
    Process,
    run_argv,
    spawn_argv,
)


class LocalShell:
    """Runs commands on this machine, argv as given (no shell)."""

    def __init__(self, node: str = "localhost") -> None:
        self._node = node

    @property
    def node(self) -> str:
        return self._node

    def command(self, argv: Sequence[str]) -> list[str]:
        return list(argv)

    def run(
        self, argv: Sequence[str], *, input: bytes | None = None, timeout: float | None = None
    ) -> CommandResult:
        return run_argv(self.command(argv), input=input, timeout=timeout)

    def spawn(
        self,
        argv: Sequence[str],
        *,
        stdin: int = DEVNULL,
        stdout: int = PIPE,
        on_stderr: LineSink | None = None,
        new_group: bool = False,
    ) -> Process:
        return spawn_argv(
            self.command(argv), stdin=stdin, stdout=stdout, on_stderr=on_stderr, new_group=new_group
        )
