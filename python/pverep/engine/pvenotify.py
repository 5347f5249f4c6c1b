"""Failure notifications through Proxmox VE's own notification system (PVE 8.1+).

pvesr calls ``PVE::Notify::error("replication", <template data>, <metadata>)`` in-process,
so the node's configured targets and matchers (notifications.cfg) decide where it goes. There
is no command-line or API verb that sends a notification, so pverep runs the same call in a
short Perl program of its own: the program text is a constant, the failure's fields travel as
JSON on stdin (never in argv or a shell string). Thinning of repeated failures is the
scheduler's (engine.scheduler.should_notify, pvesr's 1-2-3 then 48·2^k rule).

Where PVE::Notify is not installed, ``sender`` falls back to the local mail agent
(engine.notify.mailer).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from pverep.engine import notify
from pverep.errors import PverepError
from pverep.paths import Paths
from pverep.transport.base import Shell

#: The Perl side: template data as pvesr fills it (common fields from PVE::Notify itself, the
#: job's on top), metadata fields for the matchers (type, job-id, hostname = nodename).
PERL_PROGRAM = r"""
use strict;
use warnings;
use JSON::PP;
use PVE::INotify;
use PVE::Notify;
my $in = do { local $/; <STDIN> };
my $failure = JSON::PP->new->utf8->decode($in);
my $data = PVE::Notify::common_template_data();
$data->{$_} = $failure->{$_} for keys %$failure;
my $fields = {
    type => 'replication',
    'job-id' => $failure->{'job-id'},
    hostname => PVE::INotify::nodename(),
};
PVE::Notify::error('replication', $data, $fields);
"""


def perl_lib(paths: Paths) -> Path:
    return paths.root / "usr/share/perl5"


def available(paths: Paths) -> bool:
    return (perl_lib(paths) / "PVE" / "Notify.pm").is_file()


def template_data(f: notify.Failure) -> dict[str, object]:
    """pvesr's template fields (API2/Replication.pm _handle_job_err)."""
    return {
        "failure-count": f.fail_count,
        "last-sync": f.last_sync,
        "job-id": f.jobid,
        "job-target": f.target,
        "job-schedule": f.schedule,
        "error": f.error,
    }


def pve_notifier(shell: Shell, paths: Paths) -> Callable[[notify.Failure], bool]:
    def send(failure: notify.Failure) -> bool:
        argv = ["perl", "-I", str(perl_lib(paths)), "-e", PERL_PROGRAM]
        payload = json.dumps(template_data(failure)).encode("utf-8")
        result = shell.run(argv, input=payload, timeout=30)
        if result.returncode != 0:
            tail = result.stderr.decode("utf-8", "replace").strip().splitlines()
            raise PverepError(f"PVE notification failed: {tail[-1] if tail else 'no output'}")
        return True

    return send


def sender(shell: Shell, paths: Paths) -> Callable[[notify.Failure], bool]:
    """PVE's notification system on a PVE node, the local mail agent elsewhere."""
    if available(paths):
        return pve_notifier(shell, paths)
    return notify.mailer(shell)
