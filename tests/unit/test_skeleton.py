"""The package imports, the extension loads, and paths move with the root."""

import importlib.metadata
import tomllib
from pathlib import Path

import pverep
import pverep._core as core
from pverep.paths import Paths

CARGO_TOML = Path(__file__).resolve().parents[2] / "Cargo.toml"


def test_one_version_everywhere() -> None:
    """Cargo.toml's workspace version is the only one: the extension, the package's
    ``__version__`` and the installed distribution's metadata all report it."""
    version = tomllib.loads(CARGO_TOML.read_text())["workspace"]["package"]["version"]
    assert core.core_version() == version
    assert pverep.__version__ == version
    assert importlib.metadata.version("pverep") == version


def test_paths_follow_root(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PVEREP_ROOT", str(tmp_path))
    paths = Paths.from_env()
    assert paths.replication_cfg == tmp_path / "etc/pve/replication.cfg"
    assert paths.state_file == tmp_path / "var/lib/pve-manager/pve-replication-state.json"
    assert paths.guest_config("pve2", "lxc", 100) == tmp_path / "etc/pve/nodes/pve2/lxc/100.conf"
    assert Paths.from_env("/").run_lock == Path("/var/lock/pvesr.lck")


def test_cli_reports_the_version(capsys) -> None:
    from pverep.cli import main

    main(["--version"])  # click ends --version with exit status 0, not an exception here
    assert capsys.readouterr().out == f"pverep {pverep.__version__}\n"
