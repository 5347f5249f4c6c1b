"""Target side (spec §5.2, §5.3, §5.7): safety checks, stale snapshot/volume cleanup, the JSON
line — against the in-memory FAKE zfs (real zfs: tests/lab)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from pverep.cli import _register, cli
from pverep.config.storage import parse_storage_cfg
from pverep.engine import remote
from pverep.errors import PverepError
from pverep.storage.volumes import Volumes
from pverep.storage.zfs import ZfsFlags, ZfsRunner
from pverep.storage.zfscaps import ZfsCaps
from tests.unit.zfs_fake import FakeZfsShell

STORAGE_CFG = """zfspool: local-zfs
\tpool rpool/data
\tcontent images,rootdir

zfspool: other-zfs
\tpool tank/pve
\tnodes pve1,pve2

zfspool: off-zfs
\tpool off/pve
\tdisable

zfspool: elsewhere
\tpool far/pve
\tnodes pve9

dir: local-dir
\tpath /srv
"""

P = "rpool/data"


def make_target(
    shell: FakeZfsShell, guests: dict[int, str] | None = None, caps: ZfsCaps | None = None
) -> tuple[remote.TargetNode, list[str]]:
    """``caps``: what the target's zfs says it supports (default: zfs-fuse, nothing)."""
    lines: list[str] = []
    storage = parse_storage_cfg(STORAGE_CFG)
    flags = ZfsFlags.from_caps(caps or ZfsCaps())
    target = remote.TargetNode(
        node="pve2",
        storage=storage,
        volumes=Volumes(storage, ZfsRunner(shell), flags=flags, sleep=lambda _: None),
        guest_node=(guests or {100: "pve1"}).get,
        log=lines.append,
    )
    return target, lines


def test_refuses_guest_living_on_this_node() -> None:
    shell = FakeZfsShell()
    shell.add(f"{P}/subvol-100-disk-0", "__replicate_100-0_1__")
    target, _ = make_target(shell, {100: "pve2"})
    for call in (
        lambda: remote.prepare_local_job(
            target, "100-0", [], scan=["local-zfs"], last_sync=1, force=True
        ),
        lambda: remote.finalize_local_job(
            target, "100-0", ["local-zfs:subvol-100-disk-0"], last_sync=5
        ),
        lambda: remote.import_volume(target, "local-zfs:subvol-100-disk-0", "zfs", 0),
    ):
        with pytest.raises(PverepError, match=r"^guest '100' is on local node$"):
            call()
    assert shell.calls == []  # nothing touched, not even listed
    assert shell.snapshot_names(f"{P}/subvol-100-disk-0") == ["__replicate_100-0_1__"]


@pytest.mark.parametrize(
    ("volids", "scan", "error"),
    [
        ([], [], "no volumes specified"),
        (["nope:vm-100-disk-0"], [], "storage 'nope' does not exist"),
        (["off-zfs:vm-100-disk-0"], [], "storage 'off-zfs' is disabled"),
        (["elsewhere:vm-100-disk-0"], [], "storage 'elsewhere' is not available on node 'pve2'"),
        (["local-dir:100/vm-100-disk-0.raw"], [], "storage 'local-dir' is not replicatable"),
        (["local-zfs:vm-101-disk-0"], [], "volume 'local-zfs:vm-101-disk-0' has wrong owner"),
        (["local-zfs:vm-100-disk-0"], ["nope"], "storage 'nope' does not exist"),
        (["local-zfs:vm-100-disk-0"], ["local-dir"], "storage 'local-dir' is not replicatable"),
    ],
)
def test_prepare_validation_errors(volids: list[str], scan: list[str], error: str) -> None:
    shell = FakeZfsShell()
    target, _ = make_target(shell)
    with pytest.raises(PverepError) as exc:
        remote.prepare_local_job(target, "100-0", volids, scan=scan, last_sync=0)
    assert str(exc.value) == error
    assert shell.calls == []


