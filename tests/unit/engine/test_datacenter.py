"""datacenter.cfg transport selection (spec §1.6)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pverep.config.datacenter import TransportSetting, parse_transport, read_transport
from pverep.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", TransportSetting()),
        ("keyboard: de\n", TransportSetting()),
        ("migration: insecure,network=10.0.0.0/24\n", TransportSetting(True, "10.0.0.0/24")),
        ("migration: type=insecure\nreplication: secure\n", TransportSetting(False, None)),
        (
            "replication: type=insecure,network=\nmigration: network=10.1.0.0/16\n",
            TransportSetting(True, None),
        ),
    ],
)
def test_replication_key_wins_when_present(text: str, expected: TransportSetting) -> None:
    assert parse_transport(text) == expected


def test_bad_network_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        parse_transport("migration: network=nonsense\n")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("# replication: insecure\n#migration: insecure\n", TransportSetting()),
        ("replication\nmigration: insecure\n", TransportSetting(True, None)),  # no ":": no key
        ("migration: secure,network=fd00::/64\n", TransportSetting(False, "fd00::/64")),
        ("migration: network=10.1.2.3/24\n", TransportSetting(False, "10.1.2.3/24")),  # host bits
        ("migration:  , insecure ,\n", TransportSetting(True, None)),
        ("replication: type=secure\nmigration: insecure\n", TransportSetting(False, None)),
    ],
)
def test_transport_lines(text: str, expected: TransportSetting) -> None:
    assert parse_transport(text) == expected


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("migration: network=a=b\n", "invalid network 'a=b' in 'migration'"),
        ("replication: network=x\n", "invalid network 'x' in 'replication'"),
        ("replication: type=bogus\n", "invalid value 'type=bogus' in 'replication'"),
        ("migration: fast\n", "invalid value 'fast' in 'migration'"),
        ("migration: secure,speed=9\n", "invalid value 'speed=9' in 'migration'"),
    ],
)
def test_transport_errors(text: str, error: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_transport(text)
    assert str(err.value) == f"datacenter.cfg: {error}"


def test_read_transport(tmp_path: Path) -> None:
    path = tmp_path / "datacenter.cfg"
    assert read_transport(path) == TransportSetting()  # no file: the default
    path.write_text("keyboard: de\nmigration: insecure,network=10.0.0.0/8\n", encoding="utf-8")
    assert read_transport(path) == TransportSetting(True, "10.0.0.0/8")
