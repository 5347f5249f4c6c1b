"""replicate() with a target that keeps partial receives (a FAKE target: the stream itself is
real only in the lab): the snapshot a partial receive continues survives the failed run and
the next local prepare, the next run resumes first and sends on from there, and the kept
snapshot goes once the sync is on record."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pverep.engine.ports import LogFunc
from pverep.engine.replicate import replicate
from pverep.errors import PverepError
from tests.unit.engine.fakes import FakeJob, FakeState, FakeTarget, FakeVolumes, World

VOL = "local-zfs:vm-900-disk-1"
JOB = "900-0"


def snap(t: int) -> str:
    return f"__replicate_{JOB}_{t}__"


@dataclass
class ResumingTarget(FakeTarget):
    """Keeps the partial receive of a broken transfer (as ``zfs recv -s`` does)."""

    resume_capable: bool = True
    partial: dict[str, str] = field(default_factory=dict)  # volid → snapshot being received
    order: list[str] = field(default_factory=list)
    sent: list[tuple[str, str | None, tuple[str, ...]]] = field(default_factory=list)

    def prepare(self, jobid: str, volids: Sequence[str], **kw: object) -> str:
        self.order.append("remote prepare")
        return super().prepare(jobid, volids, **kw)  # type: ignore[arg-type]

    def check_resumes(self, volids: Sequence[str], log: LogFunc) -> dict[str, str]:
        return {v: s for v, s in self.partial.items() if v in volids}

    def resume(
        self, volid: str, *, rate_bps: int | None, insecure: bool, log: LogFunc
    ) -> str | None:
        done = self.partial.pop(volid, None)
        if done is not None:
            self.held[volid] = done
            self.sent.append(("resume", done, ()))
        return done

    def transfer(
        self,
        volid: str,
        *,
        snapshot: str,
        base: str | None,
        rate_bps: int | None,
        insecure: bool,
        log: LogFunc,
        prune: Sequence[str] = (),
    ) -> None:
        self.sent.append((snapshot, base, tuple(prune)))
        if self.fail_transfer == volid:
            self.partial[volid] = snapshot
            raise PverepError(f"transfer of '{volid}' failed")
        self.held[volid] = snapshot

    def keeps_partial(self, volid: str) -> bool:
        return True


class RecordingVolumes(FakeVolumes):
    """Notes each local snapshot deletion in the target's ``order`` list."""

    def __init__(self, order: list[str]) -> None:
        super().__init__()
        self.order = order

    def delete_snapshot(self, volid: str, snap: str) -> None:
        self.order.append(f"local delete {snap}")
        super().delete_snapshot(volid, snap)


def run(world: World, state: FakeState, t: int) -> list[str]:
    lines: list[str] = []

    def record(start: int) -> None:
        state.last_sync = start

    env = world.env(record)
    replicate(env, FakeJob(JOB, 900, "node2"), state, t, lines.append)
    return lines


def names(world: World) -> list[str]:
    return [s.name for s in world.volumes.snapshot_info(VOL)]


def first_sync(tmp_path: Path, target: ResumingTarget) -> tuple[World, FakeState]:
    """A world with one disk replicated once (at 1000) to ``target``."""
    world = World(tmp_path, volumes=RecordingVolumes(target.order), disks=[VOL])
    world.volumes.register(VOL)
    world.targets["node2"] = target
    state = FakeState()
    run(world, state, 1000)
    assert names(world) == [snap(1000)]
    return world, state


def test_broken_transfer_keeps_its_snapshot_and_the_next_run_resumes(tmp_path: Path) -> None:
    target = ResumingTarget("node2")
    world, state = first_sync(tmp_path, target)

    target.fail_transfer = VOL
    with pytest.raises(PverepError, match=f"failed - partial receive of '{VOL}' kept on 'node2'"):
        run(world, state, 2000)
    assert names(world) == [snap(1000), snap(2000)]  # kept: the target continues it
    assert state.last_sync == 1000

    target.fail_transfer = None
    target.order.clear()
    run(world, state, 3000)
    # asked first, so the local prepare does not delete the snapshot being resumed
    assert target.order[0] == "remote prepare"
    # the kept snapshot is deleted once, after the resume and the previous sync snapshot
    assert target.order[-2:] == [f"local delete {snap(1000)}", f"local delete {snap(2000)}"]
    assert target.sent[-2:] == [("resume", snap(2000), ()), (snap(3000), snap(2000), ())]
    assert names(world) == [snap(3000)]  # the kept snapshot went once the sync was recorded
    assert state.last_sync == 3000


def test_a_stock_target_keeps_pvesrs_order_and_cleanup(tmp_path: Path) -> None:
    target = ResumingTarget("node2", resume_capable=False)
    target.keeps_partial = lambda volid: False  # type: ignore[method-assign]
    world, state = first_sync(tmp_path, target)
    target.fail_transfer = VOL
    with pytest.raises(PverepError):
        run(world, state, 2000)
    assert names(world) == [snap(1000)]  # pvesr deletes the failed run's snapshot


def test_snapshots_gone_on_the_source_are_pruned_on_incrementals(tmp_path: Path) -> None:
    target = ResumingTarget("node2")
    world, state = first_sync(tmp_path, target)
    original = target.prepare

    def prepare_with_extra(jobid: str, volids: Sequence[str], **kw: object) -> str:
        out = original(jobid, volids, **kw)
        return out.replace("}}", ', "gone-user": 1}}', 1) if "__" in out else out

    target.prepare = prepare_with_extra  # type: ignore[method-assign]
    run(world, state, 2000)
    assert target.sent[-1] == (snap(2000), snap(1000), ("gone-user",))
