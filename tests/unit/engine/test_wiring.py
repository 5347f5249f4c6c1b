# mypy: disable-error-code="attr-defined,comparison-overlap,arg-type,misc,union-attr,unused-ignore,assignment,method-assign"  # noqa: E501
# (the fakes stand in for SshShell and ServeSession without being them)
"""engine/wiring.py: how the engine is built from this node's files, ssh and zfs.

Runs on a temp /etc/pve tree. ssh is replaced by ``FakeSsh`` (a named fake: no sshd is
started for these tests; tests/lab drives the real one) and this node's zfs capabilities by a
fixed answer, so the values handed to the engine can be compared exactly.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest

from pverep.config.state import JobState
from pverep.engine import wiring
from pverep.engine.transfer import DEFAULT_STALL_TIMEOUT
from pverep.errors import ConfigError, PverepError
from pverep.lab import gentree
from pverep.paths import Paths
from pverep.storage.streamform import StreamForm
from pverep.storage.zfscaps import ZfsCaps
from pverep.transport.base import CommandError, CommandResult
from pverep.transport.peer import PeerCommands
from pverep.transport.ssh import SshTarget

LOCAL = "pve1"
CAPS = ZfsCaps(send_resume=True, send_dry_run=True)

VM_CONF = """\
boot: order=scsi0
memory: 512
parent: before
scsi0: local-zfs:vm-100-disk-0,size=1G
scsi1: local-zfs:vm-100-disk-1,size=1G,replicate=0
unused0: local-zfs:vm-100-disk-2