def test_prepare_ignores_disabled_or_unavailable_scan_storages() -> None:
    shell = FakeZfsShell()
    target, _ = make_target(shell)
    result = remote.prepare_local_job(
        target, "100-0", [], scan=["off-zfs", "elsewhere"], last_sync=1, force=True
    )
    assert result == {} and shell.calls == []


def test_prepare_normal_run_deletes_stale_snapshots_and_volumes() -> None:
    shell = FakeZfsShell()
    wanted = f"{P}/subvol-100-disk-0"
    shell.add(
        wanted,
        "__replicate_100-0_1000__",
        "__replicate_100-0_2000__",
        "user",
        "__replicate_100-1_5__",
    )
    shell.add(f"{P}/subvol-100-disk-1", "__replicate_100-0_1000__")  # removed from the job
    shell.add(f"{P}/subvol-100-disk-2", "user")  # not this job's: stays
    shell.add(f"{P}/subvol-100-disk-3")  # no snapshots: stays, maps to {}
    shell.add(f"{P}/subvol-101-disk-0", "__replicate_101-0_1__")  # other guest: never looked at
    target, log = make_target(shell)
    result = remote.prepare_local_job(
        target, "100-0", ["local-zfs:subvol-100-disk-0"], last_sync=2000
    )
    assert list(result) == [
        "local-zfs:subvol-100-disk-0", "local-zfs:subvol-100-disk-2", "local-zfs:subvol-100-disk-3",
    ]  # fmt: skip
    assert list(result["local-zfs:subvol-100-disk-0"]) == [
        "__replicate_100-0_2000__", "user", "__replicate_100-1_5__",
    ]  # fmt: skip
    assert result["local-zfs:subvol-100-disk-3"] == {}
    assert shell.snapshot_names(wanted) == [
        "__replicate_100-0_2000__",
        "user",
        "__replicate_100-1_5__",
    ]
    assert f"{P}/subvol-100-disk-1" not in shell.datasets
    assert f"{P}/subvol-101-disk-0" in shell.datasets
    assert log == [
        "delete stale replication snapshot '__replicate_100-0_1000__'"
        " on local-zfs:subvol-100-disk-0",
        # prepare() runs over every image of the guest, as in pvesr
        "expected snapshot __replicate_100-0_2000__ not present for local-zfs:subvol-100-disk-1,"
        " not removing others",
        "100-0: delete stale volume 'local-zfs:subvol-100-disk-1'",
    ]
    line = remote.format_prepare_result(result)
    doc = json.loads(line)
    info = doc["local-zfs:subvol-100-disk-0"]["__replicate_100-0_2000__"]
    assert set(info) == {"id", "timestamp"} and all(isinstance(v, str) for v in info.values())
    assert "\n" not in line and " " not in line


def test_prepare_keeps_everything_when_expected_snapshot_missing() -> None:
    shell = FakeZfsShell()
    shell.add(f"{P}/subvol-100-disk-0", "__replicate_100-0_1000__")
    target, log = make_target(shell)
    result = remote.prepare_local_job(
        target, "100-0", ["local-zfs:subvol-100-disk-0"], last_sync=3000
    )
    assert list(result["local-zfs:subvol-100-disk-0"]) == ["__replicate_100-0_1000__"]
    assert log == [
        "expected snapshot __replicate_100-0_3000__ not present for local-zfs:subvol-100-disk-0,"
        " not removing others"
    ]


def test_prepare_last_sync_zero_never_deletes() -> None:
    shell = FakeZfsShell()
    shell.add(f"{P}/subvol-100-disk-0", "__replicate_100-0_1000__")
    shell.add(f"{P}/subvol-100-disk-1", "__replicate_100-0_1000__")
    target, log = make_target(shell)
    result = remote.prepare_local_job(target, "100-0", ["local-zfs:subvol-100-disk-0"], last_sync=0)
    # disk-1 is unwanted and carries the job's snapshot: stale even though prepare deleted nothing
    assert list(result) == ["local-zfs:subvol-100-disk-0"]
    assert log == ["100-0: delete stale volume 'local-zfs:subvol-100-disk-1'"]


