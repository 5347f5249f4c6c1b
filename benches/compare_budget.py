"""The node bandwidth budget's accuracy: N pumps on N threads share one ``_core.Budget``.

Each pump copies incompressible data pipe -> pipe (splice, GIL released) as fast as its
reader takes it; alone, one would move GB/s. Measured per round: the aggregate rate of all
pumps against the budget (goal: within +-2 %), and how evenly they shared it. Standalone:
``python benches/compare_budget.py`` (``make bench`` runs it).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time

from pverep import _core

CHUNK = os.urandom(1 << 20)


def one_pump(budget: _core.Budget, seconds: float, moved: list[int]) -> None:
    src_r, src_w = os.pipe()
    dst_r, dst_w = os.pipe()
    stop = time.monotonic() + seconds

    def feed() -> None:
        with os.fdopen(src_w, "wb") as f:
            while time.monotonic() < stop:
                f.write(CHUNK)

    def drain() -> None:
        with os.fdopen(dst_r, "rb") as f:
            while f.read(1 << 20):
                pass

    threads = [threading.Thread(target=feed), threading.Thread(target=drain)]
    for t in threads:
        t.start()
    try:
        stats = _core.pump(src_r, dst_w, budget=budget)
    finally:
        os.close(src_r)
        os.close(dst_w)
    for t in threads:
        t.join()
    moved.append(stats.bytes)


def measure(rate: float, pumps: int, seconds: float) -> tuple[float, float]:
    budget = _core.Budget(rate)
    moved: list[int] = []
    t0 = time.monotonic()
    workers = [
        threading.Thread(target=one_pump, args=(budget, seconds, moved)) for _ in range(pumps)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.monotonic() - t0
    fairness = min(moved) / max(moved)
    return sum(moved) / elapsed, fairness


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=4.0)
    args = ap.parse_args()
    worst = 0.0
    print("compare_budget: N pumps sharing one node budget (pipe -> pipe, splice)")
    for rate in (20e6, 200e6):
        for pumps in (1, 4, 8):
            for _ in range(args.rounds):
                achieved, fair = measure(rate, pumps, args.seconds)
                dev = achieved / rate - 1
                worst = max(worst, abs(dev))
                line = f"{achieved / 1e6:7.2f} MB/s ({dev:+.2%}), min/max share {fair:.2f}"
                print(f"  budget {rate / 1e6:5.0f} MB/s  {pumps} pumps: {line}")
    verdict = "PASS" if worst <= 0.02 else "MISS"
    print(f"compare_budget: worst deviation {worst:.2%} (goal <= 2 %): {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
