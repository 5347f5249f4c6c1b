"""Narrow the staged pyproject's [tool.mutmut] for `make mutants` (tools/mutants.sh).

Usage: mutants_narrow.py PYPROJECT "FILES" "TESTS"
FILES (stage paths such as src/pverep/calendar.py) replace only_mutate; TESTS (test files or
directories; lab tests stay out) replace the test selection. An empty list leaves that setting
as it is.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path


def toml_list(items: list[str]) -> str:
    return "[" + ", ".join(f'"{item}"' for item in items) + "]"


def narrow(text: str, key: str, items: list[str]) -> str:
    """Replace ``key = [...]`` (one line or several) in the [tool.mutmut] table."""
    pattern = re.compile(rf"^{key} = \[.*?\]$", re.MULTILINE | re.DOTALL)
    if not pattern.search(text):
        raise SystemExit(f"mutants_narrow: no '{key}' in the staged pyproject")
    return pattern.sub(lambda _m: f"{key} = {toml_list(items)}", text, count=1)


def main(argv: list[str]) -> int:
    path, files, tests = Path(argv[1]), argv[2].split(), argv[3].split()
    text = path.read_text(encoding="utf-8")
    if files:
        text = narrow(text, "only_mutate", files)
    if tests:
        text = narrow(text, "pytest_add_cli_args_test_selection", [*tests, "-m", "not lab"])
    path.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
