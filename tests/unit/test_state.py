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
        store, 100, "local/pve2", state, start_time=1700000100, duration=3.512871, error=None
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
