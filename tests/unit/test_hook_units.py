"""The systemd units in hooks/ pass ``systemd-analyze verify`` (with the ExecStart binary
pointed at a stand-in, since pverep is not installed as /usr/bin/pverep here)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

HOOKS = Path(__file__).resolve().parents[2] / "hooks"
ANALYZE = shutil.which("systemd-analyze")


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")
def test_units_verify(tmp_path: Path) -> None:
    assert ANALYZE is not None
    stand_in = tmp_path / "pverep"
    stand_in.write_text("#!/bin/sh\n")
    stand_in.chmod(0o755)
    units = sorted(HOOKS.glob("*.service")) + sorted(HOOKS.glob("*.timer"))
    assert len(units) == 5
    for unit in units:
        text = unit.read_text()
        assert unit.suffix != ".service" or "ExecStart=/usr/bin/pverep " in text
        (tmp_path / unit.name).write_text(text.replace("/usr/bin/pverep", str(stand_in)))
    done = subprocess.run(
        [ANALYZE, "verify", "--man=no", *(f"./{u.name}" for u in units)],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0 and done.stderr == "", done.stderr
