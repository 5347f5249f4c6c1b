"""packaging/deb/build.py's layout without building: what is copied where (the built package
itself is checked by tests/deb)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]


def _build() -> ModuleType:
    spec = importlib.util.spec_from_file_location("deb_build", REPO / "packaging/deb/build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_prometheus_rules_ship_as_data_next_to_the_hookscript() -> None:
    copied = {rel: (src, mode) for rel, src, mode in _build().copied_files()}
    rules = REPO / "hooks/prometheus/pverep-alerts.yml"
    tests = REPO / "hooks/prometheus/pverep-alerts.test.yml"
    assert copied["usr/share/pverep/prometheus/pverep-alerts.yml"] == (rules, 0o644)
    # the promtool tests name the rules file relatively: both land in one directory
    assert copied["usr/share/pverep/prometheus/pverep-alerts.test.yml"] == (tests, 0o644)
    assert "pverep-alerts.yml" in tests.read_text()
    assert copied["usr/share/pverep/pverep-hookscript"][1] == 0o755


def test_every_copied_file_exists_and_lands_once() -> None:
    files = _build().copied_files()
    assert all(src.is_file() for _rel, src, _mode in files)
    rels = [rel for rel, _src, _mode in files]
    assert len(rels) == len(set(rels))
    assert not [r for r in rels if r.startswith("/") or ".." in r]
