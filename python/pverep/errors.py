"""The exception hierarchy: every error pverep raises on purpose derives from PverepError.

PverepError lives in the Rust extension so that the core's exceptions (CoreError and below)
derive from it too; this module re-exports them. The CLI turns a PverepError into one line on
stderr and a non-zero exit; anything else is a bug.
"""

from pverep._core import (
    CancelledError,
    CoreError,
    InvalidArgumentError,
    PumpError,
    PverepError,
    SnapshotParseError,
    StallError,
)

__all__ = [
    "CancelledError",
    "ConfigError",
    "CoreError",
    "InvalidArgumentError",
    "LockError",
    "ParameterError",
    "PumpError",
    "PverepError",
    "SnapshotParseError",
    "StallError",
    "ValidationError",
    "VolumeMissingError",
]


class ConfigError(PverepError):
    """A configuration file or a value in it is invalid."""


class ValidationError(PverepError):
    """User input (ids, node names, volume ids, options) failed validation."""


class VolumeMissingError(PverepError):
    """A volume's dataset does not exist on this node (e.g. a guest config moved by hand)."""


class LockError(PverepError):
    """A lock could not be acquired in time."""


class ParameterError(ValidationError):
    """A command parameter is invalid; rendered like PVE's parameter verification error."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"400 Parameter verification failed. {param}: {message}")
        self.param = param
        self.detail = message
