"""datacenter.cfg transport selection (spec §1.6)."""

from __future__ import annotations

import pytest

from pverep.config.datacenter import TransportSetting, parse_transport
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
