"""``pverep run``'s options for many guests: bad values are one line on stderr, exit 255."""

from __future__ import annotations

from pathlib import Path

import pytest

from .test_jobs_cli import Node


@pytest.fixture
def pve1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Node:
    monkeypatch.setenv("PVEREP_NODENAME", "pve1")
    return Node(tmp_path)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bandwidth", "lots"], "invalid rate 'lots' (e.g. 20MB, 1.5GiB)"),
        (["--max-workers", "0"], "0 is not in the range x>=1"),
        (["--max-workers", "65"], "--max-workers: max_workers must be 1..64, got 65"),
    ],
)
def test_bad_run_options(pve1: Node, capsys: pytest.CaptureFixture[str], args: list[str],
                         message: str) -> None:  # fmt: skip
    code, out, err = pve1.run(capsys, "run", *args)
    assert code == 255 and out == ""
    assert len(err.splitlines()) == 1 and message in err, err


def test_bad_run_section_in_pverep_conf(pve1: Node, capsys: pytest.CaptureFixture[str]) -> None:
    conf = pve1.paths.pverep_conf
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text("[run]\nbandwidth_schedule = 20MB someday\n")
    code, _, err = pve1.run(capsys, "run")
    assert code == 255
    assert err == f"{conf}: [run] invalid time frame 'someday' (e.g. mon..fri 08:00-18:00)\n"
