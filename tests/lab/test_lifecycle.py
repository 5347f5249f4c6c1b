"""up/down through the CLI: repeatable, crash-proof, and leaving nothing behind.

Runs a second, small lab next to the session lab, which must not notice.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

from pverep.lab.config import LabConfig
from pverep.lab.control import Lab
from pverep.lab.procs import load_records

from .conftest import LAB_DIR, REPO

OTHER = Path(f"{LAB_DIR}-lifecycle")


def pverep(
    *args: str, input: str | None = None, python: str = sys.executable
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [python, "-m", "pverep", "lab", "--dir", str(OTHER), *args],
        capture_output=True, text=True, input=input, timeout=120,
    )  # fmt: skip


def footprint(cfg: LabConfig) -> dict[str, object]:
    """Everything of a running lab that the host can see."""
    records = [r for p in cfg.dir.glob("nodes/*/procs.json") for r in load_records(p).values()]
    inits = [load_records(p)["init"] for p in cfg.dir.glob("nodes/*/procs.json")]
    assert len(inits) == len(cfg.nodes) and all(r.is_running() for r in inits)
    return {"records": records, "cfg": cfg}


def assert_nothing_left(before: dict[str, object]) -> None:
    cfg = before["cfg"]
    assert isinstance(cfg, LabConfig)
    assert not cfg.dir.exists()
    records = before["records"]
    assert isinstance(records, list) and records
    assert not [r for r in records if r.is_running()]
    # Namespace inode numbers are recycled, so look for the lab's traces instead: a surviving
    # node mount namespace shows the lab dir in its mountinfo, a node process in its cmdline.
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            for name in ("mountinfo", "cmdline"):
                try:
                    text = (proc / name).read_bytes().replace(b"\0", b" ").decode(errors="replace")
                except OSError:
                    continue
                assert str(cfg.dir) not in text, f"process {proc.name} still has the lab in {name}"
    links = subprocess.run(
        ["ip", "-o", "link", "show"], capture_output=True, text=True, check=True
    ).stdout
    assert cfg.bridge not in links and f"pvl{cfg.net_index}-" not in links
    assert str(cfg.dir) not in Path("/proc/self/mounts").read_text()
    for loop in Path("/sys/block").glob("loop*/loop/backing_file"):
        assert str(cfg.dir) not in loop.read_text()
    assert not Path(f"/sys/fs/cgroup/freezer/{cfg.cgroup_name}").exists()
    assert not Path(f"/sys/fs/cgroup/{cfg.cgroup_name}").exists()


def session_lab_still_works(lab: Lab) -> None:
    assert lab.exec("pve1", ["ssh", "pve2", "cat", "/etc/pve/storage.cfg"], check=True).stdout
    assert (
        lab.exec("pve3", ["zfs", "list", "-H", "-o", "name", "rpool"], check=True).stdout
        == "rpool\n"
    )


def test_up_twice_down_twice_leaves_nothing(lab: Lab) -> None:
    first = pverep("up", "2")
    assert first.returncode == 0, first.stderr
    old = footprint(LabConfig.load(OTHER))
    second = pverep("up", "2")  # replaces the first one completely
    assert second.returncode == 0, second.stderr
    assert "2 node(s)" in second.stderr
    assert not [r for r in old["records"] if r.is_running()]  # type: ignore[attr-defined]
    cfg = LabConfig.load(OTHER)
    assert cfg.net_index != lab.config.net_index and cfg.bridge != lab.config.bridge

    status = pverep("status")
    assert status.returncode == 0 and status.stdout.count(" up ") == 2
    echoed = pverep("exec", "pve2", "--", "sh", "-c", "cat; hostname; exit 3", input="in\n")
    assert (echoed.returncode, echoed.stdout) == (3, "in\npve2\n")
    remote = pverep(
        "exec", "pve1", "--", "ssh", "root@pve2", "--", "zfs", "list", "-H", "-o", "name"
    )
    assert remote.stdout.split() == ["rpool", "rpool/data", "rpool/data2"], remote.stderr

    before = footprint(cfg)
    assert pverep("freeze", "pve2").returncode == 0  # down must cope with a hung node
    assert pverep("down").returncode == 0
    assert pverep("down").returncode == 0
    assert_nothing_left(before)
    assert pverep("status").returncode == 255  # one line: the lab is down
    session_lab_still_works(lab)


def test_down_after_kill_9_of_every_lab_process(lab: Lab) -> None:
    assert pverep("up", "2").returncode == 0
    before = footprint(LabConfig.load(OTHER))
    for rec in before["records"]:  # type: ignore[attr-defined]
        os.kill(rec.pid, signal.SIGKILL)
    for rec in before["records"]:  # type: ignore[attr-defined]
        assert rec.wait_gone(10)
    assert pverep("status").returncode == 1  # nodes DOWN
    result = pverep("down")
    assert result.returncode == 0, result.stderr
    assert_nothing_left(before)
    session_lab_still_works(lab)


def test_bad_input_is_one_line_not_a_traceback() -> None:
    for args in (
        ["exec", "pve9", "--", "true"],
        ["cut", "nonode"],
        ["--dir", "/tmp/x", "status"],
        ["--dir", "/var/log/pve/x", "up", "1"],
    ):
        result = pverep(*args)
        assert result.returncode != 0
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, (
            result.stderr
        )


def checkout_under_tmp(root: Path) -> Path:
    """A clone under /tmp as CI may make one: ``root/co`` with pyproject.toml, python/ and a
    .venv whose python imports pverep from ``root/co/python``. The dirs are real, their
    contents link to this checkout and venv (same code, no build)."""
    co = root / "co"
    co.mkdir()
    for name in ("pyproject.toml", "python", "hooks"):
        (co / name).symlink_to(REPO / name)
    base = Path(os.path.realpath(sys.executable))
    site = co / ".venv" / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    (site / "site-packages").mkdir(parents=True)
    # this checkout's python/ is not on the path: only the .pth of the real venv names it
    (site / "site-packages" / "co.pth").write_text(
        f"{co / 'python'}\n{sysconfig.get_path('purelib')}\n"
    )
    (co / ".venv" / "pyvenv.cfg").write_text(
        f"home = {base.parent}\ninclude-system-site-packages = false\n"
    )
    (co / ".venv" / "bin").mkdir()
    (co / ".venv" / "bin" / "python").symlink_to(base)
    return co / ".venv" / "bin" / "python"


def test_a_checkout_under_tmp_runs_in_the_nodes(lab: Lab) -> None:
    """Nodes have a private /tmp; the lab carries the venv and checkout past it."""
    root = Path(tempfile.mkdtemp(prefix="pverep-carry-", dir="/tmp"))
    try:
        python = str(checkout_under_tmp(root))
        where = subprocess.run(
            [python, "-c", "import pverep, sys; print(pverep.__file__, sys.prefix)"],
            capture_output=True, text=True, check=True,
        ).stdout.split()  # fmt: skip
        assert where == [f"{root}/co/python/pverep/__init__.py", f"{root}/co/.venv"]
        (root / "host-only").touch()
        tree = sorted(str(p) for p in root.rglob("*"))

        up = pverep("up", "1", python=python)
        assert up.returncode == 0, up.stderr
        before = footprint(LabConfig.load(OTHER))
        on_node = functools.partial(pverep, "exec", "pve1", "--", python=python)
        helped = on_node("pverep", "--help")  # /run/pvelab/bin/pverep -> the /tmp venv
        assert helped.returncode == 0 and "Usage" in helped.stdout, helped.stderr
        shim = on_node("zfs", "list", "-Hp", "-o", "name,used", "rpool")  # -p: the shim's
        assert shim.stdout.split()[0] == "rpool" and shim.stdout.split()[1].isdigit(), shim
        inside = on_node(python, "-c", "import pverep, sys; print(pverep.__file__, sys.prefix)")
        assert inside.stdout.split() == where, inside.stderr
        private = on_node("sh", "-c", f"test -e {root}/host-only || echo private")
        assert private.stdout == "private\n"  # /tmp itself stays the node's own

        assert pverep("down", python=python).returncode == 0
        assert_nothing_left(before)
        assert str(root) not in Path("/proc/self/mounts").read_text()
        assert sorted(str(p) for p in root.rglob("*")) == tree  # nothing made in host dirs
    finally:
        pverep("down")
        shutil.rmtree(root)
    session_lab_still_works(lab)
