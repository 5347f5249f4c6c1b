"""Which cluster backend to use and how to reach the Proxmox API.

Sources, later ones winning: ``/etc/pverep/pverep.conf`` (section ``[api]``), the ``PVEREP_API*``
environment, CLI options. Secrets (token value, password) are never taken from argv or the
environment: only a *path* to a file, which must be a regular file of the current user that
nobody else can read (mode 0600 or stricter). ``ApiSettings.__repr__`` never shows a secret.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path

from pverep.config import pveconf
from pverep.errors import ConfigError

BACKENDS = ("files", "https", "local", "openssh")
DEFAULT_TIMEOUT = 30.0
#: PVE token ids look like ``user@realm!tokenname``.
TOKEN_ID_RE = re.compile(
    r"^(?P<user>[^\s!@:]+@[A-Za-z0-9.\-_]+)!(?P<name>[A-Za-z][A-Za-z0-9.\-_]+)$"
)
USER_RE = re.compile(r"^[^\s!@:]+@[A-Za-z0-9.\-_]+$")
FINGERPRINT_RE = re.compile(r"^([0-9A-Fa-f]{2}:){31}[0-9A-Fa-f]{2}$")

# config-file key / environment variable for each field
_ENV = {
    "backend": "PVEREP_API_BACKEND",
    "host": "PVEREP_API",
    "token": "PVEREP_API_TOKEN",
    "user": "PVEREP_API_USER",
    "secret_file": "PVEREP_API_SECRET_FILE",
    "ca_file": "PVEREP_API_CA_FILE",
    "fingerprint": "PVEREP_API_FINGERPRINT",
    "verify": "PVEREP_API_VERIFY",
    "timeout": "PVEREP_API_TIMEOUT",
    "ssh_user": "PVEREP_API_SSH_USER",
    "ssh_port": "PVEREP_API_SSH_PORT",
    "identity_file": "PVEREP_API_IDENTITY_FILE",
}


@dataclass(frozen=True)
class ApiSettings:
    """Everything needed to open a Cluster backend; holds no secret, only its file's path."""

    backend: str = "files"
    host: str | None = None  # "pve1", "pve1:8006", "https://pve1:8006", "[::1]:8006"
    token: str | None = None  # "user@realm!name" — the secret is in secret_file
    user: str | None = None  # for password login ("root@pam")
    secret_file: str | None = None
    ca_file: str | None = None
    fingerprint: str | None = None  # SHA-256 of the server certificate, PVE's "AA:BB:…" form
    verify: bool = True
    timeout: float = DEFAULT_TIMEOUT
    ssh_user: str = "root"
    ssh_port: int = 22
    identity_file: str | None = None

    @property
    def host_port(self) -> str | None:
        """``host[:port]`` for proxmoxer (scheme and path stripped)."""
        if self.host is None:
            return None
        h = self.host
        if "://" in h:
            scheme, h = h.split("://", 1)
            if scheme != "https":
                raise ConfigError(f"API endpoint '{self.host}': only https is supported")
        return h.split("/", 1)[0]

    def token_parts(self) -> tuple[str, str]:
        """``(user, token name)`` from ``token``."""
        m = TOKEN_ID_RE.match(self.token or "")
        if not m:
            raise ConfigError(
                f"invalid API token id '{self.token}' (expected user@realm!tokenname)"
            )
        return m["user"], m["name"]

    def validate(self) -> ApiSettings:
        """Reject impossible combinations with one clear line; returns self."""
        if self.backend not in BACKENDS:
            raise ConfigError(
                f"unknown API backend '{self.backend}' (choose {', '.join(BACKENDS)})"
            )
        if self.timeout <= 0:
            raise ConfigError(f"API timeout must be positive, got {self.timeout}")
        if self.backend == "https":
            if not self.host_port:
                raise ConfigError("the https API backend needs an endpoint (--api HOST[:PORT])")
            if self.token:
                self.token_parts()
            elif self.user:
                if not USER_RE.match(self.user):
                    raise ConfigError(f"invalid API user '{self.user}' (expected user@realm)")
            else:
                raise ConfigError("the https API backend needs --api-token or --api-user")
            if not self.secret_file:
                raise ConfigError(
                    "the https API backend needs --api-secret-file (token value or password)"
                )
            if self.fingerprint and not FINGERPRINT_RE.match(self.fingerprint):
                raise ConfigError(
                    f"invalid certificate fingerprint '{self.fingerprint}' "
                    "(expected 32 hex bytes separated by ':')"
                )
            if self.fingerprint and self.ca_file:
                raise ConfigError("give either a CA file or a fingerprint, not both")
            if self.fingerprint and not self.token:
                # proxmoxer logs in with a plain requests.post that we cannot pin.
                raise ConfigError(
                    "certificate fingerprint pinning needs token auth; "
                    "use a CA file for password login"
                )
        if self.backend == "openssh" and not self.host_port:
            raise ConfigError("the openssh API backend needs a host (--api HOST)")
        return self

    def read_secret(self) -> str:
        """The token value or password from ``secret_file``, after checking its permissions."""
        if not self.secret_file:
            raise ConfigError("no API secret file configured")
        return read_secret_file(Path(self.secret_file))


