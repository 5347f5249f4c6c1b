"""The Shell interface, command results, and the process handle with a bounded stderr tail.

Everything outside ``transport/`` runs commands through a ``Shell`` and passes ``list[str]``;
nothing else spawns processes or builds command strings.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import threading
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO, Protocol

from pverep.errors import PverepError

#: Pass as ``stdin``/``stdout`` to ``Shell.spawn``: a pipe the caller reads/writes.
PIPE = subprocess.PIPE
#: Pass as ``stdin``/``stdout`` to ``Shell.spawn``: /dev/null.
DEVNULL = subprocess.DEVNULL

#: How many stderr lines a command keeps for its error message (zrepl/PVE keep "the last line";
#: a few more help the job log without letting a chatty `zfs send -v` grow memory).
STDERR_TAIL_LINES = 20
#: How long wait() and kill() wait, once the child is gone, for its stderr to reach its end. A
#: grandchild the child left running may hold that pipe open for as long as it lives; the
#: child's own last words are in by then, and the drain thread ends whenever the pipe does.
STDERR_DRAIN_TIMEOUT = 5.0

LineSink = Callable[[str], None]


def display_argv(argv: Sequence[str]) -> str:
    """argv as PVE's cmd2string shows it in error messages (display only, never executed)."""
    return shlex.join(argv)


class CommandError(PverepError):
    """A command exited non-zero. str() is PVE's `command '<argv>' failed: exit code <n>`."""

    def __init__(self, argv: Sequence[str], returncode: int, stderr_tail: Sequence[str] = ()):
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr_tail = list(stderr_tail)
        super().__init__(f"command '{display_argv(argv)}' failed: exit code {returncode}")

    @property
    def last_stderr_line(self) -> str | None:
        return self.stderr_tail[-1] if self.stderr_tail else None


class CommandTimeout(CommandError):
    """A command ran past its timeout and was killed. str() is PVE's `got timeout`."""

    def __init__(self, argv: Sequence[str], timeout: float, stderr_tail: Sequence[str] = ()):
        super().__init__(argv, -9, stderr_tail)
        self.timeout = timeout
        self.args = ("got timeout",)

    def __str__(self) -> str:
        return "got timeout"


def _lines(data: bytes) -> list[str]:
    return [ln for ln in data.decode("utf-8", "replace").splitlines() if ln.strip()]


@dataclass(frozen=True)
class CommandResult:
    """Outcome of ``Shell.run``: the argv as executed on this machine, exit status, output."""

    argv: list[str]
    returncode: int
    stdout: bytes
    stderr: bytes

    @property
    def stdout_text(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    def stderr_tail(self, lines: int = STDERR_TAIL_LINES) -> list[str]:
        """The last non-blank stderr lines (bounded)."""
        return _lines(self.stderr)[-lines:]

    def check(self) -> CommandResult:
        """Raise CommandError unless the command succeeded."""
        if self.returncode != 0:
            raise CommandError(self.argv, self.returncode, self.stderr_tail())
        return self


@dataclass
class StderrTail:
    """Bounded memory of the last stderr lines, optionally forwarding each line as it arrives."""

    limit: int = STDERR_TAIL_LINES
    sink: LineSink | None = None
    lines: deque[str] = field(init=False)

    def __post_init__(self) -> None:
        self.lines = deque(maxlen=self.limit)

    def feed(self, line: str) -> None:
        line = line.rstrip("\r\n")
        if not line.strip():
            return
        self.lines.append(line)
        if self.sink is not None:
            self.sink(line)

    def drain(self, stream: IO[bytes]) -> None:
        """Read ``stream`` to EOF line by line (run in a thread), then close it."""
        with stream:
            for raw in iter(stream.readline, b""):
                self.feed(raw.decode("utf-8", "replace"))


class Process:
    """A running child: stderr is drained by a thread into a bounded tail; stdout/stdin may be
    pipes (``stdout``/``stdin`` attributes) or fds the caller handed over."""

    def __init__(
        self,
        popen: subprocess.Popen[bytes],
        argv: Sequence[str],
        *,
        on_stderr: LineSink | None = None,
        tail_lines: int = STDERR_TAIL_LINES,
        leads_group: bool = False,
    ) -> None:
        self._popen = popen
        self.argv = list(argv)
        #: Started as the leader of its own process group: kill() ends the whole group.
        self.leads_group = leads_group
        self._tail = StderrTail(tail_lines, on_stderr)
        self._reader: threading.Thread | None = None
        if popen.stderr is not None:
            self._reader = threading.Thread(
                target=self._tail.drain, args=(popen.stderr,), daemon=True
            )
            self._reader.start()

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def stdin(self) -> IO[bytes] | None:
        return self._popen.stdin

    @property
    def stdout(self) -> IO[bytes] | None:
        return self._popen.stdout

    @property
    def returncode(self) -> int | None:
        return self._popen.poll()

    @property
    def stderr_tail(self) -> list[str]:
        return list(self._tail.lines)

    def wait(self, timeout: float | None = None) -> int:
        """Wait for exit (and for stderr to be drained, for at most ``STDERR_DRAIN_TIMEOUT``).
        Raises CommandTimeout after killing."""
        try:
            rc = self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise CommandTimeout(self.argv, timeout or 0.0, self.stderr_tail) from None
        self.settle_stderr(STDERR_DRAIN_TIMEOUT)
        return rc

    def settle_stderr(self, timeout: float) -> None:
        """Wait up to ``timeout`` s for stderr to be drained to its end (the child exits or
        closes it), so the tail holds its last words; the child itself is left alone."""
        if self._reader is not None:
            self._reader.join(timeout)

    def kill(self) -> None:
        """Kill this child (by its own pid; its whole group when it leads one), reap it and
        close our pipe ends. The pid cannot be recycled before we reap it."""
        if self._popen.poll() is None:
            if self.leads_group:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self._popen.pid, signal.SIGKILL)
            else:
                self._popen.kill()
        self._popen.wait()
        self.settle_stderr(STDERR_DRAIN_TIMEOUT)
        self.close()

    def close(self) -> None:
        """Close the pipe ends we hold (stdin/stdout when they were PIPE)."""
        for pipe in (self._popen.stdin, self._popen.stdout):
            if pipe is not None:
                pipe.close()

    def __enter__(self) -> Process:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._popen.poll() is None:
            self.kill()
        self.close()

    def stop(self, grace: float = 2.0) -> None:
        """SIGTERM (lets e.g. an ssh master remove its socket), SIGKILL after ``grace``."""
        if self._popen.poll() is None:
            self._popen.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._popen.wait(grace)
        self.kill()

    def check(self, timeout: float | None = None) -> None:
        """Wait, then raise CommandError on a non-zero exit."""
        rc = self.wait(timeout)
        if rc != 0:
            raise CommandError(self.argv, rc, self.stderr_tail)


