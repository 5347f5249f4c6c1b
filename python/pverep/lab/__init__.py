"""The lab: a multi-node Proxmox-like cluster on one machine (``pverep lab``).

Each node (pve1..pveN) is a set of namespaces (mount, UTS, IPC, net, PID) with its own
zfs-fuse daemon and pool ``rpool``, its own sshd, node-local /var/lib/pve-manager, /var/log/pve,
/var/lock and /tmp, and one shared /etc/pve. Modules:

- ``config``    lab dir, node names, per-lab subnet/bridge/veth/cgroup names (``lab.json``)
- ``control``   the ``Lab`` object: up/down/status/exec/cut/heal/shape/freeze
- ``nodeinit``  PID 1 of a node (runs inside its namespaces)
- ``network``   bridge, veths, tc
- ``clusterfs`` the shared /etc/pve, .members, .vmlist, /etc/hosts
- ``sshsetup``  host and root keys, sshd/ssh config
- ``freezer``   cgroup freezer for hung-node tests
- ``hostdirs``  what all labs share: machine lock, registry, host mount-point dirs
- ``procs``     recorded (pid, start time) pairs: the only way the lab stops processes
- ``zfs_compat`` OpenZFS 2.x idioms on zfs-fuse (the node's ``/usr/sbin/zfs``)
- ``guests``    guest configs + disks for tests and the demo; ``digest`` checksums disks
- ``fakeapi``   FakePveApi: a stand-in for the Proxmox REST API (HTTPS, from /etc/pve)
- ``fakepvesh`` a stand-in for ``pvesh`` on top of FakePveApi (proxmoxer's CLI backends)
- ``fakepve``   FAKE ``pvesr``/``pvesm`` that make a node stock-like (record argv, pverep works)
- ``tlscerts``  PVE-style cluster CA and node certificates for the fake API
- ``gentree``   generated /etc/pve trees (guests, storages, jobs) for tests and benches
"""
