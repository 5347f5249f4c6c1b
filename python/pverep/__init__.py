"""pverep: storage replication for Proxmox VE clusters, compatible with pvesr."""

__version__ = "0.1.0"
