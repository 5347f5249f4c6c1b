"""The zfspool plugin: pure argv builders (spec §5.8) and the operations that run them.

Every ``zfs`` call goes through ``ZfsRunner``: it logs the argv, keeps a bounded stderr tail,
applies the spec's timeout (10 s for helper calls, none for send/recv) and turns any failure
into ``ZfsError("zfs error: <last stderr line>")`` as PVE's ``zfs_request`` does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pverep import _core
from pverep.config.storage import StorageDef, parse_volname
from pverep.errors import PverepError, ValidationError, VolumeMissingError
from pverep.storage.streamform import ImportMode, StreamForm
from pverep.storage.zfscaps import ZfsCaps
from pverep.transport import streamend
from pverep.transport.base import DEVNULL, PIPE, CommandError, LineSink, Process, Shell
from pverep.validate import check_resume_token

log = logging.getLogger(__name__)

ZFS = "zfs"
#: Timeout of zfs helper calls (snapshot, destroy, list, get, set) outside worker tasks.
HELPER_TIMEOUT = 10.0
#: Volume destroy retries on "dataset is busy" (ZFSPoolPlugin::zfs_delete_zvol).
DESTROY_TRIES = 6
#: zfs send -U prints this per dataset; pvesm suppresses it.
_SEND_NOISE = "WARNING: no-preserve-encryption flag set, sending dataset"
#: Image names the plugin lists (everything else in the pool is ignored).
IMAGE_NAME_RE = r"^(vm|base|subvol|basevol)-(\d+)-(\S+)$"
#: The snapshot of a template's disk that linked clones are made from (ZFSPoolPlugin).
BASE_SNAPSHOT = "__base__"


class ZfsError(PverepError):
    """A zfs command failed; str() is ``zfs error: <last stderr line>``."""


class ZfsDatasetMissing(ZfsError, VolumeMissingError):
    """zfs said ``dataset does not exist`` for the volume's own dataset."""


# --- pure argv builders -----------------------------------------------------------------------


def snapshot_argv(ds: str, snap: str) -> list[str]:
    return [ZFS, "snapshot", f"{ds}@{snap}"]


def get_refquota_argv(ds: str) -> list[str]:
    return [ZFS, "get", "-o", "value", "-Hp", "refquota", ds]


def set_snapshot_refquota_argv(ds: str, snap: str, value: str) -> list[str]:
    return [ZFS, "set", f"pve-storage:refquota={value}", f"{ds}@{snap}"]


def snapshot_list_argv(*datasets: str) -> list[str]:
    """Spec §5.8 lists ``name,guid,creation``; createtxg is added because the Rust parser (and
    the newest-common-base rule) orders by it. The command is local, not a wire format.
    Several datasets: one call lists them all (a job's disks)."""
    return [ZFS, "list", "-Hp", "-r", "-t", "snapshot", "-o", "name,guid,createtxg,creation",
            *datasets]  # fmt: skip


def destroy_snapshot_argv(ds: str, snap: str) -> list[str]:
    return [ZFS, "destroy", f"{ds}@{snap}"]


def destroy_volume_argv(ds: str) -> list[str]:
    return [ZFS, "destroy", "-r", ds]


def list_images_argv(pool: str) -> list[str]:
    return [
        ZFS, "list", "-o", "name,volsize,origin,type,refquota",
        "-t", "volume,filesystem", "-d1", "-Hp", pool,
    ]  # fmt: skip


def send_argv(
    ds: str,
    snapshot: str,
    base: str | None = None,
    *,
    with_snapshots: bool = True,
    no_preserve_encryption: bool = False,
    form: StreamForm | None = None,
) -> list[str]:
    """``zfs send -Rpv [-I <base>] -- <ds>@<snapshot>`` (``-RpvU`` on zfsutils ≥ 2.4.1-pve2);
    without -R for a resumable form (``-pv``, raw ``-pvw``)."""
    if form is None:
        form = StreamForm(no_preserve_encryption=no_preserve_encryption)
    if form.replication:
        flags = "-RpvU" if form.no_preserve_encryption else "-Rpv"
    else:
        flags = "-pvw" if form.raw else "-pv"
    argv = [ZFS, "send", flags]
    if base is not None:
        argv += ["-I" if with_snapshots else "-i", base]
    return [*argv, "--", f"{ds}@{snapshot}"]


