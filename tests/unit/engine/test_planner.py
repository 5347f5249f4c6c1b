"""The pure planner: prepare (§4.3), base selection (§4.4), remote answers (§5.2 step 11)."""

from __future__ import annotations

import pytest

from pverep.engine import planner
from pverep.engine.planner import SnapshotInfo

VOL = "local-zfs:subvol-100-disk-0"


def snap(name: str, guid: int, creation: int) -> SnapshotInfo:
    return SnapshotInfo("rpool/data/subvol-100-disk-0", name, guid, creation, creation)


def rep(t: int, guid: int | None = None) -> SnapshotInfo:
    return snap(f"__replicate_100-0_{t}__", guid if guid is not None else t, t)


def test_prepare_keeps_last_sync_and_deletes_older_job_snapshots() -> None:
    snaps = [rep(100), rep(200), snap("__replicate_100-1_150__", 7, 150), snap("before", 1, 50)]
    plan = planner.plan_prepare({VOL: snaps}, "100-0", 200, None)
    assert plan.stale == {VOL: ["__replicate_100-0_100__"]}
    assert set(plan.keep[VOL]) == {"__replicate_100-0_200__", "__replicate_100-1_150__", "before"}
    assert plan.missing_keep == []


def test_prepare_with_unknown_state_deletes_nothing() -> None:
    plan = planner.plan_prepare({VOL: [rep(100), rep(200)]}, "100-0", 0, None)
    assert plan.stale == {VOL: []} and plan.missing_keep == []


def test_prepare_remove_all_marker_deletes_every_job_snapshot_but_the_parent() -> None:
    snaps = [rep(100), rep(200)]
    plan = planner.plan_prepare({VOL: snaps}, "100-0", 1, "__replicate_100-0_200__")
    assert plan.stale == {VOL: ["__replicate_100-0_100__"]}


def test_prepare_safeguard_when_expected_snapshot_is_missing() -> None:
    plan = planner.plan_prepare({VOL: [rep(100)]}, "100-0", 300, None)
    assert plan.missing_keep == [VOL] and plan.stale == {VOL: []}
    # nothing that would be deleted → no message (2022-09 fix)
    plan = planner.plan_prepare({VOL: [snap("x", 1, 1)]}, "100-0", 300, None)
    assert plan.missing_keep == []


def test_prepare_lists_volumes_without_snapshots() -> None:
    assert planner.plan_prepare({VOL: []}, "100-0", 0, None).keep == {VOL: {}}


def _plan(
    local: list[SnapshotInfo],
    remote: dict[str, dict[str, int | None]],
    last_sync: int,
    parent: str | None = None,
    conf: frozenset[str] = frozenset(),
) -> planner.TransferPlan:
    return planner.plan_transfers(
        [VOL],
        {VOL: {s.name: s for s in local}},
        remote,
        jobid="100-0",
        last_sync=last_sync,
        start_time=999,
        parent_snapname=parent,
        config_snapshots=conf,
    )


def test_base_is_last_sync_when_guids_match() -> None:
    plan = _plan([rep(100), rep(200)], {VOL: {"__replicate_100-0_200__": 200}}, 200)
    assert plan.bases == {VOL: "__replicate_100-0_200__"}
    assert plan.sync_snapshot == "__replicate_100-0_999__"


def test_volume_absent_on_target_is_sent_full() -> None:
    assert _plan([rep(100)], {}, 100).bases == {VOL: None}


def test_guid_mismatch_is_no_common_base_with_pvesr_text() -> None:
    with pytest.raises(planner.NoCommonBase) as info:
        _plan([rep(200)], {VOL: {"__replicate_100-0_200__": 5}}, 200)
    assert str(info.value) == (
        f"No common base snapshot on volume(s) {VOL}\nPlease remove the problematic volume(s) "
        "from the replication target or delete and re-create the whole job 100-0"
    )


def test_existing_target_volume_without_snapshots_is_no_common_base() -> None:
    with pytest.raises(planner.NoCommonBase):
        _plan([rep(200)], {VOL: {}}, 200)


def test_legacy_target_answer_matches_by_name() -> None:
    remote = planner.parse_remote_prepare(f'{{"{VOL}": {{"__replicate_100-0_200__": 1}}}}\n')
    assert remote == {VOL: {"__replicate_100-0_200__": None}}
    assert _plan([rep(200)], remote, 200).bases == {VOL: "__replicate_100-0_200__"}


