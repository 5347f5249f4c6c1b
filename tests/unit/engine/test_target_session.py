"""ShellTarget with a ``pverep serve`` session: prepare and finalize go to it (same answer,
same log lines, a refusal as the verb's exit), a stock peer never gets one."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from pverep.engine.target import ShellTarget
from pverep.transport.base import CommandError, CommandResult, Process
from pverep.transport.peer import PeerCommands
from pverep.transport.serveclient import Answer, ServeSession

VOL = "local-zfs:vm-100-disk-0"


class RecordingShell:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    @property
    def node(self) -> str:
        return "pve2"

    def command(self, argv: Sequence[str]) -> list[str]:
        return ["ssh", "root@pve2", "--", *argv]

    def run(self, argv: Sequence[str], **kw: object) -> CommandResult:
        self.calls.append(list(argv))
        return CommandResult(list(argv), 0, b'{"local-zfs:vm-100-disk-0":{}}\n', b"per-verb\n")

    def spawn(self, argv: Sequence[str], **kwargs: object) -> Process:
        raise AssertionError("no streams here")


class FakeSession:
    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def call(self, op: str, args: Mapping[str, Any]) -> Answer:
        self.calls.append((op, dict(args)))
        return self.answer


def make(kind: str, session: FakeSession | None) -> tuple[ShellTarget, RecordingShell]:
    remote = RecordingShell()
    t = ShellTarget(
        node="pve2",
        remote=remote,  # type: ignore[arg-type]
        local=RecordingShell(),  # type: ignore[arg-type]
        send_argv=lambda v, s, b, f: ["zfs", "send"],
        commands=PeerCommands(kind=kind),  # type: ignore[arg-type]
        stall_timeout=None,
        session=lambda: session,  # type: ignore[arg-type,return-value]
    )
    return t, remote


def prepare(t: ShellTarget, log: list[str]) -> str:
    return t.prepare("100-0", [VOL], scan=["local-zfs"], last_sync=5, parent_snapname="s1",
                     force=False, on_stderr=log.append)  # fmt: skip


def test_prepare_and_finalize_go_to_the_session_with_typed_args() -> None:
    session = FakeSession(Answer(True, '{"x":{}}', "", ["a log line"]))
    t, remote = make("pverep", session)
    log: list[str] = []
    assert prepare(t, log) == '{"x":{}}'
    t.finalize("100-0", [VOL], 7, log.append)
    assert remote.calls == []  # no per-verb command
    assert session.calls == [
        ("prepare", {"jobid": "100-0", "volids": [VOL], "scan": ["local-zfs"], "last_sync": 5,
                     "parent_snapname": "s1", "force": False, "pverep_info": False}),
        ("finalize", {"jobid": "100-0", "volids": [VOL], "last_sync": 7}),
    ]  # fmt: skip
    assert log == ["a log line", "a log line"]


def test_a_refused_request_is_the_verbs_failure() -> None:
    session = FakeSession(Answer(False, "", "guest '100' is on local node", ["before"]))
    t, _ = make("pverep", session)
    log: list[str] = []
    with pytest.raises(CommandError) as exc:
        prepare(t, log)
    assert exc.value.returncode == 255
    assert exc.value.argv[:4] == ["ssh", "root@pve2", "--", "pverep"]
    assert exc.value.argv[4] == "prepare-local-job"
    assert exc.value.last_stderr_line == "guest '100' is on local node"
    assert log == ["before", "guest '100' is on local node"]


def test_ids_are_validated_before_anything_is_sent() -> None:
    session = FakeSession(Answer(True, "", "", []))
    t, _ = make("pverep", session)
    with pytest.raises(Exception, match="invalid"):
        t.finalize("100-0; reboot", [VOL], 7, lambda line: None)
    assert session.calls == []


@pytest.mark.parametrize("kind", ["pve", "pverep"])
def test_without_a_session_the_verbs_run_as_before(kind: str) -> None:
    session = FakeSession(Answer(True, "", "", [])) if kind == "pve" else None
    t, remote = make(kind, session)
    log: list[str] = []
    prepare(t, log)
    t.finalize("100-0", [VOL], 7, log.append)
    tool = "pvesr" if kind == "pve" else "pverep"
    assert remote.calls == [
        [tool, "prepare-local-job", "100-0", "--scan", "local-zfs", VOL, "--last_sync", "5",
         "--parent_snapname", "s1"],
        [tool, "finalize-local-job", "100-0", VOL, "--last_sync", "7"],
    ]  # fmt: skip
    assert session is None or session.calls == []  # a stock peer never gets the session
    assert ServeSession  # the real client: tests/unit/engine/test_serve.py