def test_removal_destroys_every_volume_with_job_snapshots() -> None:
    shell = FakeZfsShell()
    shell.add(f"{P}/subvol-100-disk-0", "__replicate_100-0_1000__", "user")
    shell.add(f"{P}/subvol-100-disk-1", "user")
    shell.add("tank/pve/vm-100-disk-0", "__replicate_100-0_1000__", kind="volume", busy=2)
    target, log = make_target(shell)
    result = remote.prepare_local_job(
        target, "100-0", [], scan=["local-zfs", "other-zfs"], last_sync=1, force=True
    )
    assert list(result) == ["local-zfs:subvol-100-disk-1"]
    assert f"{P}/subvol-100-disk-0" not in shell.datasets
    assert "tank/pve/vm-100-disk-0" not in shell.datasets  # busy twice, then destroyed
    assert "100-0: delete stale volume 'other-zfs:vm-100-disk-0'" in log


def test_prepare_job_prefix_quirk_is_kept() -> None:
    # job 100-1's unwanted volume with a snapshot of job 100-10 counts as stale (§9.4 quirk)
    shell = FakeZfsShell()
    shell.add(f"{P}/subvol-100-disk-5", "__replicate_100-10_7__")
    target, _ = make_target(shell)
    remote.prepare_local_job(target, "100-1", [], scan=["local-zfs"], last_sync=0, force=True)
    assert f"{P}/subvol-100-disk-5" not in shell.datasets


def test_finalize_deletes_older_snapshots_only_when_new_exists() -> None:
    shell = FakeZfsShell()
    shell.add(f"{P}/subvol-100-disk-0", "__replicate_100-0_1000__", "__replicate_100-0_2000__")
    shell.add(f"{P}/subvol-100-disk-1", "__replicate_100-0_1000__")
    target, log = make_target(shell)
    remote.finalize_local_job(
        target,
        "100-0",
        ["local-zfs:subvol-100-disk-1", "local-zfs:subvol-100-disk-0"],
        last_sync=2000,
    )
    assert shell.snapshot_names(f"{P}/subvol-100-disk-0") == ["__replicate_100-0_2000__"]
    assert shell.snapshot_names(f"{P}/subvol-100-disk-1") == ["__replicate_100-0_1000__"]
    assert log == [
        "delete stale replication snapshot '__replicate_100-0_1000__'"
        " on local-zfs:subvol-100-disk-0",
        "expected snapshot __replicate_100-0_2000__ not present for local-zfs:subvol-100-disk-1,"
        " not removing others",
    ]
    with pytest.raises(PverepError, match=r"^no volumes specified$"):
        remote.finalize_local_job(target, "100-0", [], last_sync=2000)


def test_import_and_export_validate_before_touching_zfs() -> None:
    shell = FakeZfsShell()
    target, _ = make_target(shell)
    vol = "local-zfs:subvol-100-disk-0"
    with pytest.raises(PverepError, match=r"unsupported import stream format .*: raw\+size"):
        remote.import_volume(target, vol, "raw+size", 0)
    with pytest.raises(PverepError, match="invalid snapshot name"):
        remote.import_volume(target, vol, "zfs", 0, base="a;b")
    with pytest.raises(PverepError, match="not replicatable"):
        remote.import_volume(target, "local-dir:100/vm-100-disk-0.raw", "zfs", 0)
    with pytest.raises(PverepError, match="storage can only export snapshots"):
        remote.export_volume(target, vol, "zfs", 1)
    with pytest.raises(
        PverepError, match=r"^volume 'rpool/data/subvol-100-disk-0' already exists$"
    ):
        shell.add(f"{P}/subvol-100-disk-0")
        remote.import_volume(target, vol, "zfs", 0)
    assert all(call[1] == "get" for call in shell.calls)


# --- CLI (argument spelling, stdout/stderr split, exit status) ---------------------------------