def resume_send_argv(token: str, *, dry_run: bool = False) -> list[str]:
    """``zfs send -v -t <token>`` (continues a partial receive); ``-nvP``: only check and
    estimate what is left."""
    return [ZFS, "send", "-nvP" if dry_run else "-v", "-t", check_resume_token(token)]


def recv_argv(ds: str, *, exclude_encryption: bool = False, resumable: bool = False) -> list[str]:
    """``zfs recv -F [-s] [-x encryption] -- <ds>``."""
    argv = [ZFS, "recv", "-F"]
    if resumable:
        argv.append("-s")
    if exclude_encryption:
        argv += ["-x", "encryption"]
    return [*argv, "--", ds]


def recv_abort_argv(ds: str) -> list[str]:
    """``zfs recv -A -- <ds>``: discard a partial receive's saved state."""
    return [ZFS, "recv", "-A", "--", ds]


def get_value_argv(prop: str, ds: str) -> list[str]:
    return [ZFS, "get", "-Hp", "-o", "value", prop, ds]


def exists_argv(name: str) -> list[str]:
    return [ZFS, "get", "-H", "name", name]


def rollback_argv(ds: str, snap: str) -> list[str]:
    return [ZFS, "rollback", "-r", "--", f"{ds}@{snap}"]


def destroy_after_failed_import_argv(ds: str) -> list[str]:
    return [ZFS, "destroy", "-r", "--", ds]


# --- pure parsers -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ZfsImage:
    """One entry of ``list_images``."""

    name: str  # dataset name below the pool, e.g. subvol-100-disk-0
    owner: int
    size: int
    format: str  # raw (zvol) | subvol (filesystem)
    origin: str | None
    #: The volume name PVE uses: ``<base>/<name>`` for a linked clone of ``<base>@__base__``
    #: in the same pool (that is the volid in the clone's guest config), else ``name``.
    volname: str


def clone_volname(name: str, origin: str | None, pool: str) -> str:
    """ZFSPoolPlugin::list_images' naming: a dataset cloned from ``<pool>/<base>@__base__``
    is ``<base>/<name>``; any other origin (a clone of some other snapshot) is plain ``name``."""
    if origin is None:
        return name
    parent, sep, base_snap = origin.rpartition("@")
    if not sep or base_snap != BASE_SNAPSHOT:
        return name
    pool_part, sep, base = parent.rpartition("/")
    if not sep or pool_part != pool or not base or any(c.isspace() for c in base):
        return name
    return f"{base}/{name}"


def parse_image_list(text: str, pool: str) -> list[ZfsImage]:
    """ZFSPoolPlugin::zfs_parse_zvol_list: direct children of ``pool`` named like images."""
    import re

    name_re = re.compile(IMAGE_NAME_RE)
    images: list[ZfsImage] = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 5:
            continue
        dataset, volsize, origin, dtype, refquota = parts[:5]
        if dtype not in ("volume", "filesystem"):
            continue
        parent, sep, name = dataset.rpartition("/")
        if not sep or parent != pool:
            continue
        m = name_re.match(name)
        if not m:
            continue
        if dtype == "filesystem":
            size = _int(refquota)  # "none" and "-" (no quota) are 0, as is anything odd
            fmt = "subvol"
        else:
            size, fmt = _int(volsize), "raw"
        source = None if origin == "-" else origin
        images.append(
            ZfsImage(name, int(m.group(2)), size, fmt, source, clone_volname(name, source, pool))
        )
    return images


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return 0


