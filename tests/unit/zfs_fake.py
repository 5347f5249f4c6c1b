"""FAKE zfs for unit tests: an in-memory pool behind the Shell interface.

Real zfs runs only in the lab (zfs-fuse in namespaces); these unit tests check the logic
around it (which argv, in which order, what happens on errors). It answers exactly the argv
the builders in pverep.storage.zfs produce and records every call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from pverep.transport.base import CommandResult, Process


@dataclass
class FakeDataset:
    kind: str = "filesystem"  # or "volume"
    size: int = 1 << 30
    refquota: str = "none"
    snapshots: list[tuple[str, int, int, int]] = field(default_factory=list)  # name,guid,txg,ts
    busy: int = 0  # how many destroy attempts fail with "dataset is busy"
    props: dict[str, str] = field(default_factory=dict)  # zfs get -Hp -o value <prop>
    origin: str = "-"  # a clone's origin snapshot (zfs list's "-" for none)


class FakeZfsShell:
    """Shell that plays zfs on an in-memory set of datasets (and records argv)."""

    def __init__(self, node: str = "pve2") -> None:
        self._node = node
        self.datasets: dict[str, FakeDataset] = {}
        self.calls: list[list[str]] = []
        self.props: dict[str, str] = {}
        self._txg = 100

    @property
    def node(self) -> str:
        return self._node

    def add(
        self, name: str, *snaps: str, kind: str = "filesystem", busy: int = 0, origin: str = "-"
    ) -> None:
        ds = self.datasets.setdefault(name, FakeDataset(kind=kind, busy=busy, origin=origin))
        for snap in snaps:
            self._snap(ds, snap)

    def _snap(self, ds: FakeDataset, snap: str) -> None:
        self._txg += 1
        ds.snapshots.append((snap, 1000 + self._txg, self._txg, 1_700_000_000 + self._txg))

    def snapshot_names(self, name: str) -> list[str]:
        return [s[0] for s in self.datasets[name].snapshots]

    def command(self, argv: Sequence[str]) -> list[str]:
        return list(argv)

    @staticmethod
    def _ok(argv: list[str], out: str = "") -> CommandResult:
        return CommandResult(argv, 0, out.encode(), b"")

    @staticmethod
    def _fail(argv: list[str], err: str) -> CommandResult:
        return CommandResult(argv, 1, b"", (err + "\n").encode())

    def run(
        self, argv: Sequence[str], *, input: bytes | None = None, timeout: float | None = None
    ) -> CommandResult:
        a = list(argv)
        self.calls.append(a)
        assert a[0] == "zfs", a
        verb = a[1]
        if verb == "list" and "snapshot" in a:
            names = a[a.index("-o") + 2 :]  # one dataset, or a job's disks at once
            lines = []
            for name in names:
                ds = self.datasets.get(name)
                if ds is None:  # zfs names the first missing one and fails the whole call
                    return self._fail(a, f"cannot open '{name}': dataset does not exist")
                lines += [f"{name}@{n}\t{g}\t{t}\t{c}" for n, g, t, c in ds.snapshots]
            return self._ok(a, "".join(line + "\n" for line in lines))
        if verb == "list":
            pool = a[-1]
            rows = []
            for name, ds in self.datasets.items():
                if name.rpartition("/")[0] == pool:
                    size = str(ds.size) if ds.kind == "volume" else "-"
                    rows.append(f"{name}\t{size}\t{ds.origin}\t{ds.kind}\t{ds.refquota}\n")
            return self._ok(a, "".join(rows))
        if verb == "snapshot":
            name, _, snap = a[2].partition("@")
            if name not in self.datasets:
                return self._fail(a, f"cannot open '{name}': dataset does not exist")
            self._snap(self.datasets[name], snap)
            return self._ok(a)
        if verb == "destroy":
            target = a[-1]
            name, _, snap = target.partition("@")
            ds = self.datasets.get(name)
            if ds is None:
                return self._fail(a, f"cannot open '{name}': dataset does not exist")
            if snap:
                if snap not in self.snapshot_names(name):
                    return self._fail(
                        a, "could not find any snapshots to destroy; check snapshot names."
                    )
                ds.snapshots = [s for s in ds.snapshots if s[0] != snap]
                return self._ok(a)
            if ds.busy:
                ds.busy -= 1
                return self._fail(a, f"cannot destroy '{name}': dataset is busy")
            del self.datasets[name]
            return self._ok(a)
        if verb == "get" and a[2:4] == ["-H", "name"]:
            name, _, snap = a[4].partition("@")
            ok = name in self.datasets and (not snap or snap in self.snapshot_names(name))
            return self._ok(a, a[4]) if ok else self._fail(a, "dataset does not exist")
        if verb == "get" and a[2:5] == ["-Hp", "-o", "value"]:
            ds = self.datasets.get(a[6])
            if ds is None:
                return self._fail(a, f"cannot open '{a[6]}': dataset does not exist")
            return self._ok(a, ds.props.get(a[5], "-") + "\n")
        if verb == "get":
            return self._ok(a, self.datasets[a[-1]].refquota + "\n")
        if verb == "recv" and a[2] == "-A":
            ds = self.datasets.get(a[-1])
            if ds is None or ds.props.pop("receive_resume_token", None) is None:
                return self._fail(a, f"'{a[-1]}' does not have any resumable receive state")
            if not ds.snapshots:  # a partial first receive: the dataset goes with its state
                del self.datasets[a[-1]]
            return self._ok(a)
        if verb == "set":
            self.props[a[3]] = a[2]
            return self._ok(a)
        if verb == "rollback":
            return self._ok(a)
        return self._fail(a, f"fake zfs: unsupported {a}")

    def spawn(self, argv: Sequence[str], **kwargs: object) -> Process:
        raise AssertionError("streams run against real zfs in the lab tests")
