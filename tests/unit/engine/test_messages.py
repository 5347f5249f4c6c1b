"""The job-log message catalogue (spec §4.6), every text compared whole."""

from __future__ import annotations

import pytest

from pverep.engine import messages as m


def _cases() -> list[tuple[str, str]]:
    # Built when the test runs, not at collection: mutmut attributes a call to the test
    # that made it, and a text computed at import time would compare a mutant with itself.
    return [
        (m.start_job(), "start replication job"),
        (m.end_job(None), "end replication job"),
        (m.end_job("boom\n\n"), "end replication job with error: boom"),
        (m.end_job(""), "end replication job with error: "),
        (m.guest_line("CT", 101, 0), "guest => CT 101, running => 0"),
        (m.volumes_line(["a:1", "b:2"]), "volumes => a:1,b:2"),
        (m.volumes_line([]), "volumes => "),
        (m.start_removal("full"), "start job removal - mode 'full'"),
        (m.job_removed(), "job removed"),
        (
            m.expected_snapshot_missing("s1", "local-zfs:vm-100-disk-0"),
            "expected snapshot s1 not present for local-zfs:vm-100-disk-0, not removing others",
        ),
        (
            m.delete_stale_snapshot("s2", "v:1"),
            "delete stale replication snapshot 's2' on v:1",
        ),
        (
            m.delete_stale_snapshot_error("busy\n"),
            "delete stale replication snapshot error: busy",
        ),
        (m.remote_prepare_line("x y"), "(remote_prepare_local_job) x y"),
        (m.remote_finalize_line("z"), "(remote_finalize_local_job) z"),
        (m.freeze(), "freeze guest filesystem"),
        (m.thaw(), "thaw guest filesystem"),
        (m.create_snapshot("s", "v:1"), "create snapshot 's' on v:1"),
        (
            m.delete_previous_snapshot("s", "v:1"),
            "delete previous replication snapshot 's' on v:1",
        ),
        (m.format_rate("10.0"), "10"),
        (m.format_rate(1.5), "1.5"),
        (m.format_rate("0.123456789012345678"), "0.123456789012346"),
        (m.transport_line(False, None, None), "using secure transmission, rate limit: none"),
        (m.transport_line(False, None, 0), "using secure transmission, rate limit: none"),
        (
            m.transport_line(True, "10.1.0.0/16", "12.50"),
            "using insecure transmission over 10.1.0.0/16, rate limit: 12.5 MByte/s",
        ),
        (m.transport_line(False, "", 3), "using secure transmission, rate limit: 3 MByte/s"),
        (m.incremental_sync("v:1", "a", "b"), "incremental sync 'v:1' (a => b)"),
        (m.full_sync("v:1", "b"), "full sync 'v:1' (b)"),
        (
            m.bandwidth_limit(1048576, "v:1"),
            "using a bandwidth limit of 1048576 bytes per second for transferring 'v:1'",
        ),
        (
            m.node_budget(1_000_000.6),
            "sharing the node's bandwidth budget of 1000001 bytes per second",
        ),
        (
            m.no_common_base(["v:1", "v:2"], "100-0"),
            "No common base snapshot on volume(s) v:1,v:2\n"
            "Please remove the problematic volume(s) from the replication target or delete and "
            "re-create the whole job 100-0",
        ),
        (
            m.start_before_last_sync(10, 20),
            "start time before last sync (10 <= 20) - abort sync",
        ),
        (m.resuming("v:1", "s", 100, 50), "resuming 'v:1' (s) at 100 of 150 bytes"),
        (m.resuming("v:1", "s", 100, 0), "resuming 'v:1' (s) at 100 of 100 bytes"),
        (m.resuming("v:1", "s", 7, None), "resuming 'v:1' (s) at 7 of unknown bytes"),
        (
            m.resume_discarded("v:1", "gone"),
            "cannot resume 'v:1' (gone) - discarding the partial receive",
        ),
        (m.stream_form("v:1", "raw"), "stream form for 'v:1': raw"),
        (
            m.partial_kept("v:1", "pve2"),
            "partial receive of 'v:1' kept on 'pve2' - the next run resumes it",
        ),
        (
            m.session_channel_unavailable("pve2", "no slot"),
            "no data channel through the serve session on 'pve2' (no slot): importing per verb",
        ),
    ]


@pytest.mark.parametrize("index", range(len(_cases())))
def test_message_texts(index: int) -> None:
    text, expected = _cases()[index]
    assert text == expected


def test_error_text_keeps_inner_newlines_and_other_trailing_space() -> None:
    assert m.end_job("a\nb \n") == "end replication job with error: a\nb "
    assert m.delete_stale_snapshot_error("x\ny\n\n") == (
        "delete stale replication snapshot error: x\ny"
    )
    # Only newlines go: a space or a tab before them stays, as in the other texts.
    assert m.delete_stale_snapshot_error("busy \t\n") == (
        "delete stale replication snapshot error: busy \t"
    )
