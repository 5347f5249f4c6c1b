"""The OpenZFS lab engine's host-side logic that needs no VM: cache keys, mirror discovery,
the ssh command line of ``exec`` and what it forwards of the environment."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from pverep.lab import control
from pverep.lab.config import LabConfig, LabError
from pverep.lab.openzfs import engine, image

SOURCES = """Types: deb
URIs: http://mirror.invalid/debian
Suites: bookworm bookworm-updates
Components: main

Types: deb
URIs: http://mirror.invalid/debian-security
Suites: bookworm-security
Components: main
"""


def test_host_mirrors_come_from_the_deb822_sources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "debian.sources").write_text(SOURCES)
    monkeypatch.setattr(image, "SOURCES_DIR", tmp_path)
    assert image.host_mirrors() == ("http://mirror.invalid/debian",
                                    "http://mirror.invalid/debian-security")  # fmt: skip
    (tmp_path / "debian.sources").write_text(SOURCES.split("\n\n")[0])
    with pytest.raises(LabError, match="bookworm-security"):
        image.host_mirrors()


def test_cache_keys_follow_every_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = tmp_path / "build-rootfs.sh"
    script.write_text("a")
    guest = tmp_path / "guest"
    guest.mkdir()
    (guest / "ozinit").write_text("init")
    monkeypatch.setattr(image, "ROOTFS_SCRIPT", script)
    monkeypatch.setattr(image, "GUEST_FILES", guest)
    mirrors = ("m", "s")
    key = image.rootfs_key("6.1.0-1-cloud-amd64", mirrors)
    assert key == image.rootfs_key("6.1.0-1-cloud-amd64", mirrors)  # stable: a second up reuses
    assert key != image.rootfs_key("6.1.0-2-cloud-amd64", mirrors)
    assert key != image.rootfs_key("6.1.0-1-cloud-amd64", ("m2", "s"))
    script.write_text("b")
    assert key != image.rootfs_key("6.1.0-1-cloud-amd64", mirrors)
    ikey = image.image_key(key)
    (guest / "ozinit").write_text("init2")
    assert ikey != image.image_key(key)
    assert image.image_key(key) != image.image_key("other-rootfs")


def test_exec_over_ssh_quotes_every_word_and_keeps_the_cwd(tmp_path: Path) -> None:
    cfg = LabConfig(tmp_path, ("pve1", "pve2"), 42, engine="openzfs")
    argv = ["sh", "-c", 'echo "$1"; true', "x y", "$(rm -rf /)"]
    ssh = engine.ssh_argv(cfg, "pve2", argv, cwd="/tmp/a b", env={"PVEREP_X": "1 2"})
    assert ssh[0] == "ssh" and "root@10.213.42.12" in ssh
    remote = ssh[ssh.index("--") + 1 :]
    # the remote shell splits the quoted words back into exactly the argv we meant
    words = shlex.split(" ".join(remote))
    assert words[:5] == ["sh", "-c", engine.CD_THEN_EXEC, "sh", "/tmp/a b"]
    assert words[5:] == ["env", "PVEREP_X=1 2", *argv]
    assert f"UserKnownHostsFile={tmp_path}/nodes/pve2/known_hosts" in ssh


def test_only_changed_variables_are_forwarded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PVEREP_KEEP", "same")
    env = {"PVEREP_KEEP": "same", "PVEREP_STALL_TIMEOUT": "3", "PATH": "/x", "HOME": "/y"}
    assert control._env_delta(env) == {"PVEREP_STALL_TIMEOUT": "3"}
    assert control._env_delta(None) == {}


def test_an_unknown_engine_is_one_clear_error() -> None:
    lab_dir = Path("/var/tmp/pverep-unit-never-created")
    with pytest.raises(LabError, match="bad lab engine 'zfs9'"):
        control.Lab(lab_dir).up(1, "zfs9")
    assert not lab_dir.exists()
