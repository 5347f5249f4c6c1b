"""Volume-id level storage operations (PVE::Storage's volume_* functions) for replication.

Resolves ``storeid:volname`` to its storage and runs the zfspool operation; anything that is
not a zfspool storage is refused with pvesr's ``storage '<sid>' is not replicatable``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from pverep import _core
from pverep.config.storage import StorageConfig
from pverep.errors import PverepError
from pverep.storage.zfs import ZfsFlags, ZfsImage, ZfsPool, ZfsRunner, snapshot_list_argv
from pverep.validate import parse_volume_id


class Volumes:
    """Replication's view of the node's storages."""

    def __init__(
        self,
        storage: StorageConfig,
        runner: ZfsRunner,
        *,
        flags: ZfsFlags | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.storage = storage
        self.runner = runner
        self.flags = flags or ZfsFlags()
        self._sleep = sleep
        self._pools: dict[str, ZfsPool] = {}

    def pool(self, storeid: str) -> ZfsPool:
        pool = self._pools.get(storeid)
        if pool is None:
            scfg = self.storage.get(storeid)
            if not scfg.replicatable:
                raise PverepError(f"storage '{storeid}' is not replicatable")
            pool = ZfsPool(scfg, self.runner, flags=self.flags, sleep=self._sleep)
            self._pools[storeid] = pool
        return pool

    def _resolve(self, volid: str) -> tuple[ZfsPool, str]:
        storeid, volname = parse_volume_id(volid)
        return self.pool(storeid), volname

    def snapshot(self, volid: str, snap: str) -> None:
        pool, volname = self._resolve(volid)
        pool.snapshot(volname, snap)

    def snapshot_info(self, volid: str) -> list[_core.SnapshotInfo]:
        pool, volname = self._resolve(volid)
        return pool.snapshot_info(volname)

    def snapshot_infos(self, volids: Sequence[str]) -> dict[str, list[_core.SnapshotInfo]] | None:
        """The snapshots of all ``volids`` from one ``zfs list`` (a job's disks: one call, not
        one per disk), or None when that listing fails (a missing dataset, a storage that is
        not replicatable): the caller then lists volume by volume, which stops at the failing
        volume with its own message, in pvesr's order."""
        if len(volids) < 2:
            return None
        try:
            datasets = {}
            for volid in volids:
                pool, volname = self._resolve(volid)
                datasets[volid] = pool.dataset(volname)
            text = self.runner.run(snapshot_list_argv(*dict.fromkeys(datasets.values())))
        except PverepError:
            return None
        listing = _core.parse_snapshot_list(text)
        return {volid: list(listing.get(ds, [])) for volid, ds in datasets.items()}

    def delete_snapshot(self, volid: str, snap: str) -> None:
        pool, volname = self._resolve(volid)
        pool.delete_snapshot(volname, snap)

    def free(self, volid: str) -> None:
        pool, volname = self._resolve(volid)
        pool.destroy_volume(volname)

    def list_images(self, storeid: str, vmid: int | None = None) -> list[str]:
        """Volids of the images on ``storeid`` (owned by ``vmid``), sorted like vdisk_list;
        linked clones as ``<storeid>:<base>/<name>``, as PVE names them."""
        pool = self.pool(storeid)
        images: list[ZfsImage] = pool.list_images(vmid)
        return sorted((pool.volid(img.volname) for img in images), key=str.lower)
