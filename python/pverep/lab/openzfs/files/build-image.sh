#!/bin/bash
# Stage 2 of the OpenZFS lab image (seconds): copy the rootfs, add the guest files, make
#   $OUT/base.img   raw ext4 (mke2fs -d: no loop mount), the read-only base of every node's overlay
#   $OUT/vmlinuz    the guest kernel
#   $OUT/initrd     a tiny busybox initramfs: virtio modules, mount /dev/vda, switch_root
#   $OUT/id_ed25519 the lab's management key (root login, authorized_keys2 in the image)
#   env: OUT, ROOTFS, KVER, GUEST (dir with ozinit, ozpoweroff)
set -euo pipefail
: "${OUT:?}" "${ROOTFS:?}" "${KVER:?}" "${GUEST:?}"
mkdir -p "$OUT"
R=$OUT/root
echo "openzfs-image: copying the rootfs"
cp -a "$ROOTFS" "$R"
install -m 755 "$GUEST/ozinit" "$R/sbin/ozinit"
install -m 755 "$GUEST/ozpoweroff" "$R/usr/local/sbin/ozpoweroff"
echo "options zfs zfs_arc_max=268435456" > "$R/etc/modprobe.d/zfs.conf"
ssh-keygen -q -t ed25519 -N '' -C pvelab-manage -f "$OUT/id_ed25519"
install -d -m 700 "$R/root/.ssh"
install -m 600 "$OUT/id_ed25519.pub" "$R/root/.ssh/authorized_keys2"
rm -f "$R"/etc/ssh/ssh_host_*
: > "$R/etc/fstab"
cp "$R/boot/vmlinuz-$KVER" "$OUT/vmlinuz"

echo "openzfs-image: initrd"
T=$OUT/initrd.d
mkdir -p "$T"/{bin,dev,proc,sys,newroot,lib/modules}
cp "$R/bin/busybox" "$T/bin/busybox"
for a in sh mount umount sleep insmod switch_root cat; do ln -s busybox "$T/bin/$a"; done
chroot "$R" /sbin/modprobe -S "$KVER" --show-depends -a virtio_pci virtio_blk \
  | awk '$1=="insmod" && !seen[$2]++ {print $2}' > "$T/modules.list"
while read -r m; do cp "$R$m" "$T/lib/modules/"; basename "$m"; done < "$T/modules.list" > "$T/modules.order"
cat > "$T/init" <<'INIT'
#!/bin/sh
mount -t devtmpfs devtmpfs /dev
mount -t proc proc /proc
mount -t sysfs sysfs /sys
for m in $(cat /modules.order); do insmod /lib/modules/$m; done
i=0; while [ ! -b /dev/vda ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i+1)); done
mount -t ext4 -o rw /dev/vda /newroot || { echo "initrd: cannot mount /dev/vda"; exec sh; }
mount --move /dev /newroot/dev
umount /proc /sys
exec switch_root /newroot /sbin/ozinit
INIT
chmod 755 "$T/init"
(cd "$T" && find . | cpio -o -H newc --quiet | gzip -1) > "$OUT/initrd"
rm -rf "$T"

echo "openzfs-image: ext4 image"
mke2fs -q -t ext4 -L pvelab-root -E lazy_itable_init=0 -d "$R" "$OUT/base.img" 4G
rm -rf "$R"
echo "openzfs-image: done"
