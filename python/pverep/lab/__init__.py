"""The lab: a Proxmox-like multi-node sandbox cluster on one machine (and its fakes)."""