[before]
scsi0: local-zfs:vm-100-disk-0,size=1G
snaptime: 1700000000
"""

CT_CONF = """\
arch: amd64
hostname: ct103
rootfs: local-zfs:subvol-103-disk-0,size=2G
"""


class FakeSsh:
    """Stands in for SshShell: records its target, answers ``run`` from a script."""

    made: ClassVar[list[FakeSsh]] = []

    def __init__(self, target: SshTarget, *, multiplex: bool = True) -> None:
        self.target = target
        self.multiplex = multiplex
        self.node = target.node
        self.closed = 0
        self.ran: list[list[str]] = []
        self.answers: list[CommandResult] = []
        FakeSsh.made.append(self)

    def run(self, argv: Sequence[str], **_kw: Any) -> CommandResult:
        self.ran.append(list(argv))
        if not self.answers:
            raise AssertionError(f"unexpected remote command {argv}")
        return self.answers.pop(0)

    def close(self) -> None:
        self.closed += 1

    def forward_argv(self, port: int) -> list[str] | None:
        return ["fwd", str(port)]


def result(argv: Sequence[str], code: int, out: str = "", err: str = "") -> CommandResult:
    return CommandResult(list(argv), code, out.encode(), err.encode())


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Paths:
    paths = Paths(tmp_path)
    gentree.write_members(paths, LOCAL, ("pve1", "pve2", "pve3"))
    gentree.atomic_write(paths.storage_cfg, gentree.STORAGE_CFG)
    gentree.write_guest(paths, LOCAL, "qemu", 100, VM_CONF)
    gentree.write_guest(paths, LOCAL, "lxc", 103, CT_CONF)
    gentree.write_guest(paths, "pve2", "qemu", 101, "memory: 512\n")
    FakeSsh.made = []
    monkeypatch.setattr(wiring, "SshShell", FakeSsh)
    monkeypatch.setattr(wiring, "local_caps", lambda shell, cache=None: CAPS)
    for name in (wiring.STALL_TIMEOUT_ENV, wiring.SSH_MULTIPLEX_ENV, wiring.SERVE_SESSION_ENV,
                 wiring.SERVE_IMPORT_ENV):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    return paths


def node(paths: Paths, sessions: wiring.SshSessions | None = None) -> wiring.Node:
    return wiring.Node(paths, wiring.FilesCluster(paths, LOCAL), LOCAL, sessions=sessions)


# --- stall timeout -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [(None, DEFAULT_STALL_TIMEOUT), ("", DEFAULT_STALL_TIMEOUT), ("30", 30.0), ("0.5", 0.5),
     ("0", None), ("-2", None)],
)  # fmt: skip
def test_stall_timeout_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, text: str | None, expected: float | None
) -> None:
    if text is None:
        monkeypatch.delenv(wiring.STALL_TIMEOUT_ENV, raising=False)
    else:
        monkeypatch.setenv(wiring.STALL_TIMEOUT_ENV, text)
    assert wiring.stall_timeout() == expected


def test_stall_timeout_that_is_no_number(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(wiring.STALL_TIMEOUT_ENV, "ten")
    with pytest.raises(ConfigError) as err:
        wiring.stall_timeout()
    assert str(err.value) == "PVEREP_STALL_TIMEOUT: not a number: 'ten'"


# --- state adapters ------------------------------------------------------------------------


def test_mutable_state_reads_and_writes_the_raw_entry() -> None:
    raw: dict[str, Any] = {"last_sync": 1700000000, "storeid_list": ["local-zfs"]}
    state = wiring.MutableState(raw)
    assert (state.last_sync, state.storeid_list) == (1700000000, ["local-zfs"])
    state.last_sync = 1700000900
    state.storeid_list = ["a", "b"]
    assert raw == {"last_sync": 1700000900, "storeid_list": ["a", "b"]}
    assert type(raw["storeid_list"]) is list
    empty = wiring.MutableState({})
    assert (empty.last_sync, empty.storeid_list) == (0, [])


class _Job:
    def __init__(self, target: str, type_: str | None = None) -> None:
        self.id, self.guest, self.target, self.remove_job = "100-0", 100, target, None
        if type_ is not None:
            self.type = type_


def test_state_key_is_type_and_target() -> None:
    assert wiring._tid(_Job("pve2")) == "local/pve2"  # type: ignore[arg-type]
    assert wiring._tid(_Job("pve3", "local")) == "local/pve3"  # type: ignore[arg-type]
    assert wiring._tid(_Job("pve3", "other")) == "other/pve3"  # type: ignore[arg-type]


def test_state_recorder_refuses_a_state_it_did_not_read() -> None:
    with pytest.raises(TypeError) as err:
        wiring._raw(JobState())  # type: ignore[arg-type]
    assert str(err.value) == "StateRecorder works on the states it read"


# --- is the guest running ------------------------------------------------------------------


def test_running_vm_is_the_live_pid_of_its_pidfile(tree: Paths) -> None:
    pidfile = tree.qemu_pidfile(100)
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    assert wiring._running(tree, "qemu", 100) == 0  # no pidfile
    pidfile.write_text(f"{os.getpid()}\n")
    assert wiring._running(tree, "qemu", 100) == os.getpid()
    for text in ("", "garbage\n"):
        pidfile.write_text(text)
        assert wiring._running(tree, "qemu", 100) == 0, text
    gone = subprocess.Popen(["true"])
    gone.wait()
    pidfile.write_text(f"{gone.pid} extra\n")
    assert wiring._running(tree, "qemu", 100) == 0


def test_running_ct_is_its_cgroup(tree: Paths) -> None:
    assert wiring._running(tree, "lxc", 103) == 0
    tree.ct_cgroup(103).mkdir(parents=True)
    assert wiring._running(tree, "lxc", 103) == 1
    assert wiring._running(tree, "qemu", 103) == 0  # a VM is never judged by a cgroup


# --- ssh masters and serve sessions --------------------------------------------------------


class FakeServe:
    def __init__(self) -> None:
        self.alive, self.closed = True, 0

    def close(self) -> None:
        self.closed += 1


def test_serve_session_started_once_per_target_and_renewed_when_dead(
    tree: Paths, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[tuple[object, tuple[str, ...]]] = []
    made: list[FakeServe] = []

    def open_session(shell: object, argv: Sequence[str]) -> FakeServe:
        opened.append((shell, tuple(argv)))
        made.append(FakeServe())
        return made[-1]

    monkeypatch.setattr(wiring, "open_session", open_session)
    sessions = wiring.SshSessions()
    shell = sessions.take(tree, "pve2", "10.213.7.12")
    first = sessions.serve_session(shell, ["pverep"])  # type: ignore[arg-type]
    assert first is made[0] and opened == [(shell, ("pverep",))]
    assert sessions.serve_session(shell, ["pverep"]) is first  # type: ignore[arg-type]
    other = sessions.take(tree, "pve3", "10.213.7.13")
    assert sessions.serve_session(other, ["pverep"]) is made[1]  # type: ignore[arg-type]
    first.alive = False
    again = sessions.serve_session(shell, ["pverep"])  # type: ignore[arg-type]
    assert again is made[2] and first.closed == 1 and len(opened) == 3
    order: list[str] = []
    made[2].close = lambda: order.append("serve")  # type: ignore[method-assign]
    shell.close = lambda: order.append("ssh")  # type: ignore[method-assign]
    sessions.close()
    assert order[0] == "serve" and "ssh" in order
    assert made[1].closed == 1 and other.closed == 1


def test_no_serve_session_without_multiplexing_or_when_switched_off(
    tree: Paths, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[object] = []
    monkeypatch.setattr(wiring, "open_session", lambda shell, argv: opened.append(shell))
    sessions = wiring.SshSessions()
    monkeypatch.setenv(wiring.SSH_MULTIPLEX_ENV, "0")
    plain = sessions.take(tree, "pve2", "10.213.7.12")
    assert plain.multiplex is False
    assert sessions.serve_session(plain, ["pverep"]) is None  # type: ignore[arg-type]
    monkeypatch.delenv(wiring.SSH_MULTIPLEX_ENV)
    muxed = sessions.take(tree, "pve3", "10.213.7.13")
    assert muxed.multiplex is True
    monkeypatch.setenv(wiring.SERVE_SESSION_ENV, "0")
    assert sessions.serve_session(muxed, ["pverep"]) is None  # type: ignore[arg-type]
    assert opened == []
    monkeypatch.setenv(wiring.SERVE_SESSION_ENV, "1")
    assert sessions.serve_session(muxed, ["pverep"]) is None  # type: ignore[arg-type]
    assert opened == [muxed]  # an older pverep answers no hello: None, remembered
    assert sessions.serve_session(muxed, ["pverep"]) is None  # type: ignore[arg-type]
    assert opened == [muxed]


def test_a_master_per_target_with_its_known_hosts(tree: Paths) -> None:
    kh = tree.node_known_hosts("pve2")
    kh.parent.mkdir(parents=True, exist_ok=True)
    kh.write_text("pve2 ssh-ed25519 AAAA\n")
    sessions = wiring.SshSessions()
    shell = sessions.take(tree, "pve2", "10.213.7.12")
    assert shell.target == SshTarget("pve2", "10.213.7.12", str(kh))
    assert sessions.take(tree, "pve3", "10.213.7.13").target.known_hosts is None
    sessions.release(FakeSsh(SshTarget("pve2", "10.0.0.9")))  # not one of the run's: ignored


# --- the guest as the engine sees it -------------------------------------------------------


def test_load_guest_vm(tree: Paths) -> None:
    guest = node(tree).load_guest(100, False)
    assert (guest.vmid, guest.kind, guest.running, guest.freezefs) == (100, "VM", 0, False)
    assert guest.volids == ("local-zfs:vm-100-disk-0", "local-zfs:vm-100-disk-2")
    assert guest.parent == "before"
    assert guest.snapshots == frozenset({"before"})


def test_load_guest_ct_running_is_frozen(tree: Paths) -> None:
    tree.ct_cgroup(103).mkdir(parents=True)
    guest = node(tree).load_guest(103, False)
    assert (guest.vmid, guest.kind, guest.running, guest.freezefs) == (103, "CT", 1, True)
    assert guest.volids == ("local-zfs:subvol-103-disk-0",)
    assert (guest.parent, guest.snapshots) == (None, frozenset())


@pytest.mark.parametrize(
    ("vmid", "where"),
    [(101, "nodes/pve1/qemu-server/101.conf"),  # lives on pve2
     (555, "nodes/pve1/qemu-server/555.conf")],  # no such guest
)  # fmt: skip
def test_load_guest_that_is_not_here(tree: Paths, vmid: int, where: str) -> None:
    with pytest.raises(PverepError) as err:
        node(tree).load_guest(vmid, False)
    assert str(err.value) == f"Configuration file '{tree.etc_pve / where}' does not exist"


def test_load_guest_listed_here_without_its_file(tree: Paths) -> None:
    tree.guest_config(LOCAL, "lxc", 103).unlink()
    with pytest.raises(PverepError) as err:
        node(tree).load_guest(103, False)
    # The guest list comes from the config files here: without its file, 103 is unknown
    path = tree.etc_pve / "nodes/pve1/qemu-server/103.conf"
    assert str(err.value) == f"Configuration file '{path}' does not exist"


# --- peer kind, migration address, connect -------------------------------------------------


def test_peer_kind_from_pverep_conf_then_probed_once(tree: Paths) -> None:
    tree.pverep_conf.parent.mkdir(parents=True, exist_ok=True)
    tree.pverep_conf.write_text("[peers]\npve2 = stock\n")
    n = node(tree)
    silent = FakeSsh(SshTarget("pve2", "10.213.7.12"))
    assert n.peer_kind("pve2", silent) == "pve"  # type: ignore[arg-type]
    assert silent.ran == []
    probed = FakeSsh(SshTarget("pve3", "10.213.7.13"))
    probed.answers = [result([], 0, json.dumps({"program": "pverep"}) + "\n")]
    assert n.peer_kind("pve3", probed) == "pverep"  # type: ignore[arg-type]
    assert n.peer_kind("pve3", probed) == "pverep"  # type: ignore[arg-type]
    assert len(probed.ran) == 1
    assert n.peer_kinds == {"pve2": "pve", "pve3": "pverep"}


def test_migration_ip_from_mtunnel(tree: Paths) -> None:
    ssh = FakeSsh(SshTarget("pve2", "10.213.7.12"))
    ssh.answers = [result([], 0, "some banner\nip: '10.99.0.2'\n")]
    peer = PeerCommands(kind="pve")
    assert wiring.migration_ip(ssh, peer, "pve2", "10.99.0.0/24") == "10.99.0.2"  # type: ignore[arg-type]
    assert ssh.ran == [peer.migration_ip("10.99.0.0/24")]
    ssh.answers = [result(["pvecm"], 2, "", "no quorum\n")]
    with pytest.raises(CommandError) as err:
        wiring.migration_ip(ssh, peer, "pve2", "10.99.0.0/24")  # type: ignore[arg-type]
    assert err.value.returncode == 2
    assert err.value.stderr_tail == ["no quorum"]  # the target's own words
    ssh.answers = [result([], 0, "some banner\n")]
    with pytest.raises(PverepError) as none:
        wiring.migration_ip(ssh, peer, "pve2", "10.99.0.0/24")  # type: ignore[arg-type]
    assert str(none.value) == "failed to get ip for node 'pve2' in network '10.99.0.0/24'"


def test_connect_without_network_or_sessions(tree: Paths) -> None:
    n = node(tree)
    n.peer_kinds["pve2"] = "pve"
    target = n.connect("pve2", None)
    (ssh,) = FakeSsh.made
    assert ssh.target == SshTarget("pve2", "10.213.7.12", None) and ssh.multiplex is True
    assert target.node == "pve2" and target.remote is ssh
    assert target.local.node == LOCAL
    assert target.commands == PeerCommands(kind="pve")
    assert target.stall_timeout == DEFAULT_STALL_TIMEOUT
    assert target.tcp_address == "10.213.7.12"
    assert target.close_remote == ssh.close
    assert target.release is None and target.forward is None
    assert target.session() is None
    assert target.local_caps == CAPS
    assert target.budget() is None and target.budget == n.budget.current
    assert target.dataset("local-zfs:vm-100-disk-0") == "rpool/data/vm-100-disk-0"
    assert target.send_argv("local-zfs:vm-100-disk-0", "s2", "s1", StreamForm()) == [
        "zfs", "send", "-Rpv", "-I", "s1", "--", "rpool/data/vm-100-disk-0@s2",
    ]  # fmt: skip
    assert ssh.closed == 0


def test_connect_over_the_replication_network(tree: Paths) -> None:
    n = node(tree)
    n.peer_kinds["pve2"] = "pve"

    class FirstSsh(FakeSsh):
        def __init__(self, target: SshTarget, *, multiplex: bool = True) -> None:
            super().__init__(target, multiplex=multiplex)
            if not FakeSsh.made[:-1]:
                self.answers = [result([], 0, "ip: '10.99.0.2'\n")]

    wiring_ssh = wiring.SshShell
    try:
        wiring.SshShell = FirstSsh  # type: ignore[misc,assignment]
        target = n.connect("pve2", "10.99.0.0/24")
        again = n.connect("pve2", "10.99.0.0/24")  # the address is asked once per run
    finally:
        wiring.SshShell = wiring_ssh  # type: ignore[misc]
    cluster_ip, direct, cluster_ip2, direct2 = FakeSsh.made
    assert cluster_ip.target.ip == "10.213.7.12" and cluster_ip.closed == 1
    assert cluster_ip.ran == [PeerCommands(kind="pve").migration_ip("10.99.0.0/24")]
    assert direct.target == SshTarget("pve2", "10.99.0.2", None)
    assert target.remote is direct and target.tcp_address == "10.99.0.0/24"
    assert cluster_ip2.ran == [] and cluster_ip2.closed == 1 and again.remote is direct2
    assert n.migration_ips == {("pve2", "10.99.0.0/24"): "10.99.0.2"}


def test_connect_with_run_sessions_to_a_pverep_peer(
    tree: Paths, monkeypatch: pytest.MonkeyPatch
) -> None:
    sessions = wiring.SshSessions()
    serve = FakeServe()
    monkeypatch.setattr(wiring, "open_session", lambda shell, argv: serve)
    n = node(tree, sessions)
    n.peer_kinds["pve2"] = "pverep"
    target = n.connect("pve2", None)
    (ssh,) = FakeSsh.made
    assert target.commands.kind == "pverep"
    assert target.session() is serve
    assert target.forward is not None and target.forward(4000) == ["fwd", "4000"]
    assert sessions._users[id(ssh)] == 1
    assert target.release is not None
    target.release()
    assert sessions._users[id(ssh)] == 0 and ssh.closed == 0  # the master stays for the run
    monkeypatch.setenv(wiring.SERVE_IMPORT_ENV, "0")
    assert n.connect("pve2", None).forward is None


def test_connect_with_run_sessions_to_a_stock_peer(tree: Paths) -> None:
    n = node(tree, wiring.SshSessions())
    n.peer_kinds["pve2"] = "pve"
    target = n.connect("pve2", None)
    assert target.session() is None  # a stock node has no pverep serve


def test_connect_to_a_node_without_address(tree: Paths) -> None:
    with pytest.raises(PverepError) as err:
        node(tree).connect("pve9", None)
    assert str(err.value) == "no IP address for node 'pve9'"
    assert FakeSsh.made == []


# --- the engine's environment, runner and scheduler ----------------------------------------


def test_build_env(tree: Paths) -> None:
    tree.datacenter_cfg.write_text("replication: insecure,network=10.99.0.0/24\n")
    gentree.atomic_write(
        tree.replication_cfg, "local: 100-0\n\ttarget pve2\n\nlocal: 100-1\n\ttarget pve3\n"
    )
    n = node(tree)
    synced: list[int] = []
    env = wiring.build_env(tree, n, synced.append)
    assert env.local_node == LOCAL
    assert (env.transport.insecure, env.transport.network) == (True, "10.99.0.0/24")
    assert env.storage_exists("local-zfs") and env.storage_exists("local")
    assert not env.storage_exists("nope")
    assert env.load_guest == n.load_guest and env.connect == n.connect
    env.record_sync_end(5)
    assert synced == [5]
    env.delete_job("100-0")
    env.delete_job("404-0")  # already gone: nothing to do
    text = tree.replication_cfg.read_text()
    assert "100-0" not in text and "local: 100-1" in text


def test_build_runner(tree: Paths) -> None:
    n = node(tree)
    runner = wiring.build_runner(tree, n, wiring.StateStore(tree))
    assert runner.log_dir == tree.job_log_dir
    assert isinstance(runner.store, wiring.StateRecorder) and runner.store.nodename == LOCAL
    tree.migrate_lock_dir.mkdir(parents=True, exist_ok=True)
    with runner.guest_lock(100, 1.0):
        assert tree.migrate_lock(100).exists()
    env = runner.make_env(lambda t: None)
    assert env.local_node == LOCAL


def test_connect_lets_go_of_its_shell_when_the_address_query_fails(
    tree: Paths, monkeypatch: pytest.MonkeyPatch
) -> None:
    class NoQuorum(FakeSsh):
        def __init__(self, target: SshTarget, *, multiplex: bool = True) -> None:
            super().__init__(target, multiplex=multiplex)
            self.answers = [result(["pvecm"], 2, "", "no quorum\n")]

    monkeypatch.setattr(wiring, "SshShell", NoQuorum)
    alone = node(tree)
    alone.peer_kinds["pve2"] = "pve"
    with pytest.raises(CommandError):
        alone.connect("pve2", "10.99.0.0/24")
    (ssh,) = FakeSsh.made
    assert ssh.closed == 1  # its own connection: ended
    sessions = wiring.SshSessions()
    shared = node(tree, sessions)
    shared.peer_kinds["pve2"] = "pve"
    with pytest.raises(CommandError):
        shared.connect("pve2", "10.99.0.0/24")
    master = FakeSsh.made[1]
    assert sessions._users[id(master)] == 0 and master.closed == 0  # the run's: released


def test_build_env_volumes_flags_and_freezer(tree: Paths, monkeypatch: pytest.MonkeyPatch) -> None:
    from pverep.engine.ports import GuestView
    from pverep.storage.zfs import ZfsFlags

    asked: list[tuple[str, object]] = []

    def caps(shell: Any, cache: object = None) -> ZfsCaps:
        asked.append((shell.node, cache))
        return CAPS

    monkeypatch.setattr(wiring, "local_caps", caps)
    n = node(tree)
    froze: list[tuple[str, str, int]] = []

    class Freezer:
        def freeze(self, kind: str, vmid: int) -> None:
            froze.append(("freeze", kind, vmid))

        def thaw(self, kind: str, vmid: int) -> None:
            froze.append(("thaw", kind, vmid))

    n.__dict__["freezer"] = Freezer()  # the cached property, replaced by a recorder
    env = wiring.build_env(tree, n, lambda t: None)
    assert asked == [(LOCAL, tree.zfs_caps_cache)]
    assert env.volumes.flags == ZfsFlags.from_caps(CAPS)  # type: ignore[attr-defined]
    assert env.volumes.runner.shell.node == LOCAL  # type: ignore[attr-defined]
    guest = GuestView(103, "CT", 1, True, (), None, frozenset())
    env.freeze(guest)
    env.thaw(guest)
    assert froze == [("freeze", "CT", 103), ("thaw", "CT", 103)]


def test_build_runner_records_history_and_hands_the_sync_callback(tree: Paths) -> None:
    n = node(tree)
    states = wiring.StateStore(tree)
    runner = wiring.build_runner(tree, n, states)
    assert runner.store.states is states  # type: ignore[attr-defined]
    assert runner.observe is not None
    synced: list[int] = []
    runner.make_env(synced.append).record_sync_end(7)
    assert synced == [7]


def test_build_runner_guest_lock_gives_up_at_its_timeout(tree: Paths) -> None:
    from pverep.errors import LockError
    from pverep.locking import flock

    tree.migrate_lock_dir.mkdir(parents=True, exist_ok=True)
    runner = wiring.build_runner(tree, node(tree), wiring.StateStore(tree))
    with flock(tree.migrate_lock(100), 1.0):
        import threading

        errors: list[BaseException] = []

        def other() -> None:
            try:
                with runner.guest_lock(100, 0.2):
                    pass
            except LockError as err:
                errors.append(err)

        t = threading.Thread(target=other)
        t.start()
        t.join(10)
        assert not t.is_alive() and len(errors) == 1


def test_the_default_outputs(capsys: pytest.CaptureFixture[str]) -> None:
    wiring._stderr("to stderr")
    wiring._stdout("to stdout")
    assert capsys.readouterr() == ("to stdout\n", "to stderr\n")


def test_load_guest_listed_in_the_vmlist_without_its_file(tree: Paths) -> None:
    tree.vmlist.write_text(json.dumps({"ids": {"104": {"node": LOCAL, "type": "lxc"}}}))
    with pytest.raises(PverepError) as err:
        node(tree).load_guest(104, False)
    path = tree.etc_pve / "nodes/pve1/lxc/104.conf"
    assert str(err.value) == f"Configuration file '{path}' does not exist"


def test_load_guest_for_cleanup_takes_every_disk(tree: Paths) -> None:
    normal = node(tree).load_guest(100, False).volids
    cleanup = node(tree).load_guest(100, True).volids
    assert normal == ("local-zfs:vm-100-disk-0", "local-zfs:vm-100-disk-2")
    assert cleanup == ("local-zfs:vm-100-disk-0", "local-zfs:vm-100-disk-1",
                       "local-zfs:vm-100-disk-2")  # fmt: skip


def test_load_guest_of_a_running_vm(tree: Paths) -> None:
    pidfile = tree.qemu_pidfile(100)
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    pidfile.write_text(f"{os.getpid()}\n")
    guest = node(tree).load_guest(100, False)
    assert (guest.kind, guest.running, guest.freezefs) == ("VM", os.getpid(), False)  # no agent


def test_connect_reads_this_nodes_zfs_for_the_target(
    tree: Paths, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pverep.storage.zfs import send_argv
    from tests.unit.zfs_fake import FakeZfsShell

    local = FakeZfsShell(LOCAL)
    local.add("rpool/data/vm-100-disk-0", "a", "b", kind="volume")
    local.datasets["rpool/data/vm-100-disk-0"].props["encryption"] = "aes-256-gcm"
    local.add("rpool/data/vm-100-disk-2", kind="volume")
    local.datasets["rpool/data/vm-100-disk-2"].props["encryption"] = "off"
    monkeypatch.setattr(wiring, "LocalShell", lambda name: local)
    asked: list[tuple[object, object]] = []
    openzfs = dataclasses.replace(CAPS, send_raw=True)  # one that knows encryption

    def caps(shell: Any, cache: object = None) -> ZfsCaps:
        asked.append((shell, cache))
        return openzfs

    monkeypatch.setattr(wiring, "local_caps", caps)
    n = node(tree)
    n.peer_kinds["pve2"] = "pve"
    target = n.connect("pve2", None)
    assert asked == [(local, tree.zfs_caps_cache)] and target.local is local
    assert target.local_snapshots("local-zfs:vm-100-disk-0") == ["a", "b"]
    assert target.encrypted("local-zfs:vm-100-disk-0") is True
    assert target.encrypted("local-zfs:vm-100-disk-2") is False
    form = StreamForm(replication=False, resumable=True, raw=True)
    assert target.send_argv("local-zfs:vm-100-disk-0", "s2", None, form) == send_argv(
        "rpool/data/vm-100-disk-0", "s2", None, form=form
    )
    assert target.send_argv("local-zfs:vm-100-disk-0", "s2", None, form) != send_argv(
        "rpool/data/vm-100-disk-0", "s2", None
    )


def test_state_recorder_writes_the_jobs_own_entry_through_a_run(tree: Paths) -> None:
    import os

    rec = wiring.StateRecorder(wiring.StateStore(tree), LOCAL)

    def entries() -> Any:
        return json.loads(tree.state_file.read_text())

    job = _Job("pve2")
    state = rec.read_job_state(job)  # type: ignore[arg-type]
    rec.record_job_start(job, state, 1_700_000_900, 1_700_000_800)  # type: ignore[arg-type]
    started = entries()["100"]["local/pve2"]
    assert (started["last_iteration"], started["last_try"], started["last_node"]) == (
        1_700_000_800, 1_700_000_900, LOCAL)  # fmt: skip
    assert started["pid"] == os.getpid() and started["last_sync"] == 0
    rec.record_sync_end(job, state, 1_700_000_900)  # type: ignore[arg-type]
    assert entries()["100"]["local/pve2"]["last_sync"] == 1_700_000_900
    rec.record_job_end(job, state, 1_700_000_900, 2.5, None)  # type: ignore[arg-type]
    ended = entries()["100"]["local/pve2"]
    assert ended["duration"] == 2.5 and "pid" not in ended and ended["fail_count"] == 0
    removal = _Job("pve2")
    removal.remove_job = "full"
    state = rec.read_job_state(removal)  # type: ignore[arg-type]
    rec.record_job_start(removal, state, 1_700_001_000, 1_700_001_000)  # type: ignore[arg-type]
    rec.record_job_end(removal, state, 1_700_001_000, 1.0, None)  # type: ignore[arg-type]
    assert entries() == {}  # a removal that succeeded leaves no state behind


def test_load_guest_asks_the_freezer_with_the_guests_agent_line(tree: Paths) -> None:
    gentree.write_guest(
        tree,
        LOCAL,
        "qemu",
        106,
        "agent: 1,fstrim_cloned_disks=1\nscsi0: local-zfs:vm-106-disk-0,size=1G\n",
    )
    asked: list[tuple[object, ...]] = []

    class Freezer:
        def needed(self, kind: str, vmid: int, running: int, agent: str | None) -> bool:
            asked.append((kind, vmid, running, agent))
            return True

    n = node(tree)
    n.__dict__["freezer"] = Freezer()  # the cached property, replaced by a recorder
    assert n.load_guest(106, False).freezefs is True
    assert n.load_guest(100, False).freezefs is True
    assert asked == [("VM", 106, 0, "1,fstrim_cloned_disks=1"), ("VM", 100, 0, None)]


def test_connect_without_multiplexing_when_switched_off(
    tree: Paths, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(wiring.SSH_MULTIPLEX_ENV, "0")
    n = node(tree)
    n.peer_kinds["pve2"] = "pve"
    n.connect("pve2", None)
    monkeypatch.setenv(wiring.SSH_MULTIPLEX_ENV, "1")
    n.connect("pve2", None)
    assert [ssh.multiplex for ssh in FakeSsh.made] == [False, True]
