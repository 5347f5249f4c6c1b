"""pverep: storage replication for Proxmox VE clusters, compatible with pvesr."""

from pverep._core import core_version as _core_version

#: One version number: Cargo.toml's, compiled into the extension (pyproject.toml takes it too).
__version__: str = _core_version()
