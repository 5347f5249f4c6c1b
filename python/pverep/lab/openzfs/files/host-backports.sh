#!/bin/bash
# Host side of the OpenZFS lab engine: QEMU from Debian bookworm-backports, and what the
# image build and virtiofsd's build need.
# Why backports: this class of machine has qemu-utils 10 from backports preinstalled, which
# Breaks bookworm's qemu-system-common 7.2. QEMU 8+ no longer ships the C virtiofsd and
# bookworm has no `virtiofsd` package, so build-virtiofsd.sh builds the Rust one.
# Nothing ZFS-related is installed on the host (zfsutils-linux Conflicts: zfs-fuse).
# Adds a backports source (same mirror as the host's own bookworm entry) only when none is
# configured; backports have pin priority 100, so nothing else is upgraded from it.
set -euo pipefail
SRC=/etc/apt/sources.list.d/pverep-bookworm-backports.sources
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
command -v cpio >/dev/null || need+=(cpio)
command -v nft >/dev/null || need+=(nftables)
for dev in libseccomp-dev libcap-ng-dev; do   # to build virtiofsd (build-virtiofsd.sh)
  dpkg-query -W -f='${Status}' "$dev" 2>/dev/null | grep -q 'install ok installed' || need+=("$dev")
done
[ ${#need[@]} -gt 0 ] || exit 0
if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
  mirror=$(awk '/^URIs:/{u=$2} /^Suites:/ && / bookworm( |$)/ {print u; exit}' \
             /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
  [ -n "$mirror" ] || { echo "openzfs lab: cannot find the host's Debian bookworm mirror in /etc/apt/sources.list.d/*.sources" >&2; exit 1; }
  printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    "$mirror" > "$SRC.tmp"
  mv "$SRC.tmp" "$SRC"
fi
echo "openzfs lab: installing host packages: ${need[*]}"
apt-get update -qq -o DPkg::Lock::Timeout=600
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=600 \
  --no-install-recommends -t bookworm-backports "${need[@]}"
