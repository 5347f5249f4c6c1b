"""The pvesr-compatible verbs end to end: files under a temporary root, output byte for byte,
one-line errors, and no damage to existing files on bad input."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pverep.cli import App, main
from pverep.paths import Paths

from .clihelp import run_cli

SPEC_CFG = (
    b"local: 100-0\n\ttarget pve2\n\trate 10\n\tschedule */5\n\tsource pve1\n\n"
    b"local: 101-1\n\tcomment nightly%3A db\n\tdisable\n\ttarget pve3\n\tremove_job full\n"
    b"\tsource pve1\n\n"
)
SPEC_STATE = (
    b'{"100":{"local/pve2":{"last_iteration":1700000100,"last_try":1700000100,'
    b'"last_sync":1700000100,"fail_count":0,"last_node":"pve1","storeid_list":["local-zfs"],'
    b'"duration":3.512871}}}'
)
NOW = 1704068200  # 2024-01-01 00:16:40 UTC


class Node:
    """A node's view of a cluster under a temporary root (pve1 local, pve2/pve3 members)."""

    def __init__(self, root: Path) -> None:
        self.paths = Paths(root)
        pve = root / "etc/pve"
        (pve / "priv").mkdir(parents=True)
        members = {
            "nodename": "pve1",
            "version": 4,
            "nodelist": {
                n: {"id": i, "online": 1, "ip": f"10.0.0.{i}"}
                for i, n in enumerate(("pve1", "pve2", "pve3"), start=1)
            },
        }
        (pve / ".members").write_text(json.dumps(members))
        (pve / "storage.cfg").write_text("zfspool: local-zfs\n\tpool rpool/data\n\n")
        guests = (
            (100, "qemu-server", "scsi0: local-zfs:vm-100-disk-0,size=8G"),
            (101, "lxc", "rootfs: local-zfs:subvol-101-disk-0,size=8G"),
        )
        for vmid, sub, disk in guests:
            conf = pve / "nodes" / "pve1" / sub / f"{vmid}.conf"
            conf.parent.mkdir(parents=True, exist_ok=True)
            conf.write_text(f"memory: 512\n{disk}\n")
        self.app = App(paths=self.paths, clock=lambda: NOW)

    def run(self, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
        return run_cli(self.app, capsys, *args)


@pytest.fixture
def node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Node]:
    monkeypatch.setenv("PVEREP_NODENAME", "pve1")
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield Node(tmp_path)
    monkeypatch.undo()
    time.tzset()


def test_create_writes_the_spec_example_and_list_shows_it(node: Node, capsys) -> None:
    assert node.run(
        capsys, "create-local-job", "100-0", "pve2", "--schedule", "*/5", "--rate", "10"
    ) == (0, "", "")
    code, out, err = node.run(
        capsys,
        "create-local-job",
        "101-1",
        "pve3",
        "-comment",
        "nightly: db",
        "--disable",
        "--remove_job",
        "full",
    )
    assert (code, out, err) == (0, "", "")
    assert node.paths.replication_cfg.read_bytes() == SPEC_CFG
    code, out, _ = node.run(capsys, "list")
    assert out == (
        "JobID                Target                 Schedule  Rate  Enabled\n"
        "100-0                local/pve2                  */5    10      yes\n"
        "101-1                local/pve3                 */15     -       no\n"
    )
    code, out, _ = node.run(capsys, "list", "--output-format", "json")
    assert [j["id"] for j in json.loads(out)] == ["100-0", "101-1"]


def test_list_sorts_by_guest_numerically(node: Node, capsys) -> None:
    node.paths.replication_cfg.write_text(
        "local: 1000-0\n\ttarget pve2\n\n"
        "local: 200-1\n\ttarget pve3\n\n"
        "local: 200-0\n\ttarget pve2\n"
    )
    _, out, _ = node.run(capsys, "list")
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["200-0", "200-1", "1000-0"]


