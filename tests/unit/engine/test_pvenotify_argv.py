"""pvenotify on a scripted shell: the exact perl argv and JSON payload, the error's last line,
and what counts as PVE::Notify being installed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pverep.engine import notify, pvenotify
from pverep.errors import PverepError
from pverep.paths import Paths
from pverep.transport.base import CommandResult

FAILURE = notify.Failure("100-0", "pve2", "*/15", 1_700_000_100, 3, "bröken", "pve1")


class ScriptedShell:
    node = "pve1"

    def __init__(self, returncode: int = 0, stderr: bytes = b"") -> None:
        self.answer = (returncode, b"", stderr)
        self.calls: list[tuple[list[str], dict[str, Any]]] = []

    def run(self, argv: list[str], **kw: Any) -> CommandResult:
        self.calls.append((list(argv), kw))
        return CommandResult(list(argv), *self.answer)


def test_perl_argv_and_payload(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    shell = ScriptedShell()
    assert pvenotify.pve_notifier(shell, paths)(FAILURE) is True  # type: ignore[arg-type]
    [(argv, kw)] = shell.calls
    assert argv == ["perl", "-I", f"{tmp_path}/usr/share/perl5", "-e", pvenotify.PERL_PROGRAM]
    assert kw["timeout"] == 30
    assert kw["input"] == (
        b'{"failure-count": 3, "last-sync": 1700000100, "job-id": "100-0", '
        b'"job-target": "pve2", "job-schedule": "*/15", "error": "br\\u00f6ken"}'
    )
    assert json.loads(kw["input"])["error"] == "bröken"


@pytest.mark.parametrize(
    ("stderr", "message"),
    [
        (b"", "PVE notification failed: no output"),
        (b"  \n", "PVE notification failed: no output"),
        (b"first\nlast words \n\n", "PVE notification failed: last words"),
        (b"bad \xff byte\n", "PVE notification failed: bad \ufffd byte"),
    ],
)
def test_failure_is_the_last_stderr_line(tmp_path: Path, stderr: bytes, message: str) -> None:
    send = pvenotify.pve_notifier(ScriptedShell(2, stderr), Paths(tmp_path))  # type: ignore[arg-type]
    with pytest.raises(PverepError) as err:
        send(FAILURE)
    assert str(err.value) == message


def test_available_needs_the_notify_module_file(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    lib = tmp_path / "usr/share/perl5/PVE"
    lib.mkdir(parents=True)
    (lib / "INotify.pm").write_text("1;\n")
    assert not pvenotify.available(paths)
    (lib / "Notify.pm").mkdir()  # a directory of that name is not the module
    assert not pvenotify.available(paths)
    (lib / "Notify.pm").rmdir()
    (lib / "Notify.pm").write_text("1;\n")
    assert pvenotify.available(paths)
    shell = ScriptedShell()
    pvenotify.sender(shell, paths)(FAILURE)  # type: ignore[arg-type]
    assert shell.calls[0][0][:2] == ["perl", "-I"]
