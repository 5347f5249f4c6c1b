"""The exception hierarchy: every error pverep raises on purpose derives from PverepError.

The CLI turns a PverepError into one line on stderr and a non-zero exit; anything else is a bug.
"""


class PverepError(Exception):
    """Root of all expected pverep errors; str(err) is the one-line user-facing message."""


class ConfigError(PverepError):
    """A configuration file or a value in it is invalid."""


class ValidationError(PverepError):
    """User input (ids, node names, volume ids, options) failed validation."""


class LockError(PverepError):
    """A lock could not be acquired in time."""


class ParameterError(ValidationError):
    """A command parameter is invalid; rendered like PVE's parameter verification error."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"400 Parameter verification failed. {param}: {message}")
        self.param = param
        self.detail = message
