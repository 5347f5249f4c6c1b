"""Decide, freeze and thaw for one guest: the engine's freeze/thaw port (engine/ports.py).

Settings: ``[freeze]`` in ``/etc/pverep/pverep.conf``, all optional (seconds, integers >= 1):
``agent-freeze-timeout`` (600: each wait for ``guest-fsfreeze-freeze`` / ``-status``; qemu-server
waits at most six of them), ``agent-thaw-timeout`` (180), ``ct-freeze-timeout`` (30).

Informational lines (a skipped freeze, "still waiting …") go to ``info``, failures to ``warn``;
neither is fatal: the snapshot is then crash-consistent, as with pvesr. Only the job log's
``freeze guest filesystem`` / ``thaw guest filesystem`` lines are the engine's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pverep.config import pveconf
from pverep.errors import PverepError
from pverep.freeze.ct import FREEZE_TIMEOUT, ContainerFreezer
from pverep.freeze.qga import AgentError, GuestAgent
from pverep.freeze.vm import AgentTimeouts, Say, freeze_applicable, fs_freeze, fs_thaw
from pverep.paths import Paths

SECTION = "freeze"
KEYS = ("agent-freeze-timeout", "agent-thaw-timeout", "ct-freeze-timeout")


@dataclass(frozen=True)
class FreezeSettings:
    agent: AgentTimeouts = field(default_factory=AgentTimeouts)
    ct_timeout: float = FREEZE_TIMEOUT

    @classmethod
    def read(cls, path: Path) -> FreezeSettings:
        values = pveconf.section(path, SECTION, KEYS)
        default = cls()
        return cls(
            agent=AgentTimeouts(
                freeze=pveconf.get_int(
                    values, "agent-freeze-timeout", int(default.agent.freeze), path, minimum=1
                ),
                thaw=pveconf.get_int(
                    values, "agent-thaw-timeout", int(default.agent.thaw), path, minimum=1
                ),
            ),
            ct_timeout=pveconf.get_int(
                values, "ct-freeze-timeout", int(default.ct_timeout), path, minimum=1
            ),
        )


class GuestFreezer:
    """Freeze and thaw the guests of this node (``kind`` is the job log's ``VM`` / ``CT``)."""

    def __init__(self, paths: Paths, settings: FreezeSettings, info: Say, warn: Say) -> None:
        self.paths = paths
        self.settings = settings
        self.info = info
        self.warn = warn

    def agent(self, vmid: int) -> GuestAgent:
        return GuestAgent(vmid, self.paths.qga_socket(vmid))

    def container(self, vmid: int) -> ContainerFreezer:
        return ContainerFreezer(vmid, self.paths.ct_cgroup(vmid))

    def needed(self, kind: str, vmid: int, running: int, agent_conf: str | None) -> bool:
        """pvesr's ``freezefs``: a running CT always; a running VM if its agent allows it."""
        if not running:
            return False
        if kind == "CT":
            return True
        return freeze_applicable(agent_conf, self.agent(vmid), self.info, self.warn)

    def freeze(self, kind: str, vmid: int) -> None:
        if kind == "CT":
            container = self.container(vmid)
            try:
                container.freeze(self.settings.ct_timeout)
            except PverepError as err:
                self.warn(str(err))
            container.sync_filesystems(self.warn)
            return
        try:
            fs_freeze(self.agent(vmid), self.settings.agent, self.info)
        except AgentError as err:
            self.warn(str(err))

    def thaw(self, kind: str, vmid: int) -> None:
        if kind == "CT":
            try:
                self.container(vmid).thaw(self.settings.ct_timeout)
            except PverepError as err:
                self.warn(str(err))
            return
        try:
            fs_thaw(self.agent(vmid), self.settings.agent)
        except AgentError as err:
            self.warn(f"guest-fsfreeze-thaw problems - {err}")
