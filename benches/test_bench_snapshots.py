"""pytest-benchmark suites for snapshot-list parsing and diffing (`make bench`).

Data: a synthetic `zfs list -Hp -o name,guid,createtxg,creation -t snapshot` listing of
100 datasets x 100 snapshots (70 % replication, 30 % autosnap), and a remote copy in which 1 %
of the lines differ. The 2 x 1,000,000-line comparison against pure Python lives in
benches/compare_parse.py (run by `make bench` too).
"""

import random

import pytest

import pverep._core as core

DATASETS = 100
SNAPS = 100


def listing(seed: int, diff: float = 0.0) -> tuple[str, str]:
    rnd = random.Random(seed)
    local, remote = [], []
    txg = 1000
    for d in range(DATASETS):
        ds = f"rpool/data/vm-{100 + d // 2}-disk-{d % 2}"
        for s in range(SNAPS):
            txg += rnd.randint(1, 50)
            creation = 1_700_000_000 + s * 900
            name = (
                f"__replicate_{100 + d // 2}-0_{creation}__" if s < 70 else f"autosnap_{s}_hourly"
            )
            line = f"{ds}@{name}\t{rnd.getrandbits(64)}\t{txg}\t{creation}\n"
            local.append(line)
            if rnd.random() < diff:
                remote.append(f"{ds}@{name}_x\t{rnd.getrandbits(64)}\t{txg}\t{creation}\n")
            else:
                remote.append(line)
    return "".join(local), "".join(remote)


LOCAL, REMOTE = listing(1, diff=0.01)
LOCAL_B, REMOTE_B = LOCAL.encode(), REMOTE.encode()


@pytest.mark.benchmark(group="parse")
def test_parse_snapshot_list(benchmark) -> None:
    out = benchmark(core.parse_snapshot_list, LOCAL_B)
    assert sum(len(v) for v in out.values()) == DATASETS * SNAPS


@pytest.mark.benchmark(group="parse")
def test_parse_snapshot_table(benchmark) -> None:
    table = benchmark(core.SnapshotTable, LOCAL_B)
    assert len(table) == DATASETS * SNAPS


@pytest.mark.benchmark(group="diff")
def test_parse_and_compare_tables(benchmark) -> None:
    def run() -> list[core.DatasetComparison]:
        return core.SnapshotTable(LOCAL_B).compare(core.SnapshotTable(REMOTE_B))

    result = benchmark(run)
    assert len(result) == DATASETS
    assert sum(c.common for c in result) > 0.97 * DATASETS * SNAPS


@pytest.mark.benchmark(group="diff")
def test_plan_prepare_and_select_bases(benchmark) -> None:
    local = core.parse_snapshot_list(LOCAL_B)
    remote = core.parse_snapshot_list(REMOTE_B)
    remote_guids = {ds: {s.name: s.guid for s in snaps} for ds, snaps in remote.items()}
    last_sync = 1_700_000_000 + 69 * 900

    def run() -> core.BaseSelection:
        plan = core.plan_prepare(local, None, last_sync)
        return core.select_bases(plan.keep, remote_guids, "100-0", last_sync, None, [])

    sel = benchmark(run)
    assert len(sel.bases) + len(sel.missing) == DATASETS
