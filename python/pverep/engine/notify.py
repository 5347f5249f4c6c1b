"""Failure notifications (spec §3.5), sent through the node's local mail agent when it has one.

PVE renders the ``replication`` notification template; without PVE's notification system the
closest equivalent is a mail to root through ``/usr/sbin/sendmail``. No agent, no mail (the
failure is still in the state file, the job log and on stderr).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pverep.transport.base import Shell

SENDMAIL = Path("/usr/sbin/sendmail")


@dataclass(frozen=True)
class Failure:
    jobid: str
    target: str
    schedule: str
    last_sync: int
    fail_count: int
    error: str
    hostname: str


def _stamp(epoch: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch)) if epoch else "never"


def compose(f: Failure, recipient: str = "root") -> str:
    """The mail text, following the content of PVE's replication-body template."""
    body = [
        f"Replication job '{f.jobid}' with target '{f.target}' and schedule '{f.schedule}' failed!",
        "",
        f"Last successful sync: {_stamp(f.last_sync)}",
        f"Failure count: {f.fail_count}",
    ]
    if f.fail_count == 3:
        body += [
            "",
            "Note: The system  will now reduce the frequency of error reports, as the job "
            "appears to be stuck.",
        ]
    body += ["", "Error:", f.error]
    head = [
        f"To: {recipient}",
        f"Subject: Replication Job: '{f.jobid}' failed",
        "Content-Type: text/plain; charset=utf-8",
        f"X-Pverep-Host: {f.hostname}",
    ]
    return "\n".join([*head, "", *body]) + "\n"


def mailer(shell: Shell, sendmail: Path = SENDMAIL) -> Callable[[Failure], bool]:
    """A sender using the local mail agent; returns False (sends nothing) if there is none."""

    def send(failure: Failure) -> bool:
        if not sendmail.exists():
            return False
        shell.run([str(sendmail), "-t", "-oi"], input=compose(failure).encode(), timeout=30)
        return True

    return send
