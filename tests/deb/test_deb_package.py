"""The Debian package (``make deb``) installs on this machine, works, and purges cleanly.

The package is installed on the real root with dpkg (CI runs on a throw-away machine), so the
window in which ``/usr/bin/pverep`` exists is kept to one test, and purge always runs. Other
checkouts' lab tests expect no pverep on a stock-like node's PATH: a machine-wide lock keeps
two of these tests from overlapping, and the test refuses to run where pverep is installed.
"""

from __future__ import annotations

import fcntl
import gzip
import os
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VERSION = tomllib.loads((REPO / "Cargo.toml").read_text())["workspace"]["package"]["version"]
DEB = Path(os.environ.get("PVEREP_DEB", REPO / "dist" / f"pverep_{VERSION}_amd64.deb"))
UNITS = sorted(p.name for p in (REPO / "hooks").iterdir() if p.suffix in (".service", ".timer"))
#: Where a leftover of the package (or of an enabled unit) would show up after purge.
WATCHED = (
    Path("/etc/systemd/system"),
    Path("/var/lib/systemd/deb-systemd-helper-enabled"),
    Path("/var/lib/systemd/deb-systemd-helper-masked"),
    Path("/var/lib/dpkg/info"),
)

pytestmark = [
    pytest.mark.deb,
    pytest.mark.skipif(os.geteuid() != 0, reason="installs a package: needs root"),
    pytest.mark.skipif(shutil.which("dpkg") is None, reason="needs dpkg"),
]


def sh(*argv: str, check: bool = True, **kw: object) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, **kw)  # type: ignore[call-overload]
    if check and done.returncode != 0:
        raise AssertionError(f"{argv}: rc={done.returncode}\n{done.stdout}\n{done.stderr}")
    return done  # type: ignore[no-any-return]


def installed() -> bool:
    done = sh("dpkg-query", "-W", "-f=${Status}", "pverep", check=False)
    return "installed" in done.stdout or "config-files" in done.stdout


def pverep_traces() -> set[str]:
    found = {str(p) for top in WATCHED if top.is_dir() for p in top.rglob("*pverep*")}
    for path in (
        "/usr/bin/pverep",
        "/usr/lib/pverep",
        "/usr/share/pverep",
        "/etc/pverep",
        "/etc/default/pverep",
        "/run/pverep",
        "/usr/share/doc/pverep",
    ):
        if os.path.lexists(path):
            found.add(path)
    return found


@pytest.fixture(scope="module")
def deb() -> Path:
    if not DEB.is_file():
        pytest.fail(f"{DEB} is missing: run 'make deb' first (make test does)")
    return DEB