def test_stateless_run_uses_newest_common_snapshot_by_creation() -> None:
    local = [snap("cfg", 11, 50), rep(100), snap("__replicate_100-1_300__", 13, 300), rep(200, 12)]
    remote: dict[str, dict[str, int | None]] = {
        VOL: {
            "cfg": 11,
            "__replicate_100-0_100__": 100,
            "__replicate_100-1_300__": 99,
            "__replicate_100-0_200__": 12,
        }
    }
    # 100-1's snapshot is newer but its guid differs; 100-0_200 is the newest common one
    assert _plan(local, remote, 0, conf=frozenset({"cfg"})).bases == {
        VOL: "__replicate_100-0_200__"
    }


def test_parent_snapshot_wins_over_newest_common() -> None:
    local = [snap("cfg", 11, 50), rep(100)]
    remote: dict[str, dict[str, int | None]] = {VOL: {"cfg": 11, "__replicate_100-0_100__": 100}}
    assert _plan(local, remote, 0, parent="cfg").bases == {VOL: "cfg"}


def test_non_config_non_replication_snapshot_is_no_base() -> None:
    with pytest.raises(planner.NoCommonBase):
        _plan([snap("manual", 3, 10)], {VOL: {"manual": 3}}, 0)


@pytest.mark.parametrize("bad", ["", "not json", "[1]", '{"a": 5}', '{"a": {"s": {"x": 1}}}'])
def test_bad_remote_answers_are_errors(bad: str) -> None:
    with pytest.raises(planner.RemotePrepareError):
        planner.parse_remote_prepare(bad)


def test_no_result_text_is_pvesrs() -> None:
    with pytest.raises(
        planner.RemotePrepareError, match=r"^prepare remote node failed - no result$"
    ):
        planner.parse_remote_prepare("")


def test_removal_scans_config_and_state_storages() -> None:
    assert planner.removal_scan_storages(["b:x", "a:y"], ["c", "a"]) == ["a", "b", "c"]
    assert planner.removal_scan_storages([], []) == []


def test_remote_prepare_last_json_line_wins_like_pvesr() -> None:
    first = f'{{"{VOL}": {{"__replicate_100-0_100__": {{"id": "7", "timestamp": "1"}}}}}}'
    last = f'{{"{VOL}": {{"__replicate_100-0_200__": {{"id": "9", "timestamp": "2"}}}}}}'
    assert planner.parse_remote_prepare(f"{first}\n{last}\n") == {
        VOL: {"__replicate_100-0_200__": 9}
    }
    with pytest.raises(planner.RemotePrepareError, match="invalid result"):
        planner.parse_remote_prepare(f"{last}\nnot json\n")


@pytest.mark.parametrize(
    ("bad", "text"),
    [
        ("not json", "invalid result: "),
        ("[1]", "result is not an object"),
        ('{"a": 5}', "bad entry for 'a'"),
        ('{"a": {"s": {"x": 1}}}', "bad snapshot id for 'a@s'"),
        ('{"a": {"s": {"id": "x"}}}', "bad snapshot id for 'a@s'"),
    ],
)
def test_bad_remote_answer_texts(bad: str, text: str) -> None:
    with pytest.raises(planner.RemotePrepareError) as err:
        planner.parse_remote_prepare(bad)
    assert str(err.value).startswith(f"prepare remote node failed - {text}")


def test_remote_answer_ids_and_helpers() -> None:
    answer = f'\n{{"{VOL}": {{"a": {{"id": "42", "timestamp": 1}}, "b": {{"id": 7}}, "c": 1}}}}\n'
    assert planner.parse_remote_prepare(answer) == {VOL: {"a": 42, "b": 7, "c": None}}
    assert planner.storage_of("local-zfs:base-100-disk-0/vm-101-disk-0") == "local-zfs"
    assert planner.storeids_of(["b:x", "a:y", "b:z"]) == ["a", "b"]
    keep = {VOL: {"__replicate_100-0_200__": rep(200)}, "other:vm-100-disk-1": {}}
    assert planner.old_snapshot_volids([VOL, "other:vm-100-disk-1"], keep, "100-0", 200) == (
        "__replicate_100-0_200__",
        [VOL],
    )
    err = planner.NoCommonBase([VOL, "b:vm-100-disk-1"], "100-0")
    assert (err.volids, err.jobid) == ([VOL, "b:vm-100-disk-1"], "100-0")


def test_volumes_missing_from_the_local_listing() -> None:
    # a volume of the guest with no local snapshot entry at all: sent full, carries nothing
    assert planner.storage_of("store:vm-100-disk-0:odd") == "store"
    plan = planner.plan_transfers(
        [VOL], {}, {}, jobid="100-0", last_sync=0, start_time=300,
        parent_snapname=None, config_snapshots=frozenset(),
    )  # fmt: skip
    assert plan.bases == {VOL: None}
    assert planner.old_snapshot_volids([VOL], {}, "100-0", 200) == ("__replicate_100-0_200__", [])
