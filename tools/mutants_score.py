"""Score lines for `make mutants`: killed / (mutants - unviable) per tool, and per Python module.

Usage: mutants_score.py rust|python REPORT_DIR SECONDS
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path

#: What counts as found: a failing test, or a hang the tool's timeout ended.
FOUND = {"killed", "timeout", "caught", "caught by type check", "segfault"}
#: What does not count either way: the mutant did not build, or no test reached it.
NOT_TESTED = {"unviable", "skipped", "not checked"}


def line(tool: str, counts: Counter[str], seconds: str) -> str:
    tested = sum(n for status, n in counts.items() if status not in NOT_TESTED)
    found = sum(n for status, n in counts.items() if status in FOUND)
    score = 100.0 * found / tested if tested else 0.0
    detail = ", ".join(f"{status} {n}" for status, n in sorted(counts.items()))
    return f"{tool}: {score:.1f} % killed ({found}/{tested}; {detail}) in {seconds} s"


def rust(report: Path, seconds: str) -> list[str]:
    """Every cargo-mutants run under the report (one per `make mutants`; narrowed runs add more)."""
    per_file: dict[str, Counter[str]] = defaultdict(Counter)
    total: Counter[str] = Counter()
    for path in sorted(report.glob("rust*/mutants.out/outcomes.json")):
        for outcome in json.loads(path.read_text())["outcomes"]:
            scenario = outcome["scenario"]
            if not isinstance(scenario, dict):  # "Baseline"
                continue
            source = scenario["Mutant"]["file"]
            summary = outcome["summary"]  # CaughtMutant, MissedMutant, Unviable, Timeout, ...
            status = re.sub(r"Mutant$", "", summary).lower()
            per_file[source][status] += 1
            total[status] += 1
    lines = [line("rust/core (cargo-mutants)", total, seconds)]
    lines += [line(f"  {f}", c, "-") for f, c in sorted(per_file.items())]
    return lines


def python(report: Path, seconds: str) -> list[str]:
    per_module: dict[str, Counter[str]] = defaultdict(Counter)
    total: Counter[str] = Counter()
    for raw in (report / "python-results.txt").read_text().splitlines():
        name, sep, status = raw.strip().rpartition(": ")
        if not sep or "__mutmut_" not in name:
            continue
        module = name.partition(".x")[0]
        per_module[module][status] += 1
        total[status] += 1
    lines = [line("python core (mutmut)", total, seconds)]
    lines += [line(f"  {m}", c, "-") for m, c in sorted(per_module.items())]
    return lines


def main(argv: list[str]) -> int:
    tool, report, seconds = argv[1], Path(argv[2]), argv[3]
    for text in (rust if tool == "rust" else python)(report, seconds):
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
