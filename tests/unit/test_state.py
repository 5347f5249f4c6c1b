"""The job state file: exact bytes, tolerant reading, atomic locked writes, pvesr's operations."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pverep.config.state import (
    JobState,
    StateStore,
    format_state,
    job_process_running,
    parse_state,
    process_start_time,
    read_job_state,
    record_job_end,
    record_job_start,
    record_sync_end,
    states_to_keep,
)
from pverep.errors import ConfigError
from pverep.paths import Paths

SPEC_EXAMPLE = (
    b'{"100":{"local/pve2":{"last_iteration":1700000100,"last_try":1700000100,'
    b'"last_sync":1700000100,"fail_count":0,"last_node":"pve1","storeid_list":["local-zfs"],'
    b'"duration":3.512871}}}'
)


def test_spec_example_is_reproduced() -> None:
    obj = parse_state(SPEC_EXAMPLE)
    assert format_state(obj) == SPEC_EXAMPLE
    # built from scratch in another key order, the bytes are the same
    state = {
        "duration": 3.512871,
        "storeid_list": ["local-zfs"],
        "last_node": "pve1",
        "fail_count": 0,
        "last_sync": 1700000100,
        "last_try": 1700000100,
        "last_iteration": 1700000100,
    }
    assert format_state({"100": {"local/pve2": state}}) == SPEC_EXAMPLE


def test_perl_number_and_text_formatting() -> None:
    out = format_state({"1": {"t": {"duration": 0.1 + 0.2, "error": 'a "b"\nc/ä', "n": 3.0}}})
    assert out == b'{"1":{"t":{"error":"a \\"b\\"\\nc/\xc3\xa4","duration":0.3,"n":3}}}'


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(b"", {}), (b"{}", {}), (b"{}\n", {}), (b'{"100":{}}', {"100": {}})],
)
def test_empty_forms(raw: bytes, expected: dict[str, object]) -> None:
    assert parse_state(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        SPEC_EXAMPLE[:40],  # truncated
        b'{"100":{}}\n\n',
        b'{\n"100":{}}',
        b"[1]",
        b'{"100":{]}',
        b"garbage",
    ],
)
def test_invalid_files(raw: bytes) -> None:
    with pytest.raises(ConfigError, match="invalid json data in 'x'"):
        parse_state(raw, "x")


def test_tolerant_numbers_and_defaults() -> None:
    obj = parse_state(
        b'{"100":{"local/pve2":{"last_sync":"1700000100","fail_count":"2","last_try":17.9,'
        b'"pid":"4242","ptime":1234,"duration":"3.5","storeid_list":"bogus"},"bad":5},"7":3}'
    )
    assert list(obj) == ["100"]  # non-object entries are ignored
    state = JobState.from_raw(read_job_state(obj, 100, "local/pve2"))
    assert state == JobState(
        last_iteration=0,
        last_try=17,
        last_sync=1700000100,
        fail_count=2,
        duration=3.5,
        pid=4242,
        ptime="1234",
    )
    assert read_job_state(obj, 999, "local/x") == {
        "last_iteration": 0,
        "last_try": 0,
        "last_sync": 0,
        "fail_count": 0,
    }
    assert JobState.from_raw({"fail_count": "many", "last_sync": None}).fail_count == 0


def test_process_liveness(tmp_path: Path) -> None:
    me = os.getpid()
    ptime = process_start_time(me)
    assert ptime is not None and ptime.isdigit()
    assert job_process_running(JobState(pid=me, ptime=ptime))
    assert not job_process_running(JobState(pid=me, ptime=str(int(ptime) + 1)))
    assert not job_process_running(JobState(pid=me))
    fake = tmp_path / "77"
    fake.mkdir()
    (fake / "stat").write_text("77 (a) b) c) S " + " ".join(str(i) for i in range(4, 30)))
    assert process_start_time(77, tmp_path) == "22"


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    return StateStore(Paths(tmp_path), lock_timeout=1)


def raw_file(store: StateStore) -> bytes:
    return store.path.read_bytes()


def test_lifecycle_success(store: StateStore) -> None:
    state = read_job_state(store.read(), 100, "local/pve2")
    record_job_start(
        store,
        100,
        "local/pve2",
        state,
        start_time=1700000100,
        iteration=1700000100,
        nodename="pve1",
        pid=4242,
        ptime="999",
    )
    assert json.loads(raw_file(store)) == {
        "100": {
            "local/pve2": {
                "last_iteration": 1700000100,
                "last_try": 1700000100,
                "last_sync": 0,
                "fail_count": 0,
                "last_node": "pve1",
                "storeid_list": [],
                "pid": 4242,
                "ptime": "999",
            }
        }
    }
    state["storeid_list"] = ["local-zfs"]
    record_sync_end(store, 100, "local/pve2", state, start_time=1700000100)
    assert store.read()["100"]["local/pve2"]["last_sync"] == 1700000100
    record_job_end(
        store,
        100,
        "local/pve2",
        state,
        start_time=1700000100,
        duration=3.51287123456789,
        error=None,
    )
    assert raw_file(store) == SPEC_EXAMPLE
    assert oct(store.path.stat().st_mode & 0o777) == "0o644"
    assert b"\n" not in raw_file(store)


def test_lifecycle_failure_then_success_then_removal(store: StateStore) -> None:
    tid = "local/pve2"
    state = read_job_state(store.read(), 100, tid)
    for n in (1, 2):
        record_job_start(
            store, 100, tid, state, start_time=n, iteration=n, nodename="pve1", pid=1, ptime="1"
        )
        record_job_end(store, 100, tid, state, start_time=n, duration=0.5, error="boom\n\n")
    entry = store.read()["100"][tid]
    assert entry["fail_count"] == 2 and entry["error"] == "boom\n"  # chomp: one newline only
    assert "pid" not in entry and "ptime" not in entry
    record_job_end(store, 100, tid, state, start_time=3, duration=1.0, error=None)
    entry = store.read()["100"][tid]
    assert entry["fail_count"] == 0 and "error" not in entry and entry["last_sync"] == 3
    record_job_end(store, 100, tid, state, start_time=4, duration=1.0, error=None, removal=True)
    assert store.read() == {}
    assert raw_file(store) == b"{}"


def test_purge_set_state_schedule_now(store: StateStore) -> None:
    store.write_vmid_job_states(100, {"local/pve2": {"last_try": 50}, "local/pve3": {}})
    store.write_vmid_job_states(101, {"local/pve2": {"last_try": 60}})
    store.schedule_job_now(100, "local/pve2")
    store.schedule_job_now(100, "local/pve9")  # no entry: nothing happens
    assert store.read()["100"] == {"local/pve2": {"last_try": 0}, "local/pve3": {}}
    keep = states_to_keep(
        [(100, "local/pve2"), (101, "local/pve2"), (102, "local/pve2")],
        {100: "pve1", 101: "pve2"},
        "pve1",
    )
    assert keep == {(100, "local/pve2")}
    store.purge_old_states(keep)
    assert store.read() == {"100": {"local/pve2": {"last_try": 0}}}
    store.delete_guest_states(100)
    assert store.read() == {}


def test_broken_state_file_is_never_overwritten(store: StateStore) -> None:
    store.path.parent.mkdir(parents=True, exist_ok=True)
    store.path.write_bytes(SPEC_EXAMPLE[:50])
    with pytest.raises(ConfigError, match="invalid json data"):
        store.schedule_job_now(100, "local/pve2")
    with pytest.raises(ConfigError):
        store.write_job_state(100, "local/pve2", {"last_try": 1})
    assert store.path.read_bytes() == SPEC_EXAMPLE[:50]


def test_oversized_state_file(store: StateStore) -> None:
    store.path.parent.mkdir(parents=True, exist_ok=True)
    store.path.write_bytes(b"{" + b" " * (1024 * 1024) + b"}")
    with pytest.raises(ConfigError, match="larger than 1 MiB"):
        store.read()


# --- odd values, read as pvesr (Perl) reads them: a string's leading number, else 0 -------------


@pytest.mark.parametrize(
    ("value", "number"),
    [
        (7, 7),
        (-3, -3),
        (True, 1),
        (False, 0),
        (17.9, 17),
        (-2.7, -2),
        (float("inf"), 0),
        (float("nan"), 0),
        ("42", 42),
        ("+42", 42),
        ("-42", -42),
        (" \t42\n", 42),
        ("42abc", 42),
        ("42 43", 42),
        ("4.9", 4),
        (".5", 0),
        ("-.5e1", -5),
        ("1e3", 1000),
        ("1e", 1),
        ("1.5e2x", 150),
        ("1_000", 1),
        ("0x10", 0),
        ("abc", 0),
        ("", 0),
        ("+", 0),
        ("1e999", 0),
        ("\u0661\u0662", 0),  # Arabic-Indic digits are no number for Perl
        ("12345678901234567890", 12345678901234567890),
        ("-12345678901234567891", -12345678901234567891),  # exact: not through a float
        ("+12345678901234567891", 12345678901234567891),
        (None, 0),
        ([1], 0),
        ({"a": 1}, 0),
    ],
)
def test_numeric_fields_read_like_perl(value: object, number: int) -> None:
    for key in ("last_iteration", "last_try", "last_sync", "fail_count"):
        state = JobState.from_raw({key: value})
        assert getattr(state, key) == number, key
        others = {"last_iteration", "last_try", "last_sync", "fail_count"} - {key}
        assert all(getattr(state, k) == 0 for k in others)
    assert JobState.from_raw({"pid": value}).pid == (number or None)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, JobState()),
        ({}, JobState()),
        ({"error": "boom"}, JobState(error="boom")),
        ({"error": 12}, JobState(error="12")),
        ({"error": ""}, JobState(error="")),
        ({"error": None}, JobState()),
        ({"duration": 3.512871}, JobState(duration=3.512871)),
        ({"duration": 3}, JobState(duration=3.0)),
        ({"duration": "2.5"}, JobState(duration=2.5)),
        ({"duration": "slow"}, JobState()),
        ({"duration": True}, JobState()),
        ({"duration": [1]}, JobState()),
        ({"last_node": "pve1"}, JobState(last_node="pve1")),
        ({"last_node": 7}, JobState(last_node="7")),
        ({"last_node": None}, JobState()),
        ({"storeid_list": ["a", "b"]}, JobState(storeid_list=("a", "b"))),
        ({"storeid_list": [1]}, JobState(storeid_list=("1",))),
        ({"storeid_list": "a"}, JobState()),
        ({"storeid_list": {"a": 1}}, JobState()),
        ({"pid": 0}, JobState()),
        ({"pid": ""}, JobState()),
        ({"pid": "0"}, JobState()),
        ({"pid": "123"}, JobState(pid=123)),
        ({"ptime": "987"}, JobState(ptime="987")),
        ({"ptime": 987}, JobState(ptime="987")),
        ({"ptime": 0}, JobState(ptime="0")),
        ({"ptime": ""}, JobState()),
        ({"ptime": None}, JobState()),
    ],
)
def test_other_fields_read_tolerantly(raw: dict[str, object] | None, expected: JobState) -> None:
    assert JobState.from_raw(raw) == expected


# --- /proc and guests without entries ---------------------------------------------------------


def fake_stat(proc: Path, pid: int, content: bytes) -> None:
    (proc / str(pid)).mkdir()
    (proc / str(pid) / "stat").write_bytes(content)


def test_process_start_time_field_count_and_odd_names(tmp_path: Path) -> None:
    # fields after the name: 3 (state) … 22 (starttime) is the 20th
    fake_stat(tmp_path, 20, b"20 (x) " + b" ".join(str(i).encode() for i in range(3, 23)))
    fake_stat(tmp_path, 19, b"19 (x) " + b" ".join(str(i).encode() for i in range(3, 22)))
    assert process_start_time(20, tmp_path) == "22"
    assert process_start_time(19, tmp_path) is None  # a stat cut short: no start time
    # a process name is any bytes (and may hold ") "): still the start time, never an error
    name = b"(\xff\xfe) S ) "
    fake_stat(tmp_path, 21, b"21 " + name + b" ".join(str(i).encode() for i in range(3, 23)))
    assert process_start_time(21, tmp_path) == "22"
    # a damaged start time is no error either (and matches no recorded ptime)
    fake_stat(
        tmp_path, 22, b"22 (x) " + b" ".join(str(i).encode() for i in range(3, 22)) + b" 2\xff"
    )
    assert process_start_time(22, tmp_path) == "2\ufffd"


def test_a_zombie_job_process_is_not_running(tmp_path: Path) -> None:
    """A job process that died unreaped (state Z) no longer runs, as PVE's
    check_process_running answers: its job must not stay "running" forever."""
    rest = b" ".join(str(i).encode() for i in range(4, 23))
    fake_stat(tmp_path, 30, b"30 (pverep) Z " + rest)
    fake_stat(tmp_path, 31, b"31 (pverep) S " + rest)
    assert process_start_time(30, tmp_path) is None
    assert not job_process_running(JobState(pid=30, ptime="22"), tmp_path)
    assert job_process_running(JobState(pid=31, ptime="22"), tmp_path)


def test_job_process_running_reads_the_given_proc(tmp_path: Path) -> None:
    pid = 2**22 + 12345  # above the kernel's pid_max: no such process in the real /proc
    fake_stat(
        tmp_path, pid, f"{pid} (pvesr) ".encode() + b" ".join(b"%d" % i for i in range(3, 23))
    )
    assert job_process_running(JobState(pid=pid, ptime="22"), tmp_path)
    assert not job_process_running(JobState(pid=pid, ptime="21"), tmp_path)


def test_guest_without_entries_is_left_alone(store: StateStore) -> None:
    store.write_vmid_job_states(100, {"local/pve2": {"last_try": 50}})
    before = raw_file(store)
    store.schedule_job_now(555, "local/pve2")  # no such guest: nothing to do
    store.delete_guest_states(555)
    store.write_job_state(555, "local/pve2", None)
    assert raw_file(store) == before


def test_booleans_are_written_as_json_booleans() -> None:
    out = format_state({"1": {"t": {"a": True, "b": False, "c": [True, None]}}})
    assert out == b'{"1":{"t":{"a":true,"b":false,"c":[true,null]}}}'


def test_first_write_creates_the_state_directory(tmp_path: Path) -> None:
    store = StateStore(Paths(tmp_path / "fresh"), lock_timeout=1)
    store.write_job_state(100, "local/pve2", {"last_try": 1})
    assert raw_file(store) == b'{"100":{"local/pve2":{"last_try":1}}}'


def test_record_job_start_defaults_to_this_process(store: StateStore) -> None:
    state: dict[str, object] = {"storeid_list": ["local-zfs"]}
    record_job_start(store, 100, "local/pve2", state, start_time=5, iteration=6, nodename="n1")
    me = os.getpid()
    assert (state["pid"], state["ptime"]) == (me, process_start_time(me))
    assert state["storeid_list"] == ["local-zfs"]  # kept: only a missing list becomes []
    # a pid with no process (given by a caller) records ptime "0"
    gone = 2**22 + 12345  # above the kernel's pid_max
    record_job_start(
        store, 100, "local/pve2", state, start_time=7, iteration=8, nodename="n1", pid=gone
    )
    assert (state["pid"], state["ptime"]) == (gone, "0")
    assert store.read()["100"]["local/pve2"]["ptime"] == "0"


def test_record_job_end_keeps_an_error_without_newline(store: StateStore) -> None:
    state: dict[str, object] = {}
    record_job_end(store, 100, "local/pve2", state, start_time=1, duration=0.5, error="boom")
    assert store.read()["100"]["local/pve2"]["error"] == "boom"


def test_read_errors_name_the_file(store: StateStore) -> None:
    with pytest.raises(ConfigError) as err:
        parse_state(b"garbage")
    assert str(err.value) == "invalid json data in 'pve-replication-state.json'"
    store.path.parent.mkdir(parents=True, exist_ok=True)
    store.path.write_bytes(b"garbage")
    with pytest.raises(ConfigError) as err:
        store.read()
    assert str(err.value) == f"invalid json data in '{store.path}'"
    store.path.unlink()
    store.path.mkdir()
    with pytest.raises(ConfigError) as err:
        store.read()
    assert str(err.value) == f"unable to read '{store.path}' - Is a directory"


def test_state_file_of_exactly_the_maximum_size_is_read(store: StateStore) -> None:
    store.path.parent.mkdir(parents=True, exist_ok=True)
    store.path.write_bytes(b"{" + b" " * (1024 * 1024 - 2) + b"}")
    assert store.read() == {}


def test_bytes_that_are_no_utf8_are_replaced(store: StateStore) -> None:
    obj = parse_state(b'{"100":{"local/pve2":{"error":"bad \xff byte"}}}')
    assert obj["100"]["local/pve2"]["error"] == "bad \ufffd byte"


def test_locks_are_taken_with_the_store_timeout(
    store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pverep.config import state as state_module

    taken: list[tuple[str, float]] = []
    real_flock = state_module.flock

    def spy(path: Path, timeout: float = 99.0) -> object:
        taken.append((path.name, timeout))
        return real_flock(path, timeout)

    monkeypatch.setattr(state_module, "flock", spy)
    store.write_job_state(100, "local/pve2", {"last_try": 1})
    store.delete_guest_states(100)
    lock = store.paths.state_lock.name
    assert taken == [(store.paths.migrate_lock(100).name, 1), (lock, 1), (lock, 1)]


def test_non_finite_floats_are_written_as_null() -> None:
    # JSON has no inf/nan: a file pverep writes must stay readable by every JSON reader
    out = format_state({"1": {"t": {"duration": float("inf"), "x": float("nan"), "y": -0.5}}})
    assert out == b'{"1":{"t":{"duration":null,"x":null,"y":-0.5}}}'
    assert parse_state(out)["1"]["t"]["duration"] is None
