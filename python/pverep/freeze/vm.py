"""Freezing a VM's filesystems through its QEMU guest agent, with qemu-server's rules.

- ``agent`` in the VM config must be enabled, and its ``freeze-fs`` option (aliases
  ``guest-fsfreeze`` and the deprecated ``freeze-fs-on-backup``) not off (default on);
- the agent must answer ``guest-ping`` (3 s);
- the filesystems must not be frozen already (``guest-fsfreeze-status``).
Otherwise the freeze is skipped with qemu-server's line. The freeze itself waits
``freeze_timeout`` (600 s) for ``guest-fsfreeze-freeze`` and then asks ``guest-fsfreeze-status``
up to 5 more times (each ``freeze_timeout``): one hour in all by default, so a lost command
never blocks the agent for more than one wait. Thaw waits ``thaw_timeout`` (180 s).
Freeze and thaw failures are warnings (the snapshot goes ahead, crash-consistent).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pverep.freeze.qga import AgentError, AgentTimeout, GuestAgent
from pverep.guests import parse_property_string

Say = Callable[[str], None]

PING_TIMEOUT = 3.0
STATUS_TIMEOUT = 5.0
#: How often the status is asked after a freeze that did not answer in time (qemu-server).
STATUS_TRIES = 5
_TRUE = ("1", "yes", "on", "true")
_FALSE = ("0", "no", "off", "false")


@dataclass(frozen=True)
class AgentTimeouts:
    freeze: float = 600.0
    thaw: float = 180.0


def _flag(value: str | None) -> bool | None:
    if value is None:
        return None
    low = value.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError(value)


def should_fs_freeze(agent: str | None, warn: Say) -> bool:
    """The config's ``agent`` property enables the agent and does not turn freezing off."""
    if agent is None:
        return False
    try:
        opts = parse_property_string(agent, "enabled")
        if not _flag(opts.get("enabled", "0")):
            return False
        for key in ("freeze-fs", "guest-fsfreeze", "freeze-fs-on-backup"):
            value = _flag(opts.get(key))
            if value is not None:
                return value
    except ValueError as err:
        warn(f"unable to parse agent options '{agent}' - invalid value '{err}'")
        return False
    return True


def _agent_error(result: Any, what: str) -> str | None:
    """qemu-server's check_agent_error: the text for an error answer, None when fine."""
    if isinstance(result, dict) and isinstance(result.get("error"), dict):
        desc = result["error"].get("desc")
        if desc:
            return f"Agent error: {desc}"
    if result is None:
        return f"Agent error: {what}"
    return None


def freeze_applicable(agent_conf: str | None, agent: GuestAgent, info: Say, warn: Say) -> bool:
    """Whether to freeze this running VM; a skip is said with qemu-server's line."""
    if not should_fs_freeze(agent_conf, warn):
        info("skipping guest filesystem freeze - disabled in VM options")
        return False
    try:
        agent.command("guest-ping", PING_TIMEOUT)
    except AgentError:
        info("skipping guest filesystem freeze - agent configured but not running?")
        return False
    try:
        status = agent.command("guest-fsfreeze-status", STATUS_TIMEOUT)
        problem = _agent_error(status, "unable to check guest filesystem freeze status")
        if problem is not None:
            raise AgentError(problem)
    except AgentError as err:
        warn(f"unable to check guest fs freeze status - {err}")
        return True
    if status == "frozen":
        info("skipping guest filesystem freeze - already frozen")
        return False
    return True


def fs_freeze(agent: GuestAgent, timeouts: AgentTimeouts, info: Say) -> None:
    """``guest-fsfreeze-freeze``; raises AgentError with qemu-server's texts."""
    wait = timeouts.freeze
    try:
        result = agent.command("guest-fsfreeze-freeze", wait)
    except AgentError:
        result = None  # no answer (maybe still freezing in the guest): the status tells
    if isinstance(result, dict) and "error" in result:
        desc = result["error"].get("desc") if isinstance(result["error"], dict) else None
        raise AgentError(f"unable to freeze guest fs - {desc or 'unknown'}")
    if result is not None:
        return
    status: Any = None
    try:
        for i in range(STATUS_TRIES):
            minutes = wait * (STATUS_TRIES - i) / 60
            info(f"still waiting on guest fs freeze - timeout in {minutes:g} minutes")
            try:
                status = agent.command("guest-fsfreeze-status", wait)
            except AgentTimeout:
                continue
            problem = _agent_error(status, "unknown error")
            if problem is not None:
                raise AgentError(problem)
            break
        else:
            raise AgentError(f"timeout after {wait * (STATUS_TRIES + 1) / 60:g} minutes")
    except AgentError as err:
        raise AgentError(f"querying status after freezing guest fs failed - {err}") from None
    if status != "frozen":
        raise AgentError(f"unable to freeze guest fs - unexpected status '{status}'")


def fs_thaw(agent: GuestAgent, timeouts: AgentTimeouts) -> None:
    """``guest-fsfreeze-thaw``; raises AgentError."""
    result = agent.command("guest-fsfreeze-thaw", timeouts.thaw)
    problem = _agent_error(result, "unable to thaw guest filesystem")
    if problem is not None:
        raise AgentError(problem)
