"""Carry the Python that runs pverep past a node's private mounts.

Everything pverep runs inside a node (``pverep``, the zfs shim, the fake pvesh, the node init
itself) is the Python that started the lab: its venv (``sys.prefix``), its base interpreter
(``sys.base_prefix``), its import dirs and the checkout pverep is imported from. A node covers
some host dirs with private mounts (:data:`~pverep.lab.config.NODE_PRIVATE_DIRS`: ``/tmp``,
``/run``, ``/root/.ssh`` ...), so a checkout cloned under ``/tmp`` (as CI may do) would be
invisible in the nodes. The node init therefore binds each such path to a staging dir in its
node dir *before* its private mounts hide it (:func:`stage`), and *after* them recreates the
path inside the private dir and binds the staged dir there (:func:`restore`): the nodes then
see it at the same path, writable as on the host (Python writes ``__pycache__`` there).

Pitfalls avoided: the dirs made for this live in the node's private dirs or the node dir,
i.e. in the lab dir, never in a host dir; nothing is ever rmdir'ed (an rmdir on the host
detaches that dir's mounts in every other namespace); all mounts live in the node's mount
namespace (propagation private) and vanish with it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pverep
from pverep.lab.config import NODE_PRIVATE_DIRS, NODE_SHARED_DIRS, LabError, lexically_under


def needed_paths() -> list[str]:
    """Host dirs this Python and pverep live in, as written (a symlink stays a symlink).

    The prefixes, every import dir (site-packages and what its .pth files add: the checkout's
    python/ for an editable install) but the cwd, and the whole checkout rather than only its
    python/ when pverep runs from one, so that its ``hooks/`` and a cwd inside it work on the
    nodes as on the host.
    """
    import_root = os.path.dirname(os.path.dirname(os.path.abspath(pverep.__file__)))
    checkout = os.path.dirname(import_root)
    source = checkout if os.path.isfile(os.path.join(checkout, "pyproject.toml")) else import_root
    cwd = os.getcwd()
    imports = [p for p in sys.path if p and os.path.abspath(p) != cwd]
    paths = (sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix, source, *imports)
    return [os.path.abspath(p) for p in dict.fromkeys(paths) if os.path.isdir(p)]


def hidden_paths(paths: list[str]) -> list[str]:
    """The paths a node must bind back, outermost only.

    A path counts as written and resolved (``/var/lock/x`` is ``/run/lock/x``; a symlink
    ``/tmp/x`` to elsewhere must still exist at ``/tmp/x``). A path under the lab-wide
    ``/etc/pve`` or ``/rpool``, or one that *is* a private dir, cannot be carried: LabError.
    """
    hidden: list[str] = []
    for path in paths:
        for candidate in dict.fromkeys((path, os.path.realpath(path))):
            covering = lexically_under(candidate, NODE_PRIVATE_DIRS + NODE_SHARED_DIRS)
            if covering is None:
                continue
            if covering in NODE_SHARED_DIRS or candidate == covering:
                raise LabError(
                    f"{path} (needed to run pverep) would be hidden by {covering} in the lab"
                    " nodes; use a Python/checkout elsewhere"
                )
            hidden.append(candidate)
    return [p for p in sorted(set(hidden)) if not any(p.startswith(q + "/") for q in hidden)]


def _mount(*argv: str) -> None:
    result = subprocess.run(["mount", *argv], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise LabError(f"mount {' '.join(argv)}: {result.stderr.strip()}")


def stage(paths: list[str], staging: Path) -> list[tuple[Path, str]]:
    """Before the private mounts: bind each path to ``staging/<i>`` (inside the node dir)."""
    staged = []
    for i, path in enumerate(paths):
        spot = staging / str(i)
        spot.mkdir(parents=True, exist_ok=True)
        _mount("--bind", path, str(spot))
        staged.append((spot, path))
    return staged


def restore(staged: list[tuple[Path, str]]) -> None:
    """After the private mounts: the same paths again, inside the private dirs."""
    for spot, path in staged:
        Path(path).mkdir(parents=True, exist_ok=True)  # in a private dir, i.e. in the lab dir
        _mount("--bind", str(spot), path)
        subprocess.run(["umount", str(spot)], capture_output=True, check=False)
