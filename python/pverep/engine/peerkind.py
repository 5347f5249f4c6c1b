"""Is a replication target a pverep node or a stock Proxmox VE node?

Decided once per target and run (``decide_peer_kind``), over the ssh connection the run uses
anyway: the configured ``[peers]`` override in pverep.conf wins; otherwise (``auto``, the
default) the target is asked ``pverep peer-info``. A remote shell that cannot find the command
answers exit status 127: that node runs stock Proxmox VE and gets pvesr's exact argv
(``pvesr``/``pvesm``). Any other failure is reported, never guessed into either kind.

pverep.conf::

    [peers]
    pve2 = stock      # always pvesr/pvesm, never probe
    pve3 = pverep     # always pverep, never probe
    pve4 = auto       # the default for every node not listed
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

from pverep.config import pveconf
from pverep.errors import ConfigError, PverepError
from pverep.transport.base import Shell
from pverep.transport.peer import PeerKind
from pverep.validate import is_valid_node_name

#: pverep.conf section with one ``<node> = auto|pverep|stock`` line per overridden node.
PEERS_SECTION = "peers"
PeerSetting = Literal["auto", "pverep", "stock"]
_SETTINGS: tuple[PeerSetting, ...] = ("auto", "pverep", "stock")
#: The verb a pverep peer answers with one JSON line; its name is stable protocol.
PEER_INFO_VERB = "peer-info"
#: What a POSIX shell returns for a command that is not on its PATH.
COMMAND_NOT_FOUND = 127


def read_peer_settings(path: Path) -> dict[str, PeerSetting]:
    """The ``[peers]`` section: node name → setting; bad names or values are one-line errors."""
    parser = pveconf.read(path)
    if not parser.has_section(PEERS_SECTION):
        return {}
    out: dict[str, PeerSetting] = {}
    for node, raw in parser.items(PEERS_SECTION):
        if not is_valid_node_name(node):
            raise ConfigError(f"{path}: invalid node name '{node}' in section [{PEERS_SECTION}]")
        value = raw.strip().lower()
        if value not in _SETTINGS:
            raise ConfigError(
                f"{path}: invalid value '{raw.strip()}' for '{node}' in section "
                f"[{PEERS_SECTION}] (auto, pverep or stock)"
            )
        out[node.lower()] = value  # checked against _SETTINGS
    return out


def probe_peer_kind(
    remote: Shell, pverep_argv: Sequence[str] = ("pverep",), timeout: float | None = None
) -> PeerKind:
    """Ask the target (one command over ``remote``) whether it runs pverep."""
    result = remote.run([*pverep_argv, PEER_INFO_VERB], timeout=timeout)
    if result.returncode == COMMAND_NOT_FOUND:
        return "pve"
    if result.returncode == 0:
        try:
            info = json.loads(result.stdout_text.strip().splitlines()[-1])
        except (ValueError, IndexError):
            info = None  # pragma: no mutate (any answer that is not an object is not pverep)
        if isinstance(info, dict) and info.get("program") == "pverep":
            return "pverep"
    tail = "; ".join(result.stderr_tail(2)) or f"exit code {result.returncode}"
    raise PverepError(f"cannot tell whether node '{remote.node}' runs pverep: {tail}")


def decide_peer_kind(
    node: str,
    remote: Shell,
    settings: Mapping[str, PeerSetting],
    pverep_argv: Sequence[str] = ("pverep",),
    timeout: float | None = None,
) -> PeerKind:
    """``"pverep"`` or ``"pve"`` (stock) for target ``node``: the override, else the probe."""
    setting = settings.get(node.lower())  # no entry: "auto", the probe decides
    if setting == "stock":
        return "pve"
    if setting == "pverep":
        return "pverep"
    return probe_peer_kind(remote, pverep_argv, timeout)
