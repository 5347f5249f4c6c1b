"""Running the CLI in-process the way the console script does, for the CLI tests."""

from __future__ import annotations

import pytest

from pverep.cli import App, main


def run_cli(app: App, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``pverep <args>`` with ``app``: (exit status, stdout, stderr)."""
    code = 0
    try:
        main(list(args), app)
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return code, out, err
