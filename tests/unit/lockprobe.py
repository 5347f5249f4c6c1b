"""flock probes for tests: take a lock, or ask whether it is held, as another process would
(through a separate open file description)."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


def hold(path: Path) -> int:
    """Take the flock on ``path`` (created, parents too); close the returned fd to release."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def busy(path: Path) -> bool:
    """Is ``path`` flocked by someone else right now?"""
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
