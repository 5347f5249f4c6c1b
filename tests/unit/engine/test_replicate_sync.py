"""engine/replicate.py's sync (spec §4.1, §4.4, §4.5): every argument the run hands to the
target and to the local prepare, and every line the target's callbacks add to the job log.

The target is a FAKE that records each call with all its arguments and talks through every
callback it is given (as the real ShellTarget's remote commands do); the local volumes are the
engine's in-memory fake with failing deletes where a test wants them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pverep.engine.ports import GuestView, LogFunc, TransportConfig
from pverep.engine.replicate import replicate
from pverep.errors import PverepError

from .fakes import FakeJob, FakeState, FakeVolumes, World

JOB = "900-0"
V0, V1 = "local-zfs:vm-900-disk-0", "local-zfs:vm-900-disk-1"
LAST, NOW = 1000, 2000
SECURE = TransportConfig()


def snap(t: int) -> str:
    return f"__replicate_{JOB}_{t}__"


@dataclass
class Volumes(FakeVolumes):
    undeletable: set[str] = field(default_factory=set)  # snapshot names

    def delete_snapshot(self, volid: str, snap: str) -> None:
        if snap in self.undeletable:
            raise PverepError(f"zfs error: '{volid}@{snap}' is busy")
        super().delete_snapshot(volid, snap)


@dataclass
class TalkingTarget:
    """Records every call; each callback it gets is used once, with a line naming the call."""

    node: str = "node2"
    resume_capable: bool = False
    held: dict[str, dict[str, int]] = field(default_factory=dict)  # prepare's answer
    keep: dict[str, str] = field(default_factory=dict)  # check_resumes' answer
    resumed: dict[str, str] = field(default_factory=dict)  # resume's answer per volid
    calls: list[tuple[object, ...]] = field(default_factory=list)
    finalize_error: str | None = None

    def prepare(self, jobid: str, volids: Sequence[str], *, scan: Sequence[str], last_sync: int,
                parent_snapname: str | None, force: bool, on_stderr: LogFunc) -> str:  # fmt: skip
        self.calls.append(("prepare", jobid, tuple(volids), tuple(scan), last_sync,
                           parent_snapname, force))  # fmt: skip
        on_stderr("prepare says hello")
        import json

        return json.dumps(self.held) + "\n"

    def check_resumes(self, volids: Sequence[str], log: LogFunc) -> dict[str, str]:
        self.calls.append(("check_resumes", tuple(volids)))
        log("check_resumes says hello")
        return dict(self.keep)

    def resume(self, volid: str, *, rate_bps: int | None, insecure: bool, log: LogFunc
               ) -> str | None:  # fmt: skip
        self.calls.append(("resume", volid, rate_bps, insecure))
        log(f"resume {volid} says hello")
        return self.resumed.get(volid)

    def transfer(self, volid: str, *, snapshot: str, base: str | None, rate_bps: int | None,
                 insecure: bool, log: LogFunc, prune: Sequence[str] = ()) -> None:  # fmt: skip
        self.calls.append(("transfer", volid, snapshot, base, rate_bps, insecure, tuple(prune)))
        log(f"transfer {volid} says hello")

    def keeps_partial(self, volid: str) -> bool:
        return False

    def finalize(self, jobid: str, volids: Sequence[str], last_sync: int, on_line: LogFunc
                 ) -> None:  # fmt: skip
        self.calls.append(("finalize", jobid, tuple(volids), last_sync))
        on_line("finalize says hello")
        if self.finalize_error is not None:
            raise PverepError(self.finalize_error)

    def close(self) -> None:
        self.calls.append(("close",))


def setup(
    tmp: Path, target: TalkingTarget, *, parent: str | None = None,
    transport: TransportConfig = SECURE, undeletable: set[str] | None = None,
) -> tuple[World, list[str]]:  # fmt: skip
    vols = Volumes(undeletable=undeletable or set())
    world = World(tmp, volumes=vols, disks=[V0, V1])
    warnings: list[str] = []
    env = world.env(lambda t: None)
    env.connect = lambda node, network: target  # type: ignore[assignment,return-value]
    env.transport = transport
    env.warn = warnings.append
    env.load_guest = lambda vmid, cleanup: GuestView(  # type: ignore[assignment]
        vmid, "VM", 0, False, (V0, V1), parent, frozenset()
    )
    world.env = lambda rse: env  # type: ignore[method-assign]
    for volid in (V0, V1):
        vols.register(volid)
    return world, warnings


def add(world: World, volid: str, *names: str) -> None:
    for name in names:
        world.volumes.snapshot(volid, name)


def names(world: World, volid: str) -> list[str]:
    return [s.name for s in world.volumes.snapshot_info(volid)]


def run(world: World, job: FakeJob, state: FakeState) -> list[str]:
    log: list[str] = []
    assert replicate(world.env(None), job, state, NOW, log.append) == [V0, V1]
    return log


def job(rate: str | None = None) -> FakeJob:
    return FakeJob(JOB, 900, "node2", rate=rate)


def test_every_target_callback_reaches_the_job_log(tmp_path: Path) -> None:
    target = TalkingTarget()
    world, _ = setup(tmp_path, target)
    log = run(world, job(), FakeState(last_sync=0))
    for line in (
        "(remote_prepare_local_job) prepare says hello",
        f"resume {V0} says hello",
        f"transfer {V1} says hello",
        "(remote_finalize_local_job) finalize says hello",
    ):
        assert line in log, line  # fmt: skip
    assert target.calls[0] == ("prepare", JOB, (V0, V1), (), 0, None, False)
    assert target.calls[-2:] == [("finalize", JOB, (V0, V1), NOW), ("close",)]


def test_the_rate_and_the_transport_go_to_resume_and_transfer(tmp_path: Path) -> None:
    target = TalkingTarget()
    world, _ = setup(tmp_path, target, transport=TransportConfig(True, "10.9.0.0/24"))
    log = run(world, job(rate="1.5"), FakeState(last_sync=0))
    assert "using insecure transmission over 10.9.0.0/24, rate limit: 1.5 MByte/s" in log
    assert ("resume", V0, 1_500_000, True) in target.calls
    assert ("transfer", V1, snap(NOW), None, 1_500_000, True, ()) in target.calls


def test_without_a_rate_nothing_is_limited(tmp_path: Path) -> None:
    target = TalkingTarget()
    world, _ = setup(tmp_path, target)
    log = run(world, job(), FakeState(last_sync=0))
    assert "using secure transmission, rate limit: none" in log
    assert ("resume", V0, None, False) in target.calls
    assert ("transfer", V0, snap(NOW), None, None, False, ()) in target.calls


def test_the_guests_parent_snapshot_is_kept_on_both_sides(tmp_path: Path) -> None:
    parent = snap(500)  # an older sync that the config's snapshot tree still names
    target = TalkingTarget()
    world, _ = setup(tmp_path, target, parent=parent)
    add(world, V0, snap(LAST), parent, snap(700))
    add(world, V1, snap(LAST))
    target.held = {V0: {snap(LAST): 1}, V1: {snap(LAST): 1}}
    log = run(world, job(), FakeState(last_sync=LAST, storeid_list=["local-zfs"]))
    assert target.calls[0] == ("prepare", JOB, (V0, V1), ("local-zfs",), LAST, parent, False)
    assert names(world, V0) == [parent, snap(NOW)]  # the stale 700 went, the parent stayed
    assert f"delete stale replication snapshot '{snap(700)}' on {V0}" in log


def test_a_stale_snapshot_that_cannot_be_deleted_is_warned(tmp_path: Path) -> None:
    target = TalkingTarget()
    world, warnings = setup(tmp_path, target, undeletable={snap(700)})
    add(world, V0, snap(LAST), snap(700))
    add(world, V1, snap(LAST))
    target.held = {V0: {snap(LAST): 1}, V1: {snap(LAST): 1}}
    log = run(world, job(), FakeState(last_sync=LAST))
    busy = f"zfs error: '{V0}@{snap(700)}' is busy"
    assert warnings == [busy]
    assert f"delete stale replication snapshot error: {busy}" in log


def test_a_resumable_target_is_asked_first_and_its_partial_base_survives(
    tmp_path: Path,
) -> None:
    target = TalkingTarget(resume_capable=True, keep={V1: snap(1500)})
    world, _ = setup(tmp_path, target)
    add(world, V0, snap(LAST))
    add(world, V1, snap(LAST), snap(1500))  # 1500: a failed run's, its receive kept there
    target.held = {V0: {snap(LAST): 1}, V1: {snap(LAST): 1}}
    target.resumed = {V1: snap(1500)}
    log = run(world, job(), FakeState(last_sync=LAST, storeid_list=["local-zfs"]))
    assert [c[0] for c in target.calls[:3]] == ["prepare", "check_resumes", "resume"]
    assert target.calls[1] == ("check_resumes", (V0, V1))
    assert "check_resumes says hello" in log
    assert f"incremental sync '{V1}' ({snap(1500)} => {snap(NOW)})" in log
    assert ("transfer", V1, snap(NOW), snap(1500), None, False, ()) in target.calls
    assert names(world, V1) == [snap(NOW)]  # the kept one goes once the sync is on record


def test_the_target_prunes_what_the_source_no_longer_has(tmp_path: Path) -> None:
    target = TalkingTarget()
    world, _ = setup(tmp_path, target)
    add(world, V0, snap(LAST))
    add(world, V1, snap(LAST))
    target.held = {V0: {snap(LAST): 1, "gone-here": 2}, V1: {snap(LAST): 1}}
    run(world, job(), FakeState(last_sync=LAST))
    assert ("transfer", V0, snap(NOW), snap(LAST), None, False, ("gone-here",)) in target.calls
    assert ("transfer", V1, snap(NOW), snap(LAST), None, False, ()) in target.calls


def test_a_failing_finalize_is_warned_and_the_sync_stands(tmp_path: Path) -> None:
    target = TalkingTarget(finalize_error="cannot destroy: busy\n")
    world, warnings = setup(tmp_path, target)
    log = run(world, job(), FakeState(last_sync=0))
    assert warnings == ["cannot destroy: busy\n"]
    assert log[-1] == "delete stale replication snapshot error: cannot destroy: busy"
    assert names(world, V0) == [snap(NOW)]


@pytest.mark.parametrize("rate", ["0.5", "2", "1000"])
def test_the_rate_in_bytes_per_second(tmp_path: Path, rate: str) -> None:
    target = TalkingTarget()
    world, _ = setup(tmp_path, target)
    run(world, job(rate=rate), FakeState(last_sync=0))
    sent = [c for c in target.calls if c[0] == "transfer"]
    assert {c[4] for c in sent} == {int(float(rate) * 1_000_000)}


@dataclass
class PartialTarget(TalkingTarget):
    """Keeps the partial receive of one volume only; the transfer of ``failing`` breaks."""

    failing: str = V1
    kept_for: str = V1

    def transfer(self, volid: str, **kw: object) -> None:  # type: ignore[override]
        super().transfer(volid, **kw)  # type: ignore[arg-type]
        if volid == self.failing:
            raise PverepError(f"transfer of '{volid}' failed")

    def keeps_partial(self, volid: str) -> bool:
        return volid == self.kept_for


def test_a_partial_receive_kept_on_the_target_keeps_its_snapshot(tmp_path: Path) -> None:
    from pverep.engine.replicate import PartialTransferError

    target = PartialTarget(resume_capable=True)
    world, _ = setup(tmp_path, target)
    log: list[str] = []
    with pytest.raises(PartialTransferError) as err:
        replicate(world.env(None), job(), FakeState(last_sync=0), NOW, log.append)
    note = f"partial receive of '{V1}' kept on 'node2' - the next run resumes it"
    assert log[-1] == note
    assert str(err.value) == f"transfer of '{V1}' failed - {note}"
    assert names(world, V0) == [] and names(world, V1) == [snap(NOW)]


def test_a_failed_transfer_without_a_kept_partial_removes_the_new_snapshots(
    tmp_path: Path,
) -> None:
    from pverep.engine.replicate import PartialTransferError

    target = PartialTarget(resume_capable=True, kept_for=V0)  # not the volume that failed
    world, _ = setup(tmp_path, target)
    with pytest.raises(PverepError) as err:
        replicate(world.env(None), job(), FakeState(last_sync=0), NOW, lambda line: None)
    assert not isinstance(err.value, PartialTransferError)
    assert str(err.value) == f"transfer of '{V1}' failed"
    assert names(world, V0) == [] and names(world, V1) == []


def test_a_resumed_receive_of_another_snapshot_leaves_what_is_not_this_jobs(
    tmp_path: Path,
) -> None:
    other = "__replicate_900-1_1500__"  # another job's sync snapshot
    target = TalkingTarget(resume_capable=True, resumed={V0: snap(LAST), V1: other})
    world, warnings = setup(tmp_path, target)
    add(world, V0, snap(LAST), other)
    add(world, V1, snap(LAST), other)
    target.held = {V0: {snap(LAST): 1}, V1: {snap(LAST): 1}}
    run(world, job(), FakeState(last_sync=LAST))
    assert names(world, V0) == [other, snap(NOW)] and names(world, V1) == [other, snap(NOW)]
    assert warnings == []  # the previous sync is not deleted twice


def test_a_previous_snapshot_that_cannot_be_deleted_is_warned(tmp_path: Path) -> None:
    target = TalkingTarget()
    world, warnings = setup(tmp_path, target, undeletable={snap(LAST)})
    add(world, V0, snap(LAST))
    add(world, V1, snap(LAST))
    target.held = {V0: {snap(LAST): 1}, V1: {snap(LAST): 1}}
    run(world, job(), FakeState(last_sync=LAST))
    assert warnings == [f"zfs error: '{v}@{snap(LAST)}' is busy" for v in (V0, V1)]


# --- replicate() itself ----------------------------------------------------------------------


def test_only_local_jobs_are_run(tmp_path: Path) -> None:
    from types import SimpleNamespace

    target = TalkingTarget()
    world, _ = setup(tmp_path, target)
    remote = FakeJob(JOB, 900, "node2", type="remote")
    with pytest.raises(PverepError) as err:
        replicate(world.env(None), remote, FakeState(), NOW, lambda line: None)
    assert str(err.value) == "not implemented - internal error"
    untyped = SimpleNamespace(id=JOB, guest=900, target="node2", rate=None, rate_mbps=None,
                              remove_job=None)  # fmt: skip
    assert replicate(world.env(None), untyped, FakeState(), NOW, lambda line: None) == [V0, V1]


def test_the_guest_is_loaded_for_a_sync_or_for_its_cleanup(tmp_path: Path) -> None:
    target = TalkingTarget()
    world, _ = setup(tmp_path, target)
    env = world.env(None)
    asked: list[tuple[int, bool]] = []
    load = env.load_guest
    env.load_guest = lambda vmid, cleanup: (asked.append((vmid, cleanup)), load(vmid, cleanup))[1]
    replicate(env, job(), FakeState(), NOW, lambda line: None)
    replicate(env, FakeJob(JOB, 900, "node2", remove_job="local"), FakeState(), NOW,
              lambda line: None)  # fmt: skip
    assert asked == [(900, False), (900, True)]


def test_the_default_warning_goes_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    from pverep.engine import replicate as replicate_mod

    replicate_mod._warn("zfs error: busy")
    assert capsys.readouterr() == ("", "zfs error: busy\n")
