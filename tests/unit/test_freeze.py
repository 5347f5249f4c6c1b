"""Guest filesystem freeze: the QEMU guest agent protocol and qemu-server's rules against the
FAKE guest agent (pverep.lab.fakeqga, a real unix socket), the engine's freeze → snapshot → thaw
order, and the cgroup v2 freezer's file protocol (the real freezer runs in tests/lab)."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from pverep.config.pveconf import section
from pverep.engine.replicate import ReplicateEnv, replicate
from pverep.errors import ConfigError, PverepError
from pverep.freeze.ct import ContainerFreezer
from pverep.freeze.guest import FreezeSettings, GuestFreezer
from pverep.freeze.qga import AgentError, AgentTimeout, GuestAgent
from pverep.freeze.vm import AgentTimeouts, freeze_applicable, fs_freeze, should_fs_freeze
from pverep.lab.fakeqga import FakeGuestAgent
from pverep.paths import Paths

from .engine.fakes import FakeJob, FakeState, World

VMID = 900
FAST = AgentTimeouts(freeze=0.3, thaw=0.3)


def agent_at(tmp_path: Path) -> GuestAgent:
    return GuestAgent(VMID, Paths(tmp_path).qga_socket(VMID))


def fake(tmp_path: Path, **kw: object) -> FakeGuestAgent:
    return FakeGuestAgent(Paths(tmp_path).qga_socket(VMID), **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("agent", "want"),
    [
        (None, False),
        ("0", False),
        ("1", True),
        ("enabled=1", True),
        ("1,freeze-fs=0", False),
        ("1,guest-fsfreeze=0", False),
        ("1,freeze-fs-on-backup=0", False),
        ("1,fstrim_cloned_disks=1,type=virtio", True),
        ("enabled=0,freeze-fs=1", False),
        ("1,freeze-fs=maybe", False),  # unparsable: warned, treated as no agent (qemu-server)
    ],
)
def test_should_fs_freeze(agent: str | None, want: bool) -> None:
    warned: list[str] = []
    assert should_fs_freeze(agent, warned.append) is want
    assert bool(warned) == (agent == "1,freeze-fs=maybe")


def test_agent_protocol_and_errors(tmp_path: Path) -> None:
    agent = agent_at(tmp_path)
    with pytest.raises(AgentError, match=r"^unable to open monitor socket$"):
        agent.command("guest-ping", 1)
    with fake(tmp_path, fail={"guest-fsfreeze-thaw": "no way"}) as qga:
        assert agent.command("guest-ping", 1) == {}
        assert agent.command("guest-fsfreeze-status", 1) == "thawed"
        assert agent.command("guest-fsfreeze-thaw", 1) == {
            "error": {"class": "GenericError", "desc": "no way"}
        }
        qga.hang.add("guest-ping")
        started = time.monotonic()
        with pytest.raises(
            AgentTimeout, match=r"^VM 900 qga command 'guest-ping' failed - got timeout$"
        ):
            agent.command("guest-ping", 0.2)
        assert time.monotonic() - started < 2
    assert qga.commands == ["guest-ping", "guest-fsfreeze-status", "guest-fsfreeze-thaw",
                            "guest-ping"]  # fmt: skip


def test_answers_of_abandoned_commands_are_skipped() -> None:
    ours, agent_end = socket.socketpair()
    with ours, agent_end:
        agent_end.sendall(b'\xff{"return": 5}\n{"return": "frozen"}\n')  # one we gave up on
        later = threading.Timer(
            0.2, agent_end.sendall, [b'\xff{"return": 7}\n{"return": "thawed"}\n']
        )
        later.start()
        assert GuestAgent._read_reply(ours, 7, time.monotonic() + 2) == {"return": "thawed"}
        later.join()


def test_freeze_applicable_rules_and_lines(tmp_path: Path) -> None:
    agent = agent_at(tmp_path)
    info: list[str] = []
    warn: list[str] = []
    assert not freeze_applicable("1,freeze-fs=0", agent, info.append, warn.append)
    assert not freeze_applicable("1", agent, info.append, warn.append)  # no agent answering
    with fake(tmp_path, frozen=True):
        assert not freeze_applicable("1", agent, info.append, warn.append)
    with fake(tmp_path, fail={"guest-fsfreeze-status": "busy"}):
        assert freeze_applicable("1", agent, info.append, warn.append)  # status unknown: try
    with fake(tmp_path):
        assert freeze_applicable("1", agent, info.append, warn.append)
    assert info == [
        "skipping guest filesystem freeze - disabled in VM options",
        "skipping guest filesystem freeze - agent configured but not running?",
        "skipping guest filesystem freeze - already frozen",
    ]
    assert warn == ["unable to check guest fs freeze status - Agent error: busy"]


def test_freeze_error_and_hung_freeze_are_bounded(tmp_path: Path) -> None:
    agent = agent_at(tmp_path)
    with (
        fake(tmp_path, fail={"guest-fsfreeze-freeze": "fs busy"}),
        pytest.raises(AgentError, match=r"^unable to freeze guest fs - fs busy$"),
    ):
        fs_freeze(agent, FAST, print)
    info: list[str] = []
    with fake(tmp_path, hang=frozenset({"guest-fsfreeze-freeze", "guest-fsfreeze-status"})) as q:
        started = time.monotonic()
        with pytest.raises(
            AgentError, match=r"^querying status after freezing guest fs failed - timeout after "
        ):
            fs_freeze(agent, FAST, info.append)
        waited = time.monotonic() - started
    assert q.commands == ["guest-fsfreeze-freeze"] + ["guest-fsfreeze-status"] * 5
    assert waited < 6 * FAST.freeze + 3  # six bounded waits, never more
    assert info[0] == "still waiting on guest fs freeze - timeout in 0.025 minutes"
    assert len(info) == 5
    # a freeze whose answer got lost but which happened: the status says frozen
    with fake(tmp_path, hang=frozenset({"guest-fsfreeze-freeze"})) as q:
        q.frozen = True  # as if the guest finished the freeze after our wait
        fs_freeze(agent, FAST, info.append)


def run_frozen(
    tmp_path: Path, qga: FakeGuestAgent, world: World, timeouts: AgentTimeouts = FAST
) -> tuple[list[str], list[str], list[tuple[str, bool]]]:
    """One replicate() of VM 900 with freezefs, the real GuestFreezer against the fake agent;
    returns (job log, warnings, (event, agent frozen at that moment))."""
    freezer = GuestFreezer(Paths(tmp_path), FreezeSettings(agent=timeouts), print, print)
    warned: list[str] = []
    freezer.warn = warned.append
    seen: list[tuple[str, bool]] = []
    volumes = world.volumes
    real_snapshot = volumes.snapshot

    def snapshot(volid: str, snap: str) -> None:
        seen.append((f"snapshot {volid}", qga.frozen))
        real_snapshot(volid, snap)

    volumes.snapshot = snapshot  # type: ignore[method-assign]
    env: ReplicateEnv = world.env(lambda t: None)
    guest = replace(world.guest(VMID, False), running=1, freezefs=True)
    env = replace(
        env,
        load_guest=lambda vmid, cleanup: guest,
        freeze=lambda g: freezer.freeze(g.kind, g.vmid),
        thaw=lambda g: freezer.thaw(g.kind, g.vmid),
        warn=warned.append,
    )
    log: list[str] = []
    try:
        replicate(env, FakeJob("900-0", VMID, "node2"), FakeState(), 1000, log.append)
    except PverepError as err:
        log.append(f"error: {err}")
    seen.append(("end", qga.frozen))
    return log, warned, seen


def test_engine_freezes_around_the_snapshots_and_always_thaws(tmp_path: Path) -> None:
    disks = ["local-zfs:vm-900-disk-0", "local-zfs:vm-900-disk-1"]
    world = World(tmp_path, disks=disks)
    for d in disks:
        world.volumes.register(d)
    with fake(tmp_path) as qga:
        log, warned, seen = run_frozen(tmp_path, qga, world)
    assert log[2:6] == [
        "freeze guest filesystem",
        "create snapshot '__replicate_900-0_1000__' on local-zfs:vm-900-disk-0",
        "create snapshot '__replicate_900-0_1000__' on local-zfs:vm-900-disk-1",
        "thaw guest filesystem",
    ]
    assert seen == [(f"snapshot {d}", True) for d in disks] + [("end", False)]
    assert qga.commands == ["guest-fsfreeze-freeze", "guest-fsfreeze-thaw"]
    assert warned == []

    # a snapshot that fails: thawed all the same, then the error
    world = World(tmp_path, disks=[*disks, "local-zfs:vm-900-disk-9"])  # disk-9 not registered
    for d in disks:
        world.volumes.register(d)
    with fake(tmp_path) as qga:
        log, warned, seen = run_frozen(tmp_path, qga, world)
    assert qga.commands == ["guest-fsfreeze-freeze", "guest-fsfreeze-thaw"]
    assert "thaw guest filesystem" in log and log[-1].startswith("error: ")
    assert seen[-1] == ("end", False)


def test_hung_agent_never_hangs_the_run(tmp_path: Path) -> None:
    world = World(tmp_path, disks=["local-zfs:vm-900-disk-0"])
    world.volumes.register("local-zfs:vm-900-disk-0")
    hang = frozenset({"guest-fsfreeze-freeze", "guest-fsfreeze-status", "guest-fsfreeze-thaw"})
    with fake(tmp_path, hang=hang) as qga:
        started = time.monotonic()
        log, warned, _ = run_frozen(tmp_path, qga, world)
        waited = time.monotonic() - started
    assert waited < 7 * FAST.freeze + 3
    assert qga.commands[0] == "guest-fsfreeze-freeze" and qga.commands[-1] == "guest-fsfreeze-thaw"
    assert "create snapshot '__replicate_900-0_1000__' on local-zfs:vm-900-disk-0" in log
    assert log[-1] != "" and not log[-1].startswith("error: ")
    assert warned == [
        "querying status after freezing guest fs failed - timeout after 0.03 minutes",
        "guest-fsfreeze-thaw problems - VM 900 qga command 'guest-fsfreeze-thaw' failed - "
        "got timeout",
    ]


def test_container_freezer_file_protocol(tmp_path: Path) -> None:
    cg = Paths(tmp_path).ct_cgroup(123)
    (cg / "ns").mkdir(parents=True)
    (cg / "cgroup.events").write_text("populated 1\nfrozen 0\n")
    (cg / "ns" / "cgroup.procs").write_text("0\n")
    now = [0.0]

    def sleep(dt: float) -> None:
        now[0] += dt

    ct = ContainerFreezer(123, cg, clock=lambda: now[0], sleep=sleep)
    with pytest.raises(PverepError, match=r"^unable to freeze container 123 - timeout after 30 s$"):
        ct.freeze()
    assert (cg / "cgroup.freeze").read_text() == "1\n"
    (cg / "cgroup.events").write_text("populated 1\nfrozen 1\n")  # what the kernel would say
    ct.freeze()
    assert ct.frozen()
    warned: list[str] = []
    ct.sync_filesystems(warned.append)
    assert warned == ["failed to sync container namespace - no process in container 123"]


def test_freeze_settings(tmp_path: Path) -> None:
    conf = tmp_path / "pverep.conf"
    assert FreezeSettings.read(conf) == FreezeSettings()
    conf.write_text("[freeze]\nagent-freeze-timeout = 5\nct-freeze-timeout = 2\n")
    got = FreezeSettings.read(conf)
    assert (got.agent.freeze, got.agent.thaw, got.ct_timeout) == (5, 180, 2)
    conf.write_text("[freeze]\nagent-freeze-timeout = 0\n")
    with pytest.raises(ConfigError, match="agent-freeze-timeout"):
        FreezeSettings.read(conf)
    conf.write_text("[freeze]\nfreeze = 1\n")
    with pytest.raises(ConfigError, match="unknown key 'freeze'"):
        section(conf, "freeze", ("x",))
