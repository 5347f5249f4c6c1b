"""The ground replication stands on: zfs send/recv between two nodes over ssh."""

from __future__ import annotations

from pverep.lab import guests
from pverep.lab.control import Lab


def snapshot_guids(lab: Lab, node: str, dataset: str) -> list[tuple[str, str]]:
    out = lab.exec(
        node, ["zfs", "list", "-Hp", "-t", "snapshot", "-o", "name,guid", dataset], check=True
    ).stdout
    return [tuple(line.split("\t")) for line in out.splitlines()]  # type: ignore[misc]


def send(lab: Lab, *send_args: str, dataset: str) -> None:
    """zfs send on pve1, piped into ssh root@pve2 -- zfs recv -F on pve1 (as pvesr does)."""
    script = 'zfs send "$@" | ssh root@pve2 -- zfs recv -F "$0"'
    lab.exec("pve1", ["bash", "-o", "pipefail", "-c", script, dataset, *send_args], check=True)


def test_full_then_incremental_send_over_ssh(lab: Lab, vmid: int) -> None:
    guest = guests.create(lab, vmid, "pve1", "lxc", ["64M"])
    dataset = guests.dataset(guest.volumes[0])
    guests.write(lab, vmid, 2_000_000)
    lab.exec("pve1", ["zfs", "snapshot", f"{dataset}@__replicate_{vmid}-0_1__"], check=True)

    send(lab, f"{dataset}@__replicate_{vmid}-0_1__", dataset=dataset)
    assert guests.checksum(lab, vmid, "pve2") == guests.checksum(lab, vmid, "pve1")

    guests.write(lab, vmid, 500_000)
    before = guests.checksum(lab, vmid, "pve2")
    lab.exec("pve1", ["zfs", "snapshot", f"{dataset}@__replicate_{vmid}-0_2__"], check=True)
    send(
        lab,
        "-i",
        f"@__replicate_{vmid}-0_1__",
        f"{dataset}@__replicate_{vmid}-0_2__",
        dataset=dataset,
    )

    after = guests.checksum(lab, vmid, "pve2")
    assert after != before
    assert after == guests.checksum(lab, vmid, "pve1")
    source = snapshot_guids(lab, "pve1", dataset)
    assert [name for name, _ in source] == [
        f"{dataset}@__replicate_{vmid}-0_1__",
        f"{dataset}@__replicate_{vmid}-0_2__",
    ]
    assert snapshot_guids(lab, "pve2", dataset) == source
    assert all(guid.isdigit() and len(guid) > 5 for _, guid in source)
