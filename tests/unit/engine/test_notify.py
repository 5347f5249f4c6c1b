"""The failure mail (spec §3.5): its exact text, the sendmail argv, no agent = no mail."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pverep.engine import notify
from pverep.transport.base import CommandResult

T_SYNC = 1_700_000_000  # 2023-11-14 22:13:20 UTC


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


class RecordingShell:
    node = "pve1"

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], dict[str, Any]]] = []

    def run(self, argv: list[str], **kw: Any) -> CommandResult:
        self.calls.append((list(argv), kw))
        return CommandResult(list(argv), 0, b"", b"")


def failure(count: int, last_sync: int = T_SYNC) -> notify.Failure:
    return notify.Failure("100-0", "pve2", "*/15", last_sync, count, "boom\nsecond", "pve1")


def test_mail_text_is_the_replication_template() -> None:
    assert notify.compose(failure(2), recipient="admin") == (
        "To: admin\n"
        "Subject: Replication Job: '100-0' failed\n"
        "Content-Type: text/plain; charset=utf-8\n"
        "X-Pverep-Host: pve1\n"
        "\n"
        "Replication job '100-0' with target 'pve2' and schedule '*/15' failed!\n"
        "\n"
        "Last successful sync: 2023-11-14 22:13:20\n"
        "Failure count: 2\n"
        "\n"
        "Error:\n"
        "boom\nsecond\n"
    )


def test_third_failure_says_reports_become_rarer_and_never_synced_says_never() -> None:
    text = notify.compose(failure(3, last_sync=0))
    assert text.startswith("To: root\n")
    body = text.split("\n\n", 1)[1]
    assert body == (
        "Replication job '100-0' with target 'pve2' and schedule '*/15' failed!\n"
        "\n"
        "Last successful sync: never\n"
        "Failure count: 3\n"
        "\n"
        "Note: The system  will now reduce the frequency of error reports, as the job "
        "appears to be stuck.\n"
        "\n"
        "Error:\n"
        "boom\nsecond\n"
    )
    assert "Note:" not in notify.compose(failure(4))


def test_mailer_pipes_the_mail_to_sendmail(tmp_path: Path) -> None:
    agent = tmp_path / "sendmail"
    agent.write_text("")
    shell = RecordingShell()
    assert notify.mailer(shell, agent)(failure(1)) is True  # type: ignore[arg-type]
    assert shell.calls == [
        ([str(agent), "-t", "-oi"], {"input": notify.compose(failure(1)).encode(), "timeout": 30})
    ]


def test_no_mail_agent_no_mail(tmp_path: Path) -> None:
    shell = RecordingShell()
    assert notify.mailer(shell, tmp_path / "none")(failure(1)) is False  # type: ignore[arg-type]
    assert shell.calls == []
    assert Path("/usr/sbin/sendmail") == notify.SENDMAIL
