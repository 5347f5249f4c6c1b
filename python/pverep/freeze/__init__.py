"""Guest filesystem freeze around the replication snapshot (pvesr's rules, spec §4.1/§4.5).

``qga``: the QEMU guest agent client; ``vm``: qemu-server's freeze rules and timeouts;
``ct``: the cgroup v2 freezer for containers; ``guest``: the one entry point the engine uses
(decide, freeze, thaw), with its settings from ``[freeze]`` in pverep.conf.
"""
