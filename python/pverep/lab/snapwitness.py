"""A witness of every ``zfs snapshot`` on a lab node, for the freeze tests.

``install`` puts a ``zfs`` in front of the node's PATH (``/run/pvelab/bin``, private to the
node) that, for ``zfs snapshot`` only, records whether the watched container cgroup is frozen
(the kernel's ``cgroup.events``) and the container's heartbeat counter right before and right
after the real snapshot, and appends one line ``zfs snapshot <dataset@snap> frozen=<0|1>
beats=<before>,<after>`` to a record file (the FAKE guest agent can record into the same file,
so the order of agent commands and snapshots is one list). Everything else goes straight to
the real ``zfs`` (the lab's compat shim). ``uninstall`` removes it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from pverep.lab.clusterfs import NODE_RUN
from pverep.lab.control import Lab

WRAPPER = f"{NODE_RUN}/bin/zfs"
CONFIG = f"{NODE_RUN}/snapwitness.json"
REAL_ZFS = "/usr/sbin/zfs"


def install(lab: Lab, node: str, record: str, cgroup: str = "", beat: str = "") -> None:
    conf = json.dumps({"record": record, "cgroup": cgroup, "beat": beat})
    lab.exec(node, ["tee", CONFIG], input=conf, check=True)
    script = f"#!{lab.config.python}\nfrom pverep.lab.snapwitness import main\nmain()\n"
    lab.exec(node, ["tee", WRAPPER], input=script, check=True)
    lab.exec(node, ["chmod", "0755", WRAPPER], check=True)


def uninstall(lab: Lab, node: str) -> None:
    lab.exec(node, ["rm", "-f", WRAPPER, CONFIG])


def record(lab: Lab, node: str, path: str) -> list[str]:
    got = lab.exec(node, ["cat", path])
    return got.stdout.splitlines() if got.returncode == 0 else []


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return "-"


def main() -> None:
    args = sys.argv[1:]
    if args[:1] != ["snapshot"]:
        os.execv(REAL_ZFS, [REAL_ZFS, *args])  # noqa: S606 - argv list, the real zfs
    with open(CONFIG) as f:
        conf = json.load(f)
    events = _read(f"{conf['cgroup']}/cgroup.events") if conf["cgroup"] else ""
    frozen = int("frozen 1" in events.splitlines())
    before = _read(conf["beat"]) if conf["beat"] else "-"
    rc = subprocess.call([REAL_ZFS, *args])
    after = _read(conf["beat"]) if conf["beat"] else "-"
    with open(conf["record"], "a") as f:
        f.write(f"zfs snapshot {args[-1]} frozen={frozen} beats={before},{after}\n")
    raise SystemExit(rc)
