"""Both backends give the same answers for the same /etc/pve tree."""

from __future__ import annotations

from pverep.lab import gentree

from .conftest import FakeCluster


def test_discovery_agrees(fake_cluster: FakeCluster) -> None:
    files, api = fake_cluster.files_cluster(), fake_cluster.api_cluster()
    assert api.local_node() == files.local_node() == "pve1"
    assert api.members() == files.members()
    assert len(files.members()) == 3
    vmlist = files.vmlist()
    assert api.vmlist() == vmlist
    assert {g.vmtype for g in vmlist.values()} == {"qemu", "lxc"}
    assert api.storages() == files.storages()
    for vmid in vmlist:
        assert api.guest_config(vmid) == files.guest_config(vmid), vmid


def test_config_sections_survive_the_api(fake_cluster: FakeCluster) -> None:
    api = fake_cluster.api_cluster()
    with_pending = api.guest_config(101)
    assert with_pending.pending_delete == frozenset({"cores"})
    assert with_pending.pending["scsi2"].startswith("local-zfs:vm-101-disk-3")
    with_snapshot = api.guest_config(102)
    assert set(with_snapshot.snapshots) == {"before-upgrade"}
    assert with_snapshot.snapshots["before-upgrade"]["cores"] == "1"
    assert with_snapshot.current["description"] == "guest 102: generated"


def test_moved_guest_is_seen_on_its_new_node(fake_cluster: FakeCluster) -> None:
    files, api = fake_cluster.files_cluster(), fake_cluster.api_cluster()
    before = files.vmlist()[100]
    assert before.node == "pve1"
    gentree.move_guest(fake_cluster.paths, 100, "qemu", "pve1", "pve2")
    assert files.vmlist()[100].node == "pve2"
    assert api.vmlist() == files.vmlist()
