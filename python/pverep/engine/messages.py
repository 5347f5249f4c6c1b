"""The job-log message catalogue of spec §4.6, byte for byte (the timestamp prefix is the log's).

One function per message so every text lives in exactly one place and tests can pin it.
"""

from __future__ import annotations

from collections.abc import Iterable


def start_job() -> str:
    return "start replication job"


def end_job(error: str | None) -> str:
    if error is None:
        return "end replication job"
    return f"end replication job with error: {error.rstrip(chr(10))}"


def guest_line(guest_kind: str, vmid: int, running: int) -> str:
    """``guest_kind`` is ``VM`` (qemu) or ``CT`` (lxc)."""
    return f"guest => {guest_kind} {vmid}, running => {running}"


def volumes_line(sorted_volids: Iterable[str]) -> str:
    return "volumes => " + ",".join(sorted_volids)


def start_removal(mode: str) -> str:
    return f"start job removal - mode '{mode}'"


def job_removed() -> str:
    return "job removed"


def expected_snapshot_missing(keep: str, volid: str) -> str:
    return f"expected snapshot {keep} not present for {volid}, not removing others"


def delete_stale_snapshot(snap: str, volid: str) -> str:
    return f"delete stale replication snapshot '{snap}' on {volid}"


def delete_stale_snapshot_error(err: str) -> str:
    return f"delete stale replication snapshot error: {err.rstrip(chr(10))}"


def remote_prepare_line(line: str) -> str:
    return f"(remote_prepare_local_job) {line}"


def remote_finalize_line(line: str) -> str:
    return f"(remote_finalize_local_job) {line}"


def freeze() -> str:
    return "freeze guest filesystem"


def thaw() -> str:
    return "thaw guest filesystem"


def create_snapshot(snap: str, volid: str) -> str:
    return f"create snapshot '{snap}' on {volid}"


def delete_previous_snapshot(snap: str, volid: str) -> str:
    return f"delete previous replication snapshot '{snap}' on {volid}"


def format_rate(rate: str | float) -> str:
    """The rate as stock prints it: the config number numified, then Perl's %.15g (10.0 → 10)."""
    return f"{float(rate):.15g}"


def transport_line(insecure: bool, network: str | None, rate: str | float | None) -> str:
    kind = "insecure" if insecure else "secure"
    over = f" over {network}" if network else ""
    limit = f"{format_rate(rate)} MByte/s" if rate else "none"
    return f"using {kind} transmission{over}, rate limit: {limit}"


def incremental_sync(volid: str, base: str, sync: str) -> str:
    return f"incremental sync '{volid}' ({base} => {sync})"


def full_sync(volid: str, sync: str) -> str:
    return f"full sync '{volid}' ({sync})"


def bandwidth_limit(bps: int, volid: str) -> str:
    return f"using a bandwidth limit of {bps} bytes per second for transferring '{volid}'"


def node_budget(bps: float) -> str:
    """pverep only: the node-wide budget the transfer shares with the others running now."""
    return f"sharing the node's bandwidth budget of {round(bps)} bytes per second"


def no_common_base(volids: Iterable[str], jobid: str) -> str:
    return (
        f"No common base snapshot on volume(s) {','.join(volids)}\n"
        "Please remove the problematic volume(s) from the replication target or delete and "
        f"re-create the whole job {jobid}"
    )


def start_before_last_sync(start_time: int, last_sync: int) -> str:
    return f"start time before last sync ({start_time} <= {last_sync}) - abort sync"


def resuming(volid: str, snap: str, done: int, estimate: int | None) -> str:
    """pverep only: a transfer continues a kept partial receive (``zfs send -t``)."""
    total = f"{done + estimate}" if estimate is not None else "unknown"
    return f"resuming '{volid}' ({snap}) at {done} of {total} bytes"


def resume_discarded(volid: str, reason: str) -> str:
    """pverep only: a kept partial receive cannot be continued; it is discarded on the target."""
    return f"cannot resume '{volid}' ({reason}) - discarding the partial receive"


def stream_form(volid: str, form: str) -> str:
    """pverep only: which stream form carries a volume when it is not pvesr's."""
    return f"stream form for '{volid}': {form}"


def partial_kept(volid: str, node: str) -> str:
    """pverep only: a broken transfer's partial receive stays on the target for resuming."""
    return f"partial receive of '{volid}' kept on '{node}' - the next run resumes it"


def session_channel_unavailable(node: str, why: str) -> str:
    return f"no data channel through the serve session on '{node}' ({why}): importing per verb"
