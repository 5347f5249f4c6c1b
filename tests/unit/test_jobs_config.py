"""replication.cfg: byte-exact writer, pvesr's warnings, normalisation, uniqueness, digest."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pverep.config import jobs
from pverep.config.jobs import (
    ConfigStore,
    Job,
    ReplicationConfig,
    decode_comment,
    encode_comment,
    format_config,
    parse_config,
)
from pverep.errors import ConfigError, LockError, ValidationError
from pverep.paths import Paths

SPEC_EXAMPLE = (
    b"local: 100-0\n"
    b"\ttarget pve2\n"
    b"\trate 10\n"
    b"\tschedule */5\n"
    b"\tsource pve1\n"
    b"\n"
    b"local: 101-1\n"
    b"\tcomment nightly%3A db\n"
    b"\tdisable\n"
    b"\ttarget pve3\n"
    b"\tremove_job full\n"
    b"\tsource pve1\n"
    b"\n"
)

FILE = "/etc/pve/replication.cfg"


def parse(text: str) -> tuple[ReplicationConfig, list[str]]:
    warnings: list[str] = []
    return parse_config(text.encode(), FILE, warnings.append), warnings


def test_spec_example_round_trips_byte_for_byte() -> None:
    warnings: list[str] = []
    cfg = parse_config(SPEC_EXAMPLE, FILE, warnings.append)
    assert warnings == []
    assert cfg.jobs["101-1"].comment == "nightly: db"
    assert cfg.jobs["101-1"].disable is True
    assert cfg.jobs["100-0"].rate == "10"
    assert format_config(cfg) == SPEC_EXAMPLE
    assert cfg.digest == hashlib.sha1(SPEC_EXAMPLE).hexdigest()


def test_writer_builds_the_spec_example_from_jobs() -> None:
    jobs = [
        Job(id="100-0", target="pve2", schedule="*/5", rate="10", source="pve1"),
        Job(
            id="101-1",
            target="pve3",
            comment="nightly: db",
            disable=True,
            remove_job="full",
            source="pve1",
        ),
    ]
    assert format_config(jobs) == SPEC_EXAMPLE


def test_property_order_is_normalised_on_write() -> None:
    cfg, warnings = parse(
        "local: 100-0\n\tsource pve1\n\tschedule */5\n\ttarget pve2\n\tdisable 1\n"
    )
    assert warnings == []
    assert format_config(cfg) == (
        b"local: 100-0\n\tdisable\n\ttarget pve2\n\tschedule */5\n\tsource pve1\n\n"
    )


def test_id_normalisation_and_disable_false() -> None:
    cfg, warnings = parse("LOCAL: 0100-007\n\ttarget pve2\n\tdisable no\n")
    assert warnings == []
    assert list(cfg.jobs) == ["100-7"]
    assert cfg.jobs["100-7"].guest == 100 and cfg.jobs["100-7"].jobnum == 7
    assert format_config(cfg) == b"local: 100-7\n\ttarget pve2\n\n"


def test_warnings_for_bad_lines() -> None:
    text = (
        "# a comment\n"  # 1
        "garbage\n"  # 2
        "\n"  # 3
        "local: 99-0\n"  # 4
        "\ttarget pve2\n"  # 5
        "\n"  # 6
        "qemu: 200-0\n"  # 7
        "\ttarget pve2\n"  # 8
        "\n"  # 9
        "local: 100-0\n"  # 10
        "\ttarget pve2\n"  # 11
        "\trate 0\n"  # 12
        "\trate -3\n"  # 13
        "\tschedule */61\n"  # 14
        "\tfoo bar\n"  # 15
        "\ttarget pve3\n"  # 16
        "\tdisable maybe\n"  # 17
        "\tremove_job some\n"  # 18
        "no indent\n"  # 19
        "\t# comment inside\n"  # 20
        "\tcomment x\n"  # 21
        "\n"  # 22
        "local: 100-1\n"  # 23
        "\tsource pve1\n"  # 24
        "\n"  # 25
        "local: 100-2\n"  # 26
        "\ttarget bad.name\n"  # 27
        "\n"  # 28
    )
    cfg, warnings = parse(text)
    assert warnings == [
        f"file {FILE} line 2 - ignore config line: garbage",
        f"file {FILE} line 4 (skip section '99-0'): invalid replication job id '99-0' "
        "(guest IDs < 100 are reserved)",
        f"file {FILE} line 7 (skip section '200-0'): unsupported type 'qemu'",
        f"file {FILE} line 12 (section '100-0') - unable to parse value of 'rate': "
        "value must have a minimum value of 1",
        f"file {FILE} line 13 (section '100-0') - unable to parse value of 'rate': "
        "value must have a minimum value of 1",
        f"file {FILE} line 14 (section '100-0') - unable to parse value of 'schedule': "
        "invalid format - invalid calendar event '*/61' - unable to parse calendar event at "
        "'*/61' - Context(\"date or time specification\")",
        f"file {FILE} line 15 (section '100-0') - unable to parse value of 'foo': "
        "unexpected property 'foo'",
        f"file {FILE} line 16 (section '100-0') - unable to parse value of 'target': "
        "duplicate attribute",
        f"file {FILE} line 17 (section '100-0') - unable to parse value of 'disable': "
        "type check ('boolean') failed - got 'maybe'",
        f"file {FILE} line 18 (section '100-0') - unable to parse value of 'remove_job': "
        "value 'some' does not have a value in the enumeration 'local, full'",
        f"file {FILE} line 19 (section '100-0') - ignore config line: no indent",
        f"file {FILE} line 24 (skip section '100-1'): missing value for required option 'target'",
        f"file {FILE} line 27 (section '100-2') - unable to parse value of 'target': "
        "invalid format - value does not look like a valid node name",
        f"file {FILE} line 27 (skip section '100-2'): missing value for required option 'target'",
    ]
    assert list(cfg.jobs) == ["100-0"]
    job = cfg.jobs["100-0"]
    assert (job.target, job.rate, job.schedule, job.comment) == ("pve2", None, None, "x")


def test_duplicate_guest_target_is_dropped_in_sorted_id_order() -> None:
    cfg, warnings = parse(
        "local: 100-2\n\ttarget pve2\n\n"
        "local: 100-10\n\ttarget pve2\n\n"
        "local: 100-3\n\ttarget pve3\n"
    )
    # "100-10" sorts before "100-2" as a string, so 100-2 is the duplicate
    assert warnings == [
        "delete job 100-2: replication job for guest '100' to target 'local/pve2' already exists"
    ]
    assert list(cfg.jobs) == ["100-10", "100-3"]


def test_duplicate_section_id_keeps_the_first() -> None:
    cfg, warnings = parse("local: 100-7\n\ttarget pve2\n\nlocal: 0100-07\n\ttarget pve3\n")
    assert cfg.jobs["100-7"].target == "pve2"
    assert warnings == [f"file {FILE} line 4 (skip section '100-7'): duplicate section id"]


def test_writer_refuses_duplicates() -> None:
    jobs = [Job(id="100-0", target="pve2"), Job(id="100-1", target="pve2")]
    with pytest.raises(ConfigError, match="replication job for guest '100' to target"):
        format_config(jobs)
    with pytest.raises(ConfigError, match="line feed"):
        format_config([Job(id="100-0", target="pve2", schedule="*/5\nx")])


def test_bare_key_other_than_boolean_and_crlf_lines() -> None:
    cfg, warnings = parse("local: 100-0\r\n\ttarget pve2\r\n\tschedule\r\n")
    assert cfg.jobs["100-0"].target == "pve2"
    assert warnings == [
        f"file {FILE} line 3 (section '100-0') - unable to parse value of 'schedule': "
        "missing property value"
    ]


def test_comment_escaping() -> None:
    assert encode_comment("a b%c:d\n\x7fé") == "a b%25c%3Ad%0A%7F%C3%A9"
    assert decode_comment("a b%25c%3Ad%0A%7F%C3%A9") == "a b%c:d\n\x7fé"
    # a hand-edited raw UTF-8 comment is read and re-written escaped
    cfg, _ = parse("local: 100-0\n\tcomment Grüße\n\ttarget pve2\n")
    assert cfg.jobs["100-0"].comment == "Grüße"
    assert b"\tcomment Gr%C3%BC%C3%9Fe\n" in format_config(cfg)


NODE = st.from_regex(r"[a-zA-Z0-9]([a-zA-Z0-9\-]{0,8}[a-zA-Z0-9])?", fullmatch=True)
JOB = st.builds(
    Job,
    id=st.builds(
        lambda g, n: f"{g}-{n}", st.integers(100, 999_999_999), st.integers(0, 999_999_999)
    ),
    target=NODE,
    schedule=st.sampled_from([None, "*/5", "mon..fri 22:00", "daily", "*/15"]),
    rate=st.one_of(st.none(), st.sampled_from(["1", "10", "2.5", "100.25"])),
    comment=st.one_of(st.none(), st.text(max_size=40)),
    disable=st.booleans(),
    remove_job=st.sampled_from([None, "local", "full"]),
    source=st.one_of(st.none(), NODE),
)


@given(st.lists(JOB, max_size=6, unique_by=lambda j: (j.id.split("-")[0], j.target)))
def test_round_trip_property(jobs: list[Job]) -> None:
    seen: set[str] = set()
    jobs = [j for j in jobs if not (j.id in seen or seen.add(j.id))]
    written = format_config(jobs)
    warnings: list[str] = []
    again = parse_config(written, FILE, warnings.append)
    assert warnings == []
    assert format_config(again) == written
    assert [j.id for j in again.jobs.values()] == [j.id for j in jobs]
    for job in jobs:
        got = again.jobs[job.id]
        assert got.comment == (job.comment or None)
        assert (got.target, got.schedule, got.rate, got.disable) == (
            job.target,
            job.schedule,
            job.rate,
            job.disable,
        )


@given(st.binary(max_size=300))
def test_reader_never_crashes(raw: bytes) -> None:
    cfg = parse_config(raw, FILE, lambda _msg: None)
    format_config(cfg)  # whatever was accepted can be written back


# --- on disk ---------------------------------------------------------------------------------


def make_root(tmp_path: Path) -> Paths:
    (tmp_path / "etc/pve/priv").mkdir(parents=True)
    return Paths(tmp_path)


def test_store_write_is_atomic_and_locked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = make_root(tmp_path)
    store = ConfigStore(paths)
    assert store.read().jobs == {}
    locked_while_writing: list[bool] = []
    real_write = jobs.atomic_write

    def spy(path: Path, data: bytes, mode: int = 0o644) -> None:
        locked_while_writing.append((paths.cfs_lock_dir / "file-replication_cfg").is_dir())
        real_write(path, data, mode)

    monkeypatch.setattr(jobs, "atomic_write", spy)

    def add(cfg: ReplicationConfig) -> None:
        cfg.jobs["100-0"] = Job(id="100-0", target="pve2", schedule="*/5", rate="10", source="pve1")

    store.modify(add)
    data = paths.replication_cfg.read_bytes()
    assert data == SPEC_EXAMPLE.split(b"\n\n")[0] + b"\n\n"
    assert locked_while_writing == [True]  # the pmxcfs lock is held during the write
    assert not (paths.cfs_lock_dir / "file-replication_cfg").exists()
    assert [p.name for p in paths.etc_pve.iterdir() if ".tmp." in p.name] == []


def test_failed_change_leaves_file_untouched(tmp_path: Path) -> None:
    paths = make_root(tmp_path)
    paths.replication_cfg.write_bytes(SPEC_EXAMPLE)
    store = ConfigStore(paths)

    def dup(cfg: ReplicationConfig) -> None:
        cfg.jobs["100-9"] = Job(id="100-9", target="pve2")

    with pytest.raises(ConfigError, match="already exists"):
        store.modify(dup)
    assert paths.replication_cfg.read_bytes() == SPEC_EXAMPLE


def test_missing_etc_pve(tmp_path: Path) -> None:
    store = ConfigStore(Paths(tmp_path))
    with pytest.raises(ConfigError, match="pve cluster filesystem not online"):
        store.read()
    with pytest.raises(LockError, match="cfs-lock 'file-replication_cfg' error: pve cluster"):
        store.modify(lambda cfg: None)


def test_comment_blanks_survive_a_rewrite() -> None:
    # pvesr would write "\tcomment  a " and read back "a"; pverep escapes the edge blanks
    assert encode_comment(" a ") == "%20a%20"
    assert encode_comment("  ") == "%20%20"
    cfg, _ = parse("local: 100-0\n\tcomment %20a%20\n\ttarget pve2\n")
    assert cfg.jobs["100-0"].comment == " a "
    assert format_config([Job(id="100-0", target="pve2", comment="0")]) == (
        b"local: 100-0\n\tcomment 0\n\ttarget pve2\n\n"
    )


@pytest.mark.parametrize("bad", ["*/5\r", "*/5\rtarget pve9", "*/5\n\ttarget pve9", "\r"])
def test_writer_refuses_line_breaks_in_values(tmp_path: Path, bad: str) -> None:
    """A CR or LF in a value would start a new property line when read back: refused, and the
    file on disk stays as it was."""
    with pytest.raises(ConfigError, match=r"^property 'schedule' contains a line feed$"):
        format_config([Job(id="100-0", target="pve2", schedule=bad)])
    with pytest.raises(ConfigError, match=r"^property 'source' contains a line feed$"):
        format_config([Job(id="100-0", target="pve2", source=bad)])
    paths = make_root(tmp_path)
    paths.replication_cfg.write_bytes(SPEC_EXAMPLE)

    def edit(cfg: ReplicationConfig) -> None:
        cfg.jobs["100-0"] = Job(id="100-0", target="pve2", schedule=bad)

    with pytest.raises(ConfigError, match="contains a line feed"):
        ConfigStore(paths).modify(edit)
    assert paths.replication_cfg.read_bytes() == SPEC_EXAMPLE


# --- the API's view of a job (GET /cluster/replication; spec §6.4 and api-hooks §2.4: the
# config keys that are set, plus guest and jobnum as integers; rate is a JSON number, disable
# a boolean 1) --------------------------------------------------------------------------------

API_KEYS = {
    "id",
    "type",
    "guest",
    "jobnum",
    "target",
    "schedule",
    "rate",
    "comment",
    "disable",
    "remove_job",
    "source",
}


def test_to_api_of_a_full_job_in_the_documented_shape() -> None:
    job = Job(
        id="1234-56",
        target="pve2",
        schedule="mon..fri 8..17:0",
        rate="200",
        comment="nightly: db",
        disable=True,
        remove_job="full",
        source="pve1",
    )
    api = job.to_api()
    assert set(api) == API_KEYS
    assert json.dumps(api, sort_keys=True) == (
        '{"comment": "nightly: db", "disable": 1, "guest": 1234, "id": "1234-56", "jobnum": 56, '
        '"rate": 200, "remove_job": "full", "schedule": "mon..fri 8..17:0", "source": "pve1", '
        '"target": "pve2", "type": "local"}'
    )


def test_to_api_of_a_minimal_job_leaves_unset_keys_out() -> None:
    api = Job(id="100-0", target="pve3").to_api()
    assert json.dumps(api) == (
        '{"id": "100-0", "type": "local", "guest": 100, "jobnum": 0, "target": "pve3"}'
    )
    # disable=False is not sent either (PVE's config has no such key then)
    assert "disable" not in Job(id="100-0", target="pve3", disable=False).to_api()


@pytest.mark.parametrize(
    ("rate", "number"),
    [
        ("10", "10"),
        ("10.0", "10"),
        ("+10.00", "10"),
        ("2.50", "2.5"),
        ("1.5e1", "15"),
        ("4503599627370496", "4503599627370496"),
        ("1e16", "1e+16"),
    ],
)
def test_to_api_rate_is_the_number_perl_reads(rate: str, number: str) -> None:
    api = Job(id="100-0", target="pve3", rate=rate).to_api()
    assert json.dumps(api["rate"]) == number


# --- lookups, copies and the store's edges -----------------------------------------------------


def test_find_jobs_of_guest_and_copy() -> None:
    cfg, _ = parse(SPEC_EXAMPLE.decode() + "local: 200-3\n\ttarget pve2\n")
    assert cfg.find("100-0") is cfg.jobs["100-0"]
    assert cfg.find("0101-001") is cfg.jobs["101-1"]  # normalised
    assert cfg.find("100-7") is None
    assert cfg.find("bogus") is None
    assert [j.id for j in cfg.jobs_of_guest(100)] == ["100-0"]
    assert [j.id for j in cfg.jobs_of_guest(200)] == ["200-3"]
    assert cfg.jobs_of_guest(300) == []
    twin = cfg.copy()
    assert (
        twin.digest
        == cfg.digest
        == hashlib.sha1(SPEC_EXAMPLE + b"local: 200-3\n\ttarget pve2\n").hexdigest()
    )
    assert twin.jobs == cfg.jobs and list(twin.jobs) == list(cfg.jobs)
    twin.jobs["100-0"].rate = "99"
    assert cfg.jobs["100-0"].rate == "10"  # the copy's jobs are its own


def test_number_text_is_perls_print() -> None:
    assert [jobs.number_text(t) for t in ("10", "10.0", "2.50", "1e3", "0.1")] == [
        "10",
        "10",
        "2.5",
        "1000",
        "0.1",
    ]


def test_warnings_default_to_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parse_config(b"garbage\n", FILE)
    paths = make_root(tmp_path)
    paths.replication_cfg.write_bytes(b"junk\n")
    ConfigStore(paths).read()
    assert capsys.readouterr().err == (
        f"file {FILE} line 1 - ignore config line: garbage\n"
        f"file {paths.replication_cfg} line 1 - ignore config line: junk\n"
    )


def test_store_read_names_the_file_and_passes_the_warn_callback(tmp_path: Path) -> None:
    paths = make_root(tmp_path)
    warnings: list[str] = []
    store = ConfigStore(paths, warnings.append)
    empty = store.read()
    assert (empty.jobs, empty.digest) == ({}, hashlib.sha1(b"").hexdigest())  # no file yet
    paths.replication_cfg.write_bytes(b"junk\n")
    store.read()
    assert warnings == [f"file {paths.replication_cfg} line 1 - ignore config line: junk"]
    paths.replication_cfg.unlink()
    paths.replication_cfg.mkdir()
    with pytest.raises(ConfigError) as err:
        store.read()
    assert str(err.value) == f"unable to read '{paths.replication_cfg}' - Is a directory"


def test_store_write_mode_digest_and_error(tmp_path: Path) -> None:
    paths = make_root(tmp_path)
    store = ConfigStore(paths)
    cfg = ReplicationConfig({"100-0": Job(id="100-0", target="pve2")})
    store.write(cfg)
    data = paths.replication_cfg.read_bytes()
    assert data == b"local: 100-0\n\ttarget pve2\n\n"
    assert cfg.digest == hashlib.sha1(data).hexdigest()
    assert oct(paths.replication_cfg.stat().st_mode & 0o777) == "0o640"
    paths.replication_cfg.unlink()
    paths.replication_cfg.mkdir()
    with pytest.raises(ConfigError) as err:
        store.write(cfg)
    assert str(err.value) == f"unable to write '{paths.replication_cfg}' - Is a directory"


# --- limits, odd lines and the writer's refusals ------------------------------------------------


def test_schedule_and_comment_length_limits() -> None:
    longest = "00" + ",0" * 63  # a valid event of exactly 128 characters
    assert len(longest) == 128
    assert jobs.check_property("schedule", longest) == longest
    with pytest.raises(ValidationError) as err:
        jobs.check_property("schedule", longest + "0")
    assert str(err.value) == "value may only be 128 characters long"
    assert jobs.check_property("comment", "c" * 4096) == "c" * 4096
    with pytest.raises(ValidationError) as err:
        jobs.check_property("comment", "c" * 4097)
    assert str(err.value) == "value may only be 4096 characters long"
    with pytest.raises(ValidationError) as err:
        jobs.check_property("rate", "fast")
    assert str(err.value) == "type check ('number') failed - got 'fast'"


def test_undecodable_comment_bytes_are_replaced() -> None:
    assert decode_comment("a%FFb") == "a\ufffdb"


def test_last_line_without_newline_and_a_zero_line() -> None:
    cfg, warnings = parse("local: 100-0\n\ttarget pve2\n\trate 5")
    assert (cfg.jobs["100-0"].target, cfg.jobs["100-0"].rate) == ("pve2", "5")
    assert warnings == []
    # "0" is false in Perl: it ends the section, and what follows is no section of it
    cfg, warnings = parse("local: 100-0\n\ttarget pve2\n0\n\trate 5\n")
    assert cfg.jobs["100-0"].rate is None
    assert warnings == [f"file {FILE} line 4 - ignore config line: \trate 5"]


def test_every_line_of_a_skipped_section_is_skipped() -> None:
    cfg, warnings = parse(
        "qemu: 200-0\n\ttarget pve2\n\trate 5\n\tschedule */5\n\nlocal: 100-0\n\ttarget pve3\n"
    )
    assert warnings == [f"file {FILE} line 1 (skip section '200-0'): unsupported type 'qemu'"]
    assert list(cfg.jobs) == ["100-0"]


def test_writer_refusals_and_empty_values() -> None:
    with pytest.raises(ConfigError) as err:
        format_config([Job(id="100-0", target="pve2", type="qemu")])
    assert str(err.value) == "unknown section type 'qemu'"
    with pytest.raises(ConfigError) as err:
        format_config([Job(id="0100-0", target="pve2")])  # not normalised
    assert str(err.value) == "property 'guest' has wrong value"
    with pytest.raises(ConfigError) as err:
        format_config([Job(id="100-0", target="")])
    assert str(err.value) == "missing property 'target'"
    job = Job(id="100-0", target="pve2", schedule="", rate="", source="")
    assert format_config([job]) == b"local: 100-0\n\ttarget pve2\n\n"
