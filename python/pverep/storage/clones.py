"""Linked clones: one dataset, two spellings of its volume id.

PVE names a linked clone of a template's disk ``<storeid>:base-<X>-disk-<N>/vm-<Y>-disk-<M>``
(``basevol-``/``subvol-`` for containers) and the clone's guest config uses that volid. Its
replica on a target is received as a plain dataset (a replication stream carries no origin),
so the target lists it as ``<storeid>:vm-<Y>-disk-<M>``. Both name the same dataset
``<pool>/vm-<Y>-disk-<M>`` (the volname's last part, spec §5.8).

Everything that compares what a guest config names with what a storage lists goes through
``dataset_key``: otherwise a target destroys the replica of a clone as a "stale" volume the
source still sends (data loss, and every run a full resend).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TypeVar

from pverep.validate import parse_volume_id

V = TypeVar("V")


def dataset_key(volid: str) -> str:
    """``<storeid>:<dataset name>``: equal for every spelling of the same zfspool volume."""
    storeid, volname = parse_volume_id(volid)
    return f"{storeid}:{volname.rpartition('/')[2]}"


def same_volume(a: str, b: str) -> bool:
    return dataset_key(a) == dataset_key(b)


def spelled_as(listed: Iterable[str], wanted: Iterable[str]) -> list[str]:
    """``listed`` (a storage listing) with every volid that names the same dataset as one of
    ``wanted`` (a guest config's or a peer's volids) replaced by that spelling; order kept."""
    by_key: dict[str, str] = {}
    for volid in wanted:
        by_key.setdefault(dataset_key(volid), volid)
    return [by_key.get(dataset_key(volid), volid) for volid in listed]


def spelled_keys(mapping: Mapping[str, V], wanted: Iterable[str]) -> dict[str, V]:
    """A mapping keyed by listed volids, re-keyed with ``spelled_as``."""
    return dict(zip(spelled_as(mapping, wanted), mapping.values(), strict=True))
