"""transport/tcp.py in this process: the local addresses (from the real ``ip``), the listen
address of ``pvesm import tcp://…``, the port search, the dead-peer socket options and the
address filters. (test_transport.py runs the namespace case in a child process.)"""

from __future__ import annotations

import json
import socket
import subprocess

import pytest

from pverep.errors import PverepError
from pverep.transport import tcp


def test_local_addresses_are_those_of_interfaces_that_are_up() -> None:
    out = subprocess.run(["ip", "-j", "address", "show", "up"], capture_output=True, text=True,
                         check=True, timeout=10).stdout  # fmt: skip
    expected = [a["local"] for link in json.loads(out) for a in link.get("addr_info", [])]
    assert tcp.local_addresses() == expected
    assert "127.0.0.1" in expected


def test_listen_address_from_an_ip_or_a_network(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tcp, "local_addresses", lambda: ["127.0.0.1", "10.1.0.5", "fe80::7"])
    assert tcp.resolve_listen_address("10.1.0.0/16") == "10.1.0.5"
    assert tcp.resolve_listen_address("fe80::/64") == "fe80::7"
    assert tcp.resolve_listen_address("10.2.0.9") == "10.2.0.9"  # an address is taken as given
    assert tcp.resolve_listen_address("::0001") == "::1"
    with pytest.raises(ValueError):
        tcp.resolve_listen_address("10.2.0.9; reboot")
    with pytest.raises(PverepError) as err:
        tcp.resolve_listen_address("192.168.0.0/24")
    assert str(err.value) == "Unable to get any local IP address in network '192.168.0.0/24'"


def test_import_address_texts_are_pvesms() -> None:
    with pytest.raises(PverepError) as err:
        tcp.import_ip_in_network("10.0.0.0/8", ["10.0.0.1", "10.0.0.2"])
    assert str(err.value) == "Got multiple local IP address in network '10.0.0.0/8'"
    assert tcp.import_ip_in_network("10.0.0.0/8", ["10.0.0.1", "10.0.0.1", "::1"]) == "10.0.0.1"


def test_migration_address_texts_are_pvecms() -> None:
    with pytest.raises(PverepError) as err:
        tcp.pick_ip_in_network("10.9.0.0/24", ["10.0.0.1"])
    assert str(err.value) == (
        "could not get migration ip: no IP address configured on local node for network "
        "'10.9.0.0/24'"
    )
    with pytest.raises(PverepError) as err:
        tcp.pick_ip_in_network("10.0.0.0/8", ["10.0.0.2", "10.0.0.1"])
    assert str(err.value) == (
        "could not get migration ip: multiple, different, IP address configured for network "
        "'10.0.0.0/8'"
    )


def test_addresses_in_a_network_are_distinct_and_sorted() -> None:
    # host bits in the network are accepted, as pvesm and pvecm do
    found = tcp.ips_in_network("10.0.0.5/24", ["10.0.0.9", "10.0.1.1", "10.0.0.2", "10.0.0.9"])
    assert found == ["10.0.0.2", "10.0.0.9"]


def test_addresses_from_ip_json() -> None:
    assert tcp.parse_ip_addr_json("") == []
    text = json.dumps([{"ifname": "lo"}, {"addr_info": [{"local": 5}, {"family": "inet"},
                                                        {"local": "10.1.1.1"}]}])  # fmt: skip
    assert tcp.parse_ip_addr_json(text) == ["10.1.1.1"]


def test_listen_takes_the_first_free_port_and_says_when_there_is_none() -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    port = taken.getsockname()[1]
    taken.listen(1)
    try:
        with pytest.raises(PverepError) as err:
            tcp.listen("127.0.0.1", [port, port])
        assert str(err.value) == "unable to find free migration port on 127.0.0.1"
        sock = tcp.listen("127.0.0.1", [port, 0])
        with sock:
            assert sock.getsockname()[1] not in (0, port)
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 1
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
    finally:
        taken.close()


def test_listen_on_ipv6() -> None:
    try:
        sock = tcp.listen("::1", [0])
    except PverepError:
        pytest.skip("no IPv6 loopback here")
    with sock:
        assert sock.family == socket.AF_INET6


@pytest.mark.parametrize(("seconds", "idle"), [(30.0, 15), (10.0, 1), (16.5, 1), (17.0, 2)])
def test_a_dead_peer_fails_io_after_the_timeout(seconds: float, idle: int) -> None:
    with socket.socket() as sock:
        tcp.fail_dead_peer(sock, seconds)
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == idle
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 5
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 3
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == int(seconds * 1000)


def test_the_default_dead_peer_timeout() -> None:
    with socket.socket() as sock:
        tcp.fail_dead_peer(sock)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 30_000
