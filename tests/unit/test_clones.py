"""storage/clones.py: every spelling of a linked clone's volid names one dataset."""

from __future__ import annotations

from pverep.storage.clones import dataset_key, same_volume, spelled_as, spelled_keys

CLONE = "local-zfs:base-9-disk-0/vm-100-disk-0"
PLAIN = "local-zfs:vm-100-disk-0"


def test_dataset_key_is_the_last_part_of_the_volname() -> None:
    assert dataset_key(CLONE) == "local-zfs:vm-100-disk-0"
    assert dataset_key(PLAIN) == "local-zfs:vm-100-disk-0"
    assert dataset_key("local-zfs:a/b/vm-100-disk-0") == "local-zfs:vm-100-disk-0"
    assert dataset_key("tank:vm-100-disk-0") == "tank:vm-100-disk-0"


def test_same_volume() -> None:
    assert same_volume(CLONE, PLAIN) is True
    assert same_volume(PLAIN, "tank:vm-100-disk-0") is False
    assert same_volume(PLAIN, "local-zfs:vm-100-disk-1") is False


def test_spelled_as_takes_the_first_wanted_spelling_and_keeps_order() -> None:
    listed = ["local-zfs:vm-101-disk-0", PLAIN, "local-zfs:vm-102-disk-0"]
    wanted = [CLONE, "local-zfs:other-9-disk-0/vm-100-disk-0", "local-zfs:vm-102-disk-0"]
    assert spelled_as(listed, wanted) == [
        "local-zfs:vm-101-disk-0",
        CLONE,
        "local-zfs:vm-102-disk-0",
    ]
    assert spelled_as([CLONE], [PLAIN]) == [PLAIN]
    assert spelled_as([], [PLAIN]) == []


def test_spelled_keys_keeps_the_values() -> None:
    mapping = {PLAIN: 1, "local-zfs:vm-101-disk-0": 2}
    assert spelled_keys(mapping, [CLONE]) == {CLONE: 1, "local-zfs:vm-101-disk-0": 2}
    assert list(spelled_keys(mapping, [CLONE])) == [CLONE, "local-zfs:vm-101-disk-0"]
