"""Notifications through PVE's notification system: the real ``perl`` runs pverep's program
against FAKE PVE::Notify / PVE::INotify modules (the real ones need a PVE node: pmxcfs,
notifications.cfg, proxmox-perl-rs), which record the call they received."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pverep.engine import notify, pvenotify
from pverep.errors import PverepError
from pverep.paths import Paths
from pverep.transport.local import LocalShell

pytestmark = pytest.mark.skipif(shutil.which("perl") is None, reason="perl missing")

#: FAKE PVE::Notify: appends (severity, template, data, fields) as one JSON line to $FAKE_OUT.
FAKE_NOTIFY = r"""
package PVE::Notify;
use strict; use warnings; use JSON::PP;
sub common_template_data {
    return { hostname => 'pve1', fqdn => 'pve1.example', 'base-url' => 'x' };
}
sub error {
    my ($template, $data, $fields) = @_;
    die "notification backend down\n" if $ENV{FAKE_FAIL};
    open(my $fh, '>>', $ENV{FAKE_OUT}) or die;
    print $fh JSON::PP->new->canonical->encode(['error', $template, $data, $fields]), "\n";
    close($fh);
}
1;
"""
FAKE_INOTIFY = "package PVE::INotify;\nsub nodename { return 'pve1'; }\n1;\n"


@pytest.fixture
def pve_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Paths:
    lib = tmp_path / "root/usr/share/perl5/PVE"
    lib.mkdir(parents=True)
    (lib / "Notify.pm").write_text(FAKE_NOTIFY)
    (lib / "INotify.pm").write_text(FAKE_INOTIFY)
    monkeypatch.setenv("FAKE_OUT", str(tmp_path / "calls.jsonl"))
    return Paths(tmp_path / "root")


FAILURE = notify.Failure("100-0", "pve2", "*/15", 1_700_000_100, 3, "no route 'x' \"y\"", "pve1")


def _calls(paths: Paths) -> list[list[object]]:
    out = paths.root.parent / "calls.jsonl"
    return [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []


def test_pve_notify_gets_pvesr_template_data_and_fields(pve_root: Paths) -> None:
    send = pvenotify.sender(LocalShell("pve1"), pve_root)
    assert send(FAILURE) is True
    [[severity, template, data, fields]] = _calls(pve_root)
    assert (severity, template) == ("error", "replication")
    assert data == {
        "hostname": "pve1",
        "fqdn": "pve1.example",
        "base-url": "x",  # PVE's common fields kept
        "failure-count": 3,
        "last-sync": 1_700_000_100,
        "job-id": "100-0",
        "job-target": "pve2",
        "job-schedule": "*/15",
        "error": "no route 'x' \"y\"",  # quotes arrive intact: data never passes a shell
    }
    assert fields == {"type": "replication", "job-id": "100-0", "hostname": "pve1"}


def test_a_failing_backend_is_one_line_error(pve_root: Paths, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_FAIL", "1")
    with pytest.raises(PverepError, match=r"^PVE notification failed: notification backend down$"):
        pvenotify.sender(LocalShell("pve1"), pve_root)(FAILURE)


def test_without_pve_notify_the_mail_agent_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # compared by identity, not by the function's name: mutmut's trampolines rename functions
    shell = LocalShell("x")
    made: list[object] = []

    def mailer(given: object) -> object:
        made.append(given)
        return mailer

    monkeypatch.setattr(notify, "mailer", mailer)
    paths = Paths(tmp_path)
    assert not pvenotify.available(paths)
    assert pvenotify.sender(shell, paths) is mailer
    assert made == [shell]