def test_status_reproduces_the_spec_table(node: Node, capsys) -> None:
    node.paths.replication_cfg.write_bytes(b"local: 100-0\n\ttarget pve2\n\tsource pve1\n\n")
    state = {
        "100": {
            "local/pve2": {
                "last_iteration": 1704068102,
                "last_try": 1704068102,
                "last_sync": 1704068102,
                "fail_count": 0,
                "last_node": "pve1",
                "storeid_list": ["local-zfs"],
                "duration": 3.512871,
            }
        }
    }
    node.paths.state_file.parent.mkdir(parents=True)
    node.paths.state_file.write_text(json.dumps(state))
    code, out, err = node.run(capsys, "status")
    assert (code, err) == (0, "")
    assert out == (
        "JobID      Enabled    Target                           LastSync             NextSync"
        "   Duration  FailCount State\n"
        "100-0      Yes        local/pve2            2024-01-01_00:15:02  2024-01-01_00:30:00"
        "   3.512871          0 OK\n"
    )
    _, out, _ = node.run(capsys, "status", "--output-format", "json")
    entry = json.loads(out)[0]
    assert entry["next_sync"] == 1704069000 and entry["vmtype"] == "qemu"
    assert entry["duration"] == 3.512871 and "pid" not in entry
    _, out, _ = node.run(capsys, "status", "--guest", "101")
    assert out.count("\n") == 1


def test_status_with_string_numbers_errors_and_running_job(node: Node, capsys) -> None:
    import os

    from pverep.config.state import process_start_time

    node.paths.replication_cfg.write_bytes(
        b"local: 100-0\n\ttarget pve2\n\nlocal: 101-0\n\ttarget pve2\n\tdisable\n\n"
    )
    state = (
        '{"100":{"local/pve2":{"last_try":"1704068102","last_sync":"0","fail_count":"2",'
        '"error":"boom","duration":"12.5"}},'
        f'"101":{{"local/pve2":{{"pid":{os.getpid()},"ptime":"{process_start_time(os.getpid())}"}}}}}}'
    )
    node.paths.state_file.parent.mkdir(parents=True)
    node.paths.state_file.write_text(state)
    code, out, _ = node.run(capsys, "status")
    assert code == 0
    rows = out.splitlines()[1:]
    assert rows[0].split() == [
        "100-0",
        "Yes",
        "local/pve2",
        "-",
        "2024-01-01_00:25:02",
        "12.5",
        "2",
        "boom",
    ]
    assert rows[1].split() == ["101-0", "No", "local/pve2", "-", "pending", "-", "0", "SYNCING"]
    # the source fix-up was written back, in pvesr's layout
    assert b"\tsource pve1\n" in node.paths.replication_cfg.read_bytes()


def test_read_prints_perl_pretty_json(node: Node, capsys) -> None:
    node.paths.replication_cfg.write_bytes(SPEC_CFG)
    _, out, _ = node.run(capsys, "read", "101-1")
    import hashlib

    assert out == (
        "{\n"
        '   "comment" : "nightly: db",\n'
        f'   "digest" : "{hashlib.sha1(SPEC_CFG).hexdigest()}",\n'
        '   "disable" : 1,\n'
        '   "guest" : 101,\n'
        '   "id" : "101-1",\n'
        '   "jobnum" : 1,\n'
        '   "remove_job" : "full",\n'
        '   "source" : "pve1",\n'
        '   "target" : "pve3",\n'
        '   "type" : "local"\n'
        "}\n"
    )
    assert node.run(capsys, "read", "100-9") == (255, "", "no such replication job '100-9'\n")


def test_update_enable_disable_delete(node: Node, capsys) -> None:
    node.paths.replication_cfg.write_bytes(SPEC_CFG)
    assert node.run(capsys, "enable", "101-1")[0] == 0
    assert node.run(capsys, "update", "101-1", "--delete", "comment,remove_job")[0] == 0
    assert node.run(capsys, "update", "100-0", "--rate", "2.5", "--delete", "schedule")[0] == 0
    assert node.paths.replication_cfg.read_bytes() == (
        b"local: 100-0\n\ttarget pve2\n\trate 2.5\n\tsource pve1\n\n"
        b"local: 101-1\n\ttarget pve3\n\tsource pve1\n\n"
    )
    assert node.run(capsys, "disable", "100-0")[0] == 0
    assert b"local: 100-0\n\tdisable\n" in node.paths.replication_cfg.read_bytes()
    before = node.paths.replication_cfg.read_bytes()
    for args, message in [
        (
            ("update", "100-0", "--digest", "0" * 40),
            "detected modified configuration - file changed by other user? Try again.",
        ),
        (("update", "100-0", "--target", "pve3"), "can't change value of fixed parameter 'target'"),
        (("update", "100-0", "--delete", "target"), "unable to delete required option 'target'"),
        (("update", "100-0", "--delete", "bogus"), "no such option 'bogus'"),
        (("update", "100-5", "--rate", "5"), "no such job '100-5'"),
        (
            ("update", "100-0", "--disable", "maybe"),
            "400 Parameter verification failed. "
            "disable: type check ('boolean') failed - got 'maybe'",
        ),
        (("delete", "100-5"), "no such job '100-5'"),
        (
            ("delete", "100-0", "--keep", "--force"),
            "400 Parameter verification failed. keep: conflicts with parameter 'force'",
        ),
    ]:
        assert node.run(capsys, *args) == (255, "", message + "\n"), args
    assert node.paths.replication_cfg.read_bytes() == before
    digest = json.loads(node.run(capsys, "read", "100-0")[1])["digest"]
    assert node.run(capsys, "update", "100-0", "--digest", digest, "--comment", "x")[0] == 0
    assert node.run(capsys, "delete", "100-0", "--keep") == (
        0,
        "",
        "Replication job removal is a background task and will take some time.\n",
    )
    assert b"\tremove_job local\n" in node.paths.replication_cfg.read_bytes()
    assert node.run(capsys, "delete", "101-1")[0] == 0
    assert b"\tremove_job full\n" in node.paths.replication_cfg.read_bytes()
    # pverep deviation (issue 5): --force says on stderr what it leaves behind
    rc, out, err = node.run(capsys, "delete", "100-0", "--force", "1")
    assert (rc, out) == (0, "")
    assert "left behind on pve" in err
    assert b"100-0" not in node.paths.replication_cfg.read_bytes()
    assert node.run(capsys, "delete", "100-0", "--force") == (0, "", "")  # no existence check


