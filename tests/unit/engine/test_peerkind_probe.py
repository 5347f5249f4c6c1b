"""engine.peerkind on a scripted shell: the probe's exact argv and timeout, which answers mean
pverep, the error texts whole, and the [peers] values' spelling."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pverep.engine.peerkind import decide_peer_kind, probe_peer_kind, read_peer_settings
from pverep.errors import ConfigError, PverepError
from pverep.transport.base import CommandResult


class ScriptedShell:
    """Answers every command with one result; records argv and keywords."""

    node = "pve2"

    def __init__(self, returncode: int, stdout: bytes = b"", stderr: bytes = b"") -> None:
        self.answer = (returncode, stdout, stderr)
        self.calls: list[tuple[list[str], dict[str, Any]]] = []

    def run(self, argv: list[str], **kw: Any) -> CommandResult:
        self.calls.append((list(argv), kw))
        return CommandResult(list(argv), *self.answer)


def probe(shell: ScriptedShell, *args: Any) -> str:
    return probe_peer_kind(shell, *args)  # type: ignore[arg-type]


def test_probe_argv_and_timeout() -> None:
    shell = ScriptedShell(127)
    assert probe(shell, ("/opt/pverep", "-q"), 7.5) == "pve"
    assert shell.calls == [(["/opt/pverep", "-q", "peer-info"], {"timeout": 7.5})]
    shell = ScriptedShell(127)
    assert probe(shell) == "pve"
    assert shell.calls == [(["pverep", "peer-info"], {"timeout": None})]


@pytest.mark.parametrize(
    "stdout",
    [
        b'{"program": "pverep", "version": "0.1"}\n',
        b'  {"program": "pverep"}  \n\n',
        b'motd line\n{"program": "pverep"}\n',  # the last line is the answer
    ],
)
def test_pverep_answers(stdout: bytes) -> None:
    assert probe(ScriptedShell(0, stdout)) == "pverep"


@pytest.mark.parametrize(
    ("returncode", "stdout", "stderr", "tail"),
    [
        (0, b'{"program": "pverep"}\nnot json\n', b"", "exit code 0"),
        (0, b'{"program": "pvesr"}\n', b"", "exit code 0"),
        (0, b'["program", "pverep"]\n', b"", "exit code 0"),
        (0, b"", b"", "exit code 0"),
        (0, b"\n  \n", b"", "exit code 0"),
        (1, b'{"program": "pverep"}\n', b"", "exit code 1"),
        (126, b"", b"one\ntwo\nthree\n", "two; three"),
        (255, b"", b"Permission denied\n", "Permission denied"),
    ],
)
def test_other_answers_are_errors(returncode: int, stdout: bytes, stderr: bytes, tail: str) -> None:
    with pytest.raises(PverepError) as err:
        probe(ScriptedShell(returncode, stdout, stderr))
    assert str(err.value) == f"cannot tell whether node 'pve2' runs pverep: {tail}"


def test_decide_passes_argv_and_timeout_to_the_probe() -> None:
    shell = ScriptedShell(127)
    kind = decide_peer_kind("PVE2", shell, {"pve2": "auto"}, ("x",), 3.0)  # type: ignore[arg-type]
    assert kind == "pve"
    assert shell.calls == [(["x", "peer-info"], {"timeout": 3.0})]
    # the node name is looked up in lower case
    assert decide_peer_kind("PVE2", shell, {"pve2": "pverep"}) == "pverep"  # type: ignore[arg-type]
    assert decide_peer_kind("Pve2", shell, {"pve2": "stock"}) == "pve"  # type: ignore[arg-type]
    assert len(shell.calls) == 1


def test_setting_values_are_case_and_space_insensitive(tmp_path: Path) -> None:
    conf = tmp_path / "pverep.conf"
    conf.write_text("[other]\nx = 1\n[peers]\npve2 =  Stock \nPVE3 = PVEREP\n")
    assert read_peer_settings(conf) == {"pve2": "stock", "pve3": "pverep"}


def test_no_peers_section_is_auto_everywhere(tmp_path: Path) -> None:
    conf = tmp_path / "pverep.conf"
    conf.write_text("[run]\nmax_workers = 2\n")
    assert read_peer_settings(conf) == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[peers]\npve2 =  Maybe \n",
            "{path}: invalid value 'Maybe' for 'pve2' in section [peers] (auto, pverep or stock)",
        ),
        ("[peers]\nbad_name = stock\n", "{path}: invalid node name 'bad_name' in section [peers]"),
    ],
)
def test_bad_settings_whole_message(tmp_path: Path, text: str, message: str) -> None:
    conf = tmp_path / "pverep.conf"
    conf.write_text(text)
    with pytest.raises(ConfigError) as err:
        read_peer_settings(conf)
    assert str(err.value) == message.format(path=conf)
