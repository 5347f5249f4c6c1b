"""The insecure-mode data channel (spec §5.6): a plain TCP connection for the zfs stream.

Target: bind the first free port of the migration range on the local IP (given, or the unique
local IP inside a CIDR), print ``<ip>\\n<port>\\n``, accept ONE client within 30 s, and hand the
connected socket's fd to ``zfs recv`` as stdin. Source: read the two lines, connect, and hand
the socket's fd to ``zfs send`` as stdout. No relay in between: zfs writing straight into the
socket moves 4.7 GiB/s on the reference machine, any copy loop in between caps it at 0.7-1.4.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from collections.abc import Iterable, Sequence

from pverep.errors import PverepError
from pverep.transport.local import LocalShell

#: PVE's migration port range (PVE::Tools::next_migrate_port).
MIGRATE_PORTS = range(60000, 60051)
#: How long the target waits for the source to connect.
ACCEPT_TIMEOUT = 30.0
CONNECT_TIMEOUT = 30.0


def ips_in_network(cidr: str, addresses: Iterable[str]) -> list[str]:
    """The distinct ``addresses`` inside ``cidr``, sorted."""
    net = ipaddress.ip_network(cidr, strict=False)
    return sorted({a for a in addresses if ipaddress.ip_address(a) in net})


def pick_ip_in_network(cidr: str, addresses: Iterable[str]) -> str:
    """The unique local address inside ``cidr`` (PVE::Cluster::get_local_migration_ip)."""
    found = ips_in_network(cidr, addresses)
    if not found:
        raise PverepError(
            "could not get migration ip: no IP address configured on local node "
            f"for network '{cidr}'"
        )
    if len(found) > 1:
        raise PverepError(
            "could not get migration ip: multiple, different, IP address configured "
            f"for network '{cidr}'"
        )
    return found[0]


def import_ip_in_network(cidr: str, addresses: Iterable[str]) -> str:
    """The unique local address inside ``cidr`` for ``pvesm import tcp://<cidr>``, with
    pvesm's own texts (they differ from the migration-ip ones above)."""
    found = ips_in_network(cidr, addresses)
    if not found:
        raise PverepError(f"Unable to get any local IP address in network '{cidr}'")
    if len(found) > 1:
        raise PverepError(f"Got multiple local IP address in network '{cidr}'")
    return found[0]


def parse_ip_addr_json(text: str) -> list[str]:
    """Addresses from ``ip -j address show``."""
    addrs: list[str] = []
    for link in json.loads(text or "[]"):
        for info in link.get("addr_info", []):
            local = info.get("local")
            if isinstance(local, str):
                addrs.append(local)
    return addrs


def local_addresses() -> list[str]:
    """This node's addresses on interfaces that are up (PVE asks ``ip address show … up``)."""
    result = LocalShell().run(["ip", "-j", "address", "show", "up"], timeout=10).check()
    return parse_ip_addr_json(result.stdout_text)


def resolve_listen_address(spec: str) -> str:
    """``tcp://<ip>`` or ``tcp://<cidr>`` → the IP to listen on."""
    if "/" in spec:
        return import_ip_in_network(spec, local_addresses())
    return str(ipaddress.ip_address(spec))


def listen(ip: str, ports: Sequence[int] = MIGRATE_PORTS) -> socket.socket:
    """A listening socket on the first free port of ``ports``."""
    family = socket.AF_INET6 if ipaddress.ip_address(ip).version == 6 else socket.AF_INET
    for port in ports:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((ip, port))
        except OSError:
            sock.close()
            continue
        sock.listen(1)
        return sock
    raise PverepError(f"unable to find free migration port on {ip}")


def announcement(sock: socket.socket) -> str:
    """What the target prints so the source knows where to connect."""
    ip, port = sock.getsockname()[:2]
    return f"{ip}\n{port}\n"


def accept_one(sock: socket.socket, timeout: float = ACCEPT_TIMEOUT) -> socket.socket:
    """Wait for the one client, then stop listening."""
    sock.settimeout(timeout)
    try:
        client, _ = sock.accept()
    except TimeoutError:
        raise PverepError("timed out waiting for client") from None
    finally:
        sock.close()
    client.settimeout(None)
    fail_dead_peer(client, DEAD_PEER_TIMEOUT)
    return client


#: A peer that has not acknowledged data or keepalive probes for this long is dead.
DEAD_PEER_TIMEOUT = 30.0
#: Keepalive probes for an idle connection (a receiver waiting for data sends nothing else).
_KEEPALIVE_INTERVAL = 5


def fail_dead_peer(sock: socket.socket, seconds: float = DEAD_PEER_TIMEOUT) -> None:
    """Make I/O on ``sock`` fail (ETIMEDOUT) once the peer has answered nothing for about
    ``seconds``: TCP_USER_TIMEOUT for unacknowledged data, keepalive probes while idle. Without
    them a vanished peer is noticed only after the kernel's retransmissions (~15 min) or the
    2 h keepalive default. A live peer that is merely slow acknowledges and is not affected."""
    idle = max(1, int(seconds) - 3 * _KEEPALIVE_INTERVAL)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, _KEEPALIVE_INTERVAL)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(seconds * 1000))


def parse_tunnel_ip(line: str) -> str:
    """The announcement's first line (exact pvesr error text)."""
    ip = line.strip()
    try:
        ipaddress.ip_address(ip)
    except ValueError:
        raise PverepError(f"no tunnel IP received, got '{line.rstrip()}'") from None
    return ip


def parse_tunnel_port(line: str) -> int:
    """The announcement's second line (exact pvesr error text)."""
    port = line.strip()
    if not port.isdigit():
        raise PverepError(f"no tunnel port received, got '{line.rstrip()}'")
    return int(port)


def parse_announcement(first: str, second: str) -> tuple[str, int]:
    """The source side's reading of the two lines."""
    return parse_tunnel_ip(first), parse_tunnel_port(second)


def connect(ip: str, port: int, timeout: float = CONNECT_TIMEOUT) -> socket.socket:
    try:
        sock = socket.create_connection((ip, port), timeout=timeout)
    except OSError:
        raise PverepError(f"failed to connect to tunnel at {ip}:{port}") from None
    sock.settimeout(None)
    return sock