def test_create_checks_against_the_cluster(node: Node, capsys) -> None:
    cases = [
        (("create-local-job", "102-0", "pve2"), "Guest '102' does not exist."),
        (("create-local-job", "100-0", "pve9"), "Target 'pve9' does not exist."),
        (
            ("create-local-job", "100-0", "pve2", "--source", "pve3"),
            "Source 'pve3' does not match current node of guest '100' (pve1)",
        ),
        (("create-local-job", "100-0", "pve1"), "Source and target must not be identical"),
    ]
    for args, message in cases:
        assert node.run(capsys, *args) == (255, "", message + "\n"), args
    assert not node.paths.replication_cfg.exists()
    assert node.run(capsys, "create-local-job", "0100-07", "pve2")[0] == 255  # API pattern
    assert node.run(capsys, "create-local-job", "100-07", "pve2") == (0, "", "")
    assert (
        node.paths.replication_cfg.read_bytes() == b"local: 100-7\n\ttarget pve2\n\tsource pve1\n\n"
    )
    assert node.run(capsys, "create-local-job", "100-7", "pve3") == (
        255,
        "",
        "replication job '100-7' already exists\n",
    )
    assert node.run(capsys, "create-local-job", "100-8", "pve2") == (
        255,
        "",
        "replication job for guest '100' to target 'local/pve2' already exists\n",
    )


def test_create_volume_hook(node: Node, capsys) -> None:
    asked = []

    def no_volumes(guest):  # type: ignore[no-untyped-def]
        asked.append((guest.vmid, guest.node, guest.type))
        return []

    node.app.list_volumes = no_volumes
    assert node.run(capsys, "create-local-job", "101-0", "pve2") == (
        255,
        "",
        "No replicatable volumes found\n",
    )
    assert asked == [(101, "pve1", "lxc")]
    node.app.list_volumes = lambda guest: ["local-zfs:subvol-101-disk-0"]
    assert node.run(capsys, "create-local-job", "101-0", "pve2")[0] == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("99-0", "pve2"),
            "id: invalid format - invalid replication job id '99-0' (guest IDs < 100 are reserved)",
        ),
        (("abc", "pve2"), "id: invalid format - invalid replication job id 'abc'"),
        (("100-1-2", "pve2"), "id: invalid format - invalid replication job id '100-1-2'"),
        (("100-1", "pve_2"), "target: invalid format - value does not look like a valid node name"),
        (
            ("100-1", "pve2", "--schedule", "*/61"),
            "schedule: invalid format - invalid calendar event '*/61'",
        ),
        (
            ("100-1", "pve2", "--schedule", "*/0"),
            "schedule: invalid format - invalid calendar event '*/0'",
        ),
        (("100-1", "pve2", "--rate", "0"), "rate: value must have a minimum value of 1"),
        (("100-1", "pve2", "--rate", "-3"), "rate: value must have a minimum value of 1"),
        (("100-1", "pve2", "--rate", "fast"), "rate: type check ('number') failed - got 'fast'"),
        (
            ("100-1", "pve2", "--remove_job", "all"),
            "remove_job: value 'all' does not have a value in the enumeration 'local, full'",
        ),
        (
            ("100-1", "pve2", "--comment", "x" * 4097),
            "comment: value may only be 4096 characters long",
        ),
    ],
)
def test_bad_input_is_one_line(node: Node, capsys, args: tuple[str, ...], message: str) -> None:
    node.paths.replication_cfg.write_bytes(SPEC_CFG)
    code, out, err = node.run(capsys, "create-local-job", *args)
    assert code == 255 and out == ""
    assert err.startswith("400 Parameter verification failed. " + message)
    assert err.count("\n") == 1
    assert node.paths.replication_cfg.read_bytes() == SPEC_CFG


