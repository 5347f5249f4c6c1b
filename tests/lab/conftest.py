"""Fixtures for integration tests on the lab cluster (real zfs-fuse, real sshd, namespaces).

Every test under ``tests/lab/`` is marked ``lab`` automatically (``make test-fast`` skips them).

Fixtures
--------
``lab`` (session)
    A running 3-node lab (``pve1``..``pve3``), a :class:`pverep.lab.control.Lab`. Its directory is
    unique to this checkout (``/var/tmp/pverep-lab-test-<hash of the repo path>``), so two
    checkouts can run ``make test`` at once; the subnet and bridge are allocated per lab.
    It is brought up once per session (``up`` cleans up whatever a crashed earlier run left)
    and torn down at the end. The API::

        lab.nodes                       # ("pve1", "pve2", "pve3")
        lab.node_ip("pve2")             # "10.213.X.12"
        lab.exec("pve1", ["zfs", "list", "-Hp"], check=True).stdout   # runs ON pve1
        lab.exec("pve2", ["sh", "-c", "cat > /tmp/x"], input="data")  # stdin passes through
        lab.popen("pve1", ["zfs", "send", snap], stdout=PIPE)          # for pipelines
        lab.cut("pve3"); lab.heal("pve3")     # link down/up + quorum (/etc/pve read-only)
        lab.shape("pve2", "8mbit"); lab.shape("pve2", None)
        lab.freeze("pve2"); lab.thaw("pve2")
        lab.config.etc_pve                    # host path of the shared /etc/pve

    Commands on a node see the real paths (/etc/pve, /var/lib/pve-manager, ...), PVEREP_ROOT
    is unset there, and ``pverep`` on the node's PATH (also over ssh) is this checkout's.
    A test that cuts, shapes or freezes a node must undo it in a ``finally``.

``vmid``
    A fresh VMID for this test. After the test, its guest config is removed and its
    datasets are destroyed on every node. Create the guest with
    ``pverep.lab.guests.create(lab, vmid, "pve1", "lxc", ["64M"])``; see also
    ``guests.write``, ``guests.move`` and ``guests.checksum``.

``api`` (module)
    The fake Proxmox API running on every node's :8006, and ``api.remote([...], node)`` to
    run ``pverep --api <node> …`` from the host (tests/lab/apihelp.py).

Set ``PVEREP_LAB_SKIP=1`` to skip the lab tests on a machine that cannot run them (not root,
no /dev/fuse); by default a missing prerequisite is an error, not a silent skip.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pverep.lab import guests
from pverep.lab.clusterfs import guest_configs
from pverep.lab.control import Lab

from .apihelp import LabApi, serving

REPO = Path(__file__).resolve().parents[2]
LAB_DIR = Path(f"/var/tmp/pverep-lab-test-{hashlib.sha256(str(REPO).encode()).hexdigest()[:10]}")
_vmids = itertools.count(9000)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.lab)


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    if os.environ.get("PVEREP_LAB_SKIP") == "1":
        pytest.skip("PVEREP_LAB_SKIP=1")
    the_lab = Lab(LAB_DIR)
    the_lab.up(3)
    try:
        yield the_lab
    finally:
        the_lab.down()


@pytest.fixture(scope="module")
def api(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabApi]:
    with serving(lab, tmp_path_factory.mktemp("labapi")) as labapi:
        yield labapi


@pytest.fixture
def vmid(lab: Lab) -> Iterator[int]:
    new = next(_vmids)
    yield new
    remove_guest(lab, new)


@pytest.fixture
def vmids(lab: Lab) -> Iterator[Callable[[], int]]:
    """``vmids()`` hands out a fresh VMID per call; all are cleaned up like ``vmid``'s."""
    handed: list[int] = []

    def fresh() -> int:
        handed.append(next(_vmids))
        return handed[-1]

    yield fresh
    for new in handed:
        remove_guest(lab, new)


def remove_guest(lab: Lab, vmid: int) -> None:
    """Remove the guest's config and destroy its datasets on every node."""
    for _node, _type, conf in [guest_configs(lab.config.etc_pve).get(vmid, ("", "", None))]:
        if conf is not None:
            conf.unlink()
    lab.refresh_vmlist()
    for node in lab.nodes:
        for prefix in ("subvol", "vm"):
            for disk in range(4):
                name = guests.dataset(f"{prefix}-{vmid}-disk-{disk}")
                if lab.exec(node, ["zfs", "list", "-H", "-o", "name", name]).returncode == 0:
                    lab.exec(node, ["zfs", "destroy", "-r", name], check=True)
