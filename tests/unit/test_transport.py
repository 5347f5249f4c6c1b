"""ssh argv (exact pvesr prefix, multiplexed form), peer command argv for pverep and stock
PVE peers, mtunnel parsing, and the insecure TCP channel over real sockets."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from pverep.errors import PverepError, ValidationError
from pverep.paths import Paths
from pverep.storage.streamform import ImportMode
from pverep.transport import ssh, tcp
from pverep.transport.peer import PeerCommands

KH = "/etc/pve/nodes/pve2/ssh_known_hosts"
T = ssh.SshTarget("pve2", "10.0.0.2", KH)
PREFIX = [
    "/usr/bin/ssh", "-e", "none", "-o", "BatchMode=yes", "-o", "HostKeyAlias=pve2",
    "-o", f"UserKnownHostsFile={KH}", "-o", "GlobalKnownHostsFile=none",
]  # fmt: skip
PVE = PeerCommands(kind="pve")
PVEREP = PeerCommands(kind="pverep", pverep=("/usr/bin/pverep",))


def test_pvesr_exact_ssh_argv_for_prepare() -> None:
    remote = PVE.prepare_local_job(
        "100-0",
        ["local-zfs:vm-100-disk-0", "local-zfs:vm-100-disk-1"],
        scan=["local-zfs", "tank"],
        last_sync=1700000000,
        parent_snapname="before",
    )
    assert ssh.pvesr_ssh_argv(T, remote) == [
        *PREFIX, "root@10.0.0.2", "--",
        "pvesr", "prepare-local-job", "100-0", "--scan", "local-zfs,tank",
        "local-zfs:vm-100-disk-0", "local-zfs:vm-100-disk-1",
        "--last_sync", "1700000000", "--parent_snapname", "before",
    ]  # fmt: skip


def test_known_hosts_pair_only_when_file_exists(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    target = ssh.SshTarget.for_node(paths, "pve3", "10.0.0.3")
    assert target.known_hosts is None
    assert ssh.pvesr_ssh_argv(target, ["true"]) == [
        "/usr/bin/ssh", "-e", "none", "-o", "BatchMode=yes", "-o", "HostKeyAlias=pve3",
        "root@10.0.0.3", "--", "true",
    ]  # fmt: skip
    kh = paths.node_known_hosts("pve3")
    kh.parent.mkdir(parents=True)
    kh.write_text("pve3 ssh-ed25519 AAAA\n")
    assert ssh.SshTarget.for_node(paths, "pve3", "10.0.0.3").known_hosts == str(kh)


def test_removal_argv_force_last() -> None:
    assert PVE.prepare_local_job("100-0", [], scan=["local-zfs"], last_sync=1, force=True) == [
        "pvesr", "prepare-local-job", "100-0", "--scan", "local-zfs", "--last_sync", "1", "--force",
    ]  # fmt: skip
    assert PVEREP.prepare_local_job("100-0", [], last_sync=1, force=True) == [
        "/usr/bin/pverep", "prepare-local-job", "100-0", "--last_sync", "1", "--force",
    ]  # fmt: skip


def test_finalize_export_import_argv_for_both_peer_kinds() -> None:
    vol = "local-zfs:vm-100-disk-0"
    sync, base = "__replicate_100-0_1700000900__", "__replicate_100-0_1700000000__"
    assert PVE.finalize_local_job("100-0", [vol], 1700000900) == [
        "pvesr", "finalize-local-job", "100-0", vol, "--last_sync", "1700000900",
    ]  # fmt: skip
    assert PVE.export(vol, sync, base) == [
        "pvesm", "export", vol, "zfs", "-", "-with-snapshots", "1", "-snapshot", sync,
        "-base", base,
    ]  # fmt: skip
    assert PVE.import_(vol, sync, base) == [
        "pvesm", "import", vol, "zfs", "-", "-with-snapshots", "1", "-snapshot", sync,
        "-allow-rename", "0", "-base", base,
    ]  # fmt: skip
    assert PVE.import_(vol, sync, filename="tcp://10.0.0.0/24") == [
        "pvesm", "import", vol, "zfs", "tcp://10.0.0.0/24", "-with-snapshots", "1",
        "-snapshot", sync, "-allow-rename", "0",
    ]  # fmt: skip
    assert PVEREP.import_(vol, sync)[:3] == ["/usr/bin/pverep", "import", vol]
    assert PVEREP.finalize_local_job("100-0", [vol], 5)[:2] == [
        "/usr/bin/pverep",
        "finalize-local-job",
    ]
    lab = PeerCommands(pverep=("/opt/venv/bin/python", "-m", "pverep"))
    assert lab.export(vol, sync)[:4] == ["/opt/venv/bin/python", "-m", "pverep", "export"]


@pytest.mark.parametrize(
    "call",
    [
        lambda: PVE.prepare_local_job("100-0; rm -rf /", [], last_sync=0, force=True),
        lambda: PVE.prepare_local_job("100-0", ["no volid"], last_sync=0),
        lambda: PVE.prepare_local_job("100-0", [], scan=["bad store"], last_sync=0, force=True),
        lambda: PVE.prepare_local_job("100-0", [], last_sync=0, parent_snapname="$(x)", force=True),
        lambda: PVE.import_("local-zfs:vm-100-disk-0", "snap`id`"),
        lambda: PVE.import_("local-zfs:vm-100-disk-0", "s", filename="/etc/passwd"),
        lambda: PVE.export("local-zfs:vm-100-disk-0", "a" * 41),
    ],
)
def test_peer_commands_validate_every_value(call: object) -> None:
    with pytest.raises(ValidationError):
        call()  # type: ignore[operator]


def test_remote_words_are_quoted_for_the_remote_shell() -> None:
    # a volname may legally contain characters the remote shell would interpret
    argv = ssh.pvesr_ssh_argv(T, ["pverep", "import", "local:100/vm-100-disk-0 x.raw"])
    assert argv[-1] == "'local:100/vm-100-disk-0 x.raw'"
    with pytest.raises(ValidationError):
        ssh.SshTarget("pve2; id", "10.0.0.2")
    with pytest.raises(ValidationError):
        ssh.SshTarget("pve2", "10.0.0.2 -oProxyCommand=x")


def test_multiplexed_command_and_master_argv() -> None:
    shell = ssh.SshShell(T, prefer_aes_gcm=True)
    master = shell.master_argv(Path("/tmp/pverep-ssh-x/master"))
    assert master == [
        *PREFIX, "-o", ssh.AES_GCM_FIRST, "-o", "ControlMaster=yes",
        "-o", "ControlPath=/tmp/pverep-ssh-x/master", "-o", "ControlPersist=no",
        "-o", "ServerAliveInterval=10", "-o", "ServerAliveCountMax=3", "-N",
        "root@10.0.0.2",
    ]  # fmt: skip
    # before open(): a direct connection with the cipher preference
    assert shell.command(["true"]) == [
        *PREFIX,
        "-o",
        ssh.AES_GCM_FIRST,
        "root@10.0.0.2",
        "--",
        "true",
    ]
    plain = ssh.SshShell(T, multiplex=False, prefer_aes_gcm=False)
    assert plain.command(["pvesr", "x"]) == ssh.pvesr_ssh_argv(T, ["pvesr", "x"])
    plain.open()  # no master without multiplexing
    assert plain.control_path is None


def test_mux_command_goes_through_control_path(monkeypatch: pytest.MonkeyPatch) -> None:
    shell = ssh.SshShell(T, prefer_aes_gcm=False)
    monkeypatch.setattr(shell, "_control_dir", Path("/tmp/pverep-ssh-y"))
    assert shell.command(["true"]) == [
        *PREFIX, "-o", "ControlPath=/tmp/pverep-ssh-y/master", "-o", "ControlMaster=no",
        "root@10.0.0.2", "--", "true",
    ]  # fmt: skip


def test_cpu_aes_flag() -> None:
    assert ssh.cpu_has_aes("processor: 0\nflags\t\t: fpu sse2 aes avx\n")
    assert not ssh.cpu_has_aes("flags\t\t: fpu sse2 avx\n")


def test_mtunnel() -> None:
    assert ssh.mtunnel_argv(T, "10.1.0.0/24")[-6:] == [
        "root@10.0.0.2", "pvecm", "mtunnel", "-migration_network", "10.1.0.0/24",
        "-get_migration_ip",
    ]  # fmt: skip
    assert ssh.parse_mtunnel_output("hello\nip: '10.1.0.2'\n", "pve2", "x") == "10.1.0.2"
    with pytest.raises(PverepError, match=r"^internal error: unexpected output from mtunnel$"):
        ssh.parse_mtunnel_output("ip: '10.1.0.2'\nmore\n", "pve2", "x")
    with pytest.raises(PverepError, match=r"^failed to get ip for node 'pve2' in network 'n'$"):
        ssh.parse_mtunnel_output("no ip\n", "pve2", "n")


# --- insecure TCP channel ---------------------------------------------------------------------


def test_ip_in_network() -> None:
    addrs = ["127.0.0.1", "10.213.7.12", "fe80::1"]
    assert tcp.pick_ip_in_network("10.213.7.0/24", addrs) == "10.213.7.12"
    with pytest.raises(PverepError, match="no IP address configured on local node"):
        tcp.pick_ip_in_network("192.168.0.0/16", addrs)
    with pytest.raises(PverepError, match="multiple, different, IP address"):
        tcp.pick_ip_in_network("10.0.0.0/8", ["10.0.0.1", "10.0.0.2"])
    text = (
        '[{"ifname":"lo","addr_info":[{"local":"127.0.0.1"}]},{"addr_info":[{"local":"10.1.1.1"}]}]'
    )
    assert tcp.parse_ip_addr_json(text) == ["127.0.0.1", "10.1.1.1"]


def test_announcement_parsing() -> None:
    assert tcp.parse_announcement("10.0.0.2\n", "60001\n") == ("10.0.0.2", 60001)
    with pytest.raises(PverepError, match=r"^no tunnel IP received, got 'oops'$"):
        tcp.parse_announcement("oops\n", "1")
    with pytest.raises(PverepError, match=r"^no tunnel port received, got 'x'$"):
        tcp.parse_announcement("10.0.0.2", "x")


def test_tcp_channel_end_to_end_and_port_reuse() -> None:
    first = tcp.listen("127.0.0.1", range(0, 1))  # port 0: kernel picks; same code path
    ip, port = tcp.parse_announcement(*tcp.announcement(first).splitlines())
    second = tcp.listen("127.0.0.1", [port, 0])  # taken port is skipped
    assert second.getsockname()[1] != port
    second.close()
    received: list[bytes] = []

    def target() -> None:
        with tcp.accept_one(first) as client:
            chunks = []
            while data := client.recv(65536):
                chunks.append(data)
            received.append(b"".join(chunks))

    thread = threading.Thread(target=target)
    thread.start()
    with tcp.connect(ip, port) as sock:
        sock.sendall(b"x" * 100_000)
        sock.shutdown(socket.SHUT_WR)
    thread.join(5)
    assert received == [b"x" * 100_000]


def test_accept_times_out_and_connect_fails_cleanly() -> None:
    listener = tcp.listen("127.0.0.1", [0])
    port = listener.getsockname()[1]
    with pytest.raises(PverepError, match=r"^timed out waiting for client$"):
        tcp.accept_one(listener, timeout=0.05)
    with pytest.raises(PverepError, match=f"^failed to connect to tunnel at 127.0.0.1:{port}$"):
        tcp.connect("127.0.0.1", port, timeout=1)


def test_import_address_in_network_counts_only_interfaces_that_are_up() -> None:
    """Real interfaces in a private network namespace: a veth pair, addresses on both ends."""
    probe = (
        "from pverep.errors import PverepError\n"
        "from pverep.transport import tcp\n"
        "try:\n"
        "    print(tcp.resolve_listen_address('10.99.0.0/24'))\n"
        "except PverepError as err:\n"
        "    print(err)\n"
    )
    steps = [
        "ip link add va type veth peer name vb",
        "ip addr add 10.99.0.1/24 dev va",
        "ip addr add 10.99.0.2/24 dev vb",
        'python3 -c "$0"',  # both down
        "ip link set va up",
        'python3 -c "$0"',
        "ip link set vb up",
        'python3 -c "$0"',
    ]
    import subprocess
    import sys

    script = " && ".join(steps).replace("python3", sys.executable)
    res = subprocess.run(
        ["unshare", "--net", "/bin/sh", "-c", script, probe],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == [
        "Unable to get any local IP address in network '10.99.0.0/24'",
        "10.99.0.1",
        "Got multiple local IP address in network '10.99.0.0/24'",
    ]


def test_migration_ip_lookup_argv_for_both_peer_kinds() -> None:
    tail = ["mtunnel", "-migration_network", "10.77.0.0/24", "-get_migration_ip"]
    assert PVE.migration_ip("10.77.0.0/24") == ["pvecm", *tail]
    assert PVEREP.migration_ip("10.77.0.0/24") == ["/usr/bin/pverep", *tail]
    with pytest.raises(ValueError):
        PVE.migration_ip("10.77.0.0/24; reboot")


def test_stream_endpoints_and_networks_accept_host_bits() -> None:
    argv = PVE.import_("local-zfs:vm-100-disk-0", "s", filename="tcp://10.0.0.5/24")
    assert argv[argv.index("zfs") + 1] == "tcp://10.0.0.5/24"
    assert PVE.migration_ip("10.77.0.5/24")[-2] == "10.77.0.5/24"
    with pytest.raises(ValidationError) as err:
        PVE.import_("local-zfs:vm-100-disk-0", "s", filename="/dev/sda")
    assert str(err.value) == "unsupported stream endpoint '/dev/sda'"


def test_pverep_only_options_and_the_last_sync_check() -> None:
    argv = PVEREP.prepare_local_job("100-0", [], last_sync=5, pverep_info=True)
    assert argv == ["/usr/bin/pverep", "prepare-local-job", "100-0", "--last_sync", "5",
                    "--pverep-info", "1"]  # fmt: skip
    with pytest.raises(ValidationError) as err:
        PVE.prepare_local_job("100-0", [], last_sync=5, pverep_info=True)
    assert str(err.value) == "'--pverep-info' is for pverep peers only"
    with pytest.raises(ValidationError) as err:
        PVE.import_("local-zfs:vm-100-disk-0", "s", mode=ImportMode(raw=True))
    assert str(err.value) == "'-resumable' is for pverep peers only"
    with pytest.raises(ValidationError) as err:
        PVEREP.prepare_local_job("100-0", [], last_sync=-1)
    assert str(err.value) == "last_sync must be >= 0"
