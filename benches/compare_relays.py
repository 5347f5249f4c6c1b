"""Standalone relay comparison (`make bench`): _core.pump against a splice relay, cat,
cstream, pv and mbuffer, between a fast C producer and consumer, in one process, interleaved
round by round on the same data; once pinned to one CPU (taskset -c 0) and once unpinned.

Prints throughput medians, the rate-limit accuracy at 50 and 200 MB/s (achieved/target and the
spread of 100 ms and 10 ms windows after the first second), and the ratios the project's
acceptance criteria name. Ratios are medians of per-round ratios (the machine is shared and
noisy). Usage: python benches/compare_relays.py [--rounds N] [--quick]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

TOOLS_SRC = Path(__file__).resolve().parent / "tools"
TOOLS_BIN = Path(__file__).resolve().parent.parent / "target" / "bench-tools"
PY = sys.executable
GIB = 1 << 30
NEVER_BINDING = 100_000_000_000  # 100 GB/s


def build_tools() -> dict[str, str]:
    TOOLS_BIN.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in ("gen", "sink", "relay"):
        src, exe = TOOLS_SRC / f"{name}.c", TOOLS_BIN / name
        if not exe.exists() or exe.stat().st_mtime < src.stat().st_mtime:
            subprocess.run(["cc", "-O2", "-Wall", "-o", str(exe), str(src), "-lm"], check=True)
        out[name] = str(exe)
    return out


def pump_argv(rate: float | None = None) -> list[str]:
    code = (
        "import sys; from pverep._core import pump; "
        "r = float(sys.argv[1]); pump(0, 1, rate=r if r > 0 else None)"
    )
    return [PY, "-c", code, str(rate or 0)]


def run_pipeline(
    tools: dict[str, str],
    relay: Sequence[str],
    nbytes: int,
    pinned: bool,
    win_ms: int = 0,
    skip_ms: int = 0,
) -> dict[str, float]:
    pre = ["taskset", "-c", "0"] if pinned else []
    with tempfile.NamedTemporaryFile(suffix=".json") as result:
        sink_argv = [*pre, tools["sink"], "-o", result.name]
        if win_ms:
            sink_argv += ["-w", str(win_ms), "-s", str(skip_ms)]
        gen = subprocess.Popen([*pre, tools["gen"], str(nbytes)], stdout=subprocess.PIPE)
        mid = subprocess.Popen([*pre, *relay], stdin=gen.stdout, stdout=subprocess.PIPE)
        assert gen.stdout is not None and mid.stdout is not None
        gen.stdout.close()
        sink = subprocess.Popen(sink_argv, stdin=mid.stdout)
        mid.stdout.close()
        codes = [p.wait() for p in (gen, mid, sink)]
        if any(codes):
            raise RuntimeError(f"pipeline through {relay[0]} failed: exit codes {codes}")
        data: dict[str, float] = json.loads(Path(result.name).read_text())
    if data["bytes"] != nbytes:
        raise RuntimeError(f"{relay[0]}: moved {data['bytes']} of {nbytes} bytes")
    # From the first byte: process start-up (Python for the pump) is not the relay's speed.
    data["gibps_stream"] = nbytes / (data["t_total"] - data["t_first"]) / GIB
    data["mbps_stream"] = nbytes / (data["t_total"] - data["t_first"]) / 1e6
    return data


def med(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def throughput(
    tools: dict[str, str], rounds: int, quick: bool
) -> dict[str, dict[str, list[float]]]:
    relays: dict[str, list[str]] = {
        "splice relay": [tools["relay"], "splice", "1048576"],
        "pump": pump_argv(),
        "pump (limit never binds)": pump_argv(NEVER_BINDING),
        "cat": ["cat"],
        "cstream": ["cstream"],
        "cstream -t (never binds)": ["cstream", "-t", str(NEVER_BINDING)],
        "pv": ["pv", "-q"],
        "mbuffer": ["mbuffer", "-q"],
    }
    sizes = {"pinned": (1 if quick else 3) * GIB, "unpinned": (1 if quick else 2) * GIB // 2 * 2}
    res: dict[str, dict[str, list[float]]] = {p: {n: [] for n in relays} for p in sizes}
    for r in range(rounds):
        for placement, nbytes in sizes.items():
            for name, argv in relays.items():
                d = run_pipeline(tools, argv, nbytes, pinned=placement == "pinned")
                res[placement][name].append(d["gibps_stream"])
        print(f"  throughput round {r + 1}/{rounds} done", file=sys.stderr)
    return res


def ratio(res: dict[str, list[float]], a: str, b: str) -> float:
    return med([x / y for x, y in zip(res[a], res[b], strict=True)])


def accuracy(
    tools: dict[str, str], rounds: int, quick: bool
) -> dict[tuple[str, int], list[dict[str, float]]]:
    seconds = 2.5 if quick else 3.5
    out: dict[tuple[str, int], list[dict[str, float]]] = {}
    for r in range(rounds):
        for rate in (50_000_000, 200_000_000):
            tools_argv = {
                "pump": pump_argv(rate),
                "cstream -t": ["cstream", "-t", str(rate)],
                "pv -L": ["pv", "-q", "-L", str(rate)],
                "mbuffer -r": ["mbuffer", "-q", "-r", str(rate)],
            }
            for name, argv in tools_argv.items():
                nbytes = int(rate * seconds)
                d100 = run_pipeline(tools, argv, nbytes, pinned=False, win_ms=100, skip_ms=1000)
                d10 = (
                    run_pipeline(tools, argv, nbytes, pinned=False, win_ms=10, skip_ms=1000)
                    if r == 0
                    else {}
                )
                d100["achieved_over_target"] = d100["mbps_stream"] * 1e6 / rate
                d100["max100_over_rate"] = d100.get("win_max", float("nan")) / (rate * 0.1)
                if d10:
                    d100["w10_min"], d100["w10_med"], d100["w10_max"] = (
                        d10.get("win_min", 0),
                        d10.get("win_med", 0),
                        d10.get("win_max", 0),
                    )
                out.setdefault((name, rate), []).append(d100)
        print(f"  accuracy round {r + 1}/{rounds} done", file=sys.stderr)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="smaller transfers (smoke test)")
    args = ap.parse_args()
    tools = build_tools()
    verdicts: list[tuple[str, bool]] = []

    res = throughput(tools, args.rounds, args.quick)
    print(
        "\n## Unlimited relays between C gen and C sink (GiB/s from first byte, median [min-max])"
    )
    print(f"{'relay':28} {'pinned (taskset -c 0)':>26} {'unpinned':>26}")
    for name in res["pinned"]:
        cells = []
        for placement in ("pinned", "unpinned"):
            xs = res[placement][name]
            cells.append(f"{med(xs):6.2f} [{min(xs):.2f}-{max(xs):.2f}]")
        print(f"{name:28} {cells[0]:>26} {cells[1]:>26}")
    r1 = ratio(res["pinned"], "pump", "splice relay")
    r2 = ratio(res["unpinned"], "pump", "cstream")
    r3 = ratio(res["pinned"], "pump (limit never binds)", "pump")
    verdicts += [
        (f"pinned unlimited pump / splice relay = {r1:.2f} (>= 0.9)", r1 >= 0.9),
        (f"unpinned unlimited pump / cstream = {r2:.2f} (>= 2)", r2 >= 2.0),
        (f"pinned never-binding limit / unlimited pump = {r3:.2f} (>= 0.9)", r3 >= 0.9),
    ]
    for other in ("cat", "cstream", "pv", "mbuffer"):
        print(
            f"  pinned pump / {other}: {ratio(res['pinned'], 'pump', other):.2f}   "
            f"unpinned pump / {other}: {ratio(res['unpinned'], 'pump', other):.2f}"
        )

    acc = accuracy(tools, args.rounds, args.quick)
    print("\n## Rate limits (unpinned; windows after the first second; medians over rounds)")
    print(
        f"{'tool':12} {'MB/s':>5} {'achieved/target':>16} {'100ms min/med/max (MB)':>24} "
        f"{'max100/rate':>11} {'10ms min/med/max (MB)':>23}"
    )
    for (name, rate), runs in acc.items():
        a = med([d["achieved_over_target"] for d in runs])
        mx = max(d["max100_over_rate"] for d in runs)
        w = runs[0]
        w100 = "/".join(f"{w.get(k, 0) / 1e6:.2f}" for k in ("win_min", "win_med", "win_max"))
        w10 = "/".join(f"{w.get(k, 0) / 1e6:.2f}" for k in ("w10_min", "w10_med", "w10_max"))
        print(f"{name:12} {rate / 1e6:5.0f} {a:16.4f} {w100:>24} {mx:11.3f} {w10:>23}")
        if name == "pump":
            verdicts.append(
                (
                    f"pump @ {rate / 1e6:.0f} MB/s: achieved/target {a:.4f} (within 1 +- 0.005)",
                    abs(a - 1) <= 0.005,
                )
            )
            verdicts.append(
                (
                    f"pump @ {rate / 1e6:.0f} MB/s: max 100 ms window / rate {mx:.3f} (<= 1.1)",
                    mx <= 1.1,
                )
            )

    print("\n## Verdicts")
    for text, ok in verdicts:
        print(f"  [{'PASS' if ok else 'FAIL'}] {text}")
    return 0 if all(ok for _, ok in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
