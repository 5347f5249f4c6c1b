"""The OpenZFS guest image: built from Debian packages by the files in ``files/``, cached.

Two stages, each cached under ``/var/cache/pverep/lab-openzfs`` (outside any checkout, shared
by all checkouts of the machine) in a directory named by the hash of its inputs:

* ``rootfs-<hash>``: mmdebstrap + the OpenZFS DKMS build (minutes). Inputs: the build script,
  the kernel version and the mirrors.
* ``image-<hash>``: ``base.img`` (ext4 made with ``mke2fs -d``, no loop mount), ``vmlinuz``,
  ``initrd`` (a tiny busybox initramfs) and the lab's ssh client key. Inputs: the rootfs hash
  and the guest files (``ozinit`` and friends). Seconds.

A stage is built into ``<dir>.partial`` and renamed when complete, under a machine-wide lock,
so a crashed build is never taken for a finished one and two labs never build at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pverep.lab.config import LabError

CACHE_ROOT = Path(os.environ.get("PVEREP_OPENZFS_CACHE", "/var/cache/pverep/lab-openzfs"))
FILES = Path(__file__).resolve().parent / "files"
ROOTFS_SCRIPT = FILES / "build-rootfs.sh"
IMAGE_SCRIPT = FILES / "build-image.sh"
GUEST_FILES = FILES / "guest"
SOURCES_DIR = Path("/etc/apt/sources.list.d")
KERNEL_META = "linux-image-cloud-amd64"
_KVER_RE = re.compile(r"linux-image-(\d+\.\d+\.\d+-\d+-cloud-amd64)\b")


@dataclass(frozen=True)
class Image:
    """A finished image directory."""

    dir: Path
    kver: str

    @property
    def base(self) -> Path:
        return self.dir / "base.img"

    @property
    def kernel(self) -> Path:
        return self.dir / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.dir / "initrd"

    @property
    def ssh_key(self) -> Path:
        return self.dir / "id_ed25519"


def _progress(msg: str) -> None:
    print(f"openzfs image: {msg}", file=sys.stderr, flush=True)


def host_mirrors() -> tuple[str, str]:
    """The Debian and Debian-security mirrors the host's apt uses (deb822 sources)."""
    main = security = ""
    for src in sorted(SOURCES_DIR.glob("*.sources")):
        uri = ""
        for line in src.read_text().splitlines():
            key, _, value = line.partition(":")
            if key == "URIs":
                uri = value.split()[0] if value.split() else ""
            elif key == "Suites" and uri:
                suites = value.split()
                if not security and any(s.endswith("-security") for s in suites):
                    security = uri
                elif not main and "bookworm" in suites:
                    main = uri
    if not main or not security:
        raise LabError(
            f"openzfs image: no bookworm and bookworm-security mirror in {SOURCES_DIR}/*.sources"
        )
    return main, security


def kernel_version() -> str:
    """The ABI of the kernel ``linux-image-cloud-amd64`` points to now (a moving target:
    resolved on the host, and part of the rootfs hash)."""
    forced = os.environ.get("PVEREP_OPENZFS_KVER")
    if forced:
        return forced
    out = subprocess.run(
        ["apt-cache", "depends", KERNEL_META], capture_output=True, text=True, check=False
    ).stdout
    m = _KVER_RE.search(out)
    if not m:
        raise LabError(f"openzfs image: apt-cache cannot resolve {KERNEL_META}")
    return m.group(1)


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(len(p).to_bytes(8, "little"))
        h.update(p)
    return h.hexdigest()[:16]


def rootfs_key(kver: str, mirrors: tuple[str, str]) -> str:
    return _digest(ROOTFS_SCRIPT.read_bytes(), kver.encode(), "\n".join(mirrors).encode())


def image_key(rootfs: str) -> str:
    parts = [rootfs.encode(), IMAGE_SCRIPT.read_bytes()]
    for f in sorted(GUEST_FILES.iterdir()):
        parts += [f.name.encode(), f.read_bytes()]
    return _digest(*parts)


@contextlib.contextmanager
def _build_lock() -> Iterator[None]:
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    with open(CACHE_ROOT / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def _run_stage(name: str, final: Path, argv: list[str], env: dict[str, str]) -> None:
    """Run one build stage into ``final.partial``; rename on success. Output goes to a log
    in the cache; progress lines (one per step of the script) to stderr."""
    partial = final.with_name(final.name + ".partial")
    if partial.exists():
        subprocess.run(["rm", "-rf", "--one-file-system", str(partial)], check=True)
    log = final.with_name(final.name + ".log")
    _progress(f"building {name} in {final} (log: {log})")
    t0 = time.monotonic()
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            argv,
            env={**os.environ, **env, "OUT": str(partial)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            fh.write(line)
            if line.startswith(("openzfs-image:", "I: ", "E: ", "W: ")) or "DKMS" in line:
                _progress(line.rstrip().removeprefix("openzfs-image: ")[:160])
        rc = proc.wait()
    if rc != 0:
        raise LabError(f"openzfs image: {name} build failed (rc {rc}); see {log}")
    partial.rename(final)
    _progress(f"{name} built in {time.monotonic() - t0:.0f} s")


def ensure_image() -> Image:
    """The cached image for the current inputs, built first if missing."""
    kver = kernel_version()
    mirrors = host_mirrors()
    rkey = rootfs_key(kver, mirrors)
    rootfs = CACHE_ROOT / f"rootfs-{rkey}"
    image = CACHE_ROOT / f"image-{image_key(rkey)}"
    if (image / "base.img").is_file():
        return Image(image, kver)
    for tool in ("mmdebstrap", "mke2fs", "cpio", "ssh-keygen"):
        if shutil.which(tool) is None:
            raise LabError(f"openzfs image: {tool} not found (make sysdeps installs it)")
    with _build_lock():
        if not rootfs.is_dir():
            env = {"KVER": kver, "MIRROR": mirrors[0], "SECURITY_MIRROR": mirrors[1]}
            _run_stage("rootfs (mmdebstrap + OpenZFS DKMS)", rootfs, [str(ROOTFS_SCRIPT)], env)
        if not (image / "base.img").is_file():
            env = {"KVER": kver, "ROOTFS": str(rootfs), "GUEST": str(GUEST_FILES)}
            _run_stage("image (ext4 + initrd)", image, [str(IMAGE_SCRIPT)], env)
    return Image(image, kver)


def main() -> None:
    """``python -m pverep.lab.openzfs.image``: build (or find) the image, print its dir."""
    try:
        print(ensure_image().dir)
    except LabError as e:
        print(e, file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
