"""Guest configs (qemu-server / lxc) and which of their volumes replicate (spec §7.1, §7.2).

Pure: parsers take the file text, ``get_replicatable_volumes`` takes a parsed config and the
storage configuration. Error texts are PVE's, word for word.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal

from pverep.config.storage import StorageConfig, StorageDef, VolumeInfo
from pverep.errors import PverepError
from pverep.validate import parse_volume_id

GuestType = Literal["qemu", "lxc"]
GUEST_TYPES: tuple[GuestType, ...] = ("qemu", "lxc")

_SNAPSHOT_HEADER_RE = re.compile(r"^\[([a-z][a-z0-9_\-]+)\]\s*$", re.IGNORECASE)
_QEMU_PENDING_RE = re.compile(r"^\[PENDING\]\s*$", re.IGNORECASE)
_LXC_PENDING_RE = re.compile(r"^\[pve:pending\]\s*$", re.IGNORECASE)
_CLOUDINIT_RE = re.compile(r"^\[special:cloudinit\]\s*$", re.IGNORECASE)
_QEMU_KEY_RE = re.compile(r"^([a-z][a-z_]*\d*):\s*(.+?)\s*$")
_LXC_KEY_RE = re.compile(r"^([a-z][a-z_]*\d*):\s*(\S.*?)\s*$")
_LXC_RAW_RE = re.compile(r"^(lxc\.[a-z0-9_\-.]+)(:|\s*=)\s*(.*?)\s*$")

# Disk keys of qemu-server (ide0-3, sata0-5, scsi0-30, virtio0-15, efidisk0, tpmstate0).
_QEMU_DRIVE_RE = re.compile(
    r"^(ide[0-3]|sata[0-5]|scsi([0-9]|[12][0-9]|30)|virtio([0-9]|1[0-5])|efidisk0|tpmstate0)$"
)
_UNUSED_RE = re.compile(r"^unused(\d+)$")
_LXC_MP_RE = re.compile(r"^(rootfs|mp(\d+))$")


@dataclass
class GuestConfig:
    """A parsed guest config: the current section, ``pending``, and snapshot sections."""

    vmtype: GuestType
    current: dict[str, str] = field(default_factory=dict)
    pending: dict[str, str] = field(default_factory=dict)
    snapshots: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def parent(self) -> str | None:
        """The snapshot the current state derives from (``parent:``)."""
        return self.current.get("parent")

    @property
    def lock(self) -> str | None:
        return self.current.get("lock")


def parse_guest_config(text: str, vmtype: GuestType) -> GuestConfig:
    """PVE::QemuServer::parse_vm_config / PVE::LXC::Config::parse_pct_config (the parts
    replication needs; descriptions and cloud-init sections are skipped)."""
    conf = GuestConfig(vmtype)
    section: dict[str, str] | None = conf.current
    pending_re = _QEMU_PENDING_RE if vmtype == "qemu" else _LXC_PENDING_RE
    key_re = _QEMU_KEY_RE if vmtype == "qemu" else _LXC_KEY_RE
    for raw in text.splitlines():
        line = raw.rstrip("\r")
        if not line.strip():
            continue
        if pending_re.match(line):
            section = conf.pending
            continue
        if _CLOUDINIT_RE.match(line):
            section = None  # cloud-init's shadow copy, not a source of volumes
            continue
        m = _SNAPSHOT_HEADER_RE.match(line)
        if m:
            section = conf.snapshots.setdefault(m.group(1), {})
            continue
        if section is None or line.startswith("#"):
            continue
        if vmtype == "lxc" and _LXC_RAW_RE.match(line):
            continue
        m = key_re.match(line)
        if m:
            section[m.group(1)] = m.group(2)
    return conf


def parse_property_string(value: str, default_key: str) -> dict[str, str]:
    """``a,b=c,…``: the part without ``=`` is ``default_key``."""
    result: dict[str, str] = {}
    for part in value.split(","):
        if not part:
            continue
        key, sep, val = part.partition("=")
        if sep:
            result[key.strip()] = val
        elif default_key not in result:
            result[default_key] = part
    return result


def _bool(value: str | None, default: bool) -> bool:
    if value is None:
        return default
    return value.strip().lower() not in ("0", "no", "off", "false")


# --- qemu -------------------------------------------------------------------------------------


@dataclass
class _VolAttrs:
    cdrom: bool = True
    replicate: bool = False


def _qemu_section_volumes(section: dict[str, str]) -> Iterator[tuple[str, bool, bool]]:
    """(volid, is_cdrom, replicate) for every disk reference in one section."""
    for key, value in section.items():
        if _QEMU_DRIVE_RE.match(key):
            drive = parse_property_string(value, "file")
            volid = drive.get("file")
            if not volid:
                continue
            yield volid, drive.get("media") == "cdrom", _bool(drive.get("replicate"), True)
        elif _UNUSED_RE.match(key) or key == "vmstate":
            volid = parse_property_string(value, "file").get("file")
            if volid:
                yield volid, False, True


def _qemu_volumes(conf: GuestConfig) -> dict[str, _VolAttrs]:
    """PVE::QemuServer::foreach_volid: merge attributes per volid over every section."""
    volumes: dict[str, _VolAttrs] = {}
    sections = [conf.current, conf.pending, *conf.snapshots.values()]
    for section in sections:
        for volid, is_cdrom, replicate in _qemu_section_volumes(section):
            attrs = volumes.setdefault(volid, _VolAttrs())
            attrs.cdrom = attrs.cdrom and is_cdrom
            attrs.replicate = attrs.replicate or replicate
    return volumes


def _qemu_replicatable(
    storecfg: StorageConfig, vmid: int, conf: GuestConfig, cleanup: bool, noerr: bool
) -> set[str]:
    result: set[str] = set()
    for volid, attrs in _qemu_volumes(conf).items():
        if attrs.cdrom:
            continue
        if not cleanup and not attrs.replicate:
            continue
        if volid.startswith("/"):
            if not attrs.replicate or cleanup or noerr:
                continue
            raise PverepError(f"unable to replicate local file/device '{volid}'")
        owned = _owned_local_volume(storecfg, vmid, volid, noerr)
        if owned is None:
            continue
        scfg, info = owned
        if info.vtype != "images":
            if cleanup or noerr:
                continue
            raise PverepError(f"unable to replicate volume '{volid}', type '{info.vtype}'")
        if not scfg.replicatable:
            if cleanup or noerr:
                continue
            raise PverepError(f"missing replicate feature on volume '{volid}'")
        result.add(volid)
    return result


def _owned_local_volume(
    storecfg: StorageConfig, vmid: int, volid: str, noerr: bool
) -> tuple[StorageDef, VolumeInfo] | None:
    """Storage and volume info of ``volid`` if it is a volume of ``vmid`` on unshared storage;
    None for anything else, which both guest types skip silently."""
    parsed = _parse_volid(volid, noerr)
    if parsed is None:
        return None
    scfg = storecfg.get(parsed[0])
    if scfg.shared:
        return None
    info = storecfg.volume_info(volid)
    if not info.owner or info.owner != vmid:
        return None
    return scfg, info


def _parse_volid(volid: str, noerr: bool) -> tuple[str, str] | None:
    try:
        return parse_volume_id(volid)
    except PverepError:
        if noerr:
            return None
        raise


# --- lxc --------------------------------------------------------------------------------------


def _mountpoint_type(volume: str) -> str:
    """PVE::LXC::Config::classify_mountpoint."""
    if volume.startswith("/"):
        return "device" if volume.startswith("/dev/") else "bind"
    return "volume"


def _lxc_mountpoints(section: dict[str, str]) -> Iterator[tuple[str, str, bool]]:
    """(volume, type, replicate) of rootfs and mpN in one section."""
    for key, value in section.items():
        if _LXC_MP_RE.match(key):
            mp = parse_property_string(value, "volume")
            volume = mp.get("volume", "")
            yield volume, _mountpoint_type(volume), _bool(mp.get("replicate"), True)


def _lxc_replicatable(
    storecfg: StorageConfig, vmid: int, conf: GuestConfig, cleanup: bool, noerr: bool
) -> set[str]:
    result: set[str] = set()

    def test(volid: str, mptype: str, replicate: bool) -> None:
        if not volid:
            return
        if mptype != "volume":
            # bind mounts could never have been replicated: skip them even for cleanup
            if not replicate:
                return
            raise PverepError(f"unable to replicate mountpoint type '{mptype}'")
        owned = _owned_local_volume(storecfg, vmid, volid, noerr)
        if owned is None:
            return
        scfg, info = owned
        if info.vtype != "images":
            raise PverepError(f"unable to replicate volume '{volid}', type '{info.vtype}'")
        if not cleanup and not replicate:
            return
        if not scfg.replicatable:
            if cleanup or noerr:
                return
            raise PverepError(f"missing replicate feature on volume '{volid}'")
        result.add(volid)

    for section in [conf.current, *conf.snapshots.values()]:
        for volume, mptype, replicate in _lxc_mountpoints(section):
            test(volume, mptype, replicate)
    for key, value in conf.current.items():
        if key.startswith("unused"):
            test(value, "volume", True)
    return result


_RULES: dict[str, Callable[[StorageConfig, int, GuestConfig, bool, bool], set[str]]] = {
    "qemu": _qemu_replicatable,
    "lxc": _lxc_replicatable,
}


def get_replicatable_volumes(
    storecfg: StorageConfig,
    vmid: int,
    conf: GuestConfig,
    *,
    cleanup: bool = False,
    noerr: bool = False,
) -> list[str]:
    """The guest's replicated volids, sorted as strings (pvesr's ``sorted_volids``).

    ``cleanup``: the job is being removed (also return volumes with ``replicate=0``);
    ``noerr``: skip instead of failing where PVE allows it.
    """
    return sorted(_RULES[conf.vmtype](storecfg, vmid, conf, cleanup, noerr))
