"""The shipped alert rules pass promtool's checks and their own unit tests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

RULES = Path(__file__).resolve().parents[3] / "hooks" / "prometheus"

pytestmark = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool (Debian package prometheus) missing"
)


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], cwd=RULES, capture_output=True, text=True)


def test_rules_are_valid() -> None:
    run = _promtool("check", "rules", "pverep-alerts.yml")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS: 3 rules found" in run.stdout


def test_rule_unit_tests_pass() -> None:
    run = _promtool("test", "rules", "pverep-alerts.test.yml")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS" in run.stdout
