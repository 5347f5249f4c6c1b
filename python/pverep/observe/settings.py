"""The ``[observe]`` section of /etc/pverep/pverep.conf.

``textfile_dir``: node_exporter's textfile-collector directory; when set, every ``pverep run``
writes ``pverep.prom`` there. ``history_max_bytes`` / ``history_keep``: the run history's size
before rotation and how many files are kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pverep.config import pveconf
from pverep.errors import ConfigError
from pverep.observe.history import DEFAULT_KEEP, DEFAULT_MAX_BYTES, History
from pverep.paths import Paths

SECTION = "observe"
KEYS = ("textfile_dir", "history_max_bytes", "history_keep")


@dataclass(frozen=True)
class ObserveSettings:
    textfile_dir: Path | None = None
    history_max_bytes: int = DEFAULT_MAX_BYTES
    history_keep: int = DEFAULT_KEEP


def load(paths: Paths) -> ObserveSettings:
    conf = paths.pverep_conf
    values = pveconf.section(conf, SECTION, KEYS)
    textfile = values.get("textfile_dir") or None
    if textfile is not None and not textfile.startswith("/"):
        raise ConfigError(
            f"{conf}: invalid value '{textfile}' for 'textfile_dir' (an absolute path)"
        )
    return ObserveSettings(
        # the directory is a host path, moved with --root like every other path
        textfile_dir=paths.root / textfile.lstrip("/") if textfile else None,
        history_max_bytes=pveconf.get_int(values, "history_max_bytes", DEFAULT_MAX_BYTES, conf, 1),
        history_keep=pveconf.get_int(values, "history_keep", DEFAULT_KEEP, conf, 1),
    )


def history(paths: Paths) -> History:
    s = load(paths)
    return History(paths.history_file, s.history_max_bytes, s.history_keep)
