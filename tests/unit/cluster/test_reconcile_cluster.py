"""Cluster-wide reconcile (``pverep --api … reconcile``): the pure planner on the whole cluster's
view, and the executor against FakePveApi (the PVE API stand-in) over HTTPS."""

from __future__ import annotations

import json
import os

from pverep.cluster.base import GuestLocation, Member
from pverep.config.jobs import parse_config
from pverep.reconcile.clusterexec import execute_cluster, gather_cluster
from pverep.reconcile.clusterplan import ClusterWideView, plan_cluster
from pverep.reconcile.ha import parse_ha_status
from pverep.reconcile.model import Repoint, SetSource

from .conftest import FakeCluster, files_on

NODES = ("pve1", "pve2", "pve3")


def jobs(text: str) -> list:  # type: ignore[type-arg]
    cfg = parse_config(text.encode())
    return [cfg.jobs[i] for i in cfg.sorted_ids()]


def view(text: str, where: dict[int, str], offline: tuple[str, ...] = (), **kw: object):  # type: ignore[no-untyped-def]
    return ClusterWideView(
        vmlist={v: GuestLocation(v, n, "qemu") for v, n in where.items()},
        members={n: Member(n, n not in offline) for n in NODES},
        jobs=jobs(text),
        **kw,  # type: ignore[arg-type]
    )


CFG = (
    "local: 100-0\n\ttarget pve2\n\tsource pve1\n\n"  # 100 stolen by pve2: target switch
    "local: 100-1\n\ttarget pve3\n\tsource pve1\n\n"  # … and a job to a third node
    "local: 200-0\n\ttarget pve1\n\n"  # no source yet
    "local: 300-0\n\ttarget pve3\n\tsource pve3\n\n"  # targets the guest's own node
    "local: 400-0\n\ttarget pve2\n\tsource pve3\n\tremove_job full\n\n"  # guest gone
)


def test_plans_every_node_and_defers_disk_work() -> None:
    plan = plan_cluster(view(CFG, {100: "pve2", 200: "pve3", 300: "pve3"}))
    assert plan.node == "cluster"
    assert plan.steps == [
        Repoint("100-0", 100, source_from="pve1", source_to="pve2", target_from="pve2",
                target_to="pve1"),
        Repoint("100-1", 100, source_from="pve1", source_to="pve2", target_from="pve3",
                target_to="pve3"),
        SetSource("200-0", 200, source="pve3"),
    ]  # fmt: skip
    deferred = [(d.jobid, d.node) for d in plan.deferred]
    assert deferred == [("100-0", "pve2"), ("100-1", "pve2"), ("400-0", "pve3")]
    assert "stale replicas on pve1" in plan.deferred[0].describe()
    assert plan.deferred[0].describe().startswith("deferred to pve2: ")
    errors = [f.text for f in plan.findings if f.level == "error"]
    assert len(errors) == 1 and "300-0 targets pve3, the node the guest runs on" in errors[0]


def test_node_filter_ha_wait_and_offline_owner() -> None:
    only = plan_cluster(view(CFG, {100: "pve2", 200: "pve3"}, only_node="pve3"))
    assert [s.jobid for s in only.steps] == ["200-0"] and only.node == "pve3"
    ha = parse_ha_status(
        [{"type": "service", "sid": "vm:100", "node": "pve2", "state": "recovery"},
         {"type": "quorum", "id": "quorum"}]
    )  # fmt: skip
    waiting = plan_cluster(view(CFG, {100: "pve2"}, ha=ha, only_vmid=100))
    assert waiting.steps == [] and "waiting until it is started" in waiting.findings[0].text
    down = plan_cluster(view(CFG, {100: "pve2"}, offline=("pve2",), only_vmid=100))
    assert down.steps == [] and "offline" in down.findings[0].text


def _write(fake: FakeCluster, text: str) -> None:
    (fake.paths.etc_pve / "replication.cfg").write_text(text)


def test_executor_through_fake_api(fake_cluster: FakeCluster) -> None:
    """Source via PUT (with digest), the target switch via the owning node's status call."""
    files = fake_cluster.files_cluster()
    api = fake_cluster.api_cluster()
    vm = {g.node: g.vmid for g in reversed(list(files.vmlist().values())) if g.type == "qemu"}
    a, b = vm["pve1"], vm["pve2"]
    _write(
        fake_cluster,
        f"local: {a}-0\n\ttarget pve2\n\tsource pve3\n\n"  # a on pve1, came from pve3
        f"local: {b}-0\n\ttarget pve3\n\tsource pve1\n\n",  # b on pve2, keeps its target
    )
    ha = fake_cluster.paths.ha_manager_status
    ha.parent.mkdir(exist_ok=True)
    ha.write_text(json.dumps({"service_status": {f"vm:{a}": {"state": "started", "node": "pve1"}}}))
    dry = plan_cluster(gather_cluster(api))
    assert {s.jobid: s.describe() for s in dry.steps} == {
        f"{a}-0": f"job {a}-0: source pve3 -> pve1",
        f"{b}-0": f"job {b}-0: source pve1 -> pve2",
    }
    lines: list[str] = []
    out = execute_cluster(api, dry, lines.append)
    assert out.ok and len(out.done) == 2, lines
    assert {(j.id, j.source, j.target) for j in files.jobs()} == {
        (f"{a}-0", "pve1", "pve2"), (f"{b}-0", "pve2", "pve3"),
    }  # fmt: skip
    assert plan_cluster(gather_cluster(api)).steps == []  # idempotent
    # a guest moved onto its job's target (steal_service): only the owning node can switch
    conf = next(fake_cluster.paths.etc_pve.glob(f"nodes/pve2/qemu-server/{b}.conf"))
    os.rename(conf, fake_cluster.paths.etc_pve / f"nodes/pve3/qemu-server/{b}.conf")
    plan = plan_cluster(gather_cluster(api))
    assert [s.describe() for s in plan.steps] == [
        f"job {b}-0: source pve2 -> pve3, target pve3 -> pve2"
    ]
    out = execute_cluster(api, plan, lines.append)
    assert out.ok, out.failed
    assert files_on(fake_cluster, "pve3").job(f"{b}-0")[0].target == "pve2"
    stale = plan_cluster(gather_cluster(api)).steps
    assert stale == []
    # a job changed between plan and run is skipped, not overwritten
    _write(fake_cluster, f"local: {a}-0\n\ttarget pve2\n\tsource pve3\n\n")
    plan = plan_cluster(gather_cluster(api))
    _write(fake_cluster, f"local: {a}-0\n\ttarget pve2\n\tsource pve2\n\n")
    out = execute_cluster(api, plan, lines.append)
    assert out.done == [] and out.skipped[0][1] == "job changed meanwhile"