def read_secret_file(path: Path) -> str:
    """First line of a 0600 file owned by us; refuses anything others could read or swap."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as err:
        raise ConfigError(f"cannot open API secret file '{path}': {err.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"API secret file '{path}' is not a regular file")
        if st.st_mode & 0o077:
            raise ConfigError(
                f"API secret file '{path}' has mode {stat.S_IMODE(st.st_mode):04o}; "
                "it must not be accessible by group or others (chmod 600)"
            )
        if st.st_uid != os.geteuid():
            raise ConfigError(f"API secret file '{path}' is not owned by the current user")
        data = os.read(fd, 65536)
    finally:
        os.close(fd)
    lines = data.decode("utf-8", "replace").splitlines()
    secret = lines[0].strip() if lines else ""
    if not secret:
        raise ConfigError(f"API secret file '{path}' is empty")
    return secret


def _coerce(name: str, raw: str, origin: str) -> object:
    raw = raw.strip()
    try:
        if name == "verify":
            low = raw.lower()
            if low in ("1", "yes", "on", "true"):
                return True
            if low in ("0", "no", "off", "false"):
                return False
            raise ValueError(raw)
        if name == "timeout":
            return float(raw)
        if name == "ssh_port":
            return int(raw)
    except ValueError:
        raise ConfigError(f"{origin}: invalid value '{raw}' for '{name}'") from None
    return raw or None


def load_file(path: Path) -> dict[str, object]:
    """Values of the ``[api]`` section of pverep.conf (missing file = no values)."""
    parser = pveconf.read(path)
    if not parser.has_section("api"):
        return {}
    known = {f.name for f in fields(ApiSettings)}
    out: dict[str, object] = {}
    for key, raw in parser.items("api"):
        if key in ("password", "token_value", "secret"):
            raise ConfigError(f"{path}: put secrets in a 0600 file and name it in 'secret_file'")
        if key not in known:
            raise ConfigError(f"{path}: unknown key '{key}' in section [api]")
        out[key] = _coerce(key, raw, str(path))
    return out


def load_env(env: Mapping[str, str]) -> dict[str, object]:
    """Values from ``PVEREP_API*`` variables (empty ones are ignored)."""
    out: dict[str, object] = {}
    for key, var in _ENV.items():
        if env.get(var):
            out[key] = _coerce(key, env[var], var)
    return out


def resolve(
    conf_file: Path,
    env: Mapping[str, str],
    cli: Mapping[str, object | None],
) -> ApiSettings:
    """Merge file < environment < CLI (``None`` CLI values mean "not given") and validate.

    An endpoint given without a backend implies ``https``.
    """
    merged: dict[str, object] = {}
    merged.update(load_file(conf_file))
    merged.update(load_env(env))
    merged.update({k: v for k, v in cli.items() if v is not None})
    if merged.get("host") and merged.get("backend", "files") == "files":
        merged["backend"] = "https"
    settings = replace(ApiSettings(), **merged)  # type: ignore[arg-type]
    return settings.validate()
