"""engine.peerkind: the pverep-or-stock decision per target, through a real POSIX shell (the
way ssh runs the remote command), and the [peers] override in pverep.conf."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from pverep.engine.peerkind import decide_peer_kind, probe_peer_kind, read_peer_settings
from pverep.errors import ConfigError, PverepError
from pverep.transport.base import CommandResult, CommandShell


class PathShell(CommandShell):
    """Runs each argv through ``sh`` with PATH = one directory, as a remote login shell would."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.calls: list[list[str]] = []

    @property
    def node(self) -> str:
        return "pve2"

    def command(self, argv: Sequence[str]) -> list[str]:
        self.calls.append(list(argv))
        return ["/usr/bin/env", f"PATH={self.bindir}", "/bin/sh", "-c", '"$@"', "sh", *argv]


class NoCalls(CommandShell):
    @property
    def node(self) -> str:
        return "pve2"

    def command(self, argv: Sequence[str]) -> list[str]:
        raise AssertionError(f"an override must not probe: {argv}")

    def run(self, argv: Sequence[str], **_: object) -> CommandResult:
        self.command(argv)
        raise AssertionError("unreachable")


def _tool(bindir: Path, name: str, body: str) -> None:
    path = bindir / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


def test_a_node_without_pverep_on_its_path_is_stock(tmp_path: Path) -> None:
    _tool(tmp_path, "pvesr", "exit 0")
    shell = PathShell(tmp_path)
    assert probe_peer_kind(shell) == "pve"
    assert shell.calls == [["pverep", "peer-info"]]


def test_a_node_running_pverep_answers_peer_info(tmp_path: Path) -> None:
    # the real CLI of this checkout behind the name `pverep`
    _tool(tmp_path, "pverep", f'exec {sys.executable} -m pverep "$@"')
    assert probe_peer_kind(PathShell(tmp_path)) == "pverep"


def test_any_other_answer_is_an_error_not_a_guess(tmp_path: Path) -> None:
    _tool(tmp_path, "pverep", "echo 'Permission denied' >&2; exit 255")
    with pytest.raises(PverepError, match="cannot tell whether node 'pve2' runs pverep: Perm"):
        probe_peer_kind(PathShell(tmp_path))
    _tool(tmp_path, "pverep", "echo hello; exit 0")  # exit 0 but not pverep's answer
    with pytest.raises(PverepError, match="cannot tell"):
        probe_peer_kind(PathShell(tmp_path))


def test_override_wins_without_asking_and_auto_asks(tmp_path: Path) -> None:
    conf = tmp_path / "pverep.conf"
    conf.write_text("[peers]\npve2 = stock\nPVE3 = pverep\npve4 = auto\n")
    settings = read_peer_settings(conf)
    assert settings == {"pve2": "stock", "pve3": "pverep", "pve4": "auto"}
    assert decide_peer_kind("pve2", NoCalls(), settings) == "pve"
    assert decide_peer_kind("pve3", NoCalls(), settings) == "pverep"
    bindir = tmp_path / "bin"
    bindir.mkdir()
    assert decide_peer_kind("pve4", PathShell(bindir), settings) == "pve"
    assert decide_peer_kind("pve9", PathShell(bindir), settings) == "pve"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[peers]\npve2 = maybe\n", "invalid value 'maybe' for 'pve2' in section [peers]"),
        ("[peers]\n-bad = stock\n", "invalid node name '-bad' in section [peers]"),
    ],
)
def test_bad_peer_settings_are_one_line_errors(tmp_path: Path, text: str, message: str) -> None:
    conf = tmp_path / "pverep.conf"
    conf.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        read_peer_settings(conf)


def test_missing_file_means_auto_everywhere(tmp_path: Path) -> None:
    assert read_peer_settings(tmp_path / "absent.conf") == {}


def test_the_run_asks_each_target_once_and_reads_the_override(tmp_path: Path) -> None:
    from pverep.cluster.files import FilesCluster
    from pverep.engine.wiring import Node
    from pverep.paths import Paths

    paths = Paths.from_env(str(tmp_path))
    paths.pverep_conf.parent.mkdir(parents=True)
    paths.pverep_conf.write_text("[peers]\npve3 = pverep\n")
    node = Node(paths, FilesCluster(paths), "pve1")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    shell = PathShell(bindir)
    assert node.peer_kind("pve2", shell) == "pve"
    assert node.peer_kind("pve2", shell) == "pve"
    assert shell.calls == [["pverep", "peer-info"]]
    assert node.peer_kind("pve3", NoCalls()) == "pverep"
