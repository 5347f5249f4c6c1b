"""engine/remote.py's stream verbs (spec §5.7): ``run_import``, ``import_volume`` and
``export_volume`` hand every option to the pool and run the follow-ups (the snapshot to delete
after an import, the sender's exit check after an export).

The pool and the target's storage are recorders (a named fake: the real zfs side of these
calls is storage/zfs.py, tested over the fake zfs and in the lab); what is checked here is
what remote.py asks of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from pverep.engine import remote
from pverep.errors import PverepError, ValidationError
from pverep.storage.streamform import ImportMode

VOLID = "local-zfs:vm-100-disk-0"


@dataclass
class Pool:
    calls: list[tuple[Any, ...]] = field(default_factory=list)
    imported: str = VOLID

    def import_(self, volname: str, stdin: int, base: str | None, **kw: Any) -> str:
        self.calls.append(("import", volname, stdin, base, kw))
        return self.imported

    def delete_snapshot(self, volname: str, snap: str) -> None:
        self.calls.append(("delete", volname, snap))

    def export(self, volname: str, snapshot: str | None, base: str | None, **kw: Any) -> str:
        self.calls.append(("export", volname, snapshot, base, kw))
        return "PROC"

    @property
    def runner(self) -> Pool:
        return self

    def finish(self, proc: object) -> None:
        self.calls.append(("finish", proc))


class Claim:
    def set_receiver(self, proc: object) -> None:
        pass


def plan(pool: Pool, **kw: Any) -> remote.ImportPlan:
    defaults: dict[str, Any] = {"base": "s1", "allow_rename": True, "delete_snapshot": None}
    return remote.ImportPlan(pool, "vm-100-disk-0", **(defaults | kw))  # type: ignore[arg-type]


def sink(line: str) -> None:
    pass


def test_run_import_hands_every_option_to_the_pool() -> None:
    pool = Pool()
    mode = ImportMode(resumable=True, prune=("p",))
    claim = Claim()
    got = remote.run_import(plan(pool, mode=mode, claim=claim), 7, on_stderr=sink,
                            stall_timeout=12.5)  # fmt: skip
    assert got == VOLID
    [(verb, volname, stdin, base, kw)] = pool.calls
    assert (verb, volname, stdin, base) == ("import", "vm-100-disk-0", 7, "s1")
    assert kw == {"allow_rename": True, "on_stderr": sink, "stall_timeout": 12.5,
                  "on_receiver": claim.set_receiver, "mode": mode}  # fmt: skip


def test_run_import_without_a_claim_watches_no_receiver_and_waits_600_s() -> None:
    pool = Pool()
    remote.run_import(plan(pool), 7)
    kw = pool.calls[0][4]
    assert kw["on_receiver"] is None and kw["on_stderr"] is None
    assert kw["stall_timeout"] == remote.DEFAULT_IMPORT_STALL_TIMEOUT == 600.0
    assert kw["mode"] == ImportMode()


def test_run_import_deletes_the_snapshot_asked_for_on_the_imported_volume() -> None:
    pool = Pool(imported="local-zfs:vm-100-disk-3")  # renamed on the way in (allow_rename)
    remote.run_import(plan(pool, delete_snapshot="old"), 7)
    assert pool.calls[1] == ("delete", "vm-100-disk-3", "old")
    pool = Pool()
    remote.run_import(plan(pool), 7)
    assert [c[0] for c in pool.calls] == ["import"]


def test_import_volume_validates_claims_and_receives(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[Any, ...]] = []

    def validate(target: Any, volid: str, fmt: str, **kw: Any) -> str:
        seen.append(("validate", target, volid, fmt, kw))
        return "PLAN"

    import contextlib

    @contextlib.contextmanager
    def claimed(target: Any, p: Any, **kw: Any) -> Any:
        seen.append(("claim", target, p, kw))
        yield "CLAIMED"

    def receive(p: Any, stdin: int, **kw: Any) -> str:
        seen.append(("receive", p, stdin, kw))
        return VOLID

    monkeypatch.setattr(remote, "validate_import", validate)
    monkeypatch.setattr(remote, "claimed_import", claimed)
    monkeypatch.setattr(remote, "run_import", receive)
    mode = ImportMode(raw=True)
    got = remote.import_volume("T", VOLID, "zfs", 5, snapshot="s2", base="s1",  # type: ignore[arg-type]
                               allow_rename=True, delete_snapshot="s0", on_stderr=sink,
                               stall_timeout=9.0, mode=mode)  # fmt: skip
    assert got == VOLID
    assert seen == [
        ("validate", "T", VOLID, "zfs", {"snapshot": "s2", "base": "s1", "allow_rename": True,
                                         "delete_snapshot": "s0", "mode": mode}),
        ("claim", "T", "PLAN", {}),  # a per-verb import is not hosted by a session
        ("receive", "CLAIMED", 5, {"on_stderr": sink, "stall_timeout": 9.0}),
    ]  # fmt: skip


@dataclass
class Storage:
    checked: list[tuple[str, str]] = field(default_factory=list)

    def check_enabled(self, storeid: str, node: str) -> None:
        self.checked.append((storeid, node))


@dataclass
class Volumes:
    pool_: Pool

    def pool(self, storeid: str) -> Pool:
        assert storeid == "local-zfs"
        return self.pool_


def target(pool: Pool) -> Any:
    return remote.TargetNode("pve2", Storage(), Volumes(pool), lambda v: None, sink)  # type: ignore[arg-type]


def test_export_sends_into_the_fd_and_checks_the_sender() -> None:
    pool = Pool()
    t = target(pool)
    remote.export_volume(t, VOLID, "zfs", 9, snapshot="s2", base="s1", with_snapshots=True,
                         on_stderr=sink)  # fmt: skip
    assert t.storage.checked == [("local-zfs", "pve2")]
    assert pool.calls == [
        ("export", "vm-100-disk-0", "s2", "s1",
         {"with_snapshots": True, "stdout": 9, "on_stderr": sink}),
        ("finish", "PROC"),
    ]  # fmt: skip


def test_export_defaults() -> None:
    pool = Pool()
    remote.export_volume(target(pool), VOLID, "zfs", 9)
    assert pool.calls[0] == ("export", "vm-100-disk-0", None, None,
                             {"with_snapshots": False, "stdout": 9, "on_stderr": None})  # fmt: skip


def test_export_refuses_another_format_and_bad_snapshot_names() -> None:
    pool = Pool()
    with pytest.raises(PverepError) as err:
        remote.export_volume(target(pool), VOLID, "raw", 9)
    assert str(err.value) == (
        "unsupported export stream format for PVE::Storage::ZFSPoolPlugin: raw"
    )
    for bad in ({"snapshot": "a;b"}, {"base": "a b"}):
        with pytest.raises(ValidationError):
            remote.export_volume(target(pool), VOLID, "zfs", 9, **bad)  # type: ignore[arg-type]
    assert pool.calls == []


# --- validate_import and check_import, on the FAKE zfs ---------------------------------------


def test_validate_import_plans_every_option() -> None:
    from tests.unit.test_remote import make_target
    from tests.unit.zfs_fake import FakeZfsShell

    shell = FakeZfsShell()
    t, _ = make_target(shell)
    mode = ImportMode(resumable=True, prune=("p1",))
    got = remote.validate_import(t, VOLID, "zfs", snapshot="s2", base="s1", allow_rename=True,
                                 delete_snapshot="s0", mode=mode)  # fmt: skip
    assert (got.volname, got.base, got.allow_rename, got.delete_snapshot, got.mode) == (
        "vm-100-disk-0", "s1", True, "s0", mode)  # fmt: skip
    assert got.pool is t.volumes.pool("local-zfs") and got.claim is None
    plain = remote.validate_import(t, VOLID, "zfs")
    assert (plain.base, plain.allow_rename, plain.delete_snapshot, plain.mode) == (
        None, False, None, ImportMode())  # fmt: skip
    assert shell.calls == []  # validation touches no zfs
    with pytest.raises(ValidationError):
        remote.validate_import(t, VOLID, "zfs", delete_snapshot="a;b")
    with pytest.raises(ValidationError):
        remote.validate_import(t, VOLID, "zfs", mode=ImportMode(prune=("a b",)))


def test_validate_import_refuses_a_storage_not_on_this_node() -> None:
    from tests.unit.test_remote import make_target
    from tests.unit.zfs_fake import FakeZfsShell

    t, _ = make_target(FakeZfsShell())
    with pytest.raises(PverepError) as err:
        remote.validate_import(t, "elsewhere:vm-100-disk-0", "zfs")
    assert "pve2" in str(err.value)  # checked for this node: not available here


def test_check_import_hands_the_plan_to_the_pool() -> None:
    seen: list[tuple[Any, ...]] = []

    class Checking(Pool):
        def check_import(self, *args: Any) -> None:
            seen.append(args)

    mode = ImportMode(raw=True)
    remote.check_import(plan(Checking(), mode=mode))
    assert seen == [("vm-100-disk-0", "s1", True, mode)]
