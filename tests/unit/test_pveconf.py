"""pverep.conf's typed settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from pverep.config import pveconf, runconf
from pverep.errors import ConfigError


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, True),
        ("", True),
        ("1", True),
        ("Yes", True),
        ("TRUE", True),
        ("on", True),
        ("0", False),
        ("no", False),
        ("False", False),
        ("OFF", False),
    ],
)
def test_pveconf_get_bool(raw: str | None, expected: bool) -> None:
    values = {} if raw is None else {"flag": raw}
    assert pveconf.get_bool(values, "flag", True, Path("/etc/pverep/pverep.conf")) is expected
    if raw in (None, ""):
        assert pveconf.get_bool(values, "flag", False, Path("/x")) is False  # the default


def test_pveconf_get_bool_error() -> None:
    with pytest.raises(ConfigError) as err:
        pveconf.get_bool({"flag": "maybe"}, "flag", True, Path("/etc/pverep/pverep.conf"))
    assert str(err.value) == "/etc/pverep/pverep.conf: invalid value 'maybe' for 'flag' (a boolean)"


def test_get_int() -> None:
    where = Path("/etc/pverep/pverep.conf")
    assert pveconf.get_int({}, "n", 7, where) == 7
    assert pveconf.get_int({"n": ""}, "n", 7, where) == 7
    assert pveconf.get_int({"n": "0"}, "n", 7, where) == 0  # the minimum is 0 unless given
    assert pveconf.get_int({"n": "12"}, "n", 7, where, minimum=12) == 12
    for bad in ("11", "\uff11\uff12", "-1", "1.5", "x"):  # fullwidth digits are no ASCII
        with pytest.raises(ConfigError) as err:
            pveconf.get_int({"n": bad}, "n", 7, where, minimum=12)
        assert str(err.value) == f"{where}: invalid value '{bad}' for 'n' (an integer >= 12)"


def test_read_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "pverep.conf"
    path.write_text("[run]\nmax_workers = 1\n[run]\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        pveconf.read(path)
    assert str(err.value) == (
        f"{path}: While reading from '{path}' [line  3]: section 'run' already exists"
    )
    path.write_text("no section\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        pveconf.read(path)
    assert str(err.value) == f"{path}: File contains no section headers."
    path.unlink()
    path.mkdir()
    with pytest.raises(ConfigError) as err:
        pveconf.read(path)
    assert str(err.value) == f"cannot read '{path}': Is a directory"


def test_run_settings_limits_and_schedule(tmp_path: Path) -> None:
    conf = tmp_path / "pverep.conf"
    conf.write_text("[run]\nmax_workers = 64\nbandwidth_schedule = 20MB mon..fri 8-18\n")
    settings = runconf.read_run_settings(conf)
    assert settings.max_workers == 64
    assert [rate for rate, _frame in settings.bandwidth.rules] == [20e6]
    for body, msg in [
        ("max_workers = 65", f"{conf}: max_workers must be 1..64, got 65"),
        ("max_workers = 0", f"{conf}: invalid value '0' for 'max_workers' (an integer >= 1)"),
        (
            "bandwidth_schedule = 20MB",
            f"{conf}: [run] invalid schedule rule '20MB' (<rate> <frame>)",
        ),
    ]:
        conf.write_text(f"[run]\n{body}\n")
        with pytest.raises(ConfigError) as err:
            runconf.read_run_settings(conf)
        assert str(err.value) == msg
