"""Standalone parse+diff comparison (`make bench`): two generated 1,000,000-line
`zfs list -Hp -o name,guid,createtxg,creation -t snapshot` listings (the remote one with 1 % of
the lines replaced) parsed and compared per dataset (common by name+guid, only-local,
only-remote, newest common) by pverep._core and by a straightforward pure-Python baseline (the
shape of shared/perf/parse_bench.py). Each run is a fresh subprocess, interleaved; time is
in-process (file reading included), memory is the subprocess's peak RSS.
Usage: python benches/compare_parse.py [--rounds N] [--datasets 10000] [--snaps 100]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def generate(outdir: Path, datasets: int, snaps: int, diff: float = 0.01, seed: int = 1) -> None:
    rnd = random.Random(seed)
    n_rep = int(snaps * 0.7)
    txg = 1000
    base = 1_700_000_000
    with open(outdir / "local.txt", "w") as lo, open(outdir / "remote.txt", "w") as ro:
        for d in range(datasets):
            vmid = 100 + d // 2
            ds = f"rpool/data/vm-{vmid}-disk-{d % 2}"
            lines, rlines = [], []
            for s in range(snaps):
                txg += rnd.randint(1, 50)
                if s < n_rep:
                    creation = base + s * 900
                    snap = f"__replicate_{vmid}-0_{creation}__"
                else:
                    creation = base + (s - n_rep) * 3600
                    snap = (
                        "autosnap_"
                        + time.strftime("%Y-%m-%d_%H:%M:%S", time.gmtime(creation))
                        + "_hourly"
                    )
                line = f"{ds}@{snap}\t{rnd.getrandbits(64)}\t{txg}\t{creation}\n"
                lines.append(line)
                if rnd.random() < diff:
                    rlines.append(
                        f"{ds}@{snap}_x{rnd.getrandbits(16)}\t{rnd.getrandbits(64)}\t{txg}\t{creation}\n"
                    )
                else:
                    rlines.append(line)
            lo.write("".join(lines))
            ro.write("".join(rlines))


def work_python(local_path: str, remote_path: str) -> dict[str, int]:
    def parse(path: str) -> dict[str, dict[str, dict[str, int]]]:
        snaps: dict[str, dict[str, dict[str, int]]] = {}
        with open(path) as f:
            for line in f:
                name, guid, txg, creation = line.rstrip("\n").split("\t")
                ds, snap = name.split("@", 1)
                snaps.setdefault(ds, {})[snap] = {
                    "guid": int(guid),
                    "createtxg": int(txg),
                    "creation": int(creation),
                }
        return snaps

    local, remote = parse(local_path), parse(remote_path)
    common = only_l = only_r = newest = 0
    for ds, lsn in local.items():
        rsn = remote.get(ds, {})
        names = lsn.keys() & rsn.keys()
        same = [n for n in names if lsn[n]["guid"] == rsn[n]["guid"]]
        common += len(same)
        only_l += len(lsn.keys() - rsn.keys())
        only_r += len(rsn.keys() - lsn.keys())
        if same:
            max(same, key=lambda n: lsn[n]["createtxg"])
            newest += 1
    return {"common": common, "only_local": only_l, "only_remote": only_r, "newest": newest}


def work_rust(local_path: str, remote_path: str) -> dict[str, int]:
    from pverep._core import SnapshotTable

    # Streamed from the fds, as the engine reads `zfs list` output (the raw text is never
    # held), both listings at once: the parser runs with the GIL released.
    with open(local_path, "rb") as lf, open(remote_path, "rb") as rf, ThreadPoolExecutor(2) as ex:
        local_f = ex.submit(SnapshotTable.from_fd, lf.fileno())
        remote_f = ex.submit(SnapshotTable.from_fd, rf.fileno())
        local, remote = local_f.result(), remote_f.result()
    cmp = local.compare(remote)
    return {
        "common": sum(c.common for c in cmp),
        "only_local": sum(len(c.only_local) for c in cmp),
        "only_remote": sum(len(c.only_remote) for c in cmp),
        "newest": sum(c.newest_common is not None for c in cmp),
    }


def worker(kind: str, local: str, remote: str) -> None:
    import pverep._core  # noqa: F401  (import time is not parse time)

    t0 = time.perf_counter()
    counts = (work_rust if kind == "rust" else work_python)(local, remote)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"seconds": seconds, "peak": peak, **counts}))


def run(kind: str, d: Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", kind, str(d / "local.txt"), str(d / "remote.txt")],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result: dict[str, float] = json.loads(out)
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--datasets", type=int, default=10_000)
    ap.add_argument("--snaps", type=int, default=100)
    ap.add_argument("--worker", nargs=3, metavar=("KIND", "LOCAL", "REMOTE"))
    args = ap.parse_args()
    if args.worker:
        worker(*args.worker)
        return 0
    with tempfile.TemporaryDirectory(prefix="pverep-parse-") as tmp:
        d = Path(tmp)
        generate(d, args.datasets, args.snaps)
        lines = args.datasets * args.snaps
        res: dict[str, list[dict[str, float]]] = {"python": [], "rust": []}
        for _ in range(args.rounds):
            for kind in res:
                res[kind].append(run(kind, d))
    py, rs = res["python"], res["rust"]
    keys = ("common", "only_local", "only_remote", "newest")
    if any(r[k] != py[0][k] for r in py + rs for k in keys):
        print("results differ between implementations:", py[0], rs[0])
        return 1
    speed = statistics.median(p["seconds"] / r["seconds"] for p, r in zip(py, rs, strict=True))
    mem = statistics.median(r["peak"] / p["peak"] for p, r in zip(py, rs, strict=True))
    print(f"\n## Parse + diff of 2 x {lines:,} snapshot lines (1 % differ), {args.rounds} rounds")
    print(f"counts: {', '.join(f'{k} {py[0][k]:,}' for k in keys)}")
    for kind, runs in res.items():
        secs = [r["seconds"] for r in runs]
        peak = statistics.median(r["peak"] for r in runs) / 2**20
        spread = f"[{min(secs):.3f}-{max(secs):.3f}]"
        print(f"{kind:7} {statistics.median(secs):7.3f} s {spread}  peak RSS {peak:6.0f} MiB")
    print("\n## Verdicts")
    ok_speed, ok_mem = speed >= 20, mem <= 1 / 3
    verdict = "PASS" if ok_speed else "FAIL"
    print(f"  [{verdict}] parse+diff speed-up over pure Python = {speed:.1f}x (>= 20)")
    print(f"  [{'PASS' if ok_mem else 'FAIL'}] peak memory / pure Python = {mem:.3f} (<= 0.333)")
    return 0 if ok_speed and ok_mem else 1


if __name__ == "__main__":
    sys.exit(main())