class Shell(Protocol):
    """Where commands run. ``node`` names that place (the local node or the ssh target)."""

    @property
    def node(self) -> str: ...

    def command(self, argv: Sequence[str]) -> list[str]:
        """The argv that will actually be executed on this machine for ``argv``."""
        ...

    def run(
        self, argv: Sequence[str], *, input: bytes | None = None, timeout: float | None = None
    ) -> CommandResult:
        """Run to completion capturing stdout/stderr; never raises on a non-zero exit (use
        ``.check()``), raises CommandTimeout after killing the command on timeout."""
        ...

    def spawn(
        self,
        argv: Sequence[str],
        *,
        stdin: int = DEVNULL,
        stdout: int = PIPE,
        on_stderr: LineSink | None = None,
        new_group: bool = False,
    ) -> Process:
        """Start ``argv``; ``stdin``/``stdout`` are fds (handed to the child, not closed here),
        PIPE or DEVNULL. stderr is always drained into the process's bounded tail.
        ``new_group``: the child leads a process group of its own, so that it and anything it
        starts can be stopped together (``Process.kill``) without touching our own group."""
        ...


class CommandShell(ABC):
    """A Shell whose commands run as local processes, each wrapped by ``command()``.

    ``open()`` is the hook for whatever must be up before a command runs (the ssh master);
    run/spawn are the same for every such shell.
    """

    @property
    @abstractmethod
    def node(self) -> str: ...

    @abstractmethod
    def command(self, argv: Sequence[str]) -> list[str]:
        """The argv that will actually be executed on this machine for ``argv``."""

    def open(self) -> CommandShell:
        """Make the shell ready to run commands; nothing to do by default."""
        return self

    def run(
        self, argv: Sequence[str], *, input: bytes | None = None, timeout: float | None = None
    ) -> CommandResult:
        self.open()
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
        self.open()
        return spawn_argv(
            self.command(argv), stdin=stdin, stdout=stdout, on_stderr=on_stderr, new_group=new_group
        )


def run_argv(
    argv: Sequence[str], *, input: bytes | None = None, timeout: float | None = None
) -> CommandResult:
    """Run a fully built local argv."""
    argv = list(argv)
    with subprocess.Popen(
        argv,
        stdin=PIPE if input is not None else DEVNULL,
        stdout=PIPE,
        stderr=PIPE,
    ) as proc:
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            raise CommandTimeout(argv, timeout or 0.0, _lines(err)[-STDERR_TAIL_LINES:]) from None
    return CommandResult(argv, proc.returncode, out, err)


def spawn_argv(
    argv: Sequence[str],
    *,
    stdin: int = DEVNULL,
    stdout: int = PIPE,
    on_stderr: LineSink | None = None,
    new_group: bool = False,
) -> Process:
    """Start a fully built local argv."""
    popen = subprocess.Popen(
        list(argv),
        stdin=stdin,
        stdout=stdout,
        stderr=PIPE,
        process_group=0 if new_group else None,
    )
    return Process(popen, argv, on_stderr=on_stderr, leads_group=new_group)