def test_usage_errors_are_one_line(node: Node, capsys) -> None:
    code, _, err = node.run(capsys, "create-local-job", "100-0")
    assert code == 255 and err == "pverep create-local-job: Missing argument 'TARGET'.\n"
    code, _, err = node.run(capsys, "list", "--output-format", "yaml")
    assert code == 255 and err.count("\n") == 1 and "yaml" in err


def test_malformed_config_warns_but_works(node: Node, capsys) -> None:
    node.paths.replication_cfg.write_text("local: 100-0\n\ttarget pve2\n\tbogus 1\njunk\n")
    code, out, err = node.run(capsys, "list")
    assert code == 0 and "100-0" in out
    path = node.paths.replication_cfg
    assert err == (
        f"file {path} line 3 (section '100-0') - unable to parse value of 'bogus': "
        "unexpected property 'bogus'\n"
        f"file {path} line 4 (section '100-0') - ignore config line: junk\n"
    )


def test_set_state_and_schedule_now(node: Node, capsys) -> None:
    node.paths.replication_cfg.write_bytes(SPEC_CFG)
    payload = json.dumps(json.loads(SPEC_STATE)["100"])
    assert node.run(capsys, "set-state", "100", payload) == (0, "", "")
    assert node.paths.state_file.read_bytes() == SPEC_STATE
    assert node.run(capsys, "schedule-now", "100-0") == (0, "", "")
    assert json.loads(node.paths.state_file.read_bytes())["100"]["local/pve2"]["last_try"] == 0
    for args, message in [
        (
            ("set-state", "99", "{}"),
            "400 Parameter verification failed. vmid: value must have a minimum value of 100",
        ),
        (("set-state", "100", "{bad"), "unable to decode job state JSON - "),
        (("set-state", "100", "[]"), "job state JSON must be an object of job state objects"),
        (("schedule-now", "100-9"), "no such replication job '100-9'"),
    ]:
        code, _, err = node.run(capsys, *args)
        assert code == 255 and err.startswith(message) and err.count("\n") == 1, args


def test_truncated_state_file_is_a_clear_error_and_kept(node: Node, capsys) -> None:
    node.paths.replication_cfg.write_bytes(SPEC_CFG)
    node.paths.state_file.parent.mkdir(parents=True)
    node.paths.state_file.write_bytes(SPEC_STATE[:60])
    for args in (("status",), ("schedule-now", "100-0")):
        code, out, err = node.run(capsys, *args)
        assert (code, out) == (255, "")
        assert err == f"invalid json data in '{node.paths.state_file}'\n"
    assert node.paths.state_file.read_bytes() == SPEC_STATE[:60]


def test_missing_etc_pve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("PVEREP_NODENAME", "pve1")
    app = App(paths=Paths(tmp_path / "nothing"))
    for args in (["list"], ["status"], ["create-local-job", "100-0", "pve2"], ["read", "100-0"]):
        with pytest.raises(SystemExit) as exit_:
            main(args, app)
        assert exit_.value.code == 255
        out, err = capsys.readouterr()
        assert out == "" and err.count("\n") == 1
        assert "pve cluster filesystem not online" in err
    assert not (tmp_path / "nothing").exists()


def test_create_checks_the_guests_volumes_by_default(node: Node, capsys) -> None:
    """Without an injected lister, create-local-job applies PVE's volume rules to the config."""
    conf = node.paths.guest_config("pve1", "lxc", 102)
    conf.write_text("memory: 512\n")
    assert node.run(capsys, "create-local-job", "102-0", "pve2") == (
        255,
        "",
        "No replicatable volumes found\n",
    )
    conf.write_text("memory: 512\nrootfs: local-zfs:subvol-102-disk-0,size=8G\n")
    assert node.run(capsys, "create-local-job", "102-0", "pve2")[0] == 0
    assert b"local: 102-0\n\ttarget pve2\n" in node.paths.replication_cfg.read_bytes()
