"""Both backends give the same answers for the same /etc/pve tree."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pverep.cluster.base import status_view
from pverep.config.jobs import Job
from pverep.errors import PverepError
from pverep.lab import gentree
from pverep.paths import Paths
from pverep.schedule import JobStatus

from .conftest import NODES, FakeCluster, files_on


def test_discovery_agrees(fake_cluster: FakeCluster) -> None:
    files, api = fake_cluster.files_cluster(), fake_cluster.api_cluster()
    assert api.local_node() == files.local_node() == "pve1"
    assert api.members() == files.members()
    assert len(files.members()) == 3
    vmlist = files.vmlist()
    assert api.vmlist() == vmlist
    assert {g.type for g in vmlist.values()} == {"qemu", "lxc"}
    assert api.storages() == files.storages()
    for vmid in vmlist:
        assert api.guest_config(vmid) == files.guest_config(vmid), vmid


def test_config_sections_survive_the_api(fake_cluster: FakeCluster) -> None:
    api = fake_cluster.api_cluster()
    with_pending = api.guest_config(101).config
    assert with_pending.pending["delete"] == "cores"
    assert with_pending.pending["scsi2"].startswith("local-zfs:vm-101-disk-3")
    with_snapshot = api.guest_config(102).config
    assert set(with_snapshot.snapshots) == {"before-upgrade"}
    assert with_snapshot.snapshots["before-upgrade"]["cores"] == "1"
    assert with_snapshot.current["parent"] == "before-upgrade"


def test_replicatable_volumes_agree(fake_cluster: FakeCluster) -> None:
    files, api = fake_cluster.files_cluster(), fake_cluster.api_cluster()
    fstore, astore = files.storages(), api.storages()
    volumes = {}
    for vmid in files.vmlist():
        mine = files.guest_config(vmid).replicatable_volumes(fstore)
        assert api.guest_config(vmid).replicatable_volumes(astore) == mine
        volumes[vmid] = mine
    # pending and snapshot volumes count, replicate=0 and CD-ROMs do not
    assert volumes[101] == ["local-zfs:vm-101-disk-0", "local-zfs:vm-101-disk-3"]
    assert "local-zfs:vm-102-disk-9" in volumes[102]
    assert volumes[103] == ["local-zfs:subvol-103-disk-0", "local-zfs:subvol-103-disk-1"]


def test_moved_guest_is_seen_on_its_new_node(fake_cluster: FakeCluster) -> None:
    files, api = fake_cluster.files_cluster(), fake_cluster.api_cluster()
    before = files.vmlist()[100]
    assert before.node == "pve1"
    gentree.move_guest(fake_cluster.paths, 100, "qemu", "pve1", "pve2")
    assert files.vmlist()[100].node == "pve2"
    assert api.vmlist() == files.vmlist()


def _write_state(paths: Paths) -> None:
    state = {
        "100": {
            "local/pve2": {
                "last_sync": 1700000100,
                "last_try": 1700000100,
                "last_iteration": 1700000100,
                "fail_count": 0,
                "duration": 3.512871,
                "last_node": "pve1",
                "storeid_list": ["local-zfs"],
            }
        },
        "106": {
            "local/pve1": {
                "last_try": 1700000400,
                "fail_count": 2,
                "error": "no route to host\nsecond line",
                "last_sync": 0,
            }
        },
    }
    paths.state_file.parent.mkdir(parents=True, exist_ok=True)
    paths.state_file.write_text(json.dumps(state, separators=(",", ":")))


def _views(statuses: list[JobStatus]) -> list[dict[str, object]]:
    return [status_view(s) for s in statuses]


def test_jobs_and_status_agree(fake_cluster: FakeCluster) -> None:
    api, files = fake_cluster.api_cluster(), fake_cluster.files_cluster()
    _write_state(fake_cluster.paths)
    assert api.jobs() == files.jobs()
    assert len(files.jobs()) == 8
    assert api.job("100-1") == files.job("100-1")
    assert files.job("100-1")[0].rate == "12.5" and files.job("100-1")[0].disable
    for node in NODES:
        mine = files_on(fake_cluster, node).replication_status(node)
        assert _views(api.replication_status(node)) == _views(mine), node
    pve1 = {s.id: s for s in api.replication_status("pve1")}
    assert pve1["100-0"].state.last_sync == 1700000100
    assert pve1["100-1"].job.disable  # disabled jobs are listed too
    assert [s.id for s in api.replication_status("pve1", guest=106)] == ["106-0", "106-1"]


def test_job_control_through_both_backends(fake_cluster: FakeCluster) -> None:
    api, files = fake_cluster.api_cluster(), fake_cluster.files_cluster()
    api.create_job(Job(id="109-3", target="pve3", schedule="*/30", rate="7"))
    job, digest = files.job("109-3")
    assert (job.target, job.schedule, job.rate, job.source) == ("pve3", "*/30", "7", "pve1")
    api.update_job("109-3", {"disable": True, "comment": "a: b"}, delete=["rate"], digest=digest)
    job, _ = files.job("109-3")
    assert job.disable and job.comment == "a: b" and job.rate is None
    assert b"\tcomment a%3A b\n\tdisable\n" in fake_cluster.paths.replication_cfg.read_bytes()
    api.update_job("109-3", {"disable": False})
    assert not files.job("109-3")[0].disable
    api.delete_job("109-3")
    assert files.job("109-3")[0].remove_job == "full"
    api.delete_job("109-3", force=True)
    assert "109-3" not in {j.id for j in files.jobs()}


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda c: c.create_job(Job(id="999-0", target="pve2")), "Guest '999' does not exist."),
        (lambda c: c.create_job(Job(id="100-5", target="nope")), "Target 'nope' does not exist."),
        (
            lambda c: c.create_job(Job(id="100-5", target="pve1")),
            "Source and target must not be identical",
        ),
        (
            lambda c: c.create_job(Job(id="100-5", target="pve3", source="pve2")),
            "Source 'pve2' does not match current node of guest '100' (pve1)",
        ),
        (
            lambda c: c.create_job(Job(id="100-0", target="pve3")),
            "replication job '100-0' already exists",
        ),
        (
            lambda c: c.update_job("100-0", {"rate": "5"}, digest="0" * 40),
            "detected modified configuration - file changed by other user? Try again.",
        ),
        (lambda c: c.update_job("555-0", {"rate": "5"}), "no such job '555-0'"),
        (lambda c: c.delete_job("555-0"), "no such job '555-0'"),
        (lambda c: c.job("555-0"), "no such replication job '555-0'"),
    ],
)
def test_job_errors_agree(fake_cluster: FakeCluster, call: Any, message: str) -> None:
    for backend in (fake_cluster.files_cluster(), fake_cluster.api_cluster()):
        with pytest.raises(PverepError) as err:
            call(backend)
        assert str(err.value) == message, backend


def test_schedule_now(fake_cluster: FakeCluster) -> None:
    _write_state(fake_cluster.paths)
    fake_cluster.api_cluster().schedule_now("pve1", "100-0")
    state = json.loads(fake_cluster.paths.state_file.read_text())
    assert state["100"]["local/pve2"]["last_try"] == 0


def test_stolen_guest_status_agrees(fake_cluster: FakeCluster) -> None:
    """A config moved by hand (HA recovery) shows up on its new node with re-pointed jobs."""
    api = fake_cluster.api_cluster()
    gentree.move_guest(fake_cluster.paths, 100, "qemu", "pve1", "pve2")
    assert [s.id for s in api.replication_status("pve1") if s.guest == 100] == []
    on_pve2 = api.replication_status("pve2", guest=100)
    # 100-0 targeted pve2: it now points back at pve1; source is pve2 for both jobs
    assert {(s.id, s.job.target, s.job.source) for s in on_pve2} == {
        ("100-0", "pve1", "pve2"),
        ("100-1", "pve3", "pve2"),
    }
    assert all(s.state.last_sync == 0 for s in on_pve2)
    files = files_on(fake_cluster, "pve2")
    assert _views(files.replication_status("pve2", guest=100)) == _views(on_pve2)
    assert api.guest_config(100) == files.guest_config(100)
    assert api.guest_config(100).guest.node == "pve2"
