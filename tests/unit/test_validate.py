"""The spec's identifier patterns and pvesr's messages."""

from __future__ import annotations

import pytest

from pverep import validate
from pverep.errors import ValidationError


@pytest.mark.parametrize(
    ("text", "expected"),
    [("100-0", "100-0"), ("0100-007", "100-7"), ("999999999-999999999", "999999999-999999999")],
)
def test_normalise_job_id(text: str, expected: str) -> None:
    assert validate.normalise_job_id(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("99-0", "invalid replication job id '99-0' (guest IDs < 100 are reserved)"),
        ("0099-0", "invalid replication job id '0099-0' (guest IDs < 100 are reserved)"),
        ("abc", "invalid replication job id 'abc'"),
        ("100-1-2", "invalid replication job id '100-1-2'"),
        ("100", "invalid replication job id '100'"),
        ("", "invalid replication job id ''"),
        ("100-x", "invalid replication job id '100-x'"),
    ],
)
def test_bad_job_ids(text: str, message: str) -> None:
    with pytest.raises(ValidationError) as err:
        validate.parse_job_id(text)
    assert str(err.value) == message


def test_api_pattern_on_user_input() -> None:
    assert validate.check_job_id_param("100-7") == "100-7"
    for text in ("0100-7", "100-0000000001", "1000000000-1"):
        with pytest.raises(ValidationError, match="does not match the regex pattern"):
            validate.check_job_id_param(text)
    with pytest.raises(ValidationError, match=r"^invalid format - invalid replication job id"):
        validate.check_job_id_param("99-0")


@pytest.mark.parametrize("name", ["pve1", "a", "node-2", "A9"])
def test_good_node_names(name: str) -> None:
    assert validate.check_node_name(name) == name


@pytest.mark.parametrize("name", ["", "-a", "a-", "a.b", "a b", "pve1;rm", "ä"])
def test_bad_node_names(name: str) -> None:
    assert not validate.is_valid_node_name(name)
    with pytest.raises(ValidationError) as err:
        validate.check_node_name(name)
    # PVE's format error, whole: `pvesr create-local-job` callers see the same line
    assert str(err.value) == "invalid format - value does not look like a valid node name"


def test_vmid() -> None:
    assert validate.check_vmid("100") == 100
    for bad, msg in [("99", "minimum value of 100"), ("abc", "type check"), ("1e3", "type")]:
        with pytest.raises(ValidationError, match=msg):
            validate.check_vmid(bad)
    with pytest.raises(ValidationError, match="maximum"):
        validate.check_vmid("1000000000")


def test_volume_ids_and_storage_ids() -> None:
    assert validate.parse_volume_id("local-zfs:vm-100-disk-0") == ("local-zfs", "vm-100-disk-0")
    assert validate.parse_volume_id("a1:base-100-disk-0/vm-101-disk-0")[0] == "a1"
    for bad in ("nocolon", ":vm", "1zfs:vm", "Local_:x", "a:"):
        with pytest.raises(ValidationError, match="unable to parse volume ID"):
            validate.parse_volume_id(bad)
    assert validate.check_storage_id("local-zfs") == "local-zfs"
    for bad in ("a", "1ab", "ab-", "a b"):
        with pytest.raises(ValidationError):
            validate.check_storage_id(bad)


def test_snapshot_names() -> None:
    name = validate.replication_snapshot_name("100-0", 1700000100)
    assert name == "__replicate_100-0_1700000100__"
    assert validate.check_transfer_snapshot_name(name) == name
    assert validate.replication_snapshot_prefix("100-1") == "__replicate_100-1_"
    # pvesr's quirk: no trailing "_" in the predicate
    assert validate.is_replication_snapshot("__replicate_100-10_5__", "100-1")
    assert validate.is_replication_snapshot("__replicate_7-0_5__")
    assert not validate.is_replication_snapshot("daily", "100-1")
    too_long = validate.replication_snapshot_name("123456789-123456", 1700000100)
    with pytest.raises(ValidationError):
        validate.check_transfer_snapshot_name(too_long)
    for bad in ("a/b", "x@y", "", "a;b"):
        with pytest.raises(ValidationError):
            validate.check_transfer_snapshot_name(bad)
    assert validate.check_parent_snapname("before_upgrade") == "before_upgrade"
    for bad in ("1abc", "a" * 41, "a b"):
        with pytest.raises(ValidationError):
            validate.check_parent_snapname(bad)


