"""``pverep install-hookscript``: the hookscript lands on the snippets storage byte for byte,
the attach lines are printed, and --uninstall reverses it without ever removing a file that
is not pverep's or one a guest still needs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pverep.cli import App
from pverep.paths import Paths

from .clihelp import run_cli

HOOKSCRIPT = Path(__file__).resolve().parents[2] / "hooks" / "pverep-hookscript"
STORAGE_CFG = (
    "dir: local\n\tpath /var/lib/vz\n\tcontent iso,vztmpl,backup,snippets\n\n"
    "dir: tmpl\n\tpath /srv/tmpl\n\tcontent iso\n\n"
    "zfspool: local-zfs\n\tpool rpool/data\n\tcontent images\n\n"
)


class Node:
    def __init__(self, root: Path) -> None:
        self.root = root
        pve = root / "etc/pve"
        (pve / "priv").mkdir(parents=True)
        members = {"nodename": "pve1", "version": 2,
                   "nodelist": {"pve1": {"id": 1, "online": 1, "ip": "10.0.0.1"}}}  # fmt: skip
        (pve / ".members").write_text(json.dumps(members))
        (pve / "storage.cfg").write_text(STORAGE_CFG)
        for vmid, sub in ((100, "qemu-server"), (101, "lxc")):
            conf = pve / "nodes" / "pve1" / sub / f"{vmid}.conf"
            conf.parent.mkdir(parents=True, exist_ok=True)
            conf.write_text("memory: 512\n")
        self.app = App(paths=Paths(root))
        self.snippet = root / "var/lib/vz/snippets/pverep-hookscript"

    def run(self, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
        return run_cli(self.app, capsys, *args)

    def attach(self, vmid: int, sub: str, volid: str) -> None:
        conf = self.root / "etc/pve/nodes/pve1" / sub / f"{vmid}.conf"
        conf.write_text(f"memory: 512\nhookscript: {volid}\n")


@pytest.fixture
def node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Node:
    monkeypatch.setenv("PVEREP_NODENAME", "pve1")
    return Node(tmp_path)


def test_install_copies_the_script_and_prints_the_attach_lines(node: Node, capsys) -> None:
    code, out, err = node.run(capsys, "install-hookscript")
    assert (code, err) == (0, "")
    assert node.snippet.read_bytes() == HOOKSCRIPT.read_bytes()
    assert node.snippet.stat().st_mode & 0o777 == 0o755
    assert out.splitlines() == [
        f"hookscript 'local:snippets/pverep-hookscript' installed ({node.snippet})",
        "storage 'local' is not shared: run this on every node the guests may start on",
        "attach it to a guest (as root@pam) with one of:",
        "  qm set <vmid> --hookscript local:snippets/pverep-hookscript",
        "  pct set <vmid> --hookscript local:snippets/pverep-hookscript",
    ]
    code, out, _ = node.run(capsys, "install-hookscript")
    assert code == 0 and "already installed" in out.splitlines()[0]


def test_install_refuses_storages_without_snippets(node: Node, capsys) -> None:
    code, out, err = node.run(capsys, "install-hookscript", "--storage", "tmpl")
    assert (code, out) == (255, "")
    assert err == (
        "storage 'tmpl' does not allow snippets - enable them with "
        "'pvesm set tmpl --content iso,snippets'\n"
    )
    code, _, err = node.run(capsys, "install-hookscript", "--storage", "local-zfs")
    assert (code, err) == (255, "storage 'local-zfs' (type zfspool) cannot hold snippets\n")
    code, _, err = node.run(capsys, "install-hookscript", "--name", "../../etc/passwd")
    assert (code, err) == (255, "invalid snippet name '../../etc/passwd'\n")
    assert not (node.root / "var/lib/vz/snippets").exists()


def test_a_foreign_snippet_is_neither_overwritten_nor_removed(node: Node, capsys) -> None:
    node.snippet.parent.mkdir(parents=True)
    node.snippet.write_text("#!/bin/sh\n# the admin's own hook\n")
    for args in ((), ("--uninstall",)):
        code, _, err = node.run(capsys, "install-hookscript", *args)
        assert code == 255 and "not pverep's hookscript" in err
    assert node.snippet.read_text() == "#!/bin/sh\n# the admin's own hook\n"


def test_uninstall_waits_until_no_guest_uses_it(node: Node, capsys) -> None:
    assert node.run(capsys, "install-hookscript")[0] == 0
    node.attach(100, "qemu-server", "local:snippets/pverep-hookscript")
    node.attach(101, "lxc", "local:snippets/pverep-hookscript")
    code, out, err = node.run(capsys, "install-hookscript", "--uninstall")
    assert (code, out) == (255, "")
    assert err == (
        "guests still use 'local:snippets/pverep-hookscript' and would not start without it - "
        "detach it first: qm set 100 --delete hookscript; pct set 101 --delete hookscript\n"
    )
    assert node.snippet.exists()
    for vmid, sub in ((100, "qemu-server"), (101, "lxc")):
        (node.root / "etc/pve/nodes/pve1" / sub / f"{vmid}.conf").write_text("memory: 512\n")
    code, out, err = node.run(capsys, "install-hookscript", "--uninstall")
    assert (code, err) == (0, "")
    assert out == f"hookscript 'local:snippets/pverep-hookscript' removed ({node.snippet})\n"
    assert not node.snippet.exists() and os.listdir(node.snippet.parent) == []
    code, out, _ = node.run(capsys, "install-hookscript", "--uninstall")
    assert code == 0 and "not installed" in out
