"""The package imports, the extension loads, and paths move with the root."""

from pathlib import Path

import pverep._core as core
from pverep.paths import Paths


def test_extension_reports_engine_version() -> None:
    assert core.core_version() == "0.1.0"


def test_paths_follow_root(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PVEREP_ROOT", str(tmp_path))
    paths = Paths.from_env()
    assert paths.replication_cfg == tmp_path / "etc/pve/replication.cfg"
    assert paths.state_file == tmp_path / "var/lib/pve-manager/pve-replication-state.json"
    assert paths.guest_config("pve2", "lxc", 100) == tmp_path / "etc/pve/nodes/pve2/lxc/100.conf"
    assert Paths.from_env("/").run_lock == Path("/var/lock/pvesr.lck")
