"""pverep._core prepare planning and base selection (spec §4.3, §4.4) through the binding."""

import pytest

import pverep._core as core
from pverep.errors import InvalidArgumentError


def snaps(dataset: str, *spec: tuple[str, int, int]) -> list[core.SnapshotInfo]:
    return [core.SnapshotInfo(dataset, n, g, i + 1, c) for i, (n, g, c) in enumerate(spec)]


VOL_A = snaps(
    "rpool/vm-100-disk-0",
    ("__replicate_100-0_1000__", 1, 1000),
    ("__replicate_100-0_2000__", 2, 2000),
    ("__replicate_100-10_1500__", 3, 1500),
    ("manual", 4, 1800),
)
VOL_B = snaps("rpool/vm-100-disk-1", ("__replicate_100-0_1000__", 5, 1000))


def test_prepare_deletes_the_jobs_older_snapshots() -> None:
    plan = core.plan_prepare(
        {"local-zfs:a": VOL_A, "local-zfs:b": VOL_B, "local-zfs:c": []}, "100-0", 2000
    )
    assert plan.keep_name == "__replicate_100-0_2000__"
    assert plan.stale == {
        "local-zfs:a": ["__replicate_100-0_1000__"],
        "local-zfs:b": [],
        "local-zfs:c": [],
    }
    # b lacks the keep snapshot: nothing removed there, and the warning is requested
    assert plan.missing_keep == ["local-zfs:b"]
    assert list(plan.keep["local-zfs:a"]) == [
        "__replicate_100-0_2000__",
        "__replicate_100-10_1500__",
        "manual",
    ]
    assert plan.keep["local-zfs:a"]["manual"] is VOL_A[3]
    assert plan.keep["local-zfs:c"] == {}


def test_prepare_special_values_and_parent() -> None:
    volumes = {"v": VOL_A}
    assert core.plan_prepare(volumes, "100-0", 0).stale == {"v": []}
    assert core.plan_prepare(volumes, "100-0", 0).missing_keep == []
    removal = core.plan_prepare(volumes, "100-0", 1, "__replicate_100-0_1000__")
    assert removal.stale == {"v": ["__replicate_100-0_2000__"]}
    no_job = core.plan_prepare(volumes, None, 5)
    assert no_job.keep_name is None
    assert no_job.stale["v"] == [s.name for s in VOL_A[:3]]


def test_prepare_rejects_negative_last_sync() -> None:
    with pytest.raises(InvalidArgumentError, match="last_sync must be >= 0, got -1"):
        core.plan_prepare({}, "100-0", -1)
    with pytest.raises(ValueError):
        core.select_bases({}, {}, "100-0", -3, None, [])


def test_select_bases() -> None:
    local = {
        "a": {s.name: s for s in VOL_A},
        "b": {s.name: s for s in VOL_B},
        "c": {s.name: s for s in VOL_B},
        "d": {s.name: s for s in VOL_A},
    }
    remote: dict[str, dict[str, int | None]] = {
        "a": {"__replicate_100-0_2000__": 2, "__replicate_100-0_1000__": 1},
        "b": {"__replicate_100-0_1000__": 99},  # same name, other guid: not common
        "d": {"manual": None, "__replicate_100-10_1500__": 3},  # legacy `1` answer for manual
    }
    sel = core.select_bases(local, remote, "100-0", 2000, None, ["manual"])
    assert sel.bases == {"a": "__replicate_100-0_2000__", "d": "manual"}
    assert sel.full == ["c"]
    assert sel.missing == ["b"]
    # the parent snapshot wins over the newest common one
    sel = core.select_bases(
        {"d": local["d"]}, {"d": remote["d"]}, "100-0", 5, "__replicate_100-10_1500__", []
    )
    assert sel.bases == {"d": "__replicate_100-10_1500__"}


def test_select_bases_rejects_wrong_types() -> None:
    with pytest.raises(TypeError):
        core.select_bases({"a": {"s": "not a SnapshotInfo"}}, {}, "1-0", 2, None, [])  # type: ignore[dict-item]
