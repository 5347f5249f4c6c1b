#!/bin/bash
# Stage 1 of the OpenZFS lab image: a Debian bookworm root filesystem (a directory) with the
# cloud kernel $KVER and OpenZFS from bookworm-backports, whose zfs-dkms postinst builds
# zfs.ko/spl.ko for $KVER (the slow part: 4-10 min of CPU under TCG-free chroot, 2 cores).
# Nothing is installed on the host. mmdebstrap runs in a private mount namespace, so none of
# its mounts can leak onto the host.
#   env: OUT (rootfs dir to create, must not exist), KVER, MIRROR, SECURITY_MIRROR
set -euo pipefail
: "${OUT:?}" "${KVER:?}" "${MIRROR:?}" "${SECURITY_MIRROR:?}"
[ ! -e "$OUT" ] || { echo "build-rootfs: $OUT exists" >&2; exit 1; }

PKGS=linux-image-$KVER,linux-headers-$KVER,kmod,udev,iproute2,iputils-ping,e2fsprogs
PKGS=$PKGS,openssh-server,openssh-client,python3,procps,psmisc,busybox-static,cpio
PKGS=$PKGS,dkms,gcc,make,libc6-dev,file,lsb-release,mbuffer,pv,lz4,zstd,cstream,openssl
PKGS=$PKGS,util-linux,coreutils,bsdextrautils

# Chrooted: OpenZFS from backports (the DKMS build runs in zfs-dkms' postinst). If the
# postinst could not build for $KVER (the running kernel is the host's), build explicitly.
ZFS_HOOK='set -e
export DEBIAN_FRONTEND=noninteractive
echo "zfs-dkms zfs-dkms/note-incompatible-licenses note true" | debconf-set-selections
echo "openzfs-image: installing zfs-dkms + zfsutils-linux (DKMS build, several minutes)"
apt-get install -y --no-install-recommends -t bookworm-backports zfs-dkms zfsutils-linux
if ! dkms status -k "'"$KVER"'" | grep -q installed; then
  dkms install "zfs/$(dpkg-query -W -f="\${Version}" zfs-dkms | cut -d- -f1)" -k "'"$KVER"'"
fi
depmod -a "'"$KVER"'"
test -e "/lib/modules/'"$KVER"'/updates/dkms/zfs.ko"
apt-get clean
rm -rf /var/lib/apt/lists/* /usr/share/doc /usr/share/man'

exec unshare --mount --propagation private \
  mmdebstrap --mode=root --variant=minbase --components=main,contrib \
    --aptopt='APT::Install-Recommends "false"' \
    --include="$PKGS" \
    --chrooted-customize-hook="$ZFS_HOOK" \
    bookworm "$OUT" \
    "deb $MIRROR bookworm main contrib" \
    "deb $MIRROR bookworm-updates main contrib" \
    "deb $SECURITY_MIRROR bookworm-security main contrib" \
    "deb $MIRROR bookworm-backports main contrib"
