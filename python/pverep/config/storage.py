"""``/etc/pve/storage.cfg`` and volume ids (``<storeid>:<volname>``).

Only what replication needs from PVE::Storage: storage definitions with ``shared``,
``disable``, ``nodes``, ``pool``, ``path``, ``content``; which types are shared by nature and
which can replicate (only ``zfspool``); and each plugin's volume-name grammar, which yields the
volume type (``images``, ``iso``, …) and the owning vmid. All functions are pure.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from pverep.errors import ConfigError, PverepError
from pverep.validate import STORAGE_ID_RE, check_storage_id, parse_volume_id

#: Types PVE forces ``shared 1`` on (PVE::Storage::Plugin @SHARED_STORAGE).
SHARED_TYPES = frozenset(
    {"iscsi", "nfs", "cifs", "rbd", "cephfs", "iscsidirect", "glusterfs", "zfs", "drbd", "pbs"}
)
#: Types whose plugin has the ``replicate`` feature.
REPLICATABLE_TYPES = frozenset({"zfspool"})
#: Types that store images as files under ``<path>/images/<vmid>/`` (PVE::Storage::Plugin).
FILE_TYPES = frozenset({"dir", "nfs", "cifs", "glusterfs", "cephfs", "btrfs"})

_HEADER_RE = re.compile(r"^(\S+):\s*(\S+)\s*$")
_PROPERTY_RE = re.compile(r"^\s+(\S+)(\s+(.*\S))?\s*$")

#: PVE always has a `local` dir storage at /var/lib/vz (added when storage.cfg lacks it).
_DEFAULT_LOCAL = {
    "path": "/var/lib/vz",
    "content": "backup,images,iso,rootdir,snippets,vztmpl",
}


def _bool(value: str | None) -> bool:
    return value not in (None, "", "0", "no", "off", "false")


@dataclass(frozen=True)
class StorageDef:
    """One storage section."""

    storeid: str
    type: str
    properties: Mapping[str, str] = field(default_factory=dict)

    @property
    def shared(self) -> bool:
        return self.type in SHARED_TYPES or _bool(self.properties.get("shared"))

    @property
    def disabled(self) -> bool:
        return _bool(self.properties.get("disable"))

    @property
    def nodes(self) -> frozenset[str] | None:
        raw = self.properties.get("nodes")
        if not raw:
            return None
        return frozenset(n for n in re.split(r"[,;\s]+", raw) if n)

    @property
    def pool(self) -> str | None:
        return self.properties.get("pool")

    @property
    def path(self) -> str | None:
        return self.properties.get("path")

    @property
    def content(self) -> frozenset[str]:
        raw = self.properties.get("content", "")
        return frozenset(c for c in re.split(r"[,;\s]+", raw) if c)

    @property
    def replicatable(self) -> bool:
        return self.type in REPLICATABLE_TYPES

    def available_on(self, node: str) -> bool:
        nodes = self.nodes
        return nodes is None or node in nodes


@dataclass(frozen=True)
class StorageConfig:
    storages: Mapping[str, StorageDef]

    def get(self, storeid: str) -> StorageDef:
        try:
            return self.storages[storeid]
        except KeyError:
            raise PverepError(f"storage '{storeid}' does not exist") from None

    def check_enabled(self, storeid: str, node: str) -> StorageDef:
        """PVE::Storage::storage_check_enabled: exists, not disabled, available on ``node``."""
        scfg = self.get(storeid)
        if scfg.disabled:
            raise PverepError(f"storage '{storeid}' is disabled")
        if not scfg.available_on(node):
            raise PverepError(f"storage '{storeid}' is not available on node '{node}'")
        return scfg

    def is_enabled(self, storeid: str, node: str) -> bool:
        """Exists, enabled and available on ``node`` (raises if it does not exist)."""
        scfg = self.get(storeid)
        return not scfg.disabled and scfg.available_on(node)

    def volume_info(self, volid: str) -> VolumeInfo:
        storeid, volname = parse_volume_id(volid)
        return parse_volname(self.get(storeid), volname)


def parse_storage_cfg(
    text: str, warn: Callable[[str], None] | None = None, filename: str = "storage.cfg"
) -> StorageConfig:
    """Section-config parser for storage.cfg; bad sections/lines are skipped with a warning."""
    storages: dict[str, StorageDef] = {}
    current: tuple[str, str, dict[str, str]] | None = None
    skipping = False

    def _warn(msg: str) -> None:
        if warn is not None:
            warn(msg)

    def _flush() -> None:
        if current is not None:
            stype, sid, props = current
            storages[sid] = StorageDef(sid, stype, props)

    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip("\r")
        if line.lstrip().startswith("#"):
            continue
        if not line.strip():
            _flush()
            current, skipping = None, False
            continue
        if current is None and not skipping:
            m = _HEADER_RE.match(line)
            if not m:
                _warn(f"file {filename} line {lineno} - ignore config line: {line}")
                continue
            stype, sid = m.group(1).lower(), m.group(2)
            if not STORAGE_ID_RE.fullmatch(sid):
                _warn(f"file {filename} line {lineno} (skip section '{sid}'): invalid storage ID")
                skipping = True
                continue
            current = (stype, sid, {})
            continue
        if skipping or current is None:
            continue
        m = _PROPERTY_RE.match(line)
        if not m:
            _warn(f"file {filename} line {lineno} - ignore config line: {line}")
            continue
        key, value = m.group(1), m.group(3)
        props = current[2]
        if value is None:
            value = "1"  # a bare key is a boolean flag (shared, disable, sparse, krbd, …)
        if key in props:
            _warn(f"file {filename} line {lineno} - duplicate attribute '{key}'")
            continue
        props[key] = value
    _flush()

    local = storages.get("local")
    if local is None or local.type != "dir" or (local.path or "/var/lib/vz") != "/var/lib/vz":
        storages["local"] = StorageDef("local", "dir", dict(_DEFAULT_LOCAL))
    return StorageConfig(storages)


def read_storage_cfg(path: str, warn: Callable[[str], None] | None = None) -> StorageConfig:
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        text = ""
    except OSError as err:
        raise ConfigError(f"unable to read {path}: {err.strerror}") from None
    return parse_storage_cfg(text, warn, filename=path)


# --- volume names -----------------------------------------------------------------------------


@dataclass(frozen=True)
class VolumeInfo:
    """PVE::Storage::parse_volname's result."""

    vtype: str
    name: str
    owner: int | None
    basename: str | None = None
    basevmid: int | None = None
    is_base: bool = False
    format: str | None = None


