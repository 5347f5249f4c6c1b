"""SshShell against the lab's real sshd: one handshake for a whole run when multiplexing, the
master stopped by its own pid at close with nothing left behind, and pvesr's exact argv (no
multiplexing) working as is.

Handshakes are counted where they happen: the ``Accepted publickey … from <pve1's ip>`` lines
in the target's sshd log. The shell runs ON pve1 (a small driver script below), as it would on
a source node.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from pverep.lab.control import Lab
from pverep.transport.ssh import SshShell, SshTarget, pvesr_ssh_argv

pytestmark = pytest.mark.lab
N = 20

#: Runs on the source node: N remote commands through one SshShell, reporting what the master
#: was while it lived (pid as ssh -O check names it, socket) and what is left after close().
DRIVER = """
import json, os, subprocess, sys, time
from pverep.transport.ssh import SshShell, SshTarget
node, ip, n, multiplex = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
target = SshTarget(node, ip, f"/etc/pve/nodes/{node}/ssh_known_hosts")
report = {}
started = time.monotonic()
with SshShell(target, multiplex=multiplex, prefer_aes_gcm=False) as shell:
    outs = [shell.run(["hostname"]).check().stdout_text for _ in range(n)]
    report["outs"] = outs
    path = shell.control_path
    report["socket"] = str(path) if path else None
    if path is not None:
        check = subprocess.run(
            ["ssh", "-o", f"ControlPath={path}", "-O", "check", f"root@{ip}"],
            capture_output=True, text=True,
        )
        report["check"] = check.stderr.strip()
        report["socket_dir_mode"] = oct(os.stat(path.parent).st_mode & 0o777)
report["seconds"] = time.monotonic() - started
report["socket_left"] = bool(path) and os.path.exists(path.parent)
print(json.dumps(report))
"""


def _accepted(lab: Lab, node: str, source_ip: str) -> int:
    log = lab.config.node_dir(node) / "log" / "sshd.log"
    pattern = re.compile(rf"Accepted publickey for root from {re.escape(source_ip)} port ")
    return sum(1 for line in log.read_text(errors="replace").splitlines() if pattern.search(line))


def _drive(lab: Lab, n: int, multiplex: bool) -> tuple[dict[str, Any], int]:
    """Run the driver on pve1 against pve2; returns its report and the handshakes it cost."""
    before = _accepted(lab, "pve2", lab.node_ip("pve1"))
    done = lab.exec(
        "pve1",
        [lab.config.python, "-c", DRIVER, "pve2", lab.node_ip("pve2"), str(n),
         "1" if multiplex else "0"],
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report, _accepted(lab, "pve2", lab.node_ip("pve1")) - before


def _alive_on(lab: Lab, node: str, pid: int) -> bool:
    return lab.exec(node, ["test", "-e", f"/proc/{pid}"]).returncode == 0


def test_multiplexed_run_costs_one_handshake_and_leaves_nothing(lab: Lab) -> None:
    report, handshakes = _drive(lab, N, multiplex=True)
    assert report["outs"] == ["pve2\n"] * N
    assert handshakes == 1, f"{N} commands cost {handshakes} ssh handshakes"
    m = re.fullmatch(r"Master running \(pid=(\d+)\)", report["check"])
    assert m, report["check"]
    assert report["socket_dir_mode"] == "0o700"
    # close() stopped the master by its pid and removed the private socket directory
    assert not _alive_on(lab, "pve1", int(m.group(1)))
    assert report["socket_left"] is False


def test_without_multiplexing_every_command_is_a_connection(lab: Lab) -> None:
    n = 5
    report, handshakes = _drive(lab, n, multiplex=False)
    assert report["outs"] == ["pve2\n"] * n
    assert report["socket"] is None
    assert handshakes == n


def test_pvesr_exact_argv_works_against_the_lab_sshd(lab: Lab) -> None:
    target = SshTarget("pve2", lab.node_ip("pve2"), "/etc/pve/nodes/pve2/ssh_known_hosts")
    remote = ["pverep", "prepare-local-job", "9999-0", "--last_sync", "0", "--force"]
    argv = pvesr_ssh_argv(target, remote)
    plain = SshShell(target, multiplex=False, prefer_aes_gcm=False)
    assert plain.command(remote) == argv
    assert argv == [
        "/usr/bin/ssh", "-e", "none", "-o", "BatchMode=yes", "-o", "HostKeyAlias=pve2",
        "-o", "UserKnownHostsFile=/etc/pve/nodes/pve2/ssh_known_hosts",
        "-o", "GlobalKnownHostsFile=none", f"root@{lab.node_ip('pve2')}", "--", *remote,
    ]  # fmt: skip
    before = _accepted(lab, "pve2", lab.node_ip("pve1"))
    done = lab.exec("pve1", argv, timeout=60)
    # no guest 9999, nothing to scan: the target answers with the empty JSON object
    assert (done.returncode, done.stdout) == (0, "{}\n"), done.stderr
    assert _accepted(lab, "pve2", lab.node_ip("pve1")) - before == 1
