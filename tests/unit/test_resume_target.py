"""Target side of resumable transfers against the in-memory FAKE zfs (real OpenZFS would be
the lab's OpenZFS engine): tokens in the prepare answer, discarding, pre-checks, pruning."""

from __future__ import annotations

from pathlib import Path

import pytest

from pverep.engine import remote
from pverep.engine.planner import parse_prepare_info, parse_remote_prepare
from pverep.errors import PverepError
from pverep.storage.streamform import ImportMode
from pverep.storage.zfscaps import ZfsCaps
from tests.unit.test_remote import make_target as remote_target
from tests.unit.test_remote import pve_root  # noqa: F401 - the fixture
from tests.unit.test_zfscaps import OPENZFS, TOKEN
from tests.unit.zfs_fake import FakeZfsShell

P = "rpool/data"
JOB = "100-0"
SNAP = "__replicate_100-0_1000__"


def make_target(
    shell: FakeZfsShell, caps: ZfsCaps = OPENZFS
) -> tuple[remote.TargetNode, list[str]]:
    return remote_target(shell, caps=caps)


def partial(shell: FakeZfsShell, name: str, *snaps: str) -> None:
    shell.add(f"{P}/{name}", *snaps)
    shell.datasets[f"{P}/{name}"].props["receive_resume_token"] = TOKEN


def test_prepare_reports_tokens_and_hides_a_partial_first_sync() -> None:
    shell = FakeZfsShell()
    partial(shell, "vm-100-disk-0", SNAP)  # partial incremental: the base is there
    partial(shell, "vm-100-disk-1")  # partial first sync: no snapshot yet
    target, _ = make_target(shell)
    found: dict[str, str] = {}
    wanted = ["local-zfs:vm-100-disk-0", "local-zfs:vm-100-disk-1"]
    snaps = remote.prepare_local_job(target, JOB, wanted, last_sync=1000, partial=found)
    assert found == {v: TOKEN for v in wanted}
    assert list(snaps) == ["local-zfs:vm-100-disk-0"]  # no "{}" entry: that is no replica
    line = remote.format_prepare_result(snaps, remote.prepare_info(target, found))
    assert parse_remote_prepare(line) == {
        "local-zfs:vm-100-disk-0": {SNAP: snaps[wanted[0]][SNAP].guid}
    }
    info = parse_prepare_info(line)
    assert ZfsCaps.from_json(info["zfs"]) == OPENZFS
    assert info["partial"] == found


def test_partial_receive_of_a_disk_the_guest_lost_is_discarded() -> None:
    shell = FakeZfsShell()
    shell.add(f"{P}/vm-100-disk-0", SNAP)
    partial(shell, "vm-100-disk-1")  # the disk was removed from the guest meanwhile
    target, log = make_target(shell)
    found: dict[str, str] = {}
    remote.prepare_local_job(
        target, JOB, ["local-zfs:vm-100-disk-0"], last_sync=1000, partial=found
    )
    assert found == {}
    assert ["zfs", "recv", "-A", "--", f"{P}/vm-100-disk-1"] in shell.calls
    assert f"{P}/vm-100-disk-1" not in shell.datasets
    assert log == [
        f"{JOB}: discard partial receive of 'local-zfs:vm-100-disk-1' (no longer replicated)"
    ]


def test_stock_prepare_is_unchanged_and_asks_no_token() -> None:
    shell = FakeZfsShell()
    partial(shell, "vm-100-disk-1")
    target, _ = make_target(shell)
    snaps = remote.prepare_local_job(target, JOB, ["local-zfs:vm-100-disk-1"], last_sync=1000)
    assert snaps == {"local-zfs:vm-100-disk-1": {}}  # pvesr's answer: the source then fails
    assert not any("receive_resume_token" in c for c in shell.calls)


def test_zfs_fuse_target_never_asks_for_tokens() -> None:
    shell = FakeZfsShell()
    partial(shell, "vm-100-disk-0", SNAP)
    target, _ = make_target(shell, ZfsCaps())
    found: dict[str, str] = {}
    remote.prepare_local_job(
        target, JOB, ["local-zfs:vm-100-disk-0"], last_sync=1000, partial=found
    )
    assert found == {}
    assert not any("receive_resume_token" in c for c in shell.calls)