_ZFS_VOLNAME_RE = re.compile(
    r"^(((base|basevol)-(\d+)-\S+)/)?((base|basevol|vm|subvol)-(\d+)-\S+)$"
)
_FILE_NAME_RE = re.compile(r"^((base-)?[^/\s]+\.(raw|qcow2|vmdk|subvol))$")
_BLOCK_VOLNAME_RE = re.compile(r"^(((base|vm)-(\d+)-\S+)/)?((base)?(vm)?-(\d+)-\S+)$")
_BACKUP_OWNER_RE = re.compile(r"^vzdump-(?:openvz|lxc|qemu)-(\d+)-.+")


def _parse_file_name(name: str) -> tuple[str, bool]:
    m = _FILE_NAME_RE.match(name)
    if not m:
        raise PverepError(f"unable to parse volume filename '{name}'")
    return m.group(3), m.group(2) is not None


def _parse_file_volname(volname: str) -> VolumeInfo:
    m = re.match(r"^(\d+)/(\S+)/(\d+)/(\S+)$", volname)
    if m:
        _parse_file_name(m.group(2))
        fmt, is_base = _parse_file_name(m.group(4))
        return VolumeInfo(
            "images", m.group(4), int(m.group(3)), m.group(2), int(m.group(1)), is_base, fmt
        )
    m = re.match(r"^(\d+)/(\S+)$", volname)
    if m:
        fmt, is_base = _parse_file_name(m.group(2))
        return VolumeInfo("images", m.group(2), int(m.group(1)), None, None, is_base, fmt)
    m = re.match(r"^iso/([^/]+\.(?:iso|img))$", volname, re.IGNORECASE)
    if m:
        return VolumeInfo("iso", m.group(1), None, format="raw")
    m = re.match(r"^vztmpl/([^/]+\.(?:tar\.(?:gz|xz|zst|bz2)|tgz|tar))$", volname)
    if m:
        return VolumeInfo("vztmpl", m.group(1), None, format="raw")
    m = re.match(r"^rootdir/(\d+)$", volname)
    if m:
        return VolumeInfo("rootdir", m.group(1), int(m.group(1)))
    m = re.match(r"^backup/([^/]+)$", volname)
    if m:
        owner = _BACKUP_OWNER_RE.match(m.group(1))
        return VolumeInfo("backup", m.group(1), int(owner.group(1)) if owner else None, None)
    m = re.match(r"^(snippets|import)/([^/]+)$", volname)
    if m:
        return VolumeInfo(m.group(1), m.group(2), None, format="raw")
    raise PverepError(f"unable to parse directory volume name '{volname}'")


def parse_volname(storage: StorageDef, volname: str) -> VolumeInfo:
    """The storage plugin's parse_volname: vtype, name, owner vmid, base, format."""
    if storage.type == "zfspool":
        m = _ZFS_VOLNAME_RE.match(volname)
        if not m:
            raise PverepError(f"unable to parse zfs volume name '{volname}'")
        kind = m.group(6)
        return VolumeInfo(
            "images",
            m.group(5),
            int(m.group(7)),
            m.group(2),
            int(m.group(4)) if m.group(4) else None,
            kind in ("base", "basevol"),
            "subvol" if kind in ("subvol", "basevol") else "raw",
        )
    if storage.type in FILE_TYPES:
        return _parse_file_volname(volname)
    if storage.type in ("lvm", "lvmthin", "rbd", "zfs"):
        m = _BLOCK_VOLNAME_RE.match(volname)
        if not m:
            raise PverepError(f"unable to parse {storage.type} volume name '{volname}'")
        return VolumeInfo(
            "images",
            m.group(5),
            int(m.group(8)),
            m.group(2),
            int(m.group(4)) if m.group(4) else None,
            m.group(6) is not None,
            "raw",
        )
    # Other plugins (iscsi LUNs, pbs backups, …): no owner, never replicated.
    return VolumeInfo("images" if storage.type.startswith("iscsi") else "unknown", volname, None)


def zfs_dataset(storage: StorageDef, volname: str) -> str:
    """``<pool>/<dataset>`` of a zfspool volume (the volname's last path part, spec §5.8)."""
    if storage.type != "zfspool" or not storage.pool:
        raise PverepError(f"storage '{storage.storeid}' is not a zfspool storage with a pool")
    return f"{storage.pool}/{parse_volname(storage, volname).name}"


__all__ = [
    "StorageConfig",
    "StorageDef",
    "VolumeInfo",
    "check_storage_id",
    "parse_storage_cfg",
    "parse_volname",
    "parse_volume_id",
    "read_storage_cfg",
    "zfs_dataset",
]