def test_pattern_edges() -> None:
    """The exact edges of the spec's patterns, each of which a one-character change would move."""
    # parent snapshot name (pve-configid, at most 40 characters)
    assert validate.check_parent_snapname("a" * 40) == "a" * 40
    assert validate.check_parent_snapname("a-b_c9") == "a-b_c9"
    with pytest.raises(ValidationError, match="may only be 40 characters long"):
        validate.check_parent_snapname("a" * 41)
    for bad in ("a", "a.b", "_ab", "a\u212a"):
        with pytest.raises(ValidationError, match="invalid configuration ID"):
            validate.check_parent_snapname(bad)
    # storage ids: inner '-', '_', '.' allowed, the last character must be a letter or digit
    for good in ("ab", "a_b", "a.b", "a-b", "A9", "zfs.pool_2-x"):
        assert validate.check_storage_id(good) == good
        assert validate.parse_volume_id(f"{good}:vm-100-disk-0") == (good, "vm-100-disk-0")
    for bad in ("ab_", "ab.", "a_", "_ab", "ab:", "a\nb", "a\u212a", "\u0130b"):
        with pytest.raises(ValidationError, match="contains illegal characters"):
            validate.check_storage_id(bad)
    for bad in ("ab_:vm-100-disk-0", "ab.:x", "a:x", "\u212ab:x"):
        with pytest.raises(ValidationError, match="unable to parse volume ID"):
            validate.parse_volume_id(bad)
    # transfer snapshot names: letters, digits, '_' and '-', 1 to 40 characters
    for good in ("a", "A-9_z", "x" * 40):
        assert validate.check_transfer_snapshot_name(good) == good
    for bad in ("a.b", ".", "x" * 41, "a b", "a\n", "ä", "\u212a", "a\u017f", "\u0131x"):
        with pytest.raises(ValidationError, match="invalid snapshot name"):
            validate.check_transfer_snapshot_name(bad)


def test_only_ascii_digits_count() -> None:
    """Python's \\d and int() take Arabic-Indic or fullwidth digits; PVE's patterns do not."""
    for bad in ("\u0661\u0660\u0660-0", "100-\uff11", "\uff11\uff10\uff10-1"):
        with pytest.raises(ValidationError, match="invalid replication job id"):
            validate.parse_job_id(bad)
    with pytest.raises(ValidationError, match="type check"):
        validate.check_vmid("\u0661\u0660\u0660")
    assert validate.parse_job_id("0100-007") == (100, 7)
    assert validate.check_vmid("100") == 100


def test_range_and_texts_of_ids() -> None:
    assert validate.check_vmid("999999999") == 999_999_999
    assert validate.check_vmid(100) == 100
    with pytest.raises(ValidationError, match=r"^value must have a maximum value of 999999999$"):
        validate.check_vmid(1_000_000_000)
    with pytest.raises(ValidationError, match=r"^value must have a minimum value of 100$"):
        validate.check_vmid(99)
    with pytest.raises(ValidationError, match=r"^value does not match the regex pattern$"):
        validate.check_job_id_param("0100-1")  # normalisable, but not the API's pattern
    with pytest.raises(ValidationError, match=r"^invalid format - invalid replication job id"):
        validate.check_job_id_param("x-1")


@pytest.mark.parametrize("name", ["pre.sh", "a", "Hook_1-x.py", "a" * 128])
def test_good_snippet_names(name: str) -> None:
    assert validate.check_snippet_name(name) == name


@pytest.mark.parametrize("name", ["", ".hidden", "-x", "a/b", "a b", "a" * 129, "x\n"])
def test_bad_snippet_names(name: str) -> None:
    with pytest.raises(ValidationError) as err:
        validate.check_snippet_name(name)
    assert str(err.value) == f"invalid snippet name '{name}'"


def test_resume_tokens() -> None:
    # the shape `zfs get receive_resume_token` prints: version-hex-hex-hex (the packed nvlist)
    token = "1-e604ea4bf-e0-789c636064000310a500c4ec50360710e72765a52697303030"
    assert validate.check_resume_token(token) == token
    for bad in ("", "-", token + " -o x", "1-e604ea4bf-e0-7", "x-e6-e0-78", "1-E6-e0-78"):
        with pytest.raises(ValidationError) as err:
            validate.check_resume_token(bad)
        assert str(err.value) == "invalid receive resume token"