# --- the one wrapper --------------------------------------------------------------------------


class ZfsRunner:
    """Runs zfs argv lists through a Shell with logging, timeouts and PVE's error texts."""

    def __init__(self, shell: Shell, *, timeout: float | None = HELPER_TIMEOUT) -> None:
        self.shell = shell
        self.timeout = timeout

    @staticmethod
    def _error(err: CommandError) -> ZfsError:
        last = err.last_stderr_line
        return ZfsError(f"zfs error: {last if last is not None else err}")

    def run(self, argv: Sequence[str], *, timeout: float | None = -1.0) -> str:
        """Run a helper call and return its stdout. ``timeout=-1`` means the runner default."""
        limit = self.timeout if timeout == -1.0 else timeout
        log.debug("zfs on %s: %s", self.shell.node, list(argv))
        started = time.monotonic()
        try:
            result = self.shell.run(argv, timeout=limit).check()
        except CommandError as err:
            log.debug("zfs failed after %.3fs: %s", time.monotonic() - started, err.stderr_tail)
            raise self._error(err) from None
        log.debug("zfs done in %.3fs", time.monotonic() - started)
        return result.stdout_text

    def succeeds(self, argv: Sequence[str]) -> bool:
        """Run quietly; True on exit 0 (PVE's ``noerr => 1, quiet => 1``)."""
        log.debug("zfs on %s: %s", self.shell.node, list(argv))
        try:
            return self.shell.run(argv, timeout=self.timeout).returncode == 0
        except CommandError:
            return False

    def spawn(
        self,
        argv: Sequence[str],
        *,
        stdin: int = DEVNULL,
        stdout: int = DEVNULL,
        on_stderr: LineSink | None = None,
        new_group: bool = False,
    ) -> Process:
        """Start a stream command (send/recv): no timeout; stderr tail kept by the Process."""
        log.debug("zfs stream on %s: %s", self.shell.node, list(argv))
        return self.shell.spawn(
            argv, stdin=stdin, stdout=stdout, on_stderr=on_stderr, new_group=new_group
        )

    def finish(self, proc: Process) -> None:
        """Wait for a stream command; ZfsError with its last stderr line on failure."""
        try:
            proc.check()
        except CommandError as err:
            raise self._error(err) from None


# --- the plugin -------------------------------------------------------------------------------


def _filter_send_noise(sink: LineSink | None) -> LineSink | None:
    if sink is None:
        return None

    def forward(line: str) -> None:
        if not line.startswith(_SEND_NOISE):
            sink(line)

    return forward


@dataclass(frozen=True)
class ZfsFlags:
    """Which zfs dialect the node speaks. ``encryption_aware`` = pve-storage ≥ c705a2c
    (``send -RpvU`` / ``recv -x encryption``, zfsutils ≥ 2.4.1-pve2): asked from the tool
    (``from_caps``: its ``send`` has ``-U``); zfs-fuse and other OpenZFS builds have it off.
    ``caps`` is everything else the tool said (storage/zfscaps.py)."""

    encryption_aware: bool = False
    caps: ZfsCaps = field(default_factory=ZfsCaps)

    @classmethod
    def from_caps(cls, caps: ZfsCaps) -> ZfsFlags:
        return cls(encryption_aware=caps.send_no_preserve_encryption, caps=caps)