@pytest.fixture
def pve_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    _register()
    etc = tmp_path / "etc/pve"
    (etc / "nodes/pve2/lxc").mkdir(parents=True)
    (etc / "storage.cfg").write_text(STORAGE_CFG)
    (etc / ".vmlist").write_text(
        json.dumps({"version": 1, "ids": {"100": {"node": "pve1", "type": "lxc", "version": 1}}})
    )
    monkeypatch.setattr(socket, "gethostname", lambda: "pve2")
    return tmp_path


def invoke(root: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["--root", str(root), *args])
    if result.exception and not isinstance(result.exception, SystemExit | PverepError):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def test_cli_no_volumes_and_local_guest(pve_root: Path) -> None:
    from pverep.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["--root", str(pve_root), "prepare-local-job", "100-0", "-last_sync", "0"])
    assert exc.value.code == 255
    (pve_root / "etc/pve/nodes/pve2/lxc/100.conf").write_text(
        "rootfs: local-zfs:subvol-100-disk-0\n"
    )
    with pytest.raises(SystemExit):
        main(["--root", str(pve_root), "prepare-local-job", "100-0", "--scan", "local-zfs",
              "--last_sync", "1", "--force"])  # fmt: skip


def test_cli_messages_are_one_line_on_stderr(
    pve_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pverep.cli import main

    (pve_root / "etc/pve/nodes/pve2/lxc/100.conf").write_text(
        "rootfs: local-zfs:subvol-100-disk-0\n"
    )
    for argv, message in [
        (["prepare-local-job", "100-0", "--scan", "local-zfs", "--last_sync", "1", "--force"],
         "guest '100' is on local node"),
        (["finalize-local-job", "100-0", "local-zfs:subvol-100-disk-0", "-last_sync", "5"],
         "guest '100' is on local node"),
        (["prepare-local-job", "100-0", "--last_sync", "x", "--force"],
         "last_sync: type check ('integer') failed - got 'x'"),
        (["prepare-local-job", "100-0", "--last_sync", "1", "--force", "maybe"],
         "force: type check ('boolean') failed - got 'maybe'"),
        (["import", "local-zfs:subvol-100-disk-0", "zfs", "-", "-with-snapshots", "1",
          "-snapshot", "s", "-allow-rename", "0"], "guest '100' is on local node"),
    ]:  # fmt: skip
        with pytest.raises(SystemExit) as exc:
            main(["--root", str(pve_root), *argv])
        out, err = capsys.readouterr()
        assert exc.value.code == 255
        assert out == "" and err == message + "\n"


CLONE = "local-zfs:base-99-disk-0/subvol-100-disk-0"


def test_prepare_keeps_a_linked_clones_replica_and_answers_under_its_volid() -> None:
    # The replica of a clone arrives as a plain dataset; the source names it by its clone volid.
    shell = FakeZfsShell()
    shell.add(f"{P}/subvol-100-disk-0", "__replicate_100-0_1000__")
    target, log = make_target(shell)
    result = remote.prepare_local_job(target, "100-0", [CLONE], last_sync=1000)
    assert f"{P}/subvol-100-disk-0" in shell.datasets  # not destroyed as "stale"
    assert list(result) == [CLONE]
    assert list(result[CLONE]) == ["__replicate_100-0_1000__"]
    assert log == []


def test_prepare_lists_a_clone_on_the_target_under_its_clone_volid() -> None:
    # where the target's dataset is itself a clone of the template's disk (as on the source)
    shell = FakeZfsShell()
    shell.add(f"{P}/base-99-disk-0", "__base__")
    shell.add(
        f"{P}/subvol-100-disk-0", "__replicate_100-0_7__", origin=f"{P}/base-99-disk-0@__base__"
    )
    target, _ = make_target(shell)
    result = remote.prepare_local_job(target, "100-0", ["local-zfs:subvol-100-disk-0"], last_sync=7)
    assert list(result) == ["local-zfs:subvol-100-disk-0"]
    assert f"{P}/subvol-100-disk-0" in shell.datasets
    removal = remote.prepare_local_job(
        target, "100-0", [], scan=["local-zfs"], last_sync=1, force=True
    )
    assert removal == {}
    assert f"{P}/subvol-100-disk-0" not in shell.datasets  # a removal still cleans it
    assert f"{P}/base-99-disk-0" in shell.datasets  # the template's disk is not guest 100's


def test_prepare_destroys_a_clone_replica_the_source_no_longer_sends() -> None:
    shell = FakeZfsShell()
    shell.add(f"{P}/subvol-100-disk-0", "__replicate_100-0_1000__")
    shell.add(f"{P}/subvol-100-disk-1", "__replicate_100-0_1000__")
    target, log = make_target(shell)
    result = remote.prepare_local_job(
        target, "100-0", ["local-zfs:base-99-disk-0/subvol-100-disk-1"], last_sync=1000
    )
    assert list(result) == ["local-zfs:base-99-disk-0/subvol-100-disk-1"]
    assert f"{P}/subvol-100-disk-0" not in shell.datasets
    assert log == ["100-0: delete stale volume 'local-zfs:subvol-100-disk-0'"]


def test_finalize_and_import_accept_clone_volids() -> None:
    shell = FakeZfsShell()
    shell.add(f"{P}/subvol-100-disk-0", "__replicate_100-0_1__", "__replicate_100-0_2__")
    target, _ = make_target(shell)
    remote.finalize_local_job(target, "100-0", [CLONE], last_sync=2)
    assert shell.snapshot_names(f"{P}/subvol-100-disk-0") == ["__replicate_100-0_2__"]
    plan = remote.validate_import(target, CLONE, "zfs", snapshot="__replicate_100-0_3__")
    assert plan.pool.dataset(plan.volname) == f"{P}/subvol-100-disk-0"


def test_reconcile_clean_and_cleanup_know_a_clones_owner_and_dataset() -> None:
    from pverep.reconcile.orphans import volume_owner
    from pverep.reconcile.target import CleanRequest, replica_clean
    from pverep.storage.clones import spelled_keys

    assert volume_owner(CLONE) == 100  # the clone's guest, not the template 99
    assert volume_owner("local-zfs:base-99-disk-0") == 99
    listed = {"local-zfs:subvol-100-disk-0": 1, "local-zfs:vm-7-disk-0": 2}
    assert spelled_keys(listed, [CLONE]) == {CLONE: 1, "local-zfs:vm-7-disk-0": 2}
    shell = FakeZfsShell()
    shell.add(f"{P}/subvol-100-disk-0", "__replicate_100-0_1__")
    target, _ = make_target(shell)
    done = replica_clean(target, 100, CleanRequest("100-0", (), (CLONE,)))
    assert done == [f"destroy-volume {CLONE}"]
    assert f"{P}/subvol-100-disk-0" not in shell.datasets


def test_node_name_has_no_override_on_the_safety_path(
    pve_root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The guest lives on this node (host name pve2): an environment variable naming another
    node must not switch off the refusal (PVEREP_NODENAME used to do exactly that)."""
    from pverep.cli import main

    (pve_root / "etc/pve/.vmlist").write_text(
        json.dumps({"version": 1, "ids": {"100": {"node": "pve2", "type": "lxc", "version": 1}}})
    )
    (pve_root / "etc/pve/nodes/pve2/lxc/100.conf").write_text(
        "rootfs: local-zfs:subvol-100-disk-0\n"
    )
    monkeypatch.setenv("PVEREP_NODENAME", "pve3")
    for argv in (
        ["prepare-local-job", "100-0", "--scan", "local-zfs", "--last_sync", "1", "--force"],
        ["finalize-local-job", "100-0", "local-zfs:subvol-100-disk-0", "-last_sync", "5"],
    ):
        with pytest.raises(SystemExit) as exc:
            main(["--root", str(pve_root), *argv])
        assert exc.value.code == 255
        assert capsys.readouterr().err == "guest '100' is on local node\n"
