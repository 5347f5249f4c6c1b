"""The real-OpenZFS tier: the lab on its OpenZFS engine (QEMU/TCG guests, OpenZFS 2.3).

Every test under ``tests/openzfs/`` is marked ``openzfs`` (``make test-fast`` skips them;
``make test-openzfs`` runs only them). One 3-node lab serves the whole tier (``lab``, session
scope): a boot costs about half a minute and the guests eat the CPU, so payloads stay small
(ssh between TCG guests moves about 5 MiB/s). The fixtures mirror ``tests/lab/conftest.py``:
``lab`` and ``vmid`` (a fresh VMID; its configs and datasets are removed afterwards).

The first run on a machine builds the guest image (cached in /var/cache/pverep/lab-openzfs).
Set ``PVEREP_OPENZFS_SKIP=1`` to skip the tier on a machine that cannot run it; by default a
missing prerequisite (QEMU, virtiofsd, root) is an error, not a silent skip.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pverep.lab import guests
from pverep.lab.clusterfs import guest_configs
from pverep.lab.control import Lab

REPO = Path(__file__).resolve().parents[2]
LAB_DIR = Path(f"/var/tmp/pverep-ozlab-test-{hashlib.sha256(str(REPO).encode()).hexdigest()[:10]}")
_vmids = itertools.count(7000)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.openzfs)


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    if os.environ.get("PVEREP_OPENZFS_SKIP") == "1":
        pytest.skip("PVEREP_OPENZFS_SKIP=1")
    the_lab = Lab(LAB_DIR)
    the_lab.up(3, "openzfs")
    try:
        yield the_lab
    finally:
        the_lab.down()


@pytest.fixture
def vmid(lab: Lab) -> Iterator[int]:
    new = next(_vmids)
    yield new
    conf = guest_configs(lab.config.etc_pve).get(new, ("", "", None))[2]
    if conf is not None:
        conf.unlink()
    lab.refresh_vmlist()
    for node in lab.nodes:
        names = lab.exec(node, ["zfs", "list", "-H", "-o", "name", "-r", guests.DATA]).stdout
        for name in names.split():
            short = name.rsplit("/", 1)[-1]
            if short.startswith((f"subvol-{new}-", f"vm-{new}-")):
                lab.exec(node, ["zfs", "destroy", "-r", name], check=True)