@pytest.fixture
def machine_lock() -> Iterator[None]:
    with open("/run/lock/pverep-deb-test.lck", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def test_lintian_is_clean(deb: Path) -> None:
    """Errors, warnings and pedantic tags alike; overrides live in packaging/deb."""
    if shutil.which("lintian") is None:
        pytest.skip("lintian is not installed (make sysdeps installs it)")
    done = sh("lintian", "--pedantic", "--fail-on", "error,warning,pedantic", str(deb), check=False)
    tags = [line for line in done.stdout.splitlines() if line[:2] in ("E:", "W:", "I:", "P:")]
    assert (done.returncode, tags) == (0, []), done.stdout + done.stderr


def test_contents_leave_the_lab_out_and_name_their_licences(deb: Path) -> None:
    listing = sh("dpkg-deb", "-c", str(deb)).stdout
    names = {line.split()[-1].lstrip(".") for line in listing.splitlines()}
    lib = "/usr/lib/pverep/python/"
    assert f"{lib}pverep/cli/setup.py" in names and f"{lib}pverep/engine/scheduler.py" in names
    fakes = [n for n in names if "/pverep/lab" in n or "fake" in n or n.endswith("demo.py")]
    assert fakes == []
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    for unit in UNITS:
        assert f"/lib/systemd/system/{unit}" in names
    work = Path(sh("mktemp", "-d").stdout.strip())
    try:
        sh("dpkg-deb", "-x", str(deb), str(work))
        copyright_text = (work / "usr/share/doc/pverep/copyright").read_text()
        dists = sorted(p.name for p in (work / lib.lstrip("/")).glob("*.dist-info"))
        assert len(dists) >= 5
        for dist in dists:
            if not dist.startswith("pverep-"):
                assert dist in copyright_text, f"{dist} bundled but not in copyright"
        assert sh("dpkg-deb", "-f", str(deb), "Version").stdout.strip() == VERSION
        rules = sorted((REPO / "hooks/prometheus").glob("*.yml"))
        assert [p.name for p in rules] == ["pverep-alerts.test.yml", "pverep-alerts.yml"]
        for source in rules:
            shipped = work / "usr/share/pverep/prometheus" / source.name
            assert shipped.read_bytes() == source.read_bytes(), source.name
            assert shipped.stat().st_mode & 0o777 == 0o644
    finally:
        shutil.rmtree(work)


def test_install_run_verify_purge(deb: Path, machine_lock: None, tmp_path: Path) -> None:
    if installed() or os.path.lexists("/usr/bin/pverep"):
        pytest.fail("pverep is already installed on this machine: not touching it")
    # An empty /etc/pverep may exist already: nodes of a lab share the host's /etc, and tests
    # there write pverep.conf. Anything else of ours is a leftover, or someone's config.
    before = pverep_traces()
    assert before <= {"/etc/pverep"}, f"pverep files exist already: {before}"
    assert not os.path.exists("/etc/pverep") or not os.listdir("/etc/pverep"), before
    try:
        sh("dpkg", "-i", str(deb), env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        # runs on Debian's interpreter, from the private environment only
        done = sh("/usr/bin/pverep", "--version", env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
        assert done.stdout == f"pverep {VERSION}\n"
        assert sh("head", "-1", "/usr/bin/pverep").stdout == "#!/usr/bin/python3 -I\n"
        helps = sh("/usr/bin/pverep", "--help").stdout
        assert "install-hookscript" in helps and " lab " not in helps
        lab = sh("/usr/bin/pverep", "lab", "up", check=False)
        assert lab.returncode == 255 and "No such command 'lab'" in lab.stderr
        bad = sh("/usr/bin/pverep", "--root", str(tmp_path), "status", check=False)
        assert bad.returncode == 255 and len(bad.stderr.splitlines()) == 1, bad.stderr
        check_install_hookscript(tmp_path)
        assert list(Path("/usr/lib/pverep/python/pverep").rglob("__pycache__/*.pyc"))
        # the units as installed, against the installed /usr/bin/pverep and man page
        unit_paths = [f"/lib/systemd/system/{u}" for u in UNITS]
        man = "yes" if shutil.which("man") else "no"
        verify = sh("systemd-analyze", "verify", f"--man={man}", *unit_paths, check=False)
        assert (verify.returncode, verify.stderr) == (0, ""), verify.stderr
        conffiles = sh("dpkg-query", "-W", "-f=${Conffiles}", "pverep").stdout.split()
        assert "/etc/default/pverep" in conffiles and "/etc/pverep/pverep.conf" in conffiles
        # nothing enabled by the package; an admin enables the timer
        assert not list(Path("/etc/systemd/system").rglob("pverep*"))
        sh("systemctl", "enable", "pverep-replicate.timer")
        link = Path("/etc/systemd/system/timers.target.wants/pverep-replicate.timer")
        assert link.is_symlink()
        page = gzip.decompress(Path("/usr/share/man/man1/pverep.1.gz").read_bytes()).decode()
        assert ".SS pverep install\\-hookscript" in page and "\\-\\-uninstall" in page
        completion = Path("/usr/share/bash-completion/completions/pverep").read_text()
        assert "_PVEREP_COMPLETE" in completion
        sh("dpkg", "--remove", "pverep")
        assert not os.path.lexists("/usr/bin/pverep")
        assert Path("/etc/pverep/pverep.conf").is_file()  # conffiles stay until purge
    finally:
        purge = sh("dpkg", "--purge", "pverep", check=False)
    assert purge.returncode == 0, purge.stderr
    assert not installed()
    assert pverep_traces() <= before


def check_install_hookscript(root: Path) -> None:
    """The installed CLI copies the installed hookscript onto a node's snippets storage."""
    pve = root / "etc/pve"
    pve.mkdir(parents=True)
    (pve / "storage.cfg").write_text("dir: local\n\tpath /var/lib/vz\n\tcontent snippets\n")
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PVEREP_NODENAME": "pve1"}
    done = sh("/usr/bin/pverep", "--root", str(root), "install-hookscript", env=env)
    assert "qm set <vmid> --hookscript local:snippets/pverep-hookscript" in done.stdout
    snippet = root / "var/lib/vz/snippets/pverep-hookscript"
    shipped = Path("/usr/share/pverep/pverep-hookscript").read_bytes()
    assert snippet.read_bytes() == shipped == (REPO / "hooks/pverep-hookscript").read_bytes()
    sh("/usr/bin/pverep", "--root", str(root), "install-hookscript", "--uninstall", env=env)
    assert not snippet.exists()