def test_resume_import_accepts_the_partial_volume_and_nothing_else() -> None:
    shell = FakeZfsShell()
    partial(shell, "vm-100-disk-0")
    shell.add(f"{P}/vm-100-disk-1")
    target, _ = make_target(shell)
    pool = target.volumes.pool("local-zfs")
    resuming = ImportMode(resumable=True, resuming=True)
    pool.check_import("vm-100-disk-0", None, mode=resuming)
    with pytest.raises(PverepError, match="already exists"):
        pool.check_import("vm-100-disk-0", None)  # a normal full import still refuses
    with pytest.raises(PverepError, match="already exists"):
        pool.check_import("vm-100-disk-1", None, mode=resuming)
    with pytest.raises(PverepError, match="no partial receive"):
        pool.check_import("vm-100-disk-2", None, mode=resuming)


def test_discard_partial_then_the_normal_full_path() -> None:
    shell = FakeZfsShell()
    partial(shell, "vm-100-disk-0")
    target, _ = make_target(shell)
    pool = target.volumes.pool("local-zfs")
    pool.check_import("vm-100-disk-0", None, mode=ImportMode(discard_partial=True))
    assert ["zfs", "recv", "-A", "--", f"{P}/vm-100-disk-0"] in shell.calls
    assert f"{P}/vm-100-disk-0" not in shell.datasets


def test_prune_removes_what_the_source_lost_but_never_the_base() -> None:
    shell = FakeZfsShell()
    shell.add(f"{P}/vm-100-disk-0", "old-user", SNAP, "later")
    target, _ = make_target(shell)
    pool = target.volumes.pool("local-zfs")
    pool._prune(f"{P}/vm-100-disk-0", SNAP, ["old-user", SNAP, "later", "never-there"])
    assert shell.snapshot_names(f"{P}/vm-100-disk-0") == [SNAP]


def test_prune_names_are_validated_before_zfs_is_touched() -> None:
    shell = FakeZfsShell()
    target, _ = make_target(shell)
    with pytest.raises(PverepError, match="invalid snapshot name"):
        remote.validate_import(
            target, "local-zfs:vm-100-disk-0", "zfs", mode=ImportMode(prune=("a;b",))
        )
    assert shell.calls == []


def test_the_source_argv_parses_into_the_same_mode_on_the_target(
    pve_root: Path,  # noqa: F811 - the fixture imported above
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """What PeerCommands sends is what `pverep import` understands (one line, no traceback)."""
    from pverep.cli import main
    from pverep.transport.peer import PeerCommands

    seen: list[ImportMode] = []

    def capture(*args: object, mode: ImportMode | None = None, **kw: object) -> None:
        assert mode is not None
        seen.append(mode)
        raise PverepError("captured")

    monkeypatch.setattr(remote, "validate_import", capture)
    sent = ImportMode(resumable=True, raw=True, resuming=True, discard_partial=True,
                      prune=("a", "b"))  # fmt: skip
    argv = PeerCommands().import_("local-zfs:vm-100-disk-0", "s", "b", "-", sent)
    with pytest.raises(SystemExit):
        main(["--root", str(pve_root), *argv[1:]])
    assert seen == [sent]
    assert capsys.readouterr().err == "captured\n"
    with pytest.raises(SystemExit):
        main(["--root", str(pve_root), "prepare-local-job", "100-0", "--pverep-info", "maybe"])
    assert capsys.readouterr().err == "pverep-info: type check ('boolean') failed - got 'maybe'\n"


def test_a_token_that_is_no_token_is_ignored_not_passed_on() -> None:
    shell = FakeZfsShell()
    shell.add(f"{P}/vm-100-disk-0", SNAP)
    shell.datasets[f"{P}/vm-100-disk-0"].props["receive_resume_token"] = "1-2-3; reboot"
    target, _ = make_target(shell)
    found: dict[str, str] = {}
    remote.prepare_local_job(
        target, JOB, ["local-zfs:vm-100-disk-0"], last_sync=1000, partial=found
    )
    assert found == {}


def test_a_partial_receive_is_reported_under_the_spelling_the_source_asked_for() -> None:
    """The target lists a clone as ``<base>/<name>``; a source asking for the plain volid (or
    the other way round) names the same dataset: its partial receive is wanted, not
    discarded as no longer replicated."""
    plain = "local-zfs:vm-100-disk-0"
    shell = FakeZfsShell()
    shell.add(f"{P}/base-99-disk-0", "__base__")
    shell.add(f"{P}/vm-100-disk-0", SNAP, origin=f"{P}/base-99-disk-0@__base__")
    shell.datasets[f"{P}/vm-100-disk-0"].props["receive_resume_token"] = TOKEN
    target, log = make_target(shell)
    found: dict[str, str] = {}
    snaps = remote.prepare_local_job(target, JOB, [plain], last_sync=1000, partial=found)
    assert found == {plain: TOKEN}
    assert list(snaps) == [plain] and log == []
    assert not any(c[1:3] == ["recv", "-A"] for c in shell.calls)
