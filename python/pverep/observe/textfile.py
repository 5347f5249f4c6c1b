"""node_exporter's textfile collector: ``<dir>/pverep.prom``, replaced atomically.

node_exporter reads only ``*.prom`` files, so the temporary name (``pverep.prom.tmp.<pid>``)
is never half-read.
"""

from __future__ import annotations

from pathlib import Path

from pverep.atomic import atomic_write

FILENAME = "pverep.prom"


def write(directory: Path, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / FILENAME
    atomic_write(path, text.encode("utf-8"))
    return path