class ZfsPool:
    """One zfspool storage on the node ``runner.shell`` runs on."""

    def __init__(
        self,
        storage: StorageDef,
        runner: ZfsRunner,
        *,
        flags: ZfsFlags | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if storage.type != "zfspool" or not storage.pool:
            raise PverepError(f"storage '{storage.storeid}' is not replicatable")
        self.storage = storage
        self.pool = storage.pool
        self.runner = runner
        self.flags = flags or ZfsFlags()
        self._sleep = sleep

    def dataset(self, volname: str) -> str:
        return f"{self.pool}/{parse_volname(self.storage, volname).name}"

    def volid(self, name: str) -> str:
        return f"{self.storage.storeid}:{name}"

    # snapshots
    def snapshot(self, volname: str, snap: str) -> None:
        """``zfs snapshot``; container subvols also record their refquota on the snapshot."""
        ds = self.dataset(volname)
        self.runner.run(snapshot_argv(ds, snap))
        if parse_volname(self.storage, volname).format == "subvol":
            value = self.runner.run(get_refquota_argv(ds)).strip()
            self.runner.run(set_snapshot_refquota_argv(ds, snap, value))

    def snapshot_info(self, volname: str) -> list[_core.SnapshotInfo]:
        """Snapshots of the volume's own dataset, in zfs list (creation) order."""
        ds = self.dataset(volname)
        try:
            text = self.runner.run(snapshot_list_argv(ds))
        except ZfsError as err:
            if "dataset does not exist" in str(err):
                raise ZfsDatasetMissing(str(err)) from None
            raise
        return list(_core.parse_snapshot_list(text).get(ds, []))

    def delete_snapshot(self, volname: str, snap: str) -> None:
        self.runner.run(destroy_snapshot_argv(self.dataset(volname), snap))

    # volumes
    def destroy_volume(self, volname: str) -> None:
        """``zfs destroy -r``: retried on "dataset is busy", "does not exist" counts as done."""
        argv = destroy_volume_argv(self.dataset(volname))
        err: ZfsError | None = None  # pragma: no mutate (always set before it is read)
        for attempt in range(DESTROY_TRIES):
            try:
                self.runner.run(argv)
                return
            except ZfsError as e:
                err = e
                text = str(e)
                if "dataset does not exist" in text:
                    return
                if "dataset is busy" not in text:
                    raise
                if attempt + 1 < DESTROY_TRIES:
                    self._sleep(1.0)
        assert err is not None
        raise err

    def list_images(self, vmid: int | None = None) -> list[ZfsImage]:
        images = parse_image_list(self.runner.run(list_images_argv(self.pool)), self.pool)
        return [img for img in images if vmid is None or img.owner == vmid]

    # streams
    def export(
        self,
        volname: str,
        snapshot: str | None,
        base: str | None = None,
        *,
        with_snapshots: bool = True,
        stdout: int,
        on_stderr: LineSink | None = None,
    ) -> Process:
        """Start ``zfs send`` writing straight into ``stdout`` (a pipe, a file or a socket)."""
        if snapshot is None:
            raise PverepError("PVE::Storage::ZFSPoolPlugin storage can only export snapshots")
        argv = send_argv(
            self.dataset(volname),
            snapshot,
            base,
            with_snapshots=with_snapshots,
            no_preserve_encryption=self.flags.encryption_aware,
        )
        return self.runner.spawn(argv, stdout=stdout, on_stderr=_filter_send_noise(on_stderr))

    def check_import(
        self,
        volname: str,
        base: str | None,
        allow_rename: bool = False,
        mode: ImportMode | None = None,
    ) -> None:
        """The plugin's pre-checks: the base must exist; without a base the volume must not,
        unless the stream continues the partial receive that created it. A partial receive
        the source gave up on is discarded first (``zfs recv -A``)."""
        mode = mode or ImportMode()
        ds = self.dataset(volname)
        if mode.discard_partial and self.abort_partial(volname):
            log.info("discarded the partial receive of '%s'", ds)
        if base is not None:
            if not self.runner.succeeds(exists_argv(f"{ds}@{base}")):
                raise PverepError(f"base snapshot '{ds}@{base}' doesn't exist")
        elif self.runner.succeeds(exists_argv(ds)):
            if mode.resuming and self.resume_token(volname) is not None:
                return
            if not allow_rename:
                raise PverepError(f"volume '{ds}' already exists")
            raise PverepError(
                f"volume '{ds}' already exists - importing under a new name is not supported"
            )
        if mode.resuming and self.resume_token(volname) is None:
            raise PverepError(f"volume '{ds}' has no partial receive to resume")

    # partial receives (zfs recv -s) and encryption
    def resume_token(self, volname: str) -> str | None:
        """The volume's ``receive_resume_token`` (None: no partial state, or no such zfs)."""
        if not self.flags.caps.resume_target:
            return None
        try:
            value = self.runner.run(get_value_argv("receive_resume_token", self.dataset(volname)))
        except ZfsError:
            return None
        token = value.strip()
        if token in ("", "-"):
            return None
        try:
            return check_resume_token(token)
        except ValidationError:  # never seen from zfs; then it is not ours to pass on
            log.warning("ignoring an unexpected receive_resume_token on %s", volname)
            return None

    def abort_partial(self, volname: str) -> bool:
        """``zfs recv -A``: True if partial state was discarded."""
        if not self.flags.caps.recv_abort or self.resume_token(volname) is None:
            return False
        self.runner.run(recv_abort_argv(self.dataset(volname)), timeout=None)
        return True

    def encryption(self, ds: str) -> str:
        """The ``encryption`` property (``off`` where zfs knows no encryption at all)."""
        if not self.flags.caps.send_raw:
            return "off"  # a zfs without raw sends predates native encryption (zfs-fuse)
        try:
            return self.runner.run(get_value_argv("encryption", ds)).strip() or "off"
        except ZfsError:
            return "off"

    def is_encrypted(self, volname: str) -> bool:
        return self.encryption(self.dataset(volname)) not in ("off", "-")

    def _prune(self, ds: str, base: str | None, names: Sequence[str]) -> None:
        """Destroy snapshots the source no longer has (what ``recv -F`` of an ``-R -I`` stream
        does); never the base of this very stream."""
        listing = _core.parse_snapshot_list(self.runner.run(snapshot_list_argv(ds)))
        present = {info.name for info in listing.get(ds, [])}
        for name in names:
            if name == base or name not in present:
                continue
            log.info("removing snapshot '%s@%s' (gone on the source)", ds, name)
            self.runner.run(destroy_snapshot_argv(ds, name))

    def import_(
        self,
        volname: str,
        stdin: int,
        base: str | None = None,
        *,
        allow_rename: bool = False,  # pragma: no mutate (check_import's; unused here)
        on_stderr: LineSink | None = None,
        stall_timeout: float | None = None,
        on_receiver: Callable[[int], None] | None = None,
        mode: ImportMode | None = None,
    ) -> str:
        """Receive a stream from ``stdin`` (fd); returns the volid. On failure the volume is
        rolled back to ``base`` (or destroyed when it was new) and the error re-raised.
        Call ``check_import`` first (before the stream endpoint is opened).

        The bytes go through ``_core.Pump`` rather than straight into ``zfs recv``: its stall
        watchdog aborts a receive whose sender vanished without closing the connection
        (``stall_timeout`` s without a byte), and ``zfs recv`` reads a pipe only this process
        writes, so when this process dies the receive sees end of stream instead of waiting
        on a peer that may never come back. ``zfs recv`` leads a process group of its own
        (``on_receiver`` gets its pid) so a superseding import can stop exactly it."""
        mode = mode or ImportMode()
        ds = self.dataset(volname)
        if mode.prune:
            self._prune(ds, base, mode.prune)
        parent_encrypted = self.encryption(self.pool) not in ("off", "-")
        # a raw stream keeps the source's encryption: never strip it (pvesm's -x is for the
        # non-raw -RpvU stream, which then takes the parent's encryption)
        exclude = not mode.raw and (
            self.flags.encryption_aware or (parent_encrypted and self.flags.caps.recv_exclude)
        )
        if parent_encrypted and not mode.raw and not exclude:
            raise PverepError(
                f"'{self.pool}' is encrypted and this zfs cannot receive '{ds}' as an "
                "encrypted child (no zfs recv -x)"
            )
        proc = self.runner.spawn(
            recv_argv(ds, exclude_encryption=exclude, resumable=mode.resumable),
            stdin=PIPE,
            on_stderr=on_stderr,
            new_group=True,
        )
        assert proc.stdin is not None
        stalled: _core.StallError | None = None
        pump_error: _core.PumpError | None = None
        # bytes zfs recv left in its pipe when it stopped reading (read only if set below)
        unread = 0  # pragma: no mutate
        try:
            if on_receiver is not None:
                on_receiver(proc.pid)
            _core.Pump(stdin, proc.stdin.fileno(), stall_timeout=stall_timeout).run()
        except _core.StallError as err:
            stalled = err
            proc.kill()  # nothing arrives: abort the receive now, not at end of stream
        except _core.PumpError as err:
            # EPIPE: zfs recv stopped reading - because it failed (its error says more) or
            # because it is done and the end of the input had not reached the pump yet.
            pump_error = err
            if streamend.receiver_closed(err):
                unread = streamend.unread_in_pipe(proc.stdin.fileno())
        except BaseException:
            proc.kill()
            raise
        finally:
            proc.stdin.close()
        failure: ZfsError | None = None
        try:
            self.runner.finish(proc)
        except ZfsError as err:
            failure = err
        if stalled is not None:
            failure = ZfsError(f"import of '{ds}' stalled - {stalled}")
        elif failure is None and pump_error is not None:
            failure = self._early_end_failure(ds, pump_error, unread, stdin, stall_timeout)
        if failure is None and parent_encrypted and base is None:
            failure = self._unencrypted_replica(ds)
        if failure is not None:
            if mode.resumable and self.resume_token(volname) is not None:
                kept = f"keeping the partial receive of '{ds}' to resume it"
                log.info("%s", kept)
                if on_stderr is not None:  # the source's job log shows the importer's stderr
                    on_stderr(kept)
            else:
                self._cleanup_failed_import(ds, base)
            raise failure
        return self.volid(parse_volname(self.storage, volname).name)

    def _unencrypted_replica(self, ds: str) -> ZfsError | None:
        """A new replica under an encrypted parent must be encrypted: never leave a plain
        copy of a guest's disk where the admin expects encryption at rest."""
        if self.encryption(ds) not in ("off", "-"):
            return None
        return ZfsError(f"refusing an unencrypted replica '{ds}' under encrypted '{self.pool}'")

    @staticmethod
    def _early_end_failure(
        ds: str,
        pump_error: _core.PumpError,
        unread: int,
        stdin: int,
        stall_timeout: float | None,
    ) -> ZfsError | None:
        """zfs recv exited 0 but the pump failed: None if zfs recv took the whole input
        (it validated the stream up to its END record, nothing was left in its pipe and the
        input ends right there), else the failure."""
        if not streamend.receiver_closed(pump_error):
            return ZfsError(f"import of '{ds}' failed - {pump_error}")
        lost = streamend.loss_after_receiver_closed(unread, stdin, stall_timeout)
        if lost is None:
            log.debug("zfs recv of %s finished before its input's end arrived", ds)
            return None
        return ZfsError(f"import of '{ds}' failed - {lost}")

    def _cleanup_failed_import(self, ds: str, base: str | None) -> None:
        cleanup = rollback_argv(ds, base) if base else destroy_after_failed_import_argv(ds)
        try:
            self.runner.run(cleanup, timeout=None)
        except ZfsError as cleanup_err:
            log.warning("cleanup after failed import: %s", cleanup_err)


def send_estimate_argv(dataset: str, base: str | None) -> list[str]:
    """Read-only size estimate of a send of ``dataset`` as it is now: bytes written since
    ``base`` (an incremental), or everything it references (a full send). A dry run has no
    new snapshot to hand to ``zfs send -nvP``; these properties are what that would report."""
    prop = f"written@{base}" if base is not None else "referenced"
    return ["zfs", "get", "-Hp", "-o", "value", prop, dataset]
