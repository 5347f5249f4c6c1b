"""``/etc/pverep/pverep.conf``: pverep's own node-local settings, one INI section per concern.

Each feature owns one section and reads it through :func:`section` (``[api]`` is read by
``pverep.apiconfig``). A missing file or section means "all defaults"; a file that cannot be
parsed, or a key a section does not know, is a one-line :class:`ConfigError`, never a
traceback and never a silently ignored typo.
"""

from __future__ import annotations

import configparser
from collections.abc import Iterable
from pathlib import Path

from pverep.errors import ConfigError


def read(path: Path) -> configparser.ConfigParser:
    """The parsed file (empty when it does not exist)."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return parser
    except OSError as err:
        raise ConfigError(f"cannot read '{path}': {err.strerror}") from None
    try:
        parser.read_string(text, source=str(path))
    except configparser.Error as err:
        first = str(err).splitlines()[0]
        raise ConfigError(f"{path}: {first}") from None
    return parser


def section(path: Path, name: str, known: Iterable[str]) -> dict[str, str]:
    """The raw values of section ``[name]``; an unknown key is an error naming file and key."""
    parser = read(path)
    if not parser.has_section(name):
        return {}
    allowed = set(known)
    out: dict[str, str] = {}
    for key, raw in parser.items(name):
        if key not in allowed:
            raise ConfigError(f"{path}: unknown key '{key}' in section [{name}]")
        out[key] = raw.strip()
    return out


def get_int(values: dict[str, str], key: str, default: int, path: Path, minimum: int = 0) -> int:
    """An integer setting ``>= minimum``, or ``default`` when absent."""
    raw = values.get(key)
    if raw is None or raw == "":
        return default
    if not raw.isascii() or not raw.isdigit() or int(raw) < minimum:
        raise ConfigError(f"{path}: invalid value '{raw}' for '{key}' (an integer >= {minimum})")
    return int(raw)


def get_bool(values: dict[str, str], key: str, default: bool, path: Path) -> bool:
    """A boolean setting (``1/0``, ``yes/no``, ``true/false``, ``on/off``)."""
    raw = values.get(key)
    if raw is None or raw == "":
        return default
    low = raw.lower()
    if low in ("1", "yes", "true", "on"):
        return True
    if low in ("0", "no", "false", "off"):
        return False
    raise ConfigError(f"{path}: invalid value '{raw}' for '{key}' (a boolean)")
