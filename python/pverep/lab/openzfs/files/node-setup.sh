#!/bin/bash
# Runs inside a lab guest at boot (ozinit), from the node's virtiofs share /run/pvelab-host,
# which is the node's dir in the lab dir (read-only). Makes the guest the lab node that the
# files there describe, before sshd starts. Idempotent: a rebooted node runs it again.
# Lives in the lab, not in the image, so changing it needs no image rebuild.
set -eu
H=/run/pvelab-host
node=$(cat "$H/hostname")
hostname "$node"
cp "$H/hostname" /etc/hostname
cp "$H/guest/hosts" /etc/hosts
# all nodes boot the same image: a distinct, stable ZFS hostid per node name
zgenhostid -f "$(printf %s "$node" | md5sum | cut -c1-8)"
ip link set eth0 up
ip addr replace "$(cat "$H/guest/cidr")" dev eth0

# the shared /etc/pve (one virtiofs export of the lab's etc-pve for every node) and the
# checkout pverep runs from (same path as on the host, read-only)
mkdir -p /etc/pve
mountpoint -q /etc/pve || mount -t virtiofs pvelab-pve /etc/pve
checkout=$(cat "$H/guest/checkout")
mkdir -p "$checkout"
mountpoint -q "$checkout" || mount -t virtiofs -o ro pvelab-checkout "$checkout"

# ssh identity of this node (host key, sshd/ssh config, root key), as the lab prepared it
rm -rf /etc/ssh.lab && cp -a "$H/etc-ssh" /etc/ssh.lab
cp -a /etc/ssh.lab/. /etc/ssh/ && rm -rf /etc/ssh.lab
keep=/root/.ssh/authorized_keys2            # the lab's management key, from the image
cp "$keep" /run/authorized_keys2
rm -rf /root/.ssh && cp -a "$H/root-ssh" /root/.ssh
cp /run/authorized_keys2 "$keep" && chmod 600 "$keep" && chmod 700 /root/.ssh

# pmxcfs' per-node entries and the node's tools, as the namespace engine has them
mkdir -p /run/pvelab/bin /var/lib/pve-manager /var/log/pve /var/lib/vz
ln -sfn "/etc/pve/nodes/$node" /run/pvelab/local
ln -sfn "/etc/pve/nodes/$node/qemu-server" /run/pvelab/qemu-server
ln -sfn "/etc/pve/nodes/$node/lxc" /run/pvelab/lxc
ln -sfn "$H/members" /run/pvelab/members
for tool in pverep pvesh python; do install -m 755 "$H/guest/$tool" "/run/pvelab/bin/$tool"; done
install -m 644 "$H/guest/bashrc" /root/.bashrc
install -m 644 "$H/guest/bashrc" /root/.profile

# the node's pool: on the first data disk; kept across reboots of the same lab
if ! zpool list -H rpool >/dev/null 2>&1; then
  zpool import -f rpool 2>/dev/null || {
    zpool create -f -o ashift=12 -O compression=lz4 -O atime=off -m /rpool rpool \
      /dev/disk/by-id/virtio-pvelab-rpool
    zfs create rpool/data
    zfs create rpool/data2
  }
fi
